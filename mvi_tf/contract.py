"""The contract between stages: the files one stage writes and the next reads (docs/architecture.md).

File names of the TFRecords folder and of the training run directory are defined here once, with
:class:`RunFiles` (typed paths and readers over a run directory), :class:`StudyLayout` (where each stage of a
study writes) and one JSON reader/writer pair. The module is pure Python (numpy, pandas and yaml are imported
lazily): ``data_prep`` worker processes import it, and importing it must not start TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

# --- TFRecords folder (one per modality, written by ``mvi-tf prepare``) ---------------------------------------
SCHEMA_FILE = "schema.json"
"""Feature schema of the records (phases, image size, tabular encoding, synthetic flag); copied into a run."""

# --- training run directory (written by ``mvi-tf train``) -----------------------------------------------------
CONFIG_FILE = "config.yaml"
PREDICTIONS_FILE = "predictions.csv"
METRICS_FILE = "metrics.json"
THRESHOLDS_FILE = "thresholds.json"
FEATURE_SELECTION_FILE = "feature_selection.json"
FEATURE_SELECTION_TABLE = "feature_selection.csv"
STACKING_FILE = "stacking.json"
OOF_FILE = "oof_signatures.csv"
CDLM_MODEL = "cdlm.keras"
FUSION_MODEL = "fusion.keras"
CLINICAL_MODEL = "clinical_model.json"
RADIOLOGICAL_MODEL = "radiological_model.json"


def signature_model(phase: str) -> str:
    """File name of a phase's signature model in a run directory (``signature_<phase>.keras``)."""
    return f"signature_{phase}.keras"


# --- JSON --------------------------------------------------------------------------------------------------------
def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """Read a JSON object from ``path``.

    Raises
    ------
    FileNotFoundError
        When ``path`` is not a file.
    ValueError
        When the file is not valid JSON or does not hold an object; the one-line message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Expected file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object. Received: {type(data).__name__}")
    return data


def read_json_or_none(path: str | os.PathLike) -> dict[str, Any] | None:
    """:func:`read_json`, or None when the file is missing, unreadable or not a JSON object."""
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def to_jsonable(value: object) -> object:
    """Convert numpy scalars/arrays, tuples, paths and non-finite floats (-> None) for strict JSON."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [to_jsonable(v) for v in value.tolist()]
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def json_text(obj: object) -> str:
    """Strict JSON text as :func:`write_json` writes it: indent 2, NaN/inf as null, a final newline."""
    return json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n"


def temporary_name(name: str) -> str:
    """Name under which :func:`write_json` writes ``name`` before renaming it into place (``.<name>.tmp``)."""
    return f".{name}.tmp"


def write_json(path: str | os.PathLike, obj: object, *, strict: bool = False) -> Path:
    """Write :func:`json_text` of ``obj`` to ``path`` atomically (:func:`temporary_name`, then a rename).

    Parameters
    ----------
    path : path-like
        Destination.
    obj : object
        What to write.
    strict : bool
        Write ``obj`` as it is: NaN or infinity raise ``ValueError`` (and numpy values ``TypeError``) instead of
        being converted (TFRecords schemas, whose every number must be real).

    Returns
    -------
    Path
    """
    path = Path(path)
    tmp = path.with_name(temporary_name(path.name))
    text = json.dumps(obj, indent=2, allow_nan=False) + "\n" if strict else json_text(obj)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML mapping, or ``{}`` when the file holds something else (or nothing)."""
    import yaml

    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


# --- run directory -------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RunFiles:
    """Paths and typed readers of one training run directory (docs/architecture.md, "Run directory").

    Attributes
    ----------
    root : Path
        The run directory.
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def schema_path(self) -> Path:
        return self.root / SCHEMA_FILE

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def predictions_path(self) -> Path:
        return self.root / PREDICTIONS_FILE

    @property
    def metrics_path(self) -> Path:
        return self.root / METRICS_FILE

    @property
    def thresholds_path(self) -> Path:
        return self.root / THRESHOLDS_FILE

    @property
    def feature_selection_path(self) -> Path:
        return self.root / FEATURE_SELECTION_FILE

    @property
    def feature_selection_table_path(self) -> Path:
        return self.root / FEATURE_SELECTION_TABLE

    @property
    def stacking_path(self) -> Path:
        return self.root / STACKING_FILE

    @property
    def oof_path(self) -> Path:
        return self.root / OOF_FILE

    @property
    def cdlm_path(self) -> Path:
        return self.root / CDLM_MODEL

    @property
    def fusion_path(self) -> Path:
        return self.root / FUSION_MODEL

    @property
    def clinical_model_path(self) -> Path:
        return self.root / CLINICAL_MODEL

    @property
    def radiological_model_path(self) -> Path:
        return self.root / RADIOLOGICAL_MODEL

    def signature_path(self, phase: str) -> Path:
        return self.root / signature_model(phase)

    def schema(self) -> dict[str, Any]:
        """``schema.json`` (the records' schema copied by ``mvi-tf train``)."""
        return read_json(self.schema_path)

    def metrics(self) -> dict[str, Any]:
        """``metrics.json``."""
        return read_json(self.metrics_path)

    def thresholds(self) -> dict[str, Any]:
        """``thresholds.json`` as written: ``{model: threshold}`` (readers interpret nested forms)."""
        return read_json(self.thresholds_path)

    def feature_selection(self) -> dict[str, Any]:
        """``feature_selection.json``."""
        return read_json(self.feature_selection_path)

    def config(self) -> dict[str, Any]:
        """``config.yaml`` as a mapping (``{}`` when it holds none)."""
        return read_yaml(self.config_path)

    def predictions(self, **read_csv_kwargs: Any) -> pd.DataFrame:
        """``predictions.csv`` as a DataFrame (keyword arguments go to :func:`pandas.read_csv`)."""
        import pandas as pd

        return pd.read_csv(self.predictions_path, **read_csv_kwargs)


# --- study directory --------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class StudyLayout:
    """Where each stage of a study writes (all under one directory)."""

    root: Path
    cohort_dir: Path | None = None

    @property
    def cohort(self) -> Path:
        return self.cohort_dir if self.cohort_dir is not None else self.root / "cohort"

    @property
    def records(self) -> Path:
        return self.root / "tfrecords"

    @property
    def runs(self) -> Path:
        """Parent of the run directories (one per modality)."""
        return self.root / "runs"

    def run(self, modality: str) -> Path:
        return self.runs / modality

    def run_files(self, modality: str) -> RunFiles:
        """:class:`RunFiles` of a modality's run directory."""
        return RunFiles(self.run(modality))

    @property
    def evaluation(self) -> Path:
        return self.root / "evaluation"

    @property
    def compare(self) -> Path:
        return self.root / "compare"

    @property
    def explanations(self) -> Path:
        """Parent of the explain outputs (one folder per modality)."""
        return self.root / "explain"

    def explain(self, modality: str) -> Path:
        return self.explanations / modality

    @property
    def survival(self) -> Path:
        return self.root / "survival"

    @property
    def saved_models(self) -> Path:
        return self.root / "saved_models"

    @property
    def predict(self) -> Path:
        return self.root / "predict"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def stages(self) -> Path:
        return self.root / "stages"

    @property
    def timings(self) -> Path:
        """Wall time per stage, written before the report that shows it."""
        return self.root / "timings.json"

    @property
    def study_info(self) -> Path:
        """The cohort folder, the synthetic flag and the settings of the study (``mvi-tf demo`` / ``study``)."""
        return self.root / "study.json"

    @property
    def holdout_prediction(self) -> Path:
        return self.predict / "holdout_prediction.json"
