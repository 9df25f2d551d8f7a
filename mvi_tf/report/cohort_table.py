"""Baseline characteristics of the cohorts in the shape of the paper's Table 2, built with `tableone`.

Per modality and cohort (training / prospective validation): MVI present versus absent. Age as mean ± SD
(Welch's t-test), tumour size as median [IQR] (Kruskal-Wallis, i.e. the two-group rank test), categorical
characteristics as n (%) with Pearson's chi-square test, or Fisher's exact test for 2 x 2 tables with an
expected count below 5 (tableone's choice). Laboratory values are categorised at the paper's cut-offs and every
categorical characteristic lists its levels in their natural order (AFP < 20, 20-400, > 400 ng/mL).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

NUMERIC_COLUMNS = {"age": "Age (years)", "tumour_size_cm": "Tumour size (cm)"}
NONNORMAL = {"tumour_size_cm"}
CATEGORICAL_COLUMNS = {
    "sex": "Sex",
    "aetiology": "Aetiology",
    "bilirubin_umol_l": "Total bilirubin (µmol/L)",
    "alt_u_l": "ALT (U/L)",
    "ast_u_l": "AST (U/L)",
    "platelets_1e9_l": "Platelets (10^9/L)",
    "afp_ng_ml": "AFP (ng/mL)",
    "tumour_number": "Number of tumours",
    "margin": "Tumour margin",
    "peritumoral_enhancement": "Peritumoral enhancement",
    "capsule": "Capsule",
    "hbp_peritumoral_hypointensity": "HBP peritumoral hypointensity",
}
# The paper's cut-offs for the laboratory values (Table 2), levels in their natural order.
CUT_OFFS = {
    "bilirubin_umol_l": ([20.4], ["≤20.4", ">20.4"]),
    "alt_u_l": ([40.0], ["≤40", ">40"]),
    "ast_u_l": ([35.0], ["≤35", ">35"]),
    "platelets_1e9_l": ([100.0], ["≤100", ">100"]),
    "afp_ng_ml": ([20.0, 400.0], ["<20", "20-400", ">400"]),
    "tumour_number": ([1.0], ["solitary", "multiple"]),
}
# Natural order of the imaging findings' levels (others: alphabetical).
LEVEL_ORDER = {"sex": ["M", "F"], "margin": ["smooth", "non-smooth"], "peritumoral_enhancement": ["absent", "present"],
               "capsule": ["complete", "interrupted", "absent"], "hbp_peritumoral_hypointensity": ["absent", "present"]}
COHORT_NAMES = {"train": "Training", "prospective": "Prospective validation"}
GROUPS = ("MVI present", "MVI absent")
COLUMNS = ["characteristic", "level", "mvi_present", "mvi_absent", "p_value", "test"]


def _categorise(column: str, values: pd.Series) -> pd.Series:
    if column not in CUT_OFFS:
        return values.astype("string")
    edges, labels = CUT_OFFS[column]
    right = column != "afp_ng_ml"  # AFP: < 20, 20-400, > 400 as in the paper.
    return pd.cut(values.astype(float), bins=[-np.inf, *edges, np.inf], labels=labels, right=right).astype("string")


def _levels(column: str, values: pd.Series) -> list[str]:
    present = [v for v in values.dropna().unique()]
    natural = CUT_OFFS[column][1] if column in CUT_OFFS else LEVEL_ORDER.get(column, [])
    return [v for v in natural if v in present] + sorted(v for v in present if v not in natural)


def _test_name(name: str) -> str:
    return str(name).replace("’", "'").replace("T-test", "t-test").replace("warning: ", "")


def _tableone(part: pd.DataFrame, numeric: list[str], categorical: list[str], pval: bool):
    from tableone import TableOne

    data = part[numeric].astype(float).join(pd.DataFrame({c: _categorise(c, part[c]) for c in categorical}))
    data["MVI"] = np.where(part["mvi"] == 1, GROUPS[0], GROUPS[1])
    order = {c: _levels(c, data[c]) for c in categorical}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TableOne(data, columns=numeric + categorical, categorical=categorical, groupby="MVI",
                        nonnormal=[c for c in numeric if c in NONNORMAL], pval=pval, htest_name=pval,
                        order={**order, "MVI": list(GROUPS)}, missing=False, overall=False, decimals=1)


def _continuous_cell(describe: pd.DataFrame, column: str, group: str) -> str:
    row = describe.loc[column]
    if row[("count", group)] == 0:
        return "n/a"
    if column in NONNORMAL:
        return f"{row[('median', group)]:.1f} [{row[('q25', group)]:.1f}–{row[('q75', group)]:.1f}]"
    return f"{row[('mean', group)]:.1f} ± {row[('std', group)]:.1f}"


def _rows(table, part: pd.DataFrame, numeric: list[str], categorical: list[str], pval: bool) -> list[dict]:
    groups = [g for g in GROUPS if (part["mvi"] == (1 if g == GROUPS[0] else 0)).any()]
    n = {g: int((part["mvi"] == (1 if g == GROUPS[0] else 0)).sum()) for g in GROUPS}
    rows = [{"characteristic": "Patients", "level": "", "mvi_present": str(n[GROUPS[0]]),
             "mvi_absent": str(n[GROUPS[1]]), "p_value": np.nan, "test": ""}]
    htest = table.htest_table if pval else None

    def p_and_test(column: str) -> dict:
        if htest is None or column not in htest.index:
            return {"p_value": np.nan, "test": ""}
        return {"p_value": float(htest.loc[column, "P-Value"]), "test": _test_name(htest.loc[column, "Test"])}

    for column in numeric:
        cells = {g: _continuous_cell(table.cont_describe, column, g) if g in groups else "n/a" for g in GROUPS}
        label = NUMERIC_COLUMNS[column] + (", median [IQR]" if column in NONNORMAL else ", mean ± SD")
        rows.append({"characteristic": label, "level": "", "mvi_present": cells[GROUPS[0]],
                     "mvi_absent": cells[GROUPS[1]], **p_and_test(column)})
    for column in categorical:
        levels = _levels(column, _categorise(column, part[column]))
        tested = p_and_test(column) if len(levels) > 1 else {"p_value": np.nan, "test": ""}
        rows.append({"characteristic": CATEGORICAL_COLUMNS[column] + ", n (%)", "level": "", "mvi_present": "",
                     "mvi_absent": "", **tested})
        describe = table.cat_describe.loc[column]
        for level in levels:
            cells = {g: (f"{int(describe.loc[level, ('freq', g)])} ({describe.loc[level, ('percent', g)]:.1f})"
                         if g in groups else "0 (0.0)") for g in GROUPS}
            rows.append({"characteristic": "", "level": level, "mvi_present": cells[GROUPS[0]],
                         "mvi_absent": cells[GROUPS[1]], "p_value": np.nan, "test": ""})
    return rows


def cohort_characteristics(cohort_dir: str | Path) -> dict[str, pd.DataFrame]:
    """Table 2 of the paper for a cohort directory: one table per modality and cohort.

    Returns
    -------
    dict
        Keys like ``"CT / Training (n = 306)"``; values are data frames with columns characteristic, level,
        mvi_present, mvi_absent (formatted strings), p_value (float, NaN where no test applies) and test.
    """
    cohort_dir = Path(cohort_dir)
    clinical = pd.read_csv(cohort_dir / "clinical.csv", dtype={"patient_id": str})
    manifest = pd.read_csv(cohort_dir / "manifest.csv", dtype={"patient_id": str})
    tables: dict[str, pd.DataFrame] = {}
    for modality in sorted(manifest["modality"].unique()):
        ids = set(manifest.loc[manifest["modality"] == modality, "patient_id"])
        subset = clinical[clinical["patient_id"].isin(ids)]
        for cohort in ("train", "prospective"):
            part = subset[subset["cohort"] == cohort].reset_index(drop=True)
            if part.empty:
                continue
            numeric = [c for c in NUMERIC_COLUMNS if c in part and part[c].notna().any()]
            categorical = [c for c in CATEGORICAL_COLUMNS if c in part and part[c].notna().any()]
            counts = part["mvi"].value_counts()
            pval = counts.get(1, 0) >= 2 and counts.get(0, 0) >= 2
            table = _tableone(part, numeric, categorical, pval)
            title = f"{modality.upper()} / {COHORT_NAMES.get(cohort, cohort)} (n = {len(part)})"
            tables[title] = pd.DataFrame(_rows(table, part, numeric, categorical, pval), columns=COLUMNS)
    return tables
