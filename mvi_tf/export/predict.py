"""``predict_patient``: MVI probability for one new patient from DICOM series, a tumour mask or ROI, and the
clinical values, through the same data_prep code path as training and any exported backend.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mvi_tf.export import model_card as card_lib
from mvi_tf.export import saved_model as sm

logger = logging.getLogger(__name__)

BACKENDS = ("savedmodel", "tflite", "keras")
PREDICTION_JSON = "prediction.json"
GRADCAM_PNG = "gradcam.png"


class PredictError(ValueError):
    """Input that cannot give a prediction (missing phase, wrong size, missing clinical value, mismatch)."""


@dataclasses.dataclass
class ModelContract:
    """What a model expects: phases, image size, ordered tabular features, encoding schema, threshold."""

    modality: str
    phases: list[str]
    image_size: int
    selected: list[str]
    schema: dict
    threshold: float
    source: str


def _load_keras(path: str | Path):
    """A ``.keras`` model, or a `PredictError` naming the file when it is not a readable Keras archive."""
    from mvi_tf.export.pipeline import load_keras_model

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Keras model not found: {path}")
    try:
        return load_keras_model(path)
    except Exception as err:  # noqa: BLE001 - Keras raises many types (ValueError, BadZipFile, OSError, ...)
        raise PredictError(f"Keras model file {path} cannot be loaded (corrupt or truncated .keras archive?): "
                           f"{type(err).__name__}: {str(err)[:200]}") from err


def _load_backend(backend: str, path: Path, keras_model=None):
    """Load the model of ``backend`` up front (before any DICOM work); a bad file gives a `PredictError`."""
    if backend == "keras":
        return keras_model if keras_model is not None else _load_keras(path)
    try:
        if backend == "savedmodel":
            return sm.load_serving_function(path)
        from mvi_tf.export.tflite import TFLiteRunner

        return TFLiteRunner(path)
    except Exception as err:  # noqa: BLE001 - TF / protobuf / LiteRT raise many types for a damaged model
        what = "SavedModel folder (saved_model.pb or variables/ corrupt or truncated?)" if backend == "savedmodel" \
            else "TFLite file (corrupt or truncated?)"
        raise PredictError(f"{path} cannot be loaded as a {what}: {type(err).__name__}: "
                           f"{str(err).splitlines()[0][:200] if str(err) else ''}") from err


def _contract_from_run(run_dir: Path) -> ModelContract:
    from mvi_tf.export.pipeline import _model_phases

    run = card_lib.read_run(run_dir)
    model = _load_keras(run["keras_model"])
    phases, image_size, _ = _model_phases(model, run["schema"])
    modality = card_lib.schema_modality(run["schema"]) or (run["config"] or {}).get("modality")
    if modality is None:
        modality = "mri" if "hepatobiliary" in phases or "t2" in phases else "ct"
    return ModelContract(modality, phases, image_size, run["selected"], run["schema"], run["threshold"],
                         f"run directory {run_dir}")


def _contract_from_card(card_path: Path) -> ModelContract:
    card = card_lib.read_model_card(card_path)
    return ModelContract(card["modality"], list(card["phases"]), int(card["image_size"]),
                         list(card["tabular_features"]), card["schema"], float(card["threshold"]),
                         f"model card {card_path}")


def resolve_model(model_path: str | Path, backend: str, run_dir: str | Path | None) -> tuple[Path, ModelContract]:
    """Find the concrete model file/folder for ``backend`` and the contract it was exported with.

    ``savedmodel``: a version folder, or a model base folder (its highest version is used). ``tflite``: a
    ``<name>-<mode>.tflite`` file beside the model base folder ``<name>/``. ``keras``: a ``.keras`` file.
    The contract comes from ``run_dir`` when given, else from the model card of the exported version (or, for
    a Keras model, from the run directory that holds it).
    """
    if backend not in BACKENDS:
        raise PredictError(f"backend must be one of {BACKENDS}. Received: backend={backend!r}")
    path = Path(model_path)
    if not path.exists():
        raise FileNotFoundError(f"Model not found: {path}")
    card_path = None
    if backend == "savedmodel":
        if not (path / "saved_model.pb").exists():
            path = sm.latest_version_dir(path)
        card_path = path / card_lib.CARD_JSON
    elif backend == "tflite":
        if path.suffix != ".tflite":
            raise PredictError(f"backend 'tflite' needs a .tflite file. Received: model_path={path}")
        stem = path.stem
        name = stem.rsplit("-", 1)[0] if stem.rsplit("-", 1)[-1] in ("float32", "dynamic", "int8") else stem
        if run_dir is None:
            card_path = sm.latest_version_dir(path.parent / name) / card_lib.CARD_JSON
    elif path.suffix != ".keras":
        raise PredictError(f"backend 'keras' needs a .keras file. Received: model_path={path}")
    elif run_dir is None:
        run_dir = path.parent
    if run_dir is not None:
        return path, _contract_from_run(Path(run_dir))
    return path, _contract_from_card(card_path)


def read_clinical(spec: str) -> dict[str, Any]:
    """Read a patient's clinical values from a JSON string, a ``.json`` file or a one-row ``.csv`` file."""
    import pandas as pd

    text = spec.strip()
    if text.startswith(("{", "[")):
        return _json_object(text, "--clinical")
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"Clinical file not found: {path}")
    if path.suffix.lower() == ".json":
        try:
            content = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as err:
            raise PredictError(f"Clinical file {path} is not UTF-8 text: {err.reason} at byte {err.start}") from err
        return _json_object(content, f"Clinical file {path}")
    if path.suffix.lower() == ".csv":
        try:
            frame = pd.read_csv(path, dtype={"patient_id": str})
        except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
            raise PredictError(f"Clinical CSV {path} cannot be read (UTF-8, comma-separated, a header and one "
                               f"row expected): {type(err).__name__}: {str(err).splitlines()[0][:160]}") from err
        if len(frame) != 1:
            raise PredictError(f"Clinical CSV {path} must hold exactly one patient row. Received: {len(frame)} rows")
        row = frame.iloc[0].to_dict()
        return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
    raise PredictError(f"--clinical must be JSON text, a .json or a .csv file. Received: {spec!r}")


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        values = json.loads(text)
    except json.JSONDecodeError as err:
        raise PredictError(f"{what} is not valid JSON: {err.msg} (line {err.lineno}, column {err.colno}). "
                           f"Received: {text[:80]!r}") from err
    if not isinstance(values, dict):
        raise PredictError(f"{what} must be a JSON object of column: value. Received: {type(values).__name__}")
    return values


