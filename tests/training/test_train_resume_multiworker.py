"""Fault tolerance and scale-out, for real: a run killed mid-stage resumes; two local workers train together."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from training_records_fixture import write_tiny_records

REPO = Path(__file__).resolve().parents[2]
TRAIN = [sys.executable, "-c", "from mvi_tf.cli import main; main()", "train", "--modality", "ct"]


def _config(path: Path) -> Path:
    path.write_text("data:\n  phases: [arterial]\ntrain:\n  patience: 10\n")
    return path


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "-1", "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


def test_killed_run_resumes_from_backup(tmp_path):
    records = write_tiny_records(tmp_path / "records", n_train=16, n_prospective=4)
    run = tmp_path / "run"
    cmd = [*TRAIN, "--data", str(records), "--out", str(run), "--config", str(_config(tmp_path / "c.yaml")),
           "--epochs", "3", "--batch-size", "4", "--seed", "0"]
    marker = run / "checkpoints" / "backup_signature_arterial" / "training_metadata.json"
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert marker.exists(), (tmp_path / "first.log").read_text()[-3000:]
    assert json.loads(marker.read_text())["epoch"] == 1
    assert not (run / "signature_arterial.keras").exists()  # killed inside the stage

    second = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=400, check=False)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    history = pd.read_csv(run / "history" / "signature_arterial.csv")
    assert list(history["epoch"]) == [0, 1, 2]  # epoch 0 from the killed run, then resumed at epoch 1
    assert (run / "cdlm.keras").is_file() and not (run / "checkpoints" / "backup_signature_arterial").exists()


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.multiworker
def test_two_local_workers_train_one_run(tmp_path):
    records = write_tiny_records(tmp_path / "records", n_train=12, n_prospective=4)
    run = tmp_path / "run"
    cluster = {"worker": [f"localhost:{p}" for p in _free_ports(2)]}
    # The paper's dense heads train every stage collectively (the logistic heads are fitted, not trained), and
    # --verbose keeps TensorFlow's own log line that names the cluster size.
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  phases: [arterial]\nmodel:\n  head: dense\ntrain:\n  patience: 10\n")
    cmd = [sys.executable, "-c", "from mvi_tf.cli import main; main()", "--verbose", *TRAIN[3:], "--data",
           str(records), "--out", str(run), "--config", str(config), "--epochs", "1", "--batch-size", "8", "--seed",
           "0", "--strategy", "multiworker"]
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        log = (tmp_path / f"worker{index}.log").open("w")
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=_env(TF_CONFIG=tf_config), stdout=log,
                                      stderr=subprocess.STDOUT))
    try:
        codes = [p.wait(timeout=500) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], "\n".join(log[-3000:] for log in logs)
    assert "num_workers = 2" in logs[0]
    assert (run / "cdlm.keras").is_file() and (run / "predictions.csv").is_file()
    assert "Run written to" in logs[0] and "CDLM AUC" in logs[0]  # only the chief evaluates
    assert "CDLM AUC" not in logs[1]
    history = pd.read_csv(run / "history" / "cdlm.csv")
    assert list(history["epoch"]) == [0]
