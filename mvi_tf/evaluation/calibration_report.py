"""Calibration table and figures of ``mvi-tf evaluate``: every model on every cohort and, where a cohort
spans several centres, on each centre (definitions in :mod:`mvi_tf.calibration`)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from mvi_tf import calibration as cal
from mvi_tf.evaluation.rundir import COHORT_LABELS, RunData, model_label
from mvi_tf.evaluation.table3 import MODALITY_LABELS

ALL_CENTRES = "all"
"""``centre`` value of the rows that pool every centre of a cohort."""


def calibration_summary(y_true: np.ndarray, y_prob: np.ndarray, alpha: float = 0.05) -> dict:
    """:func:`mvi_tf.calibration.calibration` as a flat dict; warnings (a single class, separation, 0/1
    predictions) become a ``note`` instead of stopping the evaluation."""
    y = np.asarray(y_true).astype(int)
    if y.size == 0:
        return {"n": 0, "note": "no patients"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        result = cal.calibration(y, np.asarray(y_prob, dtype=float), alpha=alpha)
    notes = sorted({str(w.message).rstrip(".") for w in caught if issubclass(w.category, RuntimeWarning)})
    return {**result.as_dict(), "note": "; ".join(notes)}


def _groups(run: RunData, cohort: str) -> list[tuple[str, pd.DataFrame]]:
    data = run.cohort(cohort)
    groups = [(ALL_CENTRES, data)]
    if "centre" in data.columns and data["centre"].nunique() > 1:
        groups += [(str(c), part) for c, part in data.groupby(data["centre"].astype(str), sort=True)]
    return groups


def calibration_rows(runs: list[RunData], cohorts: tuple[str, ...], alpha: float = 0.05) -> list[dict]:
    """One row per modality, model, cohort and centre (``"all"`` pools the cohort's centres)."""
    rows = []
    for run in runs:
        for cohort in cohorts:
            for centre, data in _groups(run, cohort):
                for model in run.models:
                    row = {
                        "modality": run.modality,
                        "model": model,
                        "model_label": model_label(model),
                        "cohort": cohort,
                        "centre": centre,
                    }
                    row.update(calibration_summary(data["label"].to_numpy(), data[model].to_numpy(), alpha))
                    rows.append(row)
    return rows


def _num(value: object, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def _with_ci(row: dict, key: str, digits: int = 2) -> str:
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    low, high = row.get(f"{key}_ci_low"), row.get(f"{key}_ci_high")
    return f"{_num(value, digits)} ({_num(low, digits)} to {_num(high, digits)})"


def calibration_markdown(rows: list[dict], cohorts: tuple[str, ...], synthetic: bool) -> str:
    """The calibration table in Markdown: per model, cohort and centre."""
    lines = []
    if synthetic:
        lines += ["> **SYNTHETIC DATA** — every number below comes from a simulated cohort.", ""]
    lines += [
        "### Calibration of the predicted MVI probabilities",
        "",
        "| Model | Modality | Cohort | Centre | n (MVI+) | Observed / mean predicted | O/E (95% CI) | "
        "Calibration-in-the-large (95% CI) | Calibration slope (95% CI) | Brier (scaled) | E_avg |",
        "|" + "---|" * 11,
    ]
    order = {c: i for i, c in enumerate(cohorts)}
    for row in sorted(rows, key=lambda r: (r["modality"], order.get(r["cohort"], 99), r["centre"] != "all")):
        if not row.get("n"):
            continue
        cells = [
            row["model_label"],
            MODALITY_LABELS.get(row["modality"], row["modality"]),
            COHORT_LABELS.get(row["cohort"], row["cohort"]),
            row["centre"],
            f"{row['n']} ({row['n_events']})",
            f"{_num(row['observed'], 3)} / {_num(row['expected'], 3)}",
            _with_ci(row, "oe_ratio"),
            _with_ci(row, "intercept"),
            _with_ci(row, "slope"),
            f"{_num(row['brier'], 3)} ({_num(row['brier_scaled'], 2)})",
            _num(row["e_avg"], 3),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "*Calibration-in-the-large: intercept of a logistic model with logit(p) as offset (0 ideal, > 0 the "
        "model under-predicts); slope: logistic recalibration on logit(p) (1 ideal, < 1 predictions too "
        "extreme); O/E: observed / expected MVI count (Poisson CI); scaled Brier: 1 - Brier / (prevalence x "
        "(1 - prevalence)); E_avg: mean |lowess(observed) - predicted| (rms::val.prob definitions). Wald 95% "
        "CIs.*",
        "",
    ]
    return "\n".join(lines)


def calibration_curves(run: RunData, cohort: str) -> dict[str, cal.CalibrationCurve]:
    """Calibration-plot points of every model of a run on one cohort (empty when the cohort is)."""
    data = run.cohort(cohort)
    if data.empty:
        return {}
    y = data["label"].to_numpy()
    return {model_label(m): cal.calibration_curve(y, data[m].to_numpy()) for m in run.models}


def write_calibration_figures(
    runs: list[RunData], cohorts: tuple[str, ...], out_dir: Path, synthetic: bool
) -> list[str]:
    """``calibration_<modality>_<cohort>.png`` per run and cohort; returns the file names."""
    from mvi_tf.evaluation.plots import plot_calibration

    files = []
    for run in runs:
        modality = MODALITY_LABELS.get(run.modality, run.modality)
        for cohort in cohorts:
            curves = calibration_curves(run, cohort)
            if not curves:
                continue
            n = run.cohort(cohort).shape[0]
            name = f"calibration_{run.modality}_{cohort}.png"
            title = f"Calibration, {modality}, {COHORT_LABELS[cohort]} (n = {n})"
            plot_calibration(curves, model_label("cdlm"), title, out_dir / name, synthetic)
            files.append(name)
    return files