def _check_series(series: Mapping[str, str | Path], contract: ModelContract) -> dict[str, Path]:
    if not series:
        raise PredictError(f"No series given; the model needs phases {contract.phases}. Received: series={{}}")
    extra = sorted(set(series) - set(contract.phases))
    if extra:
        raise PredictError(
            f"Model/phase mismatch: the {contract.modality} model takes phases {contract.phases}, not {extra}. "
            f"Received: series phases={sorted(series)}"
        )
    missing = [p for p in contract.phases if p not in series]
    if missing:
        raise PredictError(
            f"Missing phase(s) {missing}: the {contract.modality} model needs a series for every phase of "
            f"{contract.phases}. Received: series phases={sorted(series)}"
        )
    dirs = {p: Path(series[p]) for p in contract.phases}
    for phase, folder in dirs.items():
        if not folder.is_dir():
            raise FileNotFoundError(f"Series folder of phase {phase!r} not found: {folder}")
    return dirs


def encode_tabular(clinical: Mapping[str, Any] | None, contract: ModelContract) -> np.ndarray:
    """Encode the clinical values with the training schema and keep the model's features, in order."""
    from data_prep.tabular import encode_row

    if not clinical:
        raise PredictError(
            f"No clinical values given; the model needs {contract.selected}. Received: clinical={clinical!r}")
    try:
        full = np.asarray(encode_row(dict(clinical), contract.schema), dtype=np.float32).reshape(-1)
    except (KeyError, ValueError) as err:
        raise PredictError(f"Clinical values cannot be encoded: {err}") from err
    indices = card_lib.selected_indices(contract.schema, contract.selected)
    if full.shape[0] != len(card_lib.schema_feature_names(contract.schema)):
        raise PredictError(
            f"encode_row returned {full.shape[0]} values for {len(card_lib.schema_feature_names(contract.schema))} "
            "schema features."
        )
    vector = full[indices]
    bad = [contract.selected[i] for i in np.flatnonzero(~np.isfinite(vector))]
    if bad:
        raise PredictError(f"Missing or non-finite clinical value for {bad}. Received: clinical={dict(clinical)}")
    return vector


def prepare_config(contract: ModelContract):
    """The data_prep configuration the model's training records were written with (``schema.json``).

    Only the model's modality and phases are kept; the image size is the records' (checked against the model
    after preparation, so a model and schema that disagree give an error rather than a resized image).
    """
    from data_prep.config import IntensityWindow, PrepareConfig

    stored = dict(contract.schema.get("prepare_config") or {})
    kwargs: dict[str, Any] = {"phases": {contract.modality: tuple(contract.phases)}}
    kwargs["image_size"] = int(stored.get("image_size", contract.schema.get("image_size", contract.image_size)))
    for key in ("margin_mm", "slice_spacing_mm", "context_factor", "spacing_tolerance_mm", "min_lesion_ml",
                "sampling", "band_mm"):
        if key in stored:
            kwargs[key] = stored[key]
    windows = (stored.get("windows") or {}).get(contract.modality)
    if windows:
        kwargs["windows"] = {contract.modality: {p: IntensityWindow(**w) for p, w in windows.items()}}
    return PrepareConfig(**kwargs)


