"""``mvi-tf recalibrate``: logistic recalibration of a run's CDLM for a new site, as an explicit, opt-in step.

The site's labelled patients are the rows of the run's ``predictions.csv`` whose ``cohort`` (else ``split``)
is the named cohort, or, with ``records_dir``, that cohort's TFRecords scored here with the run's CDLM. On
them (or on a seeded, label-stratified fraction, the rest held out to show the effect)
``logit P(MVI) = a + b logit(p)`` is fitted (``b = 1`` unless the slope is asked for; see
:func:`mvi_tf.calibration.logistic_recalibration`). The result is a new run directory that ``mvi-tf export``
turns into a new model version: its ``cdlm.keras`` is the original CDLM followed by a
:class:`ProbabilityRecalibration` layer, so the SavedModel and TFLite models apply the recalibration
themselves; ``thresholds.json`` carries the training Youden threshold mapped through the same (monotone)
function, so every patient keeps the predicted group; ``recalibration.json`` holds the fit and the
calibration before and after, which the model card shows; ``site_predictions.csv`` lists the site's patients
with their scores before and after. The original run is not changed.
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
from mvi_tf.contract import (
    CONFIG_FILE,
    FEATURE_SELECTION_FILE,
    METRICS_FILE,
    PREDICTIONS_FILE,
    SCHEMA_FILE,
    RunFiles,
)

RECALIBRATION_JSON = "recalibration.json"
COPIED_FILES = (SCHEMA_FILE, FEATURE_SELECTION_FILE, METRICS_FILE, CONFIG_FILE)
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


def _site_from_records(model: keras.Model, run_dir: Path, records_dir: Path, cohort: str) -> pd.DataFrame:
    """Score the cohort's TFRecords (``mvi-tf prepare`` output) with the run's CDLM: patient_id, label, cdlm."""
    from mvi_tf.data import to_numpy
    from mvi_tf.export import model_card as card_lib

    run = card_lib.read_run(run_dir)
    modality = card_lib.schema_modality(run["schema"])
    indices = card_lib.selected_indices(run["schema"], run["selected"])
    arrays = to_numpy(str(records_dir), modality, cohorts=[cohort])
    if len(arrays["label"]) == 0:
        raise ValueError(f"No {modality} records of cohort {cohort!r} under {records_dir}.")
    phases = [t.name.split(":")[0] for t in model.inputs if t.name.split(":")[0] != "tabular"]
    missing = [p for p in phases if p not in arrays]
    if missing:
        raise ValueError(f"Records in {records_dir}/{modality} lack the model's phases {missing}.")
    inputs = {p: arrays[p].astype(np.float32) for p in phases}
    inputs["tabular"] = arrays["tabular"][:, indices].astype(np.float32)
    scores = model.predict(inputs, batch_size=16, verbose=0)["mvi_probability"].reshape(-1)
    return pd.DataFrame({"patient_id": [str(v) for v in arrays["patient_id"]],
                         "label": arrays["label"].astype(int).reshape(-1), "cdlm": scores.astype(float)})


def recalibrate_run(
    run_dir: str | Path,
    cohort: str,
    out_dir: str | Path,
    fit_slope: bool = False,
    fit_fraction: float = 1.0,
    seed: int = 0,
    records_dir: str | Path | None = None,
) -> RecalibrationResult:
    """Fit a logistic recalibration of the CDLM on one cohort's patients and write a recalibrated run directory.

    Parameters
    ----------
    run_dir : str or Path
        Training run directory (``cdlm.keras``, ``thresholds.json``, ``predictions.csv``).
    cohort : str
        The site's patients: without ``records_dir``, the value of ``predictions.csv``'s ``cohort`` (else
        ``split``) column; with it, the ``cohort`` of the TFRecords.
    out_dir : str or Path
        New run directory; must not exist yet.
    fit_slope : bool, default False
        Fit intercept and slope; by default only the intercept (calibration-in-the-large).
    fit_fraction : float, default 1.0
        Share of the cohort used for the fit (stratified by label, seeded); the rest is held out and the
        calibration before/after is reported on it.
    seed : int, default 0
        Seed of that split.
    records_dir : str or Path, optional
        TFRecords folder (``mvi-tf prepare``) holding the site's labelled patients, scored here with the run's
        CDLM; they are listed with their scores before and after in ``site_predictions.csv``.

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
    files = RunFiles(run_dir)
    for path in (files.cdlm_path, files.predictions_path, files.thresholds_path):
        if not path.is_file():
            raise FileNotFoundError(f"Run directory {run_dir} lacks {path.name} (written by `mvi-tf train`).")
    path = files.predictions_path
    frame = files.predictions(dtype={"patient_id": str})
    base = load_keras_model(files.cdlm_path)
    if records_dir is None:
        site = _site_rows(frame, cohort, path)[["patient_id", "label", "cdlm"]].reset_index(drop=True)
    else:
        site = _site_from_records(base, run_dir, Path(records_dir), cohort)
    y, p = site["label"].to_numpy(int), site["cdlm"].to_numpy(float)
    fitting = _split_fit(y, fit_fraction, seed) if fit_fraction < 1.0 else np.ones(y.size, dtype=bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # 0/1 predictions are left out of the fit and counted
        fit = calibration.logistic_recalibration(y[fitting], p[fitting], fit_slope=fit_slope)
    after = calibration.recalibrate(p, fit)
    parts = {"fit": fitting, "held_out": ~fitting}
    record = {
        "cohort": cohort,
        "source": f"{PREDICTIONS_FILE} of the run" if records_dir is None else f"TFRecords in {Path(records_dir).name}",
        "method": "intercept and slope" if fit_slope else "intercept only (calibration-in-the-large)",
        "intercept": fit.intercept, "intercept_ci": list(fit.intercept_ci),
        "slope": fit.slope, "slope_ci": list(fit.slope_ci),
        "fit_fraction": fit_fraction, "seed": seed, "n_fit": int(fitting.sum()), "n_held_out": int((~fitting).sum()),
        "source_run": run_dir.name,
        "before": {k: _summary(y[m], p[m]) for k, m in parts.items()},
        "after": {k: _summary(y[m], after[m]) for k, m in parts.items()},
    }
    site = site.rename(columns={"cdlm": "cdlm_before"}).assign(cdlm=after, recalibration_fit=fitting.astype(int))
    _write_run(run_dir, out_dir, recalibrated_model(base, fit), fit, frame, site, record)
    return RecalibrationResult(out_dir=out_dir, fit=fit, record=record)


def _write_run(run_dir: Path, out_dir: Path, model: keras.Model, fit: calibration.RecalibrationFit,
               frame: pd.DataFrame, site: pd.DataFrame, record: dict) -> None:
    out_dir.mkdir(parents=True)
    try:
        for name in COPIED_FILES:
            if (run_dir / name).is_file():
                shutil.copy2(run_dir / name, out_dir / name)
        source, target = RunFiles(run_dir), RunFiles(out_dir)
        model.save(target.cdlm_path)
        thresholds = source.thresholds()
        value = thresholds["cdlm"]["threshold"] if isinstance(thresholds["cdlm"], dict) else thresholds["cdlm"]
        mapped = float(calibration.recalibrate([float(value)], fit)[0])
        thresholds["cdlm"] = mapped
        target.thresholds_path.write_text(json.dumps(thresholds, indent=2))
        record["threshold"] = {"original": float(value), "recalibrated": mapped}
        out = frame.copy()
        if "cdlm" in out.columns:
            out["cdlm"] = calibration.recalibrate(out["cdlm"].to_numpy(float), fit)
        fit_ids = set(site.loc[site["recalibration_fit"] == 1, "patient_id"])
        out["recalibration_fit"] = out["patient_id"].isin(fit_ids).astype(int)
        out.to_csv(target.predictions_path, index=False)
        site.to_csv(out_dir / "site_predictions.csv", index=False)
        (out_dir / RECALIBRATION_JSON).write_text(json.dumps(record, indent=2))
    except Exception:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
