"""``mvi-tf recalibrate``: logistic recalibration of a run's CDLM for a new site, as an explicit, opt-in step.

The site's labelled patients are the rows of the run's ``predictions.csv`` whose ``cohort`` (else ``split``)
is the named cohort. On them (or on a seeded, label-stratified fraction, the rest held out to show the
effect) ``logit P(MVI) = a + b logit(p)`` is fitted (``b = 1`` unless the slope is asked for; see
:func:`mvi_tf.calibration.logistic_recalibration`). The result is a new run directory that ``mvi-tf export``
turns into a new model version: its ``cdlm.keras`` is the original CDLM followed by a
:class:`ProbabilityRecalibration` layer, so the SavedModel and TFLite models apply the recalibration
themselves; ``thresholds.json`` carries the training Youden threshold mapped through the same (monotone)
function, so every patient keeps the predicted group; ``recalibration.json`` holds the fit and the
calibration before and after, which the model card shows. The original run is not changed.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
from keras import ops

from mvi_tf import calibration

RECALIBRATION_JSON = "recalibration.json"
COPIED_FILES = ("schema.json", "feature_selection.json", "metrics.json", "config.yaml")
EPSILON = 1e-7


@keras.saving.register_keras_serializable(package="mvi_tf", name="ProbabilityRecalibration")
class ProbabilityRecalibration(keras.layers.Layer):
    """``p -> sigmoid(intercept + slope * logit(clip(p, eps, 1 - eps)))`` with fixed coefficients."""

    def __init__(self, intercept: float = 0.0, slope: float = 1.0, epsilon: float = EPSILON, **kwargs):
        super().__init__(**kwargs)
        self.intercept = float(intercept)
        self.slope = float(slope)
        self.epsilon = float(epsilon)

    def call(self, probability):
        p = ops.clip(probability, self.epsilon, 1.0 - self.epsilon)
        logit = ops.log(p) - ops.log(1.0 - p)  # log1p has no TFLite builtin
        return ops.sigmoid(self.intercept + self.slope * logit)

    def get_config(self) -> dict:
        return {**super().get_config(), "intercept": self.intercept, "slope": self.slope, "epsilon": self.epsilon}


def recalibrated_model(model: keras.Model, fit: calibration.RecalibrationFit) -> keras.Model:
    """The CDLM with its ``mvi_probability`` output passed through :class:`ProbabilityRecalibration`; every
    other output (the phase signatures) and every input name stay as they are."""
    inputs = {
        t.name.split(":")[0]: keras.Input(tuple(t.shape)[1:], dtype=t.dtype, name=t.name.split(":")[0])
        for t in model.inputs
    }
    outputs = model(inputs)
    if not isinstance(outputs, dict) or "mvi_probability" not in outputs:
        names = sorted(outputs) if isinstance(outputs, dict) else type(outputs).__name__
        raise ValueError(f"Model {model.name!r} has no 'mvi_probability' output. Received: {names}")
    layer = ProbabilityRecalibration(fit.intercept, fit.slope, name="mvi_recalibration")
    outputs = {**outputs, "mvi_probability": layer(outputs["mvi_probability"])}
    return keras.Model(inputs, outputs, name=f"{model.name}_recalibrated")


def _site_rows(frame: pd.DataFrame, cohort: str, path: Path) -> pd.DataFrame:
    column = "cohort" if "cohort" in frame.columns and (frame["cohort"].astype(str) == cohort).any() else "split"
    rows = frame[frame[column].astype(str) == cohort] if column in frame.columns else frame.iloc[:0]
    if rows.empty:
        have = sorted(set(frame.get("cohort", pd.Series(dtype=str)).astype(str)) | set(frame["split"].astype(str)))
        raise ValueError(f"{path}: no patient of cohort {cohort!r}. Received cohorts/splits: {have}")
    bad = rows[~pd.to_numeric(rows["label"], errors="coerce").isin((0, 1))]
    if not bad.empty:
        raise ValueError(f"{path}: patient {bad.iloc[0]['patient_id']!r} has label {bad.iloc[0]['label']!r}; "
                         "recalibration needs a 0/1 label for every patient of the cohort.")
    return rows


def _split_fit(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the fitting patients: ``round(fraction * n)`` per label, chosen by a seeded permutation."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(labels.size, dtype=bool)
    for value in (0, 1):
        members = np.flatnonzero(labels == value)
        mask[rng.permutation(members)[: int(round(fraction * members.size))]] = True
    return mask


def _summary(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    if y.size == 0:
        return {"n": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = calibration.calibration(y, p).as_dict()
    keys = ("n", "n_events", "observed", "expected", "intercept", "slope", "brier", "oe_ratio", "e_avg")
    return {k: (None if isinstance(result[k], float) and not np.isfinite(result[k]) else result[k]) for k in keys}


@dataclasses.dataclass(frozen=True)
class RecalibrationResult:
    """What :func:`recalibrate_run` wrote and measured.

    Attributes
    ----------
    out_dir : Path
        The new run directory (export it with ``mvi-tf export --run``).
    fit : calibration.RecalibrationFit
    record : dict
        The content of ``recalibration.json`` (fit, patients, calibration before/after per part).
    """

    out_dir: Path
    fit: calibration.RecalibrationFit
    record: dict


def recalibrate_run(
    run_dir: str | Path,
    cohort: str,
    out_dir: str | Path,
    fit_slope: bool = False,
    fit_fraction: float = 1.0,
    seed: int = 0,
) -> RecalibrationResult:
    """Fit a logistic recalibration of the CDLM on one cohort's patients and write a recalibrated run directory.

    Parameters
    ----------
    run_dir : str or Path
        Training run directory (``cdlm.keras``, ``predictions.csv`` with the site's patients scored).
    cohort : str
        Value of ``predictions.csv``'s ``cohort`` (else ``split``) column naming the site's patients.
    out_dir : str or Path
        New run directory; must not exist yet.
    fit_slope : bool, default False
        Fit intercept and slope; by default only the intercept (calibration-in-the-large).
    fit_fraction : float, default 1.0
        Share of the cohort used for the fit (stratified by label, seeded); the rest is held out and the
        calibration before/after is reported on it.
    seed : int, default 0
        Seed of that split.

    Returns
    -------
    RecalibrationResult
    """
    from mvi_tf.export.pipeline import load_keras_model

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if not 0.0 < fit_fraction <= 1.0:
        raise ValueError(f"fit_fraction must lie in (0, 1]. Received: fit_fraction={fit_fraction}")
    if out_dir.exists():
        raise FileExistsError(f"Output run directory {out_dir} exists; recalibration never overwrites a run.")
    for name in ("cdlm.keras", "predictions.csv", "thresholds.json"):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"Run directory {run_dir} lacks {name} (written by `mvi-tf train`).")
    path = run_dir / "predictions.csv"
    frame = pd.read_csv(path, dtype={"patient_id": str})
    site = _site_rows(frame, cohort, path)
    y, p = site["label"].to_numpy(int), site["cdlm"].to_numpy(float)
    fitting = _split_fit(y, fit_fraction, seed) if fit_fraction < 1.0 else np.ones(y.size, dtype=bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # 0/1 predictions are left out of the fit and counted
        fit = calibration.logistic_recalibration(y[fitting], p[fitting], fit_slope=fit_slope)
    after = calibration.recalibrate(p, fit)
    parts = {"fit": fitting, "held_out": ~fitting}
    record = {
        "cohort": cohort,
        "method": "intercept and slope" if fit_slope else "intercept only (calibration-in-the-large)",
        "intercept": fit.intercept, "intercept_ci": list(fit.intercept_ci),
        "slope": fit.slope, "slope_ci": list(fit.slope_ci),
        "fit_fraction": fit_fraction, "seed": seed, "n_fit": int(fitting.sum()), "n_held_out": int((~fitting).sum()),
        "source_run": run_dir.name,
        "before": {k: _summary(y[m], p[m]) for k, m in parts.items()},
        "after": {k: _summary(y[m], after[m]) for k, m in parts.items()},
    }
    model = recalibrated_model(load_keras_model(run_dir / "cdlm.keras"), fit)
    _write_run(run_dir, out_dir, model, fit, frame, site.index[fitting], record)
    return RecalibrationResult(out_dir=out_dir, fit=fit, record=record)


def _write_run(run_dir: Path, out_dir: Path, model: keras.Model, fit: calibration.RecalibrationFit,
               frame: pd.DataFrame, fit_index: pd.Index, record: dict) -> None:
    out_dir.mkdir(parents=True)
    try:
        for name in COPIED_FILES:
            if (run_dir / name).is_file():
                shutil.copy2(run_dir / name, out_dir / name)
        model.save(out_dir / "cdlm.keras")
        thresholds = json.loads((run_dir / "thresholds.json").read_text())
        value = thresholds["cdlm"]["threshold"] if isinstance(thresholds["cdlm"], dict) else thresholds["cdlm"]
        mapped = float(calibration.recalibrate([float(value)], fit)[0])
        thresholds["cdlm"] = mapped
        (out_dir / "thresholds.json").write_text(json.dumps(thresholds, indent=2))
        record["threshold"] = {"original": float(value), "recalibrated": mapped}
        out = frame.copy()
        out["cdlm"] = calibration.recalibrate(out["cdlm"].to_numpy(float), fit)
        out["recalibration_fit"] = out.index.isin(fit_index).astype(int)
        out.to_csv(out_dir / "predictions.csv", index=False)
        (out_dir / RECALIBRATION_JSON).write_text(json.dumps(record, indent=2))
    except Exception:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
