"""`mvi-tf export` and `mvi-tf predict` through click."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from export_support import CLINICAL, CT_PHASES


def test_export_command_writes_next_version(fake_run, tmp_path):
    from mvi_tf.cli import main

    out = tmp_path / "models"
    for version in (1, 2):
        result = CliRunner().invoke(main, ["export", "--run", str(fake_run), "--out", str(out), "--no-tflite"])
        assert result.exit_code == 0, result.output
        assert f"version {version}" in result.output
    assert (out / "mvi-cdlm-ct" / "2" / "saved_model.pb").exists()
    assert not list(out.glob("*.tflite"))


def test_predict_command_reports_clear_errors(exported, tmp_path):
    from mvi_tf.cli import main

    (tmp_path / "plain").mkdir()
    args = ["predict", "--model", str(exported.saved_model_dir), "--clinical", json.dumps(CLINICAL)]
    result = CliRunner().invoke(main, [*args, "--series", f"plain={tmp_path / 'plain'}", "--roi", "0,0,0,30"])
    assert result.exit_code != 0 and "Missing phase(s) ['arterial', 'portal']" in result.output
    result = CliRunner().invoke(main, [*args, "--series", "plain", "--roi", "0,0,0,30"])
    assert result.exit_code != 0 and "expected PHASE=DIR" in result.output
    result = CliRunner().invoke(main, [*args, "--series", f"plain={tmp_path}", "--roi", "1,2,3"])
    assert result.exit_code != 0 and "X,Y,Z,SIDE" in result.output


@pytest.mark.real
def test_predict_command_on_real_ct(exported, tmp_path, data_files):
    from mvi_tf.cli import main

    real = data_files.small_real("dcmqi-ct3slice-liver")
    (tmp_path / "clinical.csv").write_text(",".join(CLINICAL) + "\n" + ",".join(map(str, CLINICAL.values())) + "\n")
    series = [arg for phase in CT_PHASES for arg in ("--series", f"{phase}={real / 'ct-3slice'}")]
    result = CliRunner().invoke(main, [
        "predict", "--model", str(exported.tflite_int8), "--backend", "tflite", *series,
        "--mask", str(real / "liver.dcm"), "--mask-phase", "portal", "--allow-shared-series",
        "--clinical", str(tmp_path / "clinical.csv"),
        "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output[result.output.index("{"):])
    assert printed == json.loads((tmp_path / "out" / "prediction.json").read_text())
    assert printed["backend"] == "tflite" and printed["predicted_group"] in ("MVI-positive", "MVI-negative")
