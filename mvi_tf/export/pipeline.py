"""``export_run``: a training run directory -> versioned SavedModel, TFLite models, models.config, model card."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from mvi_tf import na
from mvi_tf.contract import RunFiles
from mvi_tf.export import model_card as card_lib
from mvi_tf.export import saved_model as sm
from mvi_tf.export import tflite as tfl

logger = logging.getLogger(__name__)

SAVED_MODEL_LIMIT = 1e-5
TFLITE_FLOAT_LIMIT = 1e-4
QUANTISED_AUC_TARGET = 0.01
N_PARITY = 16
N_REPRESENTATIVE = 100


@dataclasses.dataclass
class ExportResult:
    """What :func:`export_run` wrote.

    Attributes
    ----------
    name, version : str, int
        Model name (TF Serving) and the new version number.
    saved_model_dir : Path
        ``out_base/name/version``.
    keras_model : Path
        The run's ``cdlm.keras`` the export came from.
    models_config : Path
        ``out_base/models.config``.
    model_card_json, model_card_md : Path
        The model card in the version folder.
    tflite_float32, tflite_dynamic, tflite_int8 : Path or None
        ``out_base/<name>-<mode>.tflite`` (None when TFLite was skipped).
    parity : dict
        Export-time parity checks (also in the model card).
    """

    name: str
    version: int
    saved_model_dir: Path
    keras_model: Path
    models_config: Path
    model_card_json: Path
    model_card_md: Path
    tflite_float32: Path | None = None
    tflite_dynamic: Path | None = None
    tflite_int8: Path | None = None
    parity: dict[str, Any] = dataclasses.field(default_factory=dict)


def load_keras_model(path: str | Path):
    """Load a ``.keras`` model without compiling (registers the project's layers first when present)."""
    import keras

    import mvi_tf.export.recalibration  # noqa: F401  (registers ProbabilityRecalibration of recalibrated runs)

    try:
        import mvi_tf.models  # noqa: F401  (registers custom serialisable objects, if any)
    except ImportError:
        logger.debug("mvi_tf.models not importable; loading %s with built-in layers only", path)
    return keras.models.load_model(str(path), compile=False)


_CANONICAL_ORDER = ("t2", "plain", "arterial", "portal", "transitional", "hepatobiliary")


def _model_phases(model, schema: dict | None = None) -> tuple[list[str], int, int]:
    """Phases (in the schema's order, else the clinical acquisition order), image size and tabular width."""
    specs = sm.model_input_specs(model)
    if "tabular" not in specs:
        raise ValueError(f"Model {model.name!r} has no 'tabular' input. Received inputs: {sorted(specs)}")
    phases = [name for name in specs if name != "tabular"]
    order = [str(p) for p in (schema or {}).get("phases", [])] if isinstance((schema or {}).get("phases"), list) else []
    order += [p for p in _CANONICAL_ORDER if p not in order]
    phases.sort(key=lambda p: (order.index(p) if p in order else len(order), p))
    sizes = {specs[p][0][1] for p in phases}
    if len(sizes) != 1:
        raise ValueError(f"Phase inputs disagree on image size: { {p: specs[p][0] for p in phases} }")
    return phases, int(sizes.pop()), int(specs["tabular"][0][1])


def _split_ids(run_dir: Path) -> dict[str, set[str]]:
    """Patient ids per split from the run's predictions.csv (empty when absent)."""
    files = RunFiles(run_dir)
    if not files.predictions_path.exists():
        return {}
    frame = files.predictions(dtype={"patient_id": str})
    if "split" not in frame:
        return {}
    return {split: set(group["patient_id"]) for split, group in frame.groupby("split")}


def _record_arrays(records_dir: Path, modality: str, phases: list[str], indices: list[int]) -> dict[str, np.ndarray]:
    """Training-cohort examples as arrays holding the model inputs plus ``label`` and ``patient_id``."""
    from mvi_tf.data import to_numpy

    arrays = to_numpy(str(records_dir), modality, cohorts=["train"])
    missing = [p for p in phases if p not in arrays]
    if missing:
        raise ValueError(f"Records in {records_dir}/{modality} lack the model's phases {missing}.")
    if len(arrays["label"]) == 0:
        raise ValueError(f"No training-cohort records for modality {modality!r} under {records_dir}.")
    out = {p: arrays[p].astype(np.float32) for p in phases}
    out["tabular"] = arrays["tabular"][:, indices].astype(np.float32)
    out["label"] = arrays["label"].astype(int).reshape(-1)
    out["patient_id"] = np.asarray([str(v) for v in arrays["patient_id"]])
    return out


def _random_inputs(phases: list[str], image_size: int, n_tabular: int, n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    inputs = {p: rng.random((n, image_size, image_size, 3), dtype=np.float32) for p in phases}
    inputs["tabular"] = rng.standard_normal((n, n_tabular)).astype(np.float32)
    return inputs


def _auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(labels)) < 2:
        return None
    return float(roc_auc_score(labels, scores))


def export_run(
    run_dir: str | Path,
    out_base: str | Path = "saved_models",
    name: str | None = None,
    records_dir: str | Path | None = None,
    tflite: bool = True,
    seed: int = 0,
) -> ExportResult:
    """Export a run's CDLM for TensorFlow Serving and TFLite, with parity checks and a model card.

    Parameters
    ----------
    run_dir : str or Path
        Training run directory (``cdlm.keras``, ``schema.json``, ``feature_selection.json``, ``thresholds.json``).
    out_base : str or Path
        Model base folder: writes ``out_base/<name>/<version>/`` (version = max existing + 1, never overwritten),
        ``out_base/models.config`` and ``out_base/<name>-{float32,dynamic,int8}.tflite``.
    name : str, optional
        Model name; default ``mvi-cdlm-<modality>``.
    records_dir : str or Path, optional
        TFRecords folder (``mvi-tf prepare`` output). Training-split examples calibrate the int8 model and
        validation-split examples (``predictions.csv`` split ``val``) measure the quantised models' AUC. Without
        it, seeded random inputs are used for calibration and parity, and no AUC is reported.
    tflite : bool
        Also write the three TFLite models.
    seed : int
        Seed of the random inputs used when no records are given.

    Returns
    -------
    ExportResult
        Paths written and parity figures.

    Raises
    ------
    RuntimeError
        When the SavedModel differs from Keras by more than 1e-5 or the float TFLite model by more than 1e-4
        (the new version folder is removed so that no server picks it up).
    """
    run = card_lib.read_run(run_dir)
    run_dir = Path(run_dir)
    model = load_keras_model(run["keras_model"])
    phases, image_size, n_tabular = _model_phases(model, run["schema"])
    if n_tabular != len(run["selected"]):
        raise ValueError(
            f"Model takes {n_tabular} tabular features but feature_selection.json selects {len(run['selected'])}: "
            f"{run['selected']}"
        )
    modality = card_lib.schema_modality(run["schema"]) or (run["config"] or {}).get("modality")
    if modality is None:
        modality = "mri" if "hepatobiliary" in phases or "t2" in phases else "ct"
    name = name or f"mvi-cdlm-{modality}"
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"name must be a plain folder name. Received: name={name!r}")
    out_base = Path(out_base)
    model_base = out_base / name
    version = sm.next_version(model_base)
    version_dir = model_base / str(version)

    # Data for parity and calibration.
    records = None
    if records_dir is not None:
        indices = card_lib.selected_indices(run["schema"], run["selected"])
        records = _record_arrays(Path(records_dir), modality, phases, indices)
        splits = _split_ids(run_dir)
        in_val = np.isin(records["patient_id"], sorted(splits.get("val", set())))
        in_train = np.isin(records["patient_id"], sorted(splits.get("train", set())))
        if not in_train.any():
            in_train = ~in_val
        input_names = [*phases, "tabular"]
        val_inputs = {k: records[k][in_val] for k in input_names} if in_val.any() else None
        val_labels = records["label"][in_val]
        calib = {k: records[k][in_train][:N_REPRESENTATIVE] for k in input_names}
        parity_inputs = {k: v[:N_PARITY] for k, v in (val_inputs or calib).items()}
        data_source = f"training TFRecords in {Path(records_dir).name}/{modality}"
    else:
        val_inputs, val_labels = None, np.zeros(0)
        calib = _random_inputs(phases, image_size, n_tabular, N_REPRESENTATIVE, seed)
        parity_inputs = _random_inputs(phases, image_size, n_tabular, N_PARITY, seed + 1)
        data_source = f"seeded random inputs (seed {seed}); no records_dir given"

    keras_out = {k: np.asarray(v) for k, v in model(parity_inputs, training=False).items()}
    sm.export_saved_model(model, version_dir)
    try:
        serving_fn = sm.load_serving_function(version_dir)
        sm_diff = sm.max_abs_diff(keras_out, sm.run_saved_model(serving_fn, parity_inputs))
        parity: dict[str, Any] = {
            "data": data_source,
            "n_parity_examples": int(next(iter(parity_inputs.values())).shape[0]),
            "saved_model_vs_keras_max_abs_diff": {"value": sm_diff, "limit": SAVED_MODEL_LIMIT},
        }
        if sm_diff > SAVED_MODEL_LIMIT:
            raise RuntimeError(f"SavedModel differs from Keras by {sm_diff:.3g} > {SAVED_MODEL_LIMIT}")
        tflite_info: dict[str, Any] = {}
        tflite_paths: dict[str, Path] = {}
        if tflite:
            tflite_info, tflite_paths = _export_tflite(
                version_dir, out_base, name, calib, parity_inputs, keras_out, val_inputs, val_labels, parity,
                data_source,
            )
    except Exception:
        shutil.rmtree(version_dir, ignore_errors=True)
        raise

    signature = sm.describe_signature(version_dir)
    synthetic = bool(run["schema"].get("synthetic", run["metrics"].get("synthetic", False)))
    card = card_lib.build_model_card(
        name=name, version=version, modality=modality, phases=phases, image_size=image_size, run=run,
        signature=signature, tflite=tflite_info, parity=parity, synthetic=synthetic,
    )
    json_path, md_path = card_lib.write_model_card(card, version_dir)
    config_path = sm.write_models_config(out_base)
    logger.info("Exported %s version %d to %s", name, version, version_dir)
    return ExportResult(
        name=name, version=version, saved_model_dir=version_dir, keras_model=run["keras_model"],
        models_config=config_path, model_card_json=json_path, model_card_md=md_path,
        tflite_float32=tflite_paths.get("float32"), tflite_dynamic=tflite_paths.get("dynamic"),
        tflite_int8=tflite_paths.get("int8"), parity=parity,
    )


