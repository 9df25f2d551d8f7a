"""`mvi-tf predict` on damaged models and clinical files: one line naming the file, never a traceback; a
degenerate threshold comes with a caveat."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from export_support import CLINICAL, CT_PHASES, build_tiny_cdlm, write_run_dir


@pytest.fixture(scope="module")
def saved_model(fake_run, tmp_path_factory) -> Path:
    from mvi_tf.export import export_run

    return export_run(fake_run, out_base=tmp_path_factory.mktemp("sm"), tflite=False).saved_model_dir


def _predict(tmp_path: Path, *args: str):
    from mvi_tf.cli import main

    series = []
    for phase in CT_PHASES:
        (tmp_path / phase).mkdir(exist_ok=True)
        series += ["--series", f"{phase}={tmp_path / phase}"]
    return CliRunner().invoke(main, ["predict", *series, "--roi", "0,0,0,30", *args])


def _one_line_error(result) -> str:
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def test_corrupt_keras_file_is_named(fake_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(fake_run, run)
    (run / "cdlm.keras").write_bytes((run / "cdlm.keras").read_bytes()[:500])
    line = _one_line_error(_predict(tmp_path, "--model", str(run / "cdlm.keras"), "--backend", "keras",
                                    "--clinical", json.dumps(CLINICAL)))
    assert "cdlm.keras cannot be loaded" in line and "corrupt or truncated" in line


def test_truncated_saved_model_pb_is_named(saved_model, tmp_path):
    version = tmp_path / "model" / "1"
    shutil.copytree(saved_model, version)
    pb = version / "saved_model.pb"
    pb.write_bytes(pb.read_bytes()[: pb.stat().st_size // 3])
    line = _one_line_error(_predict(tmp_path, "--model", str(version), "--clinical", json.dumps(CLINICAL)))
    assert "cannot be loaded as a SavedModel folder" in line and str(version) in line


@pytest.mark.parametrize("content, words", [
    ('{"age": 58, "sex": "male",', ["is not valid JSON", "line 1"]),
    ('[1, 2, 3]', ["must be a JSON object"]),
    (b"\xff\xfe{\x00}\x00", ["is not UTF-8 text"]),
])
def test_malformed_clinical_json_file_is_named(saved_model, tmp_path, content, words):
    path = tmp_path / "clinical.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    line = _one_line_error(_predict(tmp_path, "--model", str(saved_model), "--clinical", str(path)))
    assert "clinical.json" in line
    for word in words:
        assert word in line, line


def test_malformed_clinical_json_text_and_csv_are_one_line(saved_model, tmp_path):
    line = _one_line_error(_predict(tmp_path, "--model", str(saved_model), "--clinical", '{"age": 58,,}'))
    assert "--clinical is not valid JSON" in line
    (tmp_path / "c.csv").write_bytes("patient_id,age\nP\xe9,58\n".encode("latin-1"))
    line = _one_line_error(_predict(tmp_path, "--model", str(saved_model), "--clinical", str(tmp_path / "c.csv")))
    assert "c.csv cannot be read" in line


def test_implausible_clinical_value_is_named(saved_model, tmp_path):
    line = _one_line_error(_predict(tmp_path, "--model", str(saved_model), "--clinical",
                                    json.dumps(dict(CLINICAL, afp_ng_ml=1e30))))
    assert "afp_ng_ml" in line and "plausible range" in line


@pytest.mark.real
def test_degenerate_threshold_gets_a_caveat(tmp_path, data_files):
    REAL = data_files.small_real("dcmqi-ct3slice-liver")  # noqa: N806
    from mvi_tf.cli import main

    run = write_run_dir(tmp_path / "run", build_tiny_cdlm(), threshold=0.0)
    series = [arg for phase in CT_PHASES for arg in ("--series", f"{phase}={REAL / 'ct-3slice'}")]
    result_args = ["predict", "--model", str(run / "cdlm.keras"), "--backend", "keras", *series, "--mask",
                   str(REAL / "liver.dcm"), "--mask-phase", "portal", "--allow-shared-series", "--clinical",
                   json.dumps(CLINICAL)]
    result = CliRunner().invoke(main, result_args)
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output[result.output.index("{"):])
    assert printed["predicted_group"] == "MVI-positive" and "degenerate threshold 0.0" in printed["threshold_note"]
    assert any("are the same series" in w for w in printed["warnings"])
    without = [a for a in result_args if a != "--allow-shared-series"]
    line = _one_line_error(CliRunner().invoke(main, without))
    assert "are the same series" in line and "1.2." not in line
