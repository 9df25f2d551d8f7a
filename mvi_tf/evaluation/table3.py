"""Table 3 of Wei et al. 2021: SEN, SPE, ACC at the training Youden threshold and AUC (95% CI) per model,
modality and cohort."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from mvi_tf import na, stats
from mvi_tf.evaluation.rundir import COHORT_LABELS, RunData, model_label

MODALITY_LABELS = {"ct": "CE-CT", "mri": "EOB-MRI"}


def model_performance(y_true: np.ndarray, y_score: np.ndarray, threshold: float, alpha: float = 0.05) -> dict:
    """AUC with DeLong CI and SEN/SPE/ACC/PPV/NPV (exact CIs) at ``threshold`` for one model on one cohort.

    Cohorts too small for a statistic get NaN and a ``note`` instead of an error, so one thin stratum or an
    absent cohort does not stop a whole evaluation; the row's ``not_available`` entry gives the reason per
    figure (:mod:`mvi_tf.na`).
    """
    y = np.asarray(y_true).astype(int)
    s = np.asarray(y_score, dtype=float)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    out: dict = {"n": int(y.size), "n_positive": n_pos, "n_negative": n_neg, "threshold": float(threshold)}
    nan = float("nan")
    out.update(auc=nan, auc_variance=nan, auc_ci_low=nan, auc_ci_high=nan)
    for key in ("sensitivity", "specificity", "accuracy", "ppv", "npv"):
        out[key], out[f"{key}_ci_low"], out[f"{key}_ci_high"] = nan, nan, nan
    notes = []
    if n_pos >= 2 and n_neg >= 2:
        auc = stats.roc_auc_ci(y, s, alpha=alpha)
        out.update(auc=auc.auc, auc_variance=auc.variance, auc_ci_low=auc.ci_low, auc_ci_high=auc.ci_high)
    elif y.size:
        notes.append(f"AUC not estimable: {n_pos} MVI+ and {n_neg} MVI- patients (need >= 2 of each)")
    if n_pos and n_neg:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # undefined PPV/NPV stay NaN in the tables
            cm = stats.classification_metrics(y, s, threshold, alpha=alpha)
        out.update(tp=cm.tp, fp=cm.fp, tn=cm.tn, fn=cm.fn)
        for key in ("sensitivity", "specificity", "accuracy", "ppv", "npv"):
            out[key] = getattr(cm, key)
            out[f"{key}_ci_low"], out[f"{key}_ci_high"] = getattr(cm, f"{key}_ci")
    elif y.size:
        notes.append("SEN/SPE not estimable: a single class")
    else:
        notes.append("no patients")
    out["note"] = "; ".join(notes)
    return _explain_missing(out, n_pos, n_neg)


def _explain_missing(out: dict, n_pos: int, n_neg: int) -> dict:
    """Record why each undefined figure of a :func:`model_performance` row is missing (:mod:`mvi_tf.na`)."""
    if not n_pos + n_neg:
        reasons = dict.fromkeys(("auc", "sensitivity", "specificity", "accuracy", "ppv", "npv"), "no patients")
    else:
        classes = f"{n_pos} MVI+ and {n_neg} MVI- patients"
        single = f"SEN/SPE not estimated on a single class ({classes})"
        reasons = {
            "auc": f"AUC needs >= 2 MVI+ and >= 2 MVI- patients; the cohort has {classes}",
            "sensitivity": single, "specificity": single, "accuracy": single,
            "ppv": single if not (n_pos and n_neg) else "no patient predicted MVI+ at the threshold",
            "npv": single if not (n_pos and n_neg) else "no patient predicted MVI- at the threshold",
        }
    for key, reason in list(reasons.items()):
        reasons.update({f"{key}_ci_low": reason, f"{key}_ci_high": reason})
    reasons["auc_variance"] = reasons["auc"]
    threshold = out["threshold"]
    if na.is_missing(threshold):
        reasons["threshold"] = (f"the train split's Youden cut is {threshold} (a constant score): it calls "
                                f"{'every' if threshold < 0 else 'no'} patient MVI+")
    return na.explain(out, **reasons)


def performance_rows(runs: list[RunData], cohorts: tuple[str, ...], alpha: float = 0.05) -> list[dict]:
    """One row per modality, model and cohort with every number of :func:`model_performance`."""
    rows = []
    for run in runs:
        for cohort in cohorts:
            data = run.cohort(cohort)
            for model in run.models:
                row = {
                    "modality": run.modality,
                    "model": model,
                    "model_label": model_label(model),
                    "cohort": cohort,
                    "threshold_source": run.threshold_source[model],
                }
                row.update(
                    model_performance(
                        data["label"].to_numpy(), data[model].to_numpy(), run.thresholds[model], alpha
                    )
                )
                rows.append(row)
    return rows


def table3_frame(rows: list[dict], cohorts: tuple[str, ...] = ("training", "prospective")) -> pd.DataFrame:
    """Wide Table 3: one row per (modality, model); per cohort n, and SEN, SPE, ACC, AUC each with its CI."""
    long = pd.DataFrame(rows)
    keys = ["modality", "model", "model_label"]
    wide = long[keys].drop_duplicates().reset_index(drop=True)
    for cohort in cohorts:
        part = long[long["cohort"] == cohort].set_index(["modality", "model"])
        columns = ["n"]
        for key in ("sensitivity", "specificity", "accuracy", "auc"):
            columns += [key, f"{key}_ci_low", f"{key}_ci_high"]
        for col in columns:
            wide[f"{cohort}_{col}"] = [
                part[col].get((m, mod), np.nan)
                for m, mod in zip(wide["modality"], wide["model"], strict=True)
            ]
    return wide


def _pct_ci(x: float, low: float, high: float) -> str:
    """``72.0% (58.1–83.3)``: a proportion with its exact CI, as a percentage."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{100 * x:.1f}% ({100 * low:.1f}–{100 * high:.1f})"


def _auc(auc: float, low: float, high: float) -> str:
    if auc is None or math.isnan(auc):
        return "—"
    return f"{auc:.3f} ({low:.3f}–{high:.3f})"


def table3_markdown(wide: pd.DataFrame, cohorts: tuple[str, ...], title: str, synthetic: bool) -> str:
    """Markdown version of :func:`table3_frame` formatted like the paper (percentages, AUC (95% CI))."""
    lines = []
    if synthetic:
        lines += ["> **SYNTHETIC DATA** — every number below comes from a simulated cohort.", ""]
    lines += [f"### {title}", ""]
    header = ["Model", "Modality"]
    for cohort in cohorts:
        n = wide[f"{cohort}_n"].max()
        n_text = "" if pd.isna(n) else f", n = {int(n)}"
        label = f"{COHORT_LABELS[cohort]}{n_text}"
        header += [f"{label}: SEN (95% CI)", "SPE (95% CI)", "ACC (95% CI)", "AUC (95% CI)"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for _, row in wide.iterrows():
        cells = [row["model_label"], MODALITY_LABELS.get(row["modality"], row["modality"])]
        for cohort in cohorts:
            cells += [
                *(
                    _pct_ci(row[f"{cohort}_{key}"], row[f"{cohort}_{key}_ci_low"], row[f"{cohort}_{key}_ci_high"])
                    for key in ("sensitivity", "specificity", "accuracy")
                ),
                _auc(row[f"{cohort}_auc"], row[f"{cohort}_auc_ci_low"], row[f"{cohort}_auc_ci_high"]),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)
