"""``train()``: TFRecords -> split -> feature selection -> signature / fusion / CDLM stages -> run directory.

The run directory is laid out as docs/architecture.md "Run directory" describes. Everything random (split,
initial weights, shuffling, augmentation) follows ``train.seed``; ``train.deterministic`` additionally enables
TensorFlow op determinism so that a rerun gives bit-identical weights and metrics.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mvi_tf import na
from mvi_tf.config import Config, load_config
from mvi_tf.contract import (
    CDLM_MODEL,
    CLINICAL_MODEL,
    CONFIG_FILE,
    FEATURE_SELECTION_FILE,
    FEATURE_SELECTION_TABLE,
    METRICS_FILE,
    PREDICTIONS_FILE,
    RADIOLOGICAL_MODEL,
    SCHEMA_FILE,
    THRESHOLDS_FILE,
)

log = logging.getLogger(__name__)

MODALITIES = ("ct", "mri")
SUBGROUP_COLUMNS = ("pfs_months", "pfs_event", "os_months", "os_event", "age", "afp_ng_ml", "tumour_size_cm")


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` produced.

    Attributes
    ----------
    run_dir : Path
        The run directory.
    model_path : Path
        ``run_dir/cdlm.keras``.
    metrics : dict
        Contents of ``metrics.json`` (AUC per model and split, seed, synthetic flag).
    selected_features : list of str
        Tabular features of the CDLM, in input order.
    config : Config
        The effective configuration.
    """

    run_dir: Path
    model_path: Path
    metrics: dict[str, Any]
    selected_features: list[str]
    config: Config


def tabular_groups(schema: dict[str, Any], config: Config) -> tuple[list[str], list[str], list[str]]:
    """Encoded tabular feature names and their clinical / radiological subsets.

    The records' ``schema["tabular"]`` lists ``feature_names`` and ``columns`` (each a clinical.csv column with
    the ``features`` it encodes to). A column's ``group`` (``clinical`` / ``radiological``) is used when the
    schema carries one; otherwise ``data.clinical_columns`` / ``data.radiological_columns`` decide.
    """
    tabular = schema.get("tabular")
    if not isinstance(tabular, dict) or "feature_names" not in tabular:
        raise ValueError(f"Schema has no tabular feature_names (schema keys: {sorted(schema)})")
    names = [str(n) for n in tabular["feature_names"]]
    group_of: dict[str, str] = {}
    for column in tabular.get("columns", []):
        group = column.get("group")
        if group is None:
            if column["name"] in config.data.clinical_columns:
                group = "clinical"
            elif column["name"] in config.data.radiological_columns:
                group = "radiological"
        for feature in column.get("features", []):
            if group is not None:
                group_of[str(feature)] = group
    clinical = [n for n in names if group_of.get(n) == "clinical"]
    radiological = [n for n in names if group_of.get(n) == "radiological"]
    other = [n for n in names if n not in group_of]
    if other:
        log.info("Tabular features %s are neither clinical nor radiological; not candidates.", other)
    if not clinical or not radiological:
        raise ValueError(
            f"Need clinical and radiological tabular features; schema features {names} gave clinical={clinical}, "
            f"radiological={radiological}. Set data.clinical_columns / data.radiological_columns."
        )
    return names, clinical, radiological


def _auc(y: np.ndarray, score: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y).astype(int)
    if y.size == 0 or y.min() == y.max():
        return None
    return float(roc_auc_score(y, score))


def _auc_missing_reason(y: np.ndarray) -> str:
    y = np.asarray(y).astype(int)
    return f"AUC needs both classes; the split has {int(y.sum())} MVI+ and {int((1 - y).sum())} MVI- patients"


def _youden(y: np.ndarray, score: np.ndarray) -> float:
    """Youden threshold as a probability: pROC's -inf (everyone positive) becomes 0.0, +inf becomes 1.0.

    Scores are probabilities and a patient is positive when ``score >= threshold``, so -inf and 0.0 classify
    alike; +inf (no one positive) is only approximated by 1.0, and logged.
    """
    from mvi_tf.stats import youden_threshold

    threshold = float(youden_threshold(np.asarray(y).astype(int), np.asarray(score, dtype=np.float64)).threshold)
    if not np.isfinite(threshold):
        log.warning("Youden threshold %s (a constant or uninformative score) stored as %s", threshold,
                       0.0 if threshold < 0 else 1.0)
        threshold = 0.0 if threshold < 0 else 1.0
    return threshold