def _prepare_images(series_dirs, contract, mask_path, mask_phase, roi,
                    allow_shared_series: bool = False) -> tuple[dict[str, np.ndarray], Any, list]:
    from data_prep.errors import InputError
    from data_prep.prepare import prepare_patient

    if mask_path is None and roi is None:
        raise PredictError("Give a tumour mask (mask_path + mask_phase) or an ROI (x, y, z, side in mm).")
    if mask_path is not None and mask_phase is None:
        raise PredictError(f"mask_phase is required with a mask. Received: mask_path={mask_path}, mask_phase=None")
    if mask_phase is not None and mask_phase not in contract.phases:
        raise PredictError(f"mask_phase {mask_phase!r} is not a phase of the model {contract.phases}.")
    if roi is not None:
        roi = tuple(float(v) for v in roi)
        if len(roi) != 4 or not roi[3] > 0:
            raise PredictError(f"roi must be (x_mm, y_mm, z_mm, side_mm) with side > 0. Received: roi={roi}")
    config = prepare_config(contract)
    try:
        stacks = prepare_patient(
            {p: str(d) for p, d in series_dirs.items()}, contract.modality, mask_path=mask_path,
            mask_phase=mask_phase, roi=roi, config=config, allow_shared_series=allow_shared_series,
        )
    except InputError as err:
        raise PredictError(f"Data preparation failed: {err}") from err
    images, provenance = stacks, getattr(stacks, "roi", None)
    expected = (contract.image_size, contract.image_size, 3)
    for phase in contract.phases:
        if phase not in images:
            raise PredictError(f"Data preparation returned no image for phase {phase!r}.")
        shape = tuple(np.shape(images[phase]))
        if shape != expected:
            raise PredictError(
                f"Wrong image size for phase {phase!r}: the model takes {expected}. Received: {shape}")
    return ({p: np.asarray(images[p], np.float32)[None] for p in contract.phases}, provenance,
            list(getattr(stacks, "warnings", [])))


def run_backend(backend: str, path: Path, inputs: dict[str, np.ndarray], contract: ModelContract,
                keras_model=None, loaded=None) -> dict[str, np.ndarray]:
    """Run one backend on batched named inputs after checking that its inputs are the contract's.

    ``loaded`` is `_load_backend`'s result (loaded here when not given).
    """
    expected = sorted([*contract.phases, "tabular"])
    loaded = loaded if loaded is not None else _load_backend(backend, path, keras_model)
    if backend == "keras":
        keras_model = loaded
        names = sorted(sm.model_input_specs(keras_model))
    elif backend == "savedmodel":
        fn = loaded
        names = sorted(fn.structured_input_signature[1])
    else:
        runner = loaded
        names = sorted(runner.input_names)
    if names != expected:
        raise PredictError(f"Model/phase mismatch: {path} takes inputs {names}, the contract says {expected}.")
    if backend == "keras":
        return {k: np.asarray(v) for k, v in keras_model(inputs, training=False).items()}
    if backend == "savedmodel":
        return sm.run_saved_model(fn, inputs)
    return runner(inputs)


def _write_gradcam(keras_model, inputs, contract: ModelContract, out_path: Path) -> str | None:
    try:
        from mvi_tf.explain.gradcam import compute_gradcam
    except ImportError:
        logger.info("mvi_tf.explain is not available; no Grad-CAM overlay written")
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    maps = compute_gradcam(keras_model, inputs, contract.phases)
    fig, axes = plt.subplots(1, len(contract.phases), figsize=(2.6 * len(contract.phases), 2.9), squeeze=False)
    for ax, phase in zip(axes[0], contract.phases):
        ax.imshow(inputs[phase][0, :, :, 1], cmap="gray", vmin=0.0, vmax=1.0)
        ax.imshow(np.asarray(maps[phase])[0], cmap="jet", alpha=0.4, vmin=0.0, vmax=1.0)
        ax.set_title(phase, fontsize=9)
        ax.axis("off")
    fig.suptitle("Grad-CAM of the MVI score (centre slice)", fontsize=9)
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return str(out_path)


