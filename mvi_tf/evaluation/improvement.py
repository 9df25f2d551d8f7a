"""What the CDLM adds over the radiological model, per modality and cohort: the AUC difference (DeLong test
and stratified bootstrap CI), continuous NRI and IDI (Hmisc::improveProb) and the net-benefit difference
at fixed threshold probabilities (bootstrap CIs). Definitions in :mod:`mvi_tf.uncertainty`."""

from __future__ import annotations

import math

import numpy as np

from mvi_tf import stats, uncertainty
from mvi_tf.evaluation.rundir import COHORT_LABELS, RunData
from mvi_tf.evaluation.table3 import MODALITY_LABELS

NET_BENEFIT_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5)
"""Threshold probabilities at which net benefit and its difference are reported with bootstrap CIs."""

NEW_MODEL, OLD_MODEL = "cdlm", "radiological"


def model_improvement(
    y_true: np.ndarray,
    new: np.ndarray,
    old: np.ndarray,
    thresholds: tuple[float, ...] = NET_BENEFIT_THRESHOLDS,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict:
    """Every comparison number of ``new`` over ``old`` on one cohort as a flat dict; a cohort without two
    patients of each class gets a ``note`` instead."""
    y = np.asarray(y_true).astype(int)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    out: dict = {"n": int(y.size), "n_positive": n_pos, "n_negative": n_neg}
    if n_pos < 2 or n_neg < 2:
        return {**out, "note": f"not estimable: {n_pos} MVI+ and {n_neg} MVI- patients (need >= 2 of each)"}
    delong = stats.delong_test(y, new, old)
    boot = uncertainty.bootstrap_auc_difference(y, new, old, n_boot=n_boot, seed=seed, alpha=alpha)
    out.update(
        auc_new=boot.auc_a,
        auc_old=boot.auc_b,
        auc_difference=boot.difference,
        auc_difference_ci_low=boot.ci_low,
        auc_difference_ci_high=boot.ci_high,
        delong_z=delong.z,
        delong_p=delong.p_value,
    )
    out.update(uncertainty.reclassification(y, new, old, alpha=alpha).as_dict())
    nb = uncertainty.bootstrap_net_benefit(y, new, thresholds, reference=old, n_boot=n_boot, seed=seed, alpha=alpha)
    nb_old = stats.net_benefit(y, old, thresholds).model
    for k, pt in enumerate(thresholds):
        tag = f"nb_{round(100 * pt):02d}"
        out[f"{tag}_new"] = float(nb.net_benefit[k])
        out[f"{tag}_new_ci_low"], out[f"{tag}_new_ci_high"] = float(nb.ci_low[k]), float(nb.ci_high[k])
        out[f"{tag}_old"] = float(nb_old[k])
        out[f"{tag}_difference"] = float(nb.difference[k])
        out[f"{tag}_difference_ci_low"] = float(nb.difference_ci_low[k])
        out[f"{tag}_difference_ci_high"] = float(nb.difference_ci_high[k])
    out.update(n_boot=n_boot, seed=seed, note="")
    return out


def improvement_rows(
    runs: list[RunData],
    cohorts: tuple[str, ...],
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> list[dict]:
    """One row per run (that has both a CDLM and a radiological score) and cohort."""
    rows = []
    for run in runs:
        if NEW_MODEL not in run.models or OLD_MODEL not in run.models:
            continue
        for cohort in cohorts:
            data = run.cohort(cohort)
            row = {"modality": run.modality, "new_model": NEW_MODEL, "old_model": OLD_MODEL, "cohort": cohort}
            row.update(
                model_improvement(
                    data["label"].to_numpy(),
                    data[NEW_MODEL].to_numpy(),
                    data[OLD_MODEL].to_numpy(),
                    n_boot=n_boot,
                    seed=seed,
                    alpha=alpha,
                )
            )
            rows.append(row)
    return rows


def _fmt(value: object, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def _ci(row: dict, key: str, low: str | None = None, digits: int = 3) -> str:
    if key not in row:
        return "—"
    low_key = low or f"{key}_ci_low"
    high_key = low_key.replace("_low", "_high")
    return f"{_fmt(row[key], digits)} ({_fmt(row[low_key], digits)} to {_fmt(row[high_key], digits)})"


def _p(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def improvement_markdown(rows: list[dict], synthetic: bool) -> str:
    """CDLM over the radiological model: discrimination, reclassification and net benefit, in Markdown."""
    lines = []
    if synthetic:
        lines += ["> **SYNTHETIC DATA** — every number below comes from a simulated cohort.", ""]
    lines += [
        "### CDLM compared with the radiological model",
        "",
        "| Modality | Cohort | n | ΔAUC (95% bootstrap CI) | DeLong p | NRI, continuous (95% CI) | p | "
        "IDI (95% CI) | p |",
        "|" + "---|" * 9,
    ]
    for row in rows:
        cells = [
            MODALITY_LABELS.get(row["modality"], row["modality"]),
            COHORT_LABELS.get(row["cohort"], row["cohort"]),
            str(row["n"]),
        ]
        if row.get("note"):
            cells += [row["note"]] + ["—"] * 5
        else:
            cells += [
                _ci(row, "auc_difference"),
                _p(row["delong_p"]),
                _ci(row, "nri"),
                _p(row["nri_p"]),
                _ci(row, "idi"),
                _p(row["idi_p"]),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Net benefit difference CDLM − radiological model (95% bootstrap CI):", ""]
    header = ["Modality", "Cohort"] + [f"pt = {pt:g}" for pt in NET_BENEFIT_THRESHOLDS]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        if row.get("note"):
            continue
        cells = [MODALITY_LABELS.get(row["modality"], row["modality"]), COHORT_LABELS.get(row["cohort"], row["cohort"])]
        for pt in NET_BENEFIT_THRESHOLDS:
            tag = f"nb_{round(100 * pt):02d}"
            cells.append(_ci(row, f"{tag}_difference"))
        lines.append("| " + " | ".join(cells) + " |")
    boot = next((r for r in rows if "n_boot" in r), None)
    detail = f"{boot['n_boot']} resamples, seed {boot['seed']}" if boot else "no resamples"
    lines += [
        "",
        f"*ΔAUC = AUC(CDLM) − AUC(radiological); bootstrap: patients resampled within MVI+ and MVI− "
        f"({detail}), percentile CIs. NRI: continuous (category-free) net reclassification improvement; "
        "IDI: integrated discrimination improvement; both with Hmisc::improveProb standard errors "
        "(Wald CIs).*",
        "",
    ]
    return "\n".join(lines)