def _model_inputs(
    arrays: dict[str, np.ndarray], phases: Sequence[str], image_size: int, tabular_index: list[int] | None
) -> dict[str, np.ndarray]:
    import tensorflow as tf

    inputs = {}
    for phase in phases:
        images = np.asarray(arrays[phase], dtype=np.float32)
        if images.shape[1] != image_size:
            images = tf.image.resize(images, [image_size, image_size], method="bilinear").numpy()
        inputs[phase] = images
    if tabular_index is not None:
        inputs["tabular"] = np.asarray(arrays["tabular"], dtype=np.float32)[:, tabular_index]
    return inputs


def _text(values: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(values).ravel()]


def train(
    data_dir: str | Path,
    modality: str,
    out_dir: str | Path,
    config: Config | str | Path | None = None,
    verbose: int | str = "auto",
    **overrides: Any,
) -> TrainResult:
    """Train the signature, fusion and combined models of one modality and write a run directory.

    Parameters
    ----------
    data_dir : path-like
        TFRecords directory written by ``mvi-tf prepare`` (holds ``<modality>/schema.json``).
    modality : {"ct", "mri"}
        Which records to train on.
    out_dir : path-like
        Run directory (created; a rerun into the same directory resumes unfinished stages).
    config : Config, path-like or None
        A config object, a YAML file, or None for the defaults.
    verbose : int or str
        Keras progress-bar verbosity (``"auto"``, 0, 1, 2).
    **overrides
        Flat config overrides, e.g. ``epochs=3, image_size=64, seed=1, weights="r18.pth"``.

    Returns
    -------
    TrainResult
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}. Received: modality={modality!r}")
    if isinstance(config, Config):
        cfg = config.override(**overrides)
    else:
        cfg = load_config(config, **overrides)
    data_dir = Path(data_dir)
    out_dir = Path(out_dir)
    t = cfg.train

    # The strategy must exist before any other TensorFlow op (multi-worker collectives).
    from mvi_tf.training.distribute import get_strategy, is_chief

    strategy = get_strategy(t.strategy)
    chief = is_chief(t.strategy)

    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(t.seed)
    if t.deterministic:
        tf.config.experimental.enable_op_determinism()
    previous_policy = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("mixed_float16" if t.mixed_precision else "float32")

    scratch = None if chief else Path(tempfile.mkdtemp(prefix="mvi_tf_worker_"))
    run_dir = out_dir if chief else scratch
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _train(cfg, data_dir, modality, out_dir, run_dir, chief, strategy, verbose)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


@dataclasses.dataclass(frozen=True)
class _Inputs:
    """What the records and the config say a run trains on (the effective config records it)."""

    schema: dict[str, Any]
    phases: list[str]
    image_size: int
    resize: int | None
    synthetic: bool
    effective: Config


@dataclasses.dataclass(frozen=True)
class _Cohort:
    """The training cohort, its train/val split and the tabular factors selected on the train split."""

    arrays: dict[str, np.ndarray]
    ids: list[str]
    labels: np.ndarray
    split: dict[str, str]
    train_ids: list[str]
    val_ids: list[str]
    names: list[str]
    selected: list[str]
    tabular_index: list[int]
    clinical: Any
    radiological: Any
    clinical_sel: Any
    radio_sel: Any


def _plan_inputs(cfg: Config, data_dir: Path, modality: str) -> _Inputs:
    """Phases, image size and synthetic flag of the run, from the records' schema and the config."""
    from mvi_tf import data as mvi_data

    d = cfg.data
    schema = mvi_data.load_schema(data_dir, modality)
    schema_phases = list(schema["phases"])
    phases = list(d.phases) if d.phases else schema_phases
    missing = [p for p in phases if p not in schema_phases]
    if missing:
        raise ValueError(f"Phases {missing} are not in the {modality} records (have {schema_phases}).")
    stored_size = int(schema["image_size"])
    image_size = int(d.image_size or stored_size)
    resize = None if image_size == stored_size else image_size
    synthetic = d.synthetic if d.synthetic is not None else bool(schema.get("synthetic", False))
    effective = cfg.override(phases=phases, image_size=image_size, synthetic=synthetic)
    return _Inputs(schema, phases, image_size, resize, synthetic, effective)


