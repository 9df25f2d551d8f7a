"""The console stays quiet: no TensorFlow C++ log line at the default verbosity, and `--verbose` brings them back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mvi_tf.console import TF_LOG_LINE

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])), CUDA_VISIBLE_DEVICES="-1")
    return env


def _tf_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if TF_LOG_LINE.match(line.encode())]


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=300)


def test_tensorflow_import_is_quiet_and_other_stderr_survives():
    loud = _python("import tensorflow")
    if not _tf_lines(loud.stderr):
        pytest.skip("this TensorFlow build prints no start-up log line; nothing to silence")
    quiet = _python("import sys\nfrom mvi_tf.console import quiet_tensorflow\nquiet_tensorflow()\n"
                    "print('before', file=sys.stderr, flush=True)\nimport tensorflow as tf\n"
                    "print('after', tf.constant(1).numpy(), file=sys.stderr)")
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert _tf_lines(quiet.stderr) == [], quiet.stderr
    assert quiet.stderr.splitlines()[:2] == ["before", "after 1"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "mvi_tf.cli", *args], capture_output=True, text=True,
                            env=_env(), timeout=900, cwd=REPO)
    assert result.returncode == 0, f"mvi-tf {args[0]} failed:\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_pipeline_commands_print_no_tensorflow_log_line(tmp_path):
    cohort, records, run, models = (tmp_path / name for name in ("cohort", "tfrecords", "run", "models"))
    _cli("synth", "--out", str(cohort), "--scale", "0.02", "--image-size", "64", "--workers", "1")
    # --verbose first: proves that there is something to silence (the loud run prints C++ log lines).
    loud = _cli("--verbose", "prepare", "--cohort", str(cohort), "--out", str(tmp_path / "loud"), "--image-size",
                "32", "--workers", "1")
    (tmp_path / "train.yaml").write_text("train:\n  cross_fit_folds: 0\n")
    outputs = {
        "prepare": _cli("prepare", "--cohort", str(cohort), "--out", str(records), "--image-size", "32",
                        "--workers", "1"),
        "train": _cli("train", "--data", str(records), "--modality", "ct", "--out", str(run), "--epochs", "1",
                      "--image-size", "32", "--config", str(tmp_path / "train.yaml")),
        # Without --cohort: maps in the ROI frame, no localisation scoring (whose console summary is another
        # issue's on cohorts this small).
        "explain": _cli("explain", "--run", str(run), "--data", str(records), "--out", str(tmp_path / "explain"),
                        "--max-patients", "1"),
        "export": _cli("export", "--run", str(run), "--out", str(models), "--data", str(records)),
    }
    assert _tf_lines(loud.stderr), "with --verbose TensorFlow's start-up lines should be shown"
    for name, result in outputs.items():
        assert _tf_lines(result.stdout + result.stderr) == [], f"mvi-tf {name} printed TensorFlow log lines"
    assert "written" in outputs["prepare"].stdout and "CDLM AUC" in outputs["train"].stdout
    assert "summary:" in outputs["explain"].stdout and "SavedModel" in outputs["export"].stdout
