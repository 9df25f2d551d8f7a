"""Read what evaluation needs from a run directory (docs/architecture.md, "Run directory").

Only ``predictions.csv`` and ``thresholds.json`` are read for numbers; ``metrics.json``, ``config.yaml`` and
``schema.json`` for the modality and the synthetic flag. Every check names the file, patient and value.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from mvi_tf import stats
from mvi_tf.contract import (  # noqa: F401  (to_jsonable, write_json: this module's public JSON writers)
    PREDICTIONS_FILE,
    THRESHOLDS_FILE,
    RunFiles,
    read_json,
    to_jsonable,
    write_json,
)

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "prospective")
"""Values of the ``split`` column."""

COHORTS = {
    "training": ("train", "val"),
    "train": ("train",),
    "internal_validation": ("val",),
    "prospective": ("prospective",),
}
"""Evaluation cohorts and the splits they pool. ``training`` is the paper's retrospective training cohort
(fit split + internal validation split); ``train`` is the split the thresholds were chosen on."""

COHORT_LABELS = {
    "training": "Retrospective training cohort (train + internal validation)",
    "train": "Training split",
    "internal_validation": "Internal validation split",
    "prospective": "Prospective validation cohort",
}

PHASE_LABELS = {
    "plain": "Plain phase",
    "arterial": "Arterial phase",
    "portal": "Portal venous phase",
    "t2": "T2WI",
    "transitional": "Transitional phase",
    "hepatobiliary": "HBP T1WI",
}

SYNTHETIC_LABEL = "SYNTHETIC DATA"

REQUIRED_COLUMNS = ("patient_id", "split", "label")


def model_columns(columns: list[str]) -> list[str]:
    """Score columns in Table 3 order: clinical, radiological, signature_<phase>..., fusion, cdlm."""
    signatures = [c for c in columns if re.fullmatch(r"signature_[a-z0-9_]+", c)]
    ordered = [c for c in ("clinical", "radiological") if c in columns] + signatures
    return ordered + [c for c in ("fusion", "cdlm") if c in columns]


def model_label(model: str) -> str:
    """Human-readable row label of a score column (``signature_t2`` -> ``T2WI signature``)."""
    if model.startswith("signature_"):
        phase = model[len("signature_") :]
        return f"{PHASE_LABELS.get(phase, phase.replace('_', ' ').capitalize())} signature"
    return {
        "clinical": "Clinical model",
        "radiological": "Radiological model",
        "fusion": "Fusion DL model",
        "cdlm": "CDLM",
    }.get(model, model)


@dataclasses.dataclass(frozen=True)
class RunData:
    """Predictions and thresholds of one training run.

    Attributes
    ----------
    run_dir : Path
    modality : str
        ``ct`` or ``mri``.
    predictions : pandas.DataFrame
        ``predictions.csv`` with ``label`` as int 0/1 and ``patient_id`` as str.
    models : list[str]
        Score columns present, in Table 3 order.
    thresholds : dict[str, float]
        Youden threshold per model from ``thresholds.json``.
    threshold_source : dict[str, str]
        :data:`THRESHOLD_FROM_FILE` or :data:`THRESHOLD_RECOMPUTED` per model.
    synthetic : bool
        Whether the run's cohort is synthetic.
    """

    run_dir: Path
    modality: str
    predictions: pd.DataFrame
    models: list[str]
    thresholds: dict[str, float]
    threshold_source: dict[str, str]
    synthetic: bool

    def cohort(self, cohort: str) -> pd.DataFrame:
        """Rows of one evaluation cohort (see :data:`COHORTS`)."""
        if cohort not in COHORTS:
            raise ValueError(
                f"Unknown cohort. Expected one of {sorted(COHORTS)}. Received: cohort={cohort!r}"
            )
        return self.predictions[self.predictions["split"].isin(COHORTS[cohort])]


def _flag(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def detect_synthetic(run_dir: str | Path) -> bool:
    """Whether a run was trained on a synthetic cohort.

    True when ``metrics.json`` has ``"synthetic": true``, or ``config.yaml`` has ``data: {synthetic: true}``,
    or the copied ``schema.json`` has ``"synthetic": true``; False otherwise.
    """
    files = RunFiles(Path(run_dir))
    candidates: list[object] = []
    if files.metrics_path.is_file():
        candidates.append(files.metrics().get("synthetic"))
    if files.config_path.is_file():
        data = files.config().get("data")
        candidates.append(data.get("synthetic") if isinstance(data, dict) else None)
    if files.schema_path.is_file():
        candidates.append(files.schema().get("synthetic"))
    return any(_flag(c) for c in candidates)


def _read_thresholds(path: Path) -> dict[str, float]:
    """``thresholds.json`` as ``{model: float}``; values are numbers or objects with a ``threshold`` key."""
    raw = read_json(path)
    if isinstance(raw.get("thresholds"), dict):
        raw = raw["thresholds"]
    out: dict[str, float] = {}
    for model, value in raw.items():
        if isinstance(value, dict):
            value = value.get("threshold")
        if isinstance(value, bool) or not isinstance(value, int | float):
            logger.debug("Ignoring non-numeric entry %r in %s", model, path)  # e.g. "method": "youden"
            continue
        if np.isnan(value):  # +/-inf are legal: pROC's outermost thresholds (everyone negative / positive)
            raise ValueError(f"{path}: threshold of {model!r} must be a number. Received: {value!r}")
        out[model] = float(value)
    return out


THRESHOLD_FROM_FILE = THRESHOLDS_FILE
"""``threshold_source`` of a threshold read from the run's thresholds file."""
THRESHOLD_RECOMPUTED = "recomputed on train split"
"""``threshold_source`` of a threshold fitted on the ``train`` split because the thresholds file lacked it."""