def _split_and_select(cfg: Config, schema: dict[str, Any], data_dir: Path, modality: str) -> _Cohort:
    """Split the training cohort into train/val and select tabular factors on the train split only."""
    from mvi_tf import data as mvi_data
    from mvi_tf.training.baselines import fit_baseline
    from mvi_tf.training.pipeline import split_patients

    d, t = cfg.data, cfg.train
    train_cohort = mvi_data.to_numpy(data_dir, modality, cohorts=["train"])
    ids = _text(train_cohort["patient_id"])
    labels = np.asarray(train_cohort["label"]).astype(int).ravel()
    centres = _text(train_cohort["centre"])
    split = split_patients(ids, labels, centres, d.val_fraction, t.seed)
    train_mask = np.array([split[p] == "train" for p in ids])
    train_ids = [p for p in ids if split[p] == "train"]
    val_ids = [p for p in ids if split[p] == "val"]
    log.info("%s: %d training and %d validation patients", modality, len(train_ids), len(val_ids))

    names, clinical_cols, radiological_cols = tabular_groups(schema, cfg)
    x_tab = np.asarray(train_cohort["tabular"], dtype=np.float64)[train_mask]
    y_tab = labels[train_mask]
    clinical, clinical_sel = fit_baseline("clinical", x_tab, y_tab, names, clinical_cols, t.p_threshold)
    radiological, radio_sel = fit_baseline("radiological", x_tab, y_tab, names, radiological_cols, t.p_threshold)
    selected = list(dict.fromkeys(clinical_sel.selected + radio_sel.selected))
    tabular_index = [names.index(f) for f in selected]
    return _Cohort(train_cohort, ids, labels, split, train_ids, val_ids, names, selected, tabular_index,
                   clinical, radiological, clinical_sel, radio_sel)


def _augmentation(d, phases: Sequence[str], schema: dict):
    """The augmentation that suits the records: the square ROI's flips, turns and shifts, or, for records of unwrapped
    ROIs (``prepare --sampling unwrapped``), turns and reflections about the tumour (`augment_unwrapped`)."""
    if (schema.get("prepare_config") or {}).get("sampling") == "unwrapped":
        from mvi_tf.training.augment_unwrapped import UnwrappedAugmentation

        log.info("unwrapped ROI records: augmentation turns and mirrors the rays about the tumour (the square ROI's "
                 "flips, quarter turns, rotations and shifts are not used)")
        return UnwrappedAugmentation(phases, d.intensity_jitter)
    from mvi_tf.training.augment import Augmentation

    return Augmentation(phases, d.flip, d.rotation_deg, d.shift_fraction, d.intensity_jitter, rot90=d.rot90)


def _train(
    cfg: Config,
    data_dir: Path,
    modality: str,
    out_dir: Path,
    run_dir: Path,
    chief: bool,
    strategy,
    verbose: int | str,
) -> TrainResult:
    from mvi_tf import data as mvi_data
    from mvi_tf.models.cdlm import build_signature_model
    from mvi_tf.training.distribute import barrier
    from mvi_tf.training.pipeline import class_weights, make_dataset, select_inputs

    d, m, t = cfg.data, cfg.model, cfg.train
    plan = _plan_inputs(cfg, data_dir, modality)
    phases, image_size, resize = plan.phases, plan.image_size, plan.resize
    cohort = _split_and_select(cfg, plan.schema, data_dir, modality)
    train_ids, labels, tabular_index = cohort.train_ids, cohort.labels, cohort.tabular_index
    if chief:
        _write_selection(out_dir, cohort.selected, cohort.clinical, cohort.radiological, cohort.clinical_sel,
                         cohort.radio_sel)
        plan.effective.save(out_dir / CONFIG_FILE)
        (out_dir / SCHEMA_FILE).write_text(json.dumps(plan.schema, indent=2))

    # ---- tf.data ---------------------------------------------------------------------------------------------
    ids_array = np.asarray(cohort.ids)
    augmentation = _augmentation(d, phases, plan.schema)
    source = mvi_data.read_examples(data_dir, modality, cohorts=["train"], shuffle_files=True, seed=t.seed)
    train_examples = select_inputs(source, phases, tabular_index, resize, train_ids)
    val_source = mvi_data.read_examples(data_dir, modality, cohorts=["train"], shuffle_files=False)
    val_examples = select_inputs(val_source, phases, tabular_index, resize, cohort.val_ids)

    def datasets(keys: Sequence[str], ids: Sequence[str] = tuple(train_ids)):
        common = {"batch_size": t.batch_size, "cache": d.cache, "deterministic": t.deterministic}
        examples = train_examples if list(ids) == train_ids else select_inputs(
            source, phases, tabular_index, resize, ids)
        fold_weights = class_weights(labels[np.isin(ids_array, list(ids))]) if t.class_weight else None
        train_ds = make_dataset(
            examples, keys, training=True, seed=t.seed, augmentation=augmentation, weights=fold_weights,
            shuffle_buffer=d.shuffle_buffer, **common,
        )
        val_ds = make_dataset(val_examples, keys, training=False, **common)
        return train_ds, val_ds

    from mvi_tf.training.stages import run_stage

    def stage_args(n_train: int) -> dict[str, Any]:
        steps = math.ceil(n_train / t.batch_size) * t.epochs
        return {"run_dir": run_dir, "strategy": strategy, "epochs": t.epochs, "patience": t.patience,
                "jit_compile": t.xla, "verbose": verbose, "decay_steps": steps if t.lr_schedule == "cosine" else None}

    def train_signatures(ids: Sequence[str], suffix: str = "", model_dir: Path = run_dir) -> dict:
        models = {}
        for phase in phases:
            models[phase], res = run_stage(
                f"signature_{phase}{suffix}",
                lambda phase=phase: build_signature_model(phase, image_size, m.dropout, weights=m.weights),
                *datasets([phase], ids), learning_rate=t.learning_rate, model_dir=model_dir, **stage_args(len(ids)),
            )
            if not suffix:
                results.append(res)
        return models

    results = []
    signatures = train_signatures(train_ids)
    if m.head == "logistic":
        from mvi_tf.training.stacking_stage import fit_stacked_models

        fit_stacked_models(
            cfg, run_dir, chief, cohort.arrays, cohort.ids, cohort.split, phases, image_size, tabular_index,
            signatures, train_fold=lambda k, fold_ids: train_signatures(fold_ids, f"_fold{k}", run_dir / "folds"),
        )
    else:
        results += _dense_heads(cfg, phases, image_size, cohort.selected, signatures, datasets, run_stage,
                                stage_args(len(train_ids)), run_dir)

    metrics: dict[str, Any] = {}
    if chief:
        metrics = _evaluate_run(
            out_dir, data_dir, modality, phases, image_size, cohort.names, tabular_index, cohort.split,
            cohort.clinical, cohort.radiological, plan.effective, plan.synthetic, results,
        )
        _drop_checkpoints(out_dir)
    barrier(strategy)
    return TrainResult(out_dir, out_dir / CDLM_MODEL, metrics, cohort.selected, plan.effective)