def predict_patient(
    model_path: str | Path,
    series: Mapping[str, str | Path],
    modality: str | None = None,
    mask_path: str | Path | None = None,
    mask_phase: str | None = None,
    roi: tuple[float, float, float, float] | None = None,
    clinical: Mapping[str, Any] | None = None,
    backend: str = "savedmodel",
    run_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    allow_shared_series: bool = False,
) -> dict[str, Any]:
    """Predict MVI for one new patient.

    Parameters
    ----------
    model_path : str or Path
        SavedModel version (or base) folder, ``.tflite`` file, or ``.keras`` file, matching ``backend``.
    series : mapping of phase to folder
        One DICOM series folder per phase of the model.
    modality : {"ct", "mri"}, optional
        Checked against the model's modality when given.
    mask_path, mask_phase : optional
        Tumour mask (DICOM-SEG or NIfTI) and the phase it was drawn on.
    roi : tuple, optional
        Square ROI ``(x_mm, y_mm, z_mm, side_mm)`` in DICOM patient coordinates, instead of a mask.
    clinical : mapping
        The patient's clinical and radiological values (``clinical.csv`` columns).
    backend : {"savedmodel", "tflite", "keras"}
        Runtime to use.
    run_dir : str or Path, optional
        Training run directory: gives the contract and the Keras model for the Grad-CAM overlay.
    out_dir : str or Path, optional
        Writes ``prediction.json`` (and ``gradcam.png``) there.
    allow_shared_series : bool
        Accept one series for several phases (a warning in the result); for tests on a single public series.

    Returns
    -------
    dict
        ``mvi_probability``, ``threshold``, ``predicted_group``, ``signatures`` (per phase), ``backend``,
        ``model``, ``modality``, ``roi`` provenance and ``gradcam_png`` (or ``None`` with ``gradcam_note``).

    Raises
    ------
    PredictError
        Missing phase, wrong image size, missing clinical value, or a model/phase or modality mismatch.
    """
    path, contract = resolve_model(model_path, backend, run_dir)
    if modality is not None and modality != contract.modality:
        raise PredictError(
            f"Model/modality mismatch: {path} is a {contract.modality} model. Received: modality={modality!r}")
    series_dirs = _check_series(series, contract)
    tabular = encode_tabular(clinical, contract)
    keras_model = None
    if backend == "keras" or run_dir is not None:
        keras_model = _load_keras(path if backend == "keras" else Path(run_dir) / "cdlm.keras")
    loaded = _load_backend(backend, path, keras_model)  # a damaged model fails before any DICOM is read
    images, provenance, warnings = _prepare_images(series_dirs, contract, mask_path, mask_phase, roi,
                                                   allow_shared_series)
    inputs = {**images, "tabular": tabular[None]}
    outputs = run_backend(backend, path, inputs, contract, keras_model, loaded)
    probability = float(np.asarray(outputs["mvi_probability"]).reshape(-1)[0])
    if not np.isfinite(probability):
        raise PredictError(f"The model returned a non-finite probability ({probability}) for these inputs.")
    result: dict[str, Any] = {
        "patient_id": str(clinical.get("patient_id")) if clinical.get("patient_id") is not None else None,
        "modality": contract.modality,
        "backend": backend,
        "model": str(path),
        "mvi_probability": probability,
        "threshold": contract.threshold,
        "predicted_group": "MVI-positive" if probability >= contract.threshold else "MVI-negative",
        "signatures": {p: float(np.asarray(outputs[f"{p}_signature"]).reshape(-1)[0]) for p in contract.phases},
        "roi": _provenance_dict(provenance),
        "gradcam_png": None,
    }
    if warnings:
        result["warnings"] = warnings
    if not 0.0 < contract.threshold < 1.0:
        result["threshold_note"] = (f"degenerate threshold {contract.threshold}: every patient falls in one group, "
                                    "so predicted_group carries no information; use mvi_probability")
    if keras_model is None:
        result["gradcam_note"] = "no Keras model (give run_dir) - Grad-CAM overlay skipped"
    elif out_dir is None:
        result["gradcam_note"] = "no out_dir - Grad-CAM overlay not written"
    else:
        result["gradcam_png"] = _write_gradcam(keras_model, inputs, contract, Path(out_dir) / GRADCAM_PNG)
        if result["gradcam_png"] is None:
            result["gradcam_note"] = "mvi_tf.explain not available - Grad-CAM overlay skipped"
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / PREDICTION_JSON).write_text(json.dumps(result, indent=2))
    return result


def _provenance_dict(provenance: Any) -> dict | None:
    if provenance is None:
        return None
    if dataclasses.is_dataclass(provenance) and not isinstance(provenance, type):
        provenance = dataclasses.asdict(provenance)
    if isinstance(provenance, Mapping):
        return {str(k): (v.item() if isinstance(v, np.generic) else v) for k, v in provenance.items()
                if isinstance(v, (str, int, float, bool, np.generic)) or v is None}
    return {"value": str(provenance)}
