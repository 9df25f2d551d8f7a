"""Helpers for the export tests: a tiny model with the CDLM's input/output contract and a fake run directory.

The tiny model keeps the real contract (inputs named per phase + ``tabular``, ImageNet normalisation inside,
dict outputs ``mvi_probability`` and ``<phase>_signature``) but only a few thousand weights, so SavedModel and
TFLite conversion take seconds. The full ResNet18-based CDLM is exercised in the slow-marked test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mvi_tf.contract import SCHEMA_FILE, RunFiles, write_json

CT_PHASES = ("plain", "arterial", "portal")
SELECTED = ["afp_gt_400", "tumour_size_cm", "margin_non_smooth"]
IMAGE_SIZE = 32
CLINICAL = {
    "patient_id": "P-EXPORT-1", "age": 58, "sex": "male", "aetiology": "hbv", "bilirubin_umol_l": 15.0,
    "alt_u_l": 35.0, "ast_u_l": 41.0, "platelets_1e9_l": 150.0, "afp_ng_ml": 520.0, "tumour_size_cm": 4.2,
    "tumour_number": "solitary", "margin": "non-smooth", "peritumoral_enhancement": "present",
    "enhancement_pattern": "typical", "capsule": "present", "hbp_tumour_hypointensity": "present",
    "hbp_peritumoral_hypointensity": "absent",
}


def records_schema(modality: str = "ct", phases=CT_PHASES, image_size: int = IMAGE_SIZE) -> dict:
    """A records schema.json built by data_prep itself, its scaling fitted on a few clinical rows."""
    from data_prep.config import PrepareConfig
    from data_prep.records import make_schema
    from data_prep.tabular import fit_schema

    rows = [dict(CLINICAL, age=40 + 5 * i, tumour_size_cm=2.0 + i) for i in range(4)]
    config = PrepareConfig(phases={modality: tuple(phases)}, image_size=image_size)
    return make_schema(modality, phases, image_size, fit_schema(rows, modality), config.to_dict())


def build_tiny_cdlm(phases=CT_PHASES, image_size: int = IMAGE_SIZE, n_tabular: int = len(SELECTED), seed: int = 0):
    """A small functional model with the CDLM's named inputs and dict outputs."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = {p: keras.Input((image_size, image_size, 3), name=p) for p in phases}
    tabular = keras.Input((n_tabular,), name="tabular")
    outputs, pooled = {}, []
    for p in phases:
        x = keras.layers.Normalization(
            mean=[0.485, 0.456, 0.406], variance=[0.229**2, 0.224**2, 0.225**2], name=f"{p}_imagenet_norm"
        )(inputs[p])
        x = keras.layers.Conv2D(8, 3, strides=2, name=f"{p}_stage4_block2_conv2")(x)
        x = keras.layers.ReLU(name=f"{p}_stage4_block2_out")(x)
        x = keras.layers.GlobalAveragePooling2D(name=f"{p}_pool")(x)
        pooled.append(x)
        outputs[f"{p}_signature"] = keras.layers.Dense(1, activation="sigmoid", name=f"{p}_signature")(x)
    z = keras.layers.Concatenate(name="cdlm_concat")([*pooled, tabular])
    z = keras.layers.Dense(16, activation="relu", name="cdlm_dense")(z)
    outputs["mvi_probability"] = keras.layers.Dense(1, activation="sigmoid", name="cdlm_probability")(z)
    return keras.Model({**inputs, "tabular": tabular}, outputs, name="cdlm")


def write_run_dir(run_dir: Path, model, modality: str = "ct", threshold: float = 0.5, synthetic: bool = True,
                  image_size: int = IMAGE_SIZE, phases=CT_PHASES) -> Path:
    """Write a run directory holding ``model`` as ``cdlm.keras`` plus the JSON/YAML files export reads."""
    run_dir.mkdir(parents=True, exist_ok=True)
    files = RunFiles(run_dir)
    model.save(files.cdlm_path)
    schema = records_schema(modality, phases, image_size)
    schema["synthetic"] = synthetic
    write_json(files.schema_path, schema)
    write_json(files.feature_selection_path, {"selected": SELECTED})
    write_json(files.thresholds_path, {"cdlm": threshold})
    write_json(files.metrics_path, {"auc": {"cdlm": {"train": 0.8, "val": 0.7}}, "seed": 0})
    (run_dir / "config.yaml").write_text("seed: 0\n")
    return run_dir


def random_inputs(phases=CT_PHASES, n: int = 4, image_size: int = IMAGE_SIZE, n_tabular: int = len(SELECTED),
                  seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    inputs = {p: rng.random((n, image_size, image_size, 3), dtype=np.float32) for p in phases}
    inputs["tabular"] = rng.standard_normal((n, n_tabular)).astype(np.float32)
    return inputs


def write_records(records_dir: Path, run_dir: Path, n: int = 40, n_val: int = 20, seed: int = 5) -> Path:
    """Write ``n`` training-cohort examples with data_prep's own writer, and the run's ``predictions.csv``
    marking the last ``n_val`` patients as the validation split."""
    import pandas as pd

    from data_prep.records import ShardedWriter, encode_example
    from data_prep.tabular import encode_row

    schema = RunFiles(run_dir).schema()
    modality_dir = records_dir / schema["modality"]
    modality_dir.mkdir(parents=True, exist_ok=True)
    write_json(modality_dir / SCHEMA_FILE, schema)
    rng = np.random.default_rng(seed)
    writer = ShardedWriter(modality_dir, "train", shard_size=16)
    rows = []
    for i in range(n):
        label = i % 2
        pid = f"P{i:03d}"
        clinical = dict(CLINICAL, patient_id=pid, age=40 + i, tumour_size_cm=2.0 + label + 2.0 * rng.random(),
                        afp_ng_ml=500.0 if rng.random() < 0.4 + 0.2 * label else 10.0)
        values = {p: np.clip(rng.random((schema["image_size"],) * 2 + (3,)) * (0.9 + 0.02 * label), 0, 1)
                  for p in schema["phases"]}
        values.update(tabular=encode_row(clinical, schema), label=label, patient_id=pid, centre="C1",
                      cohort="train", pfs_months=12.0, pfs_event=0, os_months=20.0, os_event=0, age=40 + i,
                      sex_male=1, afp_ng_ml=clinical["afp_ng_ml"], tumour_size_cm=clinical["tumour_size_cm"])
        writer.write(encode_example(values, schema))
        rows.append({"patient_id": pid, "modality": schema["modality"], "cohort": "train", "label": label,
                     "split": "val" if i >= n - n_val else "train"})
    writer.close()
    pd.DataFrame(rows).to_csv(RunFiles(run_dir).predictions_path, index=False)
    return records_dir
