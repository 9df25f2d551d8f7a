"""The main job end to end on a tiny synthetic cohort: every stage runs, the report is written, a rerun is free."""

from __future__ import annotations

import json

import pytest

from mvi_tf.demo import StudySettings, run_demo

# Two fold networks per phase instead of the recipe's three: the demo runner, not the stacking, is under test.
TINY = StudySettings(scale=0.02, dicom_image_size_px=64, roi_image_size_px=32, epochs=1, seed=3,
                     explain_max_patients=3, workers=2, cross_fit_folds=2)


@pytest.mark.slow
@pytest.mark.solo  # the whole demo in one process (~9 GB): `make test` runs it alone, after the parallel part
def test_demo_runs_every_stage_and_resumes(tmp_path):
    study = tmp_path / "study"
    result = run_demo(study, settings=TINY)
    for stage in ("synth", "prepare", "train_ct", "train_mri", "evaluate", "compare", "explain_ct", "explain_mri",
                  "survival", "export_ct", "export_mri", "predict"):
        assert (study / "stages" / f"{stage}.json").exists(), stage
    html = (study / "report.html").read_text()
    assert 'id="synthetic-banner"' in html
    # This run's timings (synth included) are in its own report: timings.json is written before the report.
    timings = json.loads((study / "timings.json").read_text())
    assert list(timings)[0] == "synth" and timings == result["timings_s"] and timings["train_ct"] > 0
    assert "Wall time per stage" in html and f"{timings['train_ct']:.1f}" in html
    assert html.count("data:image/png;base64,") >= 5
    stacking = json.loads((study / "runs" / "ct" / "stacking.json").read_text())
    assert stacking["cross_fit_folds"] == 2, stacking["source"]  # the study's setting reached training
    holdout = json.loads((study / "predict" / "holdout_prediction.json").read_text())
    for modality in ("ct", "mri"):
        probabilities = holdout["modalities"][modality]["probabilities"]
        assert set(probabilities) == {"keras", "savedmodel", "tflite"}
        assert holdout["modalities"][modality]["max_abs_difference"] <= 1e-4
    # A rerun with unchanged inputs skips every stage.
    again = run_demo(study, settings=TINY)
    assert all(seconds == 0.0 for name, seconds in again["timings_s"].items()), again["timings_s"]
    assert result["report"] == again["report"]
