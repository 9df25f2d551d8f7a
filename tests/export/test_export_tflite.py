"""TFLite models: written beside the versions, run through the signature runner with inputs bound by name."""

from __future__ import annotations

import json

import numpy as np
import pytest
from export_support import CT_PHASES, IMAGE_SIZE, SELECTED, random_inputs


def _keras_outputs(exported, inputs):
    import keras

    model = keras.models.load_model(exported.keras_model, compile=False)
    return {k: np.asarray(v) for k, v in model(inputs, training=False).items()}


def test_tflite_files_beside_versions_and_float_parity(exported):
    from mvi_tf.export.tflite import TFLiteRunner

    base = exported.saved_model_dir.parent.parent
    for mode, path in (("float32", exported.tflite_float32), ("dynamic", exported.tflite_dynamic),
                       ("int8", exported.tflite_int8)):
        assert path == base / f"mvi-cdlm-ct-{mode}.tflite" and path.stat().st_size > 0
    runner = TFLiteRunner(exported.tflite_float32)
    assert sorted(runner.input_names) == sorted([*CT_PHASES, "tabular"])
    assert sorted(runner.output_names) == sorted(["mvi_probability", *(f"{p}_signature" for p in CT_PHASES)])
    inputs = random_inputs(n=5, seed=7)
    reference = _keras_outputs(exported, inputs)
    outputs = runner(inputs)
    for key, value in reference.items():
        assert outputs[key].shape == value.shape
        assert np.max(np.abs(outputs[key] - value)) <= 1e-4, key
    assert exported.parity["tflite_float32_vs_keras_max_abs_diff"]["value"] <= 1e-4


def test_tflite_binds_inputs_by_name_not_position(exported):
    from mvi_tf.export.tflite import TFLiteRunner

    runner = TFLiteRunner(exported.tflite_float32)
    inputs = random_inputs(n=2, seed=3)
    forward = runner(inputs)
    backward = runner(dict(reversed(list(inputs.items()))))
    for key in forward:
        np.testing.assert_array_equal(forward[key], backward[key])
    # Swapping two phase images must change the per-phase signatures: the names really route the tensors.
    swapped = dict(inputs, plain=inputs["portal"], portal=inputs["plain"])
    assert not np.allclose(runner(swapped)["plain_signature"], forward["plain_signature"])
    with pytest.raises(ValueError, match="expects shape"):
        runner(dict(inputs, tabular=np.zeros((2, len(SELECTED) + 1), np.float32)))
    with pytest.raises(ValueError, match=r"Missing TFLite inputs \['arterial'\]"):
        runner({k: v for k, v in inputs.items() if k != "arterial"})


def test_quantised_models_stay_close_and_are_recorded(exported):
    from mvi_tf.export.tflite import TFLiteRunner

    inputs = random_inputs(n=6, seed=11)
    reference = _keras_outputs(exported, inputs)["mvi_probability"]
    for path in (exported.tflite_dynamic, exported.tflite_int8):
        quantised = TFLiteRunner(path)(inputs)["mvi_probability"]
        assert np.max(np.abs(quantised - reference)) < 0.05, path.name
    card = json.loads(exported.model_card_json.read_text())
    assert card["tflite"]["int8"]["file"] == "mvi-cdlm-ct-int8.tflite"
    assert "float32 input" in card["tflite"]["interface"] or "float32 inputs" in card["tflite"]["interface"]
    assert card["parity"]["tflite_int8_vs_keras_max_abs_diff"]["value"] < 0.05


def test_convert_rejects_bad_modes(exported):
    from mvi_tf.export.tflite import convert_saved_model

    with pytest.raises(ValueError, match="mode must be one of"):
        convert_saved_model(exported.saved_model_dir, "float16")
    with pytest.raises(ValueError, match="representative_data"):
        convert_saved_model(exported.saved_model_dir, "int8")
    assert IMAGE_SIZE == 32


def test_int8_calibrated_on_records_and_auc_reported(tmp_path):
    from export_support import build_tiny_cdlm, write_records, write_run_dir

    from mvi_tf.export import export_run

    run = write_run_dir(tmp_path / "run", build_tiny_cdlm(seed=4))
    records = write_records(tmp_path / "records", run)
    result = export_run(run, out_base=tmp_path / "out", records_dir=records)
    parity = result.parity
    assert parity["data"].startswith("training TFRecords")
    assert parity["validation_auc"]["n"] == 20
    for mode in ("float32", "dynamic", "int8"):
        assert 0.0 <= parity["validation_auc"][mode] <= 1.0
    for mode in ("dynamic", "int8"):
        delta = parity[f"tflite_{mode}_auc_abs_diff_vs_float32"]
        assert delta["limit"] == 0.01 and delta["value"] <= 0.05, (mode, delta)
    card = json.loads(result.model_card_json.read_text())
    assert card["tflite"]["representative_data"].startswith("20 examples from training TFRecords")
    assert "validation_auc" in card["parity"]