def load_run(run_dir: str | Path) -> RunData:
    """Load and validate ``predictions.csv`` and ``thresholds.json`` of a run directory.

    Models missing from ``thresholds.json`` get the Youden threshold of the ``train`` split, recorded as
    such in ``threshold_source`` (and logged), so the training-only rule still holds.

    Parameters
    ----------
    run_dir : str or Path
        A directory written by ``mvi-tf train``.

    Returns
    -------
    RunData
    """
    files = RunFiles(Path(run_dir))
    df, models = _read_predictions(files)
    thresholds, source = _run_thresholds(files, df, models)
    return RunData(
        run_dir=files.root,
        modality=_run_modality(files, df),
        predictions=df,
        models=models,
        thresholds=thresholds,
        threshold_source=source,
        synthetic=detect_synthetic(files.root),
    )


def _read_predictions(files: RunFiles) -> tuple[pd.DataFrame, list[str]]:
    """``predictions.csv`` checked (columns, unique patients, splits, 0/1 labels, probabilities) and its models."""
    pred_path = files.predictions_path
    if not pred_path.is_file():
        raise FileNotFoundError(f"No {PREDICTIONS_FILE} in run directory {files.root}")
    df = files.predictions(dtype={"patient_id": str})
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(
            f"{pred_path} lacks required columns {missing}. Received: columns={list(df.columns)}"
        )
    models = model_columns(list(df.columns))
    if not models:
        raise ValueError(
            f"{pred_path} has no score column (clinical, radiological, signature_<phase>, fusion, cdlm). "
            f"Received: columns={list(df.columns)}"
        )
    dup = df["patient_id"][df["patient_id"].duplicated()]
    if not dup.empty:
        raise ValueError(f"{pred_path}: patient {dup.iloc[0]!r} appears more than once.")
    bad_split = ~df["split"].isin(SPLITS)
    if bad_split.any():
        row = df[bad_split].iloc[0]
        raise ValueError(
            f"{pred_path}: patient {row['patient_id']!r} has split {row['split']!r}; "
            f"expected one of {SPLITS}."
        )
    labels = pd.to_numeric(df["label"], errors="coerce")
    bad_label = ~labels.isin((0, 1))
    if bad_label.any():
        row = df[bad_label].iloc[0]
        raise ValueError(
            f"{pred_path}: patient {row['patient_id']!r} has label {row['label']}; expected 0 or 1."
        )
    df["label"] = labels.astype(int)
    for model in models:
        scores = pd.to_numeric(df[model], errors="coerce")
        values = scores.to_numpy(dtype=float)
        bad = ~np.isfinite(values) | (values < 0.0) | (values > 1.0)
        if bad.any():
            row = df[bad].iloc[0]
            raise ValueError(
                f"{pred_path}: patient {row['patient_id']!r} has no valid {model!r} probability in [0, 1]. "
                f"Received: {row[model]!r}"
            )
        df[model] = scores.astype(float)
    return df, models


def _run_modality(files: RunFiles, df: pd.DataFrame) -> str:
    """The run's one modality: the ``modality`` column, else ``config.yaml`` (``data.modality`` or ``modality``)."""
    if "modality" in df.columns and df["modality"].nunique() == 1:
        return str(df["modality"].iloc[0]).lower()
    if "modality" in df.columns:
        raise ValueError(
            f"{files.predictions_path} mixes modalities {sorted(df['modality'].unique())}; one run per modality."
        )
    config = files.config() if files.config_path.is_file() else {}
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    modality = str(data.get("modality", config.get("modality", ""))).lower()
    if not modality:
        raise ValueError(
            f"Cannot tell the modality of run {files.root}: no modality column or config entry."
        )
    return modality


def _run_thresholds(
    files: RunFiles, df: pd.DataFrame, models: list[str]
) -> tuple[dict[str, float], dict[str, str]]:
    """Threshold and its source per model: ``thresholds.json``, else the Youden cut of the ``train`` split."""
    thr_path = files.thresholds_path
    thresholds = _read_thresholds(thr_path) if thr_path.is_file() else {}
    source: dict[str, str] = {}
    train = df[df["split"] == "train"]
    for model in models:
        if model in thresholds:
            source[model] = THRESHOLD_FROM_FILE
            continue
        if train.empty:
            raise ValueError(
                f"Run {files.root}: no threshold for {model!r} in {thr_path} and no train split to fit one."
            )
        thresholds[model] = stats.youden_threshold(
            train["label"].to_numpy(), train[model].to_numpy()
        ).threshold
        source[model] = THRESHOLD_RECOMPUTED
        logger.warning(
            "Run %s: %s has no threshold in %s; using the train-split Youden threshold.",
            files.root,
            model,
            THRESHOLDS_FILE,
        )
    return {m: thresholds[m] for m in models}, source


