"""`prepare`'s output folder: a lock against concurrent runs, staged writes, no stale shards, listed shards only."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from dicom_cohort_fixture import make_cohort, read_csv, write_csv

from data_prep.config import PrepareConfig
from data_prep.prepare import LOCK_FILE, STAGING_DIR, OutputLockedError, prepare_cohort

REPO = Path(__file__).resolve().parents[2]
CONFIG = PrepareConfig(phases={"ct": ("plain", "arterial", "portal"), "mri": ("t2", "hepatobiliary")},
                       margin_mm=5.0, image_size=32)
PATIENTS = {"P001": ("train", ("ct",), "nifti"), "P002": ("train", ("ct",), "roi"),
            "P003": ("prospective", ("ct",), "roi"), "P004": ("train", ("ct", "mri"), "nifti")}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return make_cohort(tmp_path_factory.mktemp("guard") / "cohort", PATIENTS, seed=11)


def _written(out: Path, modality: str = "ct") -> list[str]:
    from mvi_tf.data import to_numpy

    return sorted(to_numpy(out, modality)["patient_id"])


def _report_written(out: Path, modality: str = "ct") -> list[str]:
    return sorted(r["patient_id"] for r in read_csv(out / "prepare_report.csv")
                  if r["status"] == "written" and r["modality"] == modality)


def _fewer(cohort: Path, root: Path, keep: set[str]) -> Path:
    shutil.copytree(cohort, root)
    for name in ("manifest.csv", "lesions.csv", "clinical.csv"):
        rows = [r for r in read_csv(root / name) if r["patient_id"] in keep]
        write_csv(root / name, list(rows[0]), rows)
    return root


def test_rerun_with_fewer_patients_leaves_exactly_the_reported_ones(cohort, tmp_path):
    out = tmp_path / "records"
    first = prepare_cohort(cohort, out, config=CONFIG, workers=1, progress=False)
    assert first.n_written == 5 and _written(out) == ["P001", "P002", "P003", "P004"]
    (out / "ct" / "train-00007-of-00009.tfrecord").write_bytes(b"stale")  # a stray shard of some older run
    (out / "notes.txt").write_text("the user's own file")
    smaller = _fewer(cohort, tmp_path / "smaller", {"P001", "P003"})
    second = prepare_cohort(smaller, out, config=CONFIG, workers=1, progress=False)
    assert second.n_written == 2
    assert _written(out) == _report_written(out) == ["P001", "P003"]
    assert not (out / "mri").exists() or not list((out / "mri").iterdir())  # P004's MRI records are gone
    assert sorted(p.name for p in (out / "ct").iterdir()) == [
        "prospective-00000-of-00001.tfrecord", "schema.json", "train-00000-of-00001.tfrecord"]
    assert (out / "notes.txt").read_text() == "the user's own file"  # only prepare's own files are replaced
    assert not (out / STAGING_DIR).exists()


def test_loader_reads_only_listed_shards_and_names_a_truncated_one(cohort, tmp_path):
    from mvi_tf.data import ShardError, list_shards

    out = tmp_path / "records"
    prepare_cohort(cohort, out, config=CONFIG, workers=1, progress=False)
    shutil.copy(out / "ct" / "train-00000-of-00001.tfrecord", out / "ct" / "train-00000-of-00002.tfrecord")
    assert [Path(p).name for p in list_shards(out, "ct", "train")] == ["train-00000-of-00001.tfrecord"]
    assert _written(out) == ["P001", "P002", "P003", "P004"]  # the copied stray shard is not read twice
    shard = out / "ct" / "prospective-00000-of-00001.tfrecord"
    shard.write_bytes(shard.read_bytes()[:-40])
    with pytest.raises(ShardError, match="ct/prospective-00000-of-00001.tfrecord is .* bytes, schema.json records"):
        list_shards(out, "ct")
    shard.unlink()
    with pytest.raises(ShardError, match="prospective-00000-of-00001.tfrecord listed in schema.json is missing"):
        list_shards(out, "ct", "prospective")


def _hold_lock(path: Path) -> subprocess.Popen:
    code = ("import fcntl, sys, time; h = open(sys.argv[1], 'a+'); fcntl.flock(h, fcntl.LOCK_EX); "
            "print('locked', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_second_run_on_a_locked_out_refuses_and_kill_9_frees_it(cohort, tmp_path):
    from mvi_tf.cli import main

    out = tmp_path / "records"
    prepare_cohort(cohort, out, config=CONFIG, workers=1, progress=False)
    before = {p.name: p.read_bytes() for p in (out / "ct").iterdir()}
    holder = _hold_lock(out / LOCK_FILE)  # another process in the middle of its run
    try:
        with pytest.raises(OutputLockedError, match="another `mvi-tf prepare` is writing into"):
            prepare_cohort(cohort, out, config=CONFIG, workers=1, progress=False)
        cli = CliRunner().invoke(main, ["prepare", "--cohort", str(cohort), "--out", str(out), "--workers", "1"])
        assert cli.exit_code == 1 and "Traceback" not in cli.output and "is writing into" in cli.output
        assert {p.name: p.read_bytes() for p in (out / "ct").iterdir()} == before  # the first run's output intact
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    again = prepare_cohort(cohort, out, config=CONFIG, workers=1, progress=False)  # the OS released the lock
    assert again.n_written == 5


def test_a_run_killed_mid_way_leaves_the_previous_output_and_the_next_run_cleans_up(cohort, tmp_path):
    out = tmp_path / "records"
    smaller = _fewer(cohort, tmp_path / "smaller", {"P001", "P002"})
    prepare_cohort(smaller, out, config=CONFIG, workers=1, progress=False)
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    command = ["prepare", "--cohort", str(cohort), "--out", str(out), "--workers", "1", "--phases",
               "mri=t2,hepatobiliary", "--image-size", "32"]
    run = subprocess.Popen([sys.executable, "-c", "from mvi_tf.cli import main; main()", *command], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / STAGING_DIR / ".pending").is_dir() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert (out / STAGING_DIR).is_dir(), "the run was not caught mid-way"
    assert _written(out) == _report_written(out) == ["P001", "P002"]  # the earlier output is untouched
    final = prepare_cohort(cohort, out, config=CONFIG, workers=1, progress=False)
    assert final.n_written == 5 and not (out / STAGING_DIR).exists()
    assert _written(out) == _report_written(out) == ["P001", "P002", "P003", "P004"]


def test_two_concurrent_runs_the_second_refuses_and_the_first_completes(cohort, tmp_path):
    out = tmp_path / "records"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    command = ["prepare", "--cohort", str(cohort), "--out", str(out), "--workers", "1", "--phases",
               "mri=t2,hepatobiliary", "--image-size", "32"]
    first = subprocess.Popen([sys.executable, "-c", "from mvi_tf.cli import main; main()", *command], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not (out / STAGING_DIR).is_dir() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert first.poll() is None, "the first run ended before the second could start"
    with pytest.raises(OutputLockedError):
        prepare_cohort(cohort, out, config=CONFIG, workers=1, progress=False)
    output, _ = first.communicate(timeout=300)
    assert first.returncode == 0, output
    assert _written(out) == _report_written(out) == ["P001", "P002", "P003", "P004"]
    assert _written(out, "mri") == ["P004"]