def _drop_checkpoints(run_dir: Path) -> None:
    """Delete ``checkpoints/`` once every stage is saved and the run evaluated: each stage's ``<stage>.keras`` is
    what a rerun resumes from and what every later command reads, while the per-stage best-epoch weights (134 MB
    per stage in a 96 px run) were two thirds of a finished run's disk."""
    folder = run_dir / "checkpoints"
    if folder.is_dir():
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        shutil.rmtree(folder)
        log.info("Run complete: removed its stage checkpoints (%.1f GB), kept every stage's .keras model",
                 size / 1e9)


def _dense_heads(cfg, phases, image_size, selected, signatures, datasets, run_stage, stage_args, run_dir) -> list:
    """The paper's heads (``model.head: dense``): fusion and CDLM dense layers trained on the training split."""
    import keras

    from mvi_tf.models.cdlm import build_cdlm, build_fusion_model, freeze_backbones, transfer_weights

    m, t = cfg.model, cfg.train

    def build_fusion() -> keras.Model:
        fusion = build_fusion_model(phases, image_size, m.hidden_units, m.dropout)
        for sig in signatures.values():
            transfer_weights(sig, fusion)
        freeze_backbones(fusion, phases, trainable=t.fine_tune_backbones)
        return fusion

    def build_combined() -> keras.Model:
        cdlm = build_cdlm(phases, image_size, len(selected), m.hidden_units, m.dropout, monotone=m.monotone_head)
        for sig in signatures.values():
            transfer_weights(sig, cdlm)
        # The CDLM integrates the signatures as they are: with frozen trunks their heads stay frozen too.
        freeze_backbones(cdlm, phases, trainable=t.fine_tune_backbones)
        for phase in phases:
            cdlm.get_layer(f"{phase}_signature_logit").trainable = t.fine_tune_backbones
        return cdlm

    _, fusion = run_stage("fusion", build_fusion, *datasets(phases), learning_rate=t.head_learning_rate,
                          model_dir=run_dir, **stage_args)
    _, cdlm = run_stage("cdlm", build_combined, *datasets([*phases, "tabular"]),
                        learning_rate=t.head_learning_rate, model_dir=run_dir, **stage_args)
    return [fusion, cdlm]


