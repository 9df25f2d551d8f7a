"""The full ResNet18-based CDLM through export: parity limits and the int8 size target."""

from __future__ import annotations

import json

import numpy as np
import pytest
from export_support import CT_PHASES, SELECTED, random_inputs, write_run_dir


@pytest.mark.slow
def test_full_cdlm_export_parity_and_int8_size(tmp_path):
    import keras

    from mvi_tf.export import export_run
    from mvi_tf.export.tflite import TFLiteRunner
    from mvi_tf.models.cdlm import build_cdlm

    keras.utils.set_random_seed(0)
    model = build_cdlm(list(CT_PHASES), 32, len(SELECTED))
    run = write_run_dir(tmp_path / "run", model)
    result = export_run(run, out_base=tmp_path / "out")
    assert result.parity["saved_model_vs_keras_max_abs_diff"]["value"] <= 1e-5
    assert result.parity["tflite_float32_vs_keras_max_abs_diff"]["value"] <= 1e-4
    float_size = result.tflite_float32.stat().st_size
    assert result.tflite_int8.stat().st_size <= float_size / 3
    assert result.tflite_dynamic.stat().st_size <= float_size / 3
    # Every weight is checkpointed once: the SavedModel is about the size of the float32 weights.
    variables = sum(p.stat().st_size for p in (result.saved_model_dir / "variables").iterdir())
    assert variables <= 1.2 * float_size
    card = json.loads(result.model_card_json.read_text())
    assert card["tflite"]["int8_size_ratio_vs_float32"] <= 1 / 3
    inputs = random_inputs(n=2, seed=9)
    reference = np.asarray(model(inputs, training=False)["mvi_probability"])
    int8 = TFLiteRunner(result.tflite_int8)(inputs)["mvi_probability"]
    assert np.all(np.isfinite(int8)) and np.max(np.abs(int8 - reference)) < 0.25