def _export_tflite(version_dir, out_base, name, calib, parity_inputs, keras_out, val_inputs, val_labels, parity,
                   data_source):
    """Convert to the three TFLite flavours, write them beside the versions and record parity in ``parity``."""
    n_calib = int(next(iter(calib.values())).shape[0])

    def representative():
        for i in range(n_calib):
            yield {k: v[i : i + 1] for k, v in calib.items()}

    info: dict[str, Any] = {
        "interface": "float32 inputs and outputs for every flavour (int8: quantise/dequantise at the edges)",
        "representative_data": f"{n_calib} examples from {data_source}",
    }
    paths: dict[str, Path] = {}
    val_scores: dict[str, np.ndarray] = {}
    for mode in tfl.MODES:
        flatbuffer = tfl.convert_saved_model(version_dir, mode, representative if mode == "int8" else None)
        path = out_base / f"{name}-{mode}.tflite"
        tmp = path.with_suffix(".tflite.tmp")
        tmp.write_bytes(flatbuffer)
        tmp.replace(path)
        paths[mode] = path
        runner = tfl.TFLiteRunner(path)
        diff = sm.max_abs_diff(keras_out, runner(parity_inputs))
        key = f"tflite_{mode}_vs_keras_max_abs_diff"
        parity[key] = {"value": diff, "limit": TFLITE_FLOAT_LIMIT if mode == "float32" else None}
        info[mode] = {"file": path.name, "bytes": len(flatbuffer), "saved_model_version": int(version_dir.name)}
        if mode == "float32" and diff > TFLITE_FLOAT_LIMIT:
            raise RuntimeError(f"TFLite float32 model differs from Keras by {diff:.3g} > {TFLITE_FLOAT_LIMIT}")
        if val_inputs is not None:
            val_scores[mode] = runner(val_inputs)["mvi_probability"].reshape(-1)
    float_bytes = info["float32"]["bytes"]
    info["int8_size_ratio_vs_float32"] = info["int8"]["bytes"] / float_bytes
    if val_inputs is not None:
        aucs = {mode: _auc(val_labels, scores) for mode, scores in val_scores.items()}
        n_pos = int(np.sum(np.asarray(val_labels) == 1))
        reason = (f"AUC needs both classes; the validation split has {n_pos} MVI+ and "
                  f"{len(val_labels) - n_pos} MVI- patients")
        parity["validation_auc"] = na.explain({"n": len(val_labels), **aucs}, **dict.fromkeys(aucs, reason))
        for mode in ("dynamic", "int8"):
            delta = None if aucs[mode] is None or aucs["float32"] is None else abs(aucs[mode] - aucs["float32"])
            parity[f"tflite_{mode}_auc_abs_diff_vs_float32"] = na.explain(
                {"value": delta, "limit": QUANTISED_AUC_TARGET}, value=reason)
            if delta is not None and delta > QUANTISED_AUC_TARGET:
                logger.warning("TFLite %s AUC differs from float32 by %.4f (> %.2f target)", mode, delta,
                               QUANTISED_AUC_TARGET)
    else:
        parity["validation_auc"] = "not measured: no records_dir with a validation split"
    return info, paths
