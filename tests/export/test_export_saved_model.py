"""SavedModel export: the serving contract as TF Serving sees it, parity with Keras, versioning, models.config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from export_support import (
    CT_PHASES,
    IMAGE_SIZE,
    SELECTED,
    build_tiny_cdlm,
    random_inputs,
    write_run_dir,
)

_FRESH_PROCESS = r"""
import json, sys
import numpy as np
import tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
fn = loaded.signatures["serving_default"]
_, kwargs = fn.structured_input_signature
spec = {"inputs": {k: [v.dtype.name, [-1 if d is None else d for d in v.shape]] for k, v in kwargs.items()},
        "outputs": {k: [v.dtype.name, [-1 if d is None else d for d in v.shape]]
                    for k, v in fn.structured_outputs.items()}}
data = np.load(sys.argv[2])
out = fn(**{k: tf.constant(data[k]) for k in kwargs})
np.savez(sys.argv[3], **{k: v.numpy() for k, v in out.items()})
print(json.dumps(spec))
"""


@pytest.fixture(scope="module")
def fresh_processes(exported, tmp_path_factory):
    """Load the SavedModel in a fresh Python process and run ``saved_model_cli show --all``, concurrently."""
    work = tmp_path_factory.mktemp("fresh")
    inputs = random_inputs(n=3)
    np.savez(work / "in.npz", **inputs)
    loader = subprocess.Popen(
        [sys.executable, "-c", _FRESH_PROCESS, str(exported.saved_model_dir), str(work / "in.npz"),
         str(work / "out.npz")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cli_path = Path(sys.executable).parent / "saved_model_cli"
    cli = None
    if cli_path.exists():
        cli = subprocess.Popen([str(cli_path), "show", "--dir", str(exported.saved_model_dir), "--all"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = loader.communicate(timeout=180)
    assert loader.returncode == 0, err[-2000:]
    cli_text = None
    if cli is not None:
        cli_text, cli_err = cli.communicate(timeout=180)
        assert cli.returncode == 0, cli_err[-2000:]
    return {"inputs": inputs, "spec": json.loads(out.strip().splitlines()[-1]),
            "outputs": dict(np.load(work / "out.npz")), "cli": cli_text}


def test_serving_signature_in_fresh_process_matches_keras(exported, fresh_processes):
    import keras

    spec = fresh_processes["spec"]
    expected_inputs = {p: ["float32", [-1, IMAGE_SIZE, IMAGE_SIZE, 3]] for p in CT_PHASES}
    expected_inputs["tabular"] = ["float32", [-1, len(SELECTED)]]
    assert spec["inputs"] == expected_inputs
    expected_outputs = {f"{p}_signature": ["float32", [-1, 1]] for p in CT_PHASES}
    expected_outputs["mvi_probability"] = ["float32", [-1, 1]]
    assert spec["outputs"] == expected_outputs

    model = keras.models.load_model(exported.keras_model, compile=False)
    reference = model(fresh_processes["inputs"], training=False)
    served = fresh_processes["outputs"]
    for key in expected_outputs:
        assert served[key].shape == (3, 1)
        assert np.max(np.abs(served[key] - np.asarray(reference[key]))) <= 1e-5, key
    assert exported.parity["saved_model_vs_keras_max_abs_diff"]["value"] <= 1e-5


def test_saved_model_cli_shows_named_serving_default(fresh_processes):
    text = fresh_processes["cli"]
    if text is None:
        pytest.skip(f"[saved-model-cli] saved_model_cli not installed next to {sys.executable}; "
                    "to run it: install tensorflow-cpu into that environment (it ships saved_model_cli)")
    block = text.split("signature_def['serving_default']:", 1)[1].split("signature_def[", 1)[0]
    for name in [*CT_PHASES, "tabular"]:
        assert f"inputs['{name}'] tensor_info:" in block
    for name in ["mvi_probability", *(f"{p}_signature" for p in CT_PHASES)]:
        assert f"outputs['{name}'] tensor_info:" in block
    assert f"shape: (-1, {IMAGE_SIZE}, {IMAGE_SIZE}, 3)" in block
    assert f"shape: (-1, {len(SELECTED)})" in block
    assert "DT_FLOAT" in block and "tensorflow/serving/predict" in block


def test_versions_increase_and_never_overwrite(fake_run, tmp_path):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    from mvi_tf.export import export_run
    from mvi_tf.export.saved_model import export_saved_model

    first = export_run(fake_run, out_base=tmp_path, tflite=False)
    pb_bytes = (first.saved_model_dir / "saved_model.pb").read_bytes()
    second = export_run(fake_run, out_base=tmp_path, tflite=False)
    other = export_run(write_run_dir(tmp_path / "run_other", build_tiny_cdlm(seed=3), modality="ct"),
                       out_base=tmp_path, name="mvi-other", tflite=False)
    assert (first.name, first.version, second.version, other.version) == ("mvi-cdlm-ct", 1, 2, 1)
    assert first.saved_model_dir == tmp_path / "mvi-cdlm-ct" / "1"
    assert (first.saved_model_dir / "saved_model.pb").read_bytes() == pb_bytes
    with pytest.raises(FileExistsError, match="overwrite"):
        export_saved_model(build_tiny_cdlm(), first.saved_model_dir)

    config = text_format.Parse((tmp_path / "models.config").read_text(), model_server_config_pb2.ModelServerConfig())
    entries = {c.name: c for c in config.model_config_list.config}
    assert sorted(entries) == ["mvi-cdlm-ct", "mvi-other"]
    assert entries["mvi-cdlm-ct"].base_path == str((tmp_path / "mvi-cdlm-ct").resolve())
    assert entries["mvi-cdlm-ct"].model_platform == "tensorflow"


def test_model_card_states_contract_and_limits(exported):
    card = json.loads(exported.model_card_json.read_text())
    assert card["phases"] == list(CT_PHASES)
    assert card["image_size"] == IMAGE_SIZE
    assert card["tabular_features"] == SELECTED
    assert [e["name"] for e in card["tabular_encoding"]] == SELECTED
    assert card["tabular_encoding"][1]["column"] == "tumour_size_cm"
    assert card["tabular_encoding"][1]["scaling"]["std"] > 0
    assert card["threshold"] == 0.5 and card["synthetic"] is True
    assert set(card["signature"]["inputs"]) == {*CT_PHASES, "tabular"}
    text = exported.model_card_md.read_text()
    assert "NOT a medical device" in text and "SYNTHETIC DATA" in text
    assert "`tumour_size_cm`" in text and "Intended use" in text


def test_export_rejects_tabular_mismatch(tmp_path):
    from mvi_tf.export import export_run

    run = write_run_dir(tmp_path / "run", build_tiny_cdlm(n_tabular=2))
    with pytest.raises(ValueError, match="selects 3"):
        export_run(run, out_base=tmp_path / "out", tflite=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="cdlm.keras"):
        export_run(tmp_path / "empty", out_base=tmp_path / "out2")