def _write_selection(out_dir: Path, selected, clinical, radiological, clinical_sel, radio_sel) -> None:
    import pandas as pd

    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {
        "selected": selected,
        "method": "univariable then multivariable logistic regression (statsmodels Logit, Wald tests) on the "
        "training split; CDLM factors = clinical selection followed by radiological selection",
        "p_threshold": clinical_sel.p_threshold,
        "clinical": clinical_sel.to_dict(),
        "radiological": radio_sel.to_dict(),
    }
    (out_dir / FEATURE_SELECTION_FILE).write_text(json.dumps(doc, indent=2))
    rows = [{"model": "clinical", **r} for r in clinical_sel.table()]
    rows += [{"model": "radiological", **r} for r in radio_sel.table()]
    pd.DataFrame(rows).to_csv(out_dir / FEATURE_SELECTION_TABLE, index=False)
    clinical.save(out_dir / CLINICAL_MODEL)
    radiological.save(out_dir / RADIOLOGICAL_MODEL)


def _evaluate_run(
    out_dir, data_dir, modality, phases, image_size, names, tabular_index, split, clinical,
    radiological, config, synthetic, results,
) -> dict[str, Any]:
    """Score every patient with every model; write predictions.csv, thresholds.json and metrics.json."""
    import keras
    import pandas as pd

    from mvi_tf import data as mvi_data

    arrays = mvi_data.to_numpy(data_dir, modality)
    ids = _text(arrays["patient_id"])
    cohorts = _text(arrays["cohort"])
    splits = [split.get(p, "train") if c == "train" else c for p, c in zip(ids, cohorts, strict=True)]
    unknown = sorted({c for c in cohorts if c not in ("train", "prospective")})
    if unknown:
        raise ValueError(f"Unknown cohort value(s) {unknown} in {data_dir / modality}; expected train/prospective")
    frame = pd.DataFrame(
        {
            "patient_id": ids,
            "modality": modality,
            "centre": _text(arrays["centre"]),
            "cohort": cohorts,
            "split": splits,
            "label": np.asarray(arrays["label"]).astype(int).ravel(),
        }
    )
    for column in SUBGROUP_COLUMNS:
        frame[column] = np.asarray(arrays[column]).ravel()
    sex_male = np.asarray(arrays["sex_male"]).ravel()
    frame["sex"] = np.where(sex_male > 0.5, "male", "female")
    frame = frame[["patient_id", "modality", "centre", "cohort", "split", "label", "pfs_months", "pfs_event",
                   "os_months", "os_event", "age", "sex", "afp_ng_ml", "tumour_size_cm"]]

    x_tab = np.asarray(arrays["tabular"], dtype=np.float64)
    frame["clinical"] = clinical.predict_proba(x_tab, names)
    frame["radiological"] = radiological.predict_proba(x_tab, names)
    image_inputs = _model_inputs(arrays, phases, image_size, tabular_index)
    model_names = [f"signature_{p}" for p in phases] + ["fusion", "cdlm"]
    for name in model_names:
        model = keras.models.load_model(out_dir / f"{name}.keras", compile=False)
        inputs = {k: image_inputs[k] for k in model.input}
        frame[name] = np.asarray(model.predict(inputs, batch_size=32, verbose=0)["mvi_probability"]).ravel()
    frame.to_csv(out_dir / PREDICTIONS_FILE, index=False)

    train_rows = frame[frame["split"] == "train"]
    all_models = ["clinical", "radiological", *model_names]
    thresholds = {name: _youden(train_rows["label"].to_numpy(), train_rows[name].to_numpy()) for name in all_models}
    (out_dir / THRESHOLDS_FILE).write_text(json.dumps(thresholds, indent=2))
    auc = {
        name: na.explain(
            {s: _auc(g["label"].to_numpy(), g[name].to_numpy()) for s, g in frame.groupby("split")},
            **{s: _auc_missing_reason(g["label"].to_numpy()) for s, g in frame.groupby("split")},
        )
        for name in all_models
    }
    constant = [name for name in all_models if np.ptp(train_rows[name].to_numpy()) == 0]
    metrics = {
        "modality": modality,
        "seed": config.train.seed,
        "synthetic": bool(synthetic),
        "phases": list(phases),
        "image_size": image_size,
        "n_patients": {s: int((frame["split"] == s).sum()) for s in ("train", "val", "prospective")},
        "auc": auc,
        "best_val_auc": {r.name: (None if not np.isfinite(r.best_val_auc) else r.best_val_auc) for r in results},
        "threshold_source": "Youden index on split=train",
        "youden": na.explain(
            {name: (None if name in constant else thresholds[name]) for name in all_models},
            **{name: f"a constant score on the train split has no Youden cut; thresholds.json holds "
                     f"{thresholds[name]:g} as a stand-in" for name in constant},
        ),
    }
    (out_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
    return metrics
