"""Baseline characteristics of the cohorts in the shape of the paper's Table 2.

Per modality and cohort (training / prospective validation): MVI present versus absent, numeric columns as
mean ± SD with Welch's t-test, categorical columns as n (%) with Pearson's chi-square test (Fisher's exact test
for 2 x 2 tables with an expected count below 5).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

NUMERIC_COLUMNS = {"age": "Age (years)", "tumour_size_cm": "Tumour size (cm)"}
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
# The paper's cut-offs for the laboratory values (Table 2).
CUT_OFFS = {
    "bilirubin_umol_l": ([20.4], ["<=20.4", ">20.4"]),
    "alt_u_l": ([40.0], ["<=40", ">40"]),
    "ast_u_l": ([35.0], ["<=35", ">35"]),
    "platelets_1e9_l": ([100.0], ["<=100", ">100"]),
    "afp_ng_ml": ([20.0, 400.0], ["<20", "20-400", ">400"]),
    "tumour_number": ([1.0], ["solitary", "multiple"]),
}
COHORT_NAMES = {"train": "Training", "prospective": "Prospective validation"}


def _categorise(column: str, values: pd.Series) -> pd.Series:
    if column not in CUT_OFFS:
        return values.astype("string")
    edges, labels = CUT_OFFS[column]
    bins = [-np.inf, *edges, np.inf]
    right = column != "afp_ng_ml"  # AFP: < 20, 20-400, > 400 as in the paper.
    return pd.cut(values.astype(float), bins=bins, labels=labels, right=right).astype("string")


def _numeric_rows(column: str, label: str, pos: pd.DataFrame, neg: pd.DataFrame) -> list[dict]:
    a, b = pos[column].dropna().astype(float), neg[column].dropna().astype(float)
    p = stats.ttest_ind(a, b, equal_var=False).pvalue if len(a) > 1 and len(b) > 1 else np.nan
    return [{"characteristic": label, "level": "", "mvi_present": f"{a.mean():.1f} ± {a.std():.1f}",
             "mvi_absent": f"{b.mean():.1f} ± {b.std():.1f}", "p_value": p}]


def _categorical_rows(column: str, label: str, pos: pd.DataFrame, neg: pd.DataFrame) -> list[dict]:
    cats_pos = _categorise(column, pos[column]).fillna("missing")
    cats_neg = _categorise(column, neg[column]).fillna("missing")
    levels = sorted(set(cats_pos) | set(cats_neg))
    table = np.array([[int((cats_pos == lv).sum()) for lv in levels], [int((cats_neg == lv).sum()) for lv in levels]])
    p = np.nan
    if len(levels) > 1 and table.sum(axis=1).min() > 0:
        if table.shape == (2, 2) and stats.contingency.expected_freq(table).min() < 5:
            p = stats.fisher_exact(table).pvalue
        else:
            p = stats.chi2_contingency(table, correction=False).pvalue
    rows = [{"characteristic": label, "level": "", "mvi_present": "", "mvi_absent": "", "p_value": p}]
    n_pos, n_neg = max(len(pos), 1), max(len(neg), 1)
    for i, level in enumerate(levels):
        rows.append({"characteristic": "", "level": level,
                     "mvi_present": f"{table[0, i]} ({100 * table[0, i] / n_pos:.1f})",
                     "mvi_absent": f"{table[1, i]} ({100 * table[1, i] / n_neg:.1f})", "p_value": np.nan})
    return rows


def cohort_characteristics(cohort_dir: str | Path) -> dict[str, pd.DataFrame]:
    """Table 2 of the paper for a cohort directory: one table per modality and cohort.

    Returns
    -------
    dict
        Keys like ``"ct / Training (n = 306)"``; values are data frames with columns characteristic, level,
        mvi_present, mvi_absent, p_value.
    """
    cohort_dir = Path(cohort_dir)
    clinical = pd.read_csv(cohort_dir / "clinical.csv", dtype={"patient_id": str})
    manifest = pd.read_csv(cohort_dir / "manifest.csv", dtype={"patient_id": str})
    tables: dict[str, pd.DataFrame] = {}
    for modality in sorted(manifest["modality"].unique()):
        ids = set(manifest.loc[manifest["modality"] == modality, "patient_id"])
        subset = clinical[clinical["patient_id"].isin(ids)]
        for cohort in ("train", "prospective"):
            part = subset[subset["cohort"] == cohort]
            if part.empty:
                continue
            pos, neg = part[part["mvi"] == 1], part[part["mvi"] == 0]
            rows = [{"characteristic": "Patients", "level": "", "mvi_present": str(len(pos)),
                     "mvi_absent": str(len(neg)), "p_value": np.nan}]
            for column, label in NUMERIC_COLUMNS.items():
                if column in part:
                    rows += _numeric_rows(column, label, pos, neg)
            for column, label in CATEGORICAL_COLUMNS.items():
                if column in part and part[column].notna().any():
                    rows += _categorical_rows(column, label, pos, neg)
            title = f"{modality.upper()} / {COHORT_NAMES.get(cohort, cohort)} (n = {len(part)})"
            tables[title] = pd.DataFrame(rows)
    return tables
