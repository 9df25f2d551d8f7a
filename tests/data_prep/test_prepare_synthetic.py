"""Round trip on a tiny cohort from the synthetic generator: `mvi-tf synth` output -> `prepare` -> reader."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from data_prep.config import PrepareConfig
from data_prep.prepare import prepare_cohort, prepare_patient


@pytest.mark.slow
def test_synthetic_cohort_round_trip(tmp_path):
    synthetic = pytest.importorskip("data_prep.synthetic.cohort")
    from mvi_tf.data import load_schema, to_numpy

    cohort = tmp_path / "cohort"
    synthetic.generate_cohort(cohort, seed=0, scale=0.02, image_size=64, progress=False)
    result = prepare_cohort(cohort, tmp_path / "records", image_size=32, progress=False)
    with open(cohort / "manifest.csv", newline="") as handle:
        manifest = list(csv.DictReader(handle))
    studies = {(r["patient_id"], r["modality"]) for r in manifest}
    assert result.n_skipped == 0, result.skipped
    assert result.n_written == len(studies)
    with open(cohort / "truth" / "patients.csv", newline="") as handle:
        truth = {(r["patient_id"], r["modality"]): r for r in csv.DictReader(handle)}
    with open(result.report_path, newline="") as handle:
        report = list(csv.DictReader(handle))
    assert {(r["patient_id"], r["modality"]) for r in report} == studies
    for row in report:  # the ROI is centred on the true tumour (in-plane) and holds it
        t = truth[(row["patient_id"], row["modality"])]
        offset = np.hypot(float(row["roi_center_x_mm"]) - float(t["tumour_center_x_mm"]),
                          float(row["roi_center_y_mm"]) - float(t["tumour_center_y_mm"]))
        assert offset < 0.25 * float(row["roi_side_mm"]), row
        assert float(row["roi_side_mm"]) > 2 * float(t["tumour_radius_mm"])

    lesions = {}
    with open(cohort / "lesions.csv", newline="") as handle:
        for r in csv.DictReader(handle):
            lesions[(r["patient_id"], r["modality"])] = r
    for modality in ("ct", "mri"):
        data = to_numpy(result.out_dir, modality)
        schema = load_schema(result.out_dir, modality)
        assert schema["synthetic"] is True, "records of a generated cohort must be labelled synthetic"
        pid = str(data["patient_id"][0])
        lesion = lesions[(pid, modality)]
        dirs = {r["phase"]: cohort / r["series_dir"] for r in manifest
                if r["patient_id"] == pid and r["modality"] == modality}
        uids = {r["phase"]: r["series_uid"] for r in manifest
                if r["patient_id"] == pid and r["modality"] == modality and r.get("series_uid")}
        stacks = prepare_patient(dirs, modality, cohort / lesion["mask_path"], lesion["mask_phase"],
                                 config=PrepareConfig(image_size=32), mask_segment=int(lesion["mask_segment"] or 1),
                                 series_uids=uids)
        for phase in schema["phases"]:
            np.testing.assert_array_equal(data[phase][0], stacks[phase])
            assert 0.0 <= data[phase].min() and data[phase].max() <= 1.0
