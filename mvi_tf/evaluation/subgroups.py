"""Stratified performance by age, sex, AFP level and tumour size, with tests between strata.

Strata (missing values are left out of that factor and counted):

- age: ``<= age_cutoff`` vs ``> age_cutoff`` years (default 60);
- sex: each value of ``sex`` (or ``sex_male`` 1/0 as male/female);
- AFP: ``<= 20``, ``20-400`` (20 < AFP <= 400) and ``> 400`` ng/mL;
- tumour size: ``<= 5`` vs ``> 5`` cm.

Tests between strata (the strata hold different patients, so the tests are for independent samples):

- AUC: chi-square test of equal AUCs from the strata's DeLong AUCs and variances
  (:func:`mvi_tf.stats.independent_auc_test`; for two strata the z-test of pROC's unpaired ``roc.test``);
- SEN (on MVI+ patients) and SPE (on MVI- patients) at the training Youden threshold: Fisher's exact test for
  two strata, Pearson's chi-square test of the k x 2 table for more.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats as sp_stats

from mvi_tf import na, stats
from mvi_tf.evaluation.rundir import RunData, model_label
from mvi_tf.evaluation.table3 import model_performance

AFP_CUTOFFS_NG_ML = (20.0, 400.0)
TUMOUR_SIZE_CUTOFF_CM = 5.0


def _strata(df: pd.DataFrame, age_cutoff: float) -> dict[str, tuple[pd.Series, list[str]]]:
    """Factor -> (stratum label per row, NaN where the factor is missing; the strata in natural order)."""
    out: dict[str, tuple[pd.Series, list[str]]] = {}

    def binned(values: pd.Series, edges: list[float], labels: list[str]) -> tuple[pd.Series, list[str]]:
        x = pd.to_numeric(values, errors="coerce")
        index = np.searchsorted(
            np.asarray(edges), x.to_numpy(dtype=float), side="left"
        )  # x <= edge -> left bin
        named = pd.Series(
            np.asarray(labels, dtype=object)[np.minimum(index, len(labels) - 1)], index=df.index
        )
        return named.where(x.notna()), labels

    if "age" in df.columns:
        out["age"] = binned(df["age"], [age_cutoff], [f"<= {age_cutoff:g} y", f"> {age_cutoff:g} y"])
    if "sex" in df.columns:
        sex = df["sex"].astype("string").str.strip().str.lower()
        out["sex"] = sex.astype(object).where(df["sex"].notna()), sorted(sex.dropna().unique())
    elif "sex_male" in df.columns:
        male = pd.to_numeric(df["sex_male"], errors="coerce")
        out["sex"] = (
            pd.Series(np.where(male == 1, "male", "female"), index=df.index).where(male.notna()),
            ["female", "male"],
        )
    if "afp_ng_ml" in df.columns:
        low, high = AFP_CUTOFFS_NG_ML
        out["afp"] = binned(
            df["afp_ng_ml"],
            [low, high],
            [f"<= {low:g} ng/mL", f"{low:g}-{high:g} ng/mL", f"> {high:g} ng/mL"],
        )
    if "tumour_size_cm" in df.columns:
        cut = TUMOUR_SIZE_CUTOFF_CM
        out["tumour_size"] = binned(df["tumour_size_cm"], [cut], [f"<= {cut:g} cm", f"> {cut:g} cm"])
    return out


def _proportion_test(correct: list[int], totals: list[int]) -> tuple[str, float]:
    """Test equal proportions across strata: Fisher exact (2 strata) or Pearson chi-square (k > 2)."""
    table = np.array([[c, t - c] for c, t in zip(correct, totals, strict=True) if t > 0])
    if table.shape[0] < 2 or np.any(table.sum(axis=0) == 0):
        return "not testable", float("nan")  # fewer than two strata, or every patient in one outcome column
    if table.shape[0] == 2:
        return "fisher_exact", float(sp_stats.fisher_exact(table).pvalue)
    return "chi2", float(sp_stats.chi2_contingency(table, correction=False).pvalue)


def subgroup_analysis(
    run: RunData,
    model: str = "cdlm",
    cohorts: tuple[str, ...] = ("training", "prospective"),
    age_cutoff: float = 60.0,
    alpha: float = 0.05,
) -> list[dict]:
    """Per factor and cohort: stratum rows (AUC/SEN/SPE) and one test row, as plain dicts.

    Parameters
    ----------
    run : RunData
        A loaded run (:func:`mvi_tf.evaluation.rundir.load_run`).
    model : str
        Score column to stratify (the paper stratified the CDLMs).
    cohorts : tuple of str
        Evaluation cohorts.
    age_cutoff : float
        Age split in years.
    alpha : float
        1 - confidence level of the intervals.

    Returns
    -------
    list of dict
        ``kind`` is ``"stratum"`` or ``"test"``.
    """
    if model not in run.models:
        raise ValueError(
            f"Run {run.run_dir} has no {model!r} scores. Received: model={model!r}, available={run.models}"
        )
    rows: list[dict] = []
    threshold = run.thresholds[model]
    for cohort in cohorts:
        data = run.cohort(cohort)
        if data.empty:
            continue
        for factor, (strata, levels) in _strata(data, age_cutoff).items():
            base = {
                "modality": run.modality,
                "model": model,
                "model_label": model_label(model),
                "cohort": cohort,
                "factor": factor,
            }
            aucs, variances, sen_k, sen_n, spe_k, spe_n = [], [], [], [], [], []
            for level in levels:
                part = data[strata == level]  # an empty stratum stays in the table, its figures not available
                perf = model_performance(part["label"].to_numpy(), part[model].to_numpy(), threshold, alpha)
                rows.append({**base, "kind": "stratum", "stratum": level, **perf})
                if np.isfinite(perf["auc"]):
                    aucs.append(perf["auc"])
                    variances.append(perf["auc_variance"])
                y = part["label"].to_numpy().astype(bool)
                predicted = part[model].to_numpy() >= threshold
                sen_k.append(int(np.sum(predicted & y)))
                sen_n.append(int(y.sum()))
                spe_k.append(int(np.sum(~predicted & ~y)))
                spe_n.append(int((~y).sum()))
            test = {
                **base,
                "kind": "test",
                "stratum": "between strata",
                "n_missing": int(strata.isna().sum()),
            }
            if len(aucs) >= 2:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    res = stats.independent_auc_test(aucs, variances)
                test.update(
                    auc_test="delong_independent",
                    auc_statistic=res.statistic,
                    auc_df=res.df,
                    auc_z=res.z,
                    auc_p_value=res.p_value,
                )
            else:
                test.update(
                    auc_test="not testable",
                    auc_statistic=np.nan,
                    auc_df=np.nan,
                    auc_z=np.nan,
                    auc_p_value=np.nan,
                )
            test["sensitivity_test"], test["sensitivity_p_value"] = _proportion_test(sen_k, sen_n)
            test["specificity_test"], test["specificity_p_value"] = _proportion_test(spe_k, spe_n)
            na.explain(test, auc_p_value="fewer than two strata with an estimable AUC",
                       sensitivity_p_value="fewer than two strata with MVI+ patients, or every one in one outcome",
                       specificity_p_value="fewer than two strata with MVI- patients, or every one in one outcome")
            test["note"] = "; ".join(dict.fromkeys(test.get(na.KEY, {}).values()))
            rows.append(test)
    return rows


def subgroups_markdown(rows: list[dict], synthetic: bool) -> str:
    """Markdown table of strata with the between-strata p-values under each factor."""
    lines = []
    if synthetic:
        lines += ["> **SYNTHETIC DATA** — every number below comes from a simulated cohort.", ""]
    lines += [
        "### Stratified analysis",
        "",
        "| Modality | Model | Cohort | Factor | Stratum | n (MVI+) | SEN | SPE | AUC (95% CI) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def pct(x: float) -> str:
        return "—" if x is None or not np.isfinite(x) else f"{100 * x:.1f}%"

    def pv(x: float) -> str:
        return "—" if x is None or not np.isfinite(x) else ("< 0.001" if x < 0.001 else f"{x:.3f}")

    for r in rows:
        head = [r["modality"].upper(), r["model_label"], r["cohort"], r["factor"]]
        if r["kind"] == "stratum":
            auc = (
                "—"
                if not np.isfinite(r["auc"])
                else f"{r['auc']:.3f} ({r['auc_ci_low']:.3f}–{r['auc_ci_high']:.3f})"
            )
            lines.append(
                "| "
                + " | ".join(
                    head
                    + [
                        r["stratum"],
                        f"{r['n']} ({r['n_positive']})",
                        pct(r["sensitivity"]),
                        pct(r["specificity"]),
                        auc,
                    ]
                )
                + " |"
            )
        else:
            lines.append(
                "| "
                + " | ".join(
                    head
                    + [
                        "*p between strata*",
                        "",
                        pv(r["sensitivity_p_value"]),
                        pv(r["specificity_p_value"]),
                        pv(r["auc_p_value"]),
                    ]
                )
                + " |"
            )
    lines += [
        "",
        (
            "AUC p: DeLong AUCs compared across independent strata (chi-square, k-1 df; z-test for two "
            "strata). SEN/SPE p: Fisher's exact test (two strata) or Pearson chi-square (more), at the "
            "training Youden threshold."
        ),
        "",
    ]
    return "\n".join(lines)
