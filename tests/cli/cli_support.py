"""Helpers of the slow end-to-end CLI tests: run a command in-process, and a prospective patient's predict arguments."""

from __future__ import annotations

import csv
import json
import traceback
from pathlib import Path

import pytest
from click.testing import CliRunner

from mvi_tf.cli import main


def invoke(*args: str) -> str:
    """Run one `mvi-tf` command in-process; fail with its traceback and output unless it exits 0."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    _release_models()
    if result.exit_code != 0:
        trace = "".join(traceback.format_exception(*result.exc_info)) if result.exc_info else ""
        pytest.fail(f"mvi-tf {' '.join(map(str, args))} exited {result.exit_code}:\n{result.output}\n{trace}")
    return result.output


def _release_models() -> None:
    """Free the models a command left behind: every command here runs in this one process, which a real
    `mvi-tf` call would end (without this the file's two tests grow past 8 GB)."""
    import gc

    import keras

    keras.backend.clear_session()
    gc.collect()


def predict_args(study: Path, modality: str) -> list:
    """--series, --mask (or --roi) and --clinical of the first prospective patient, from the cohort's tables."""
    cohort = study / "cohort"
    with (cohort / "clinical.csv").open(newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["cohort"] == "prospective")
    clinical = study / "predict" / f"{row['patient_id']}.csv"
    clinical.parent.mkdir(parents=True, exist_ok=True)
    with clinical.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        writer.writeheader()
        writer.writerow(row)
    with (cohort / "manifest.csv").open(newline="") as f:
        series = [r for r in csv.DictReader(f) if r["patient_id"] == row["patient_id"] and r["modality"] == modality]
    with (cohort / "lesions.csv").open(newline="") as f:
        lesion = next(r for r in csv.DictReader(f) if r["patient_id"] == row["patient_id"] and r["modality"] == modality)
    schema = json.loads((study / "runs" / modality / "schema.json").read_text())
    args = []
    for r in series:
        if r["phase"] in schema["phases"]:
            args += ["--series", f"{r['phase']}={cohort / r['series_dir']}"]
    if lesion["mask_phase"] in schema["phases"]:
        args += ["--mask", cohort / lesion["mask_path"], "--mask-phase", lesion["mask_phase"]]
    else:  # the mask was drawn on a phase the model does not read: give its square ROI instead
        roi = ",".join(lesion[k] for k in ("roi_center_x_mm", "roi_center_y_mm", "roi_center_z_mm", "roi_side_mm"))
        args += ["--roi", roi]
    return args + ["--clinical", clinical]
