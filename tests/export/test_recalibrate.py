"""`mvi-tf recalibrate`: fitted on a seeded half of a miscalibrated cohort, it improves calibration-in-the-large
on the other half, and the exported SavedModel/TFLite apply the recalibration (issue 17, item 2)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from export_support import build_tiny_cdlm, random_inputs, write_run_dir
from scipy import special

from mvi_tf import calibration
from mvi_tf.cli import main
from mvi_tf.export.recalibration import recalibrate_run


def _run_with_predictions(root, seed: int = 0):
    """Tiny CDLM run; its predictions.csv has a prospective cohort whose true logit is the predicted one - 1."""
    model = build_tiny_cdlm()
    run = write_run_dir(root / "run", model, threshold=0.4)
    rng = np.random.default_rng(seed)
    rows = []
    for split, n, shift in (("train", 80, 0.0), ("val", 30, 0.0), ("prospective", 240, -1.0)):
        logit = rng.normal(0.3, 1.4, n)
        rows.append(pd.DataFrame({
            "patient_id": [f"{split[:2].upper()}{i:03d}" for i in range(n)], "modality": "ct",
            "cohort": "prospective" if split == "prospective" else "train", "split": split,
            "label": (rng.random(n) < special.expit(logit + shift)).astype(int), "cdlm": special.expit(logit),
        }))
    pd.concat(rows, ignore_index=True).to_csv(run / "predictions.csv", index=False)
    return run, model


def test_recalibration_on_half_improves_the_other_half(tmp_path):
    run, model = _run_with_predictions(tmp_path)
    result = recalibrate_run(run, "prospective", tmp_path / "recal", fit_fraction=0.5, seed=3)
    record = json.loads((result.out_dir / "recalibration.json").read_text())
    assert record["n_fit"] == 120 and record["n_held_out"] == 120 and record["slope"] == 1.0
    before, after = record["before"]["held_out"], record["after"]["held_out"]
    assert abs(after["intercept"]) < abs(before["intercept"]) and before["intercept"] < -0.5
    assert abs(record["after"]["fit"]["intercept"]) < 1e-6  # intercept-only MLE: O = E on the fitting half
    new = pd.read_csv(result.out_dir / "predictions.csv")
    old = pd.read_csv(run / "predictions.csv")
    held = new[(new["split"] == "prospective") & (new["recalibration_fit"] == 0)]
    direct = calibration.calibration(held["label"], held["cdlm"])
    assert direct.intercept == pytest.approx(after["intercept"], abs=1e-9)
    # The threshold moves with the probabilities: nobody changes predicted group.
    thr_new = json.loads((result.out_dir / "thresholds.json").read_text())["cdlm"]
    assert np.array_equal(old["cdlm"] >= 0.4, new["cdlm"] >= thr_new)
    # The saved model applies the recalibration to the CDLM's own output.
    from mvi_tf.export.pipeline import load_keras_model

    inputs = random_inputs()
    base = np.asarray(model(inputs, training=False)["mvi_probability"], dtype=float)
    recal = np.asarray(load_keras_model(result.out_dir / "cdlm.keras")(inputs, training=False)["mvi_probability"])
    assert recal == pytest.approx(calibration.recalibrate(base, result.fit), abs=1e-6)


def test_recalibrated_run_exports_with_parity_and_card(tmp_path):
    from mvi_tf.export import export_run

    run, _ = _run_with_predictions(tmp_path)
    result = recalibrate_run(run, "prospective", tmp_path / "recal", fit_slope=True, fit_fraction=0.5, seed=1)
    exported = export_run(result.out_dir, tmp_path / "saved_models", name="mvi-cdlm-ct-site")
    # export_run raises unless SavedModel matches Keras to 1e-5 and float TFLite to 1e-4; record the values.
    assert exported.parity["saved_model_vs_keras_max_abs_diff"]["value"] <= 1e-5
    assert exported.parity["tflite_float32_vs_keras_max_abs_diff"]["value"] <= 1e-5
    card = json.loads(exported.model_card_json.read_text())
    assert card["recalibration"]["slope"] == pytest.approx(result.fit.slope)
    text = exported.model_card_md.read_text()
    assert "## Recalibration" in text and "held out" in text and "## Calibration" in text


def test_recalibrate_cli_and_errors(tmp_path):
    run, _ = _run_with_predictions(tmp_path)
    res = CliRunner().invoke(main, ["recalibrate", "--run", str(run), "--cohort", "prospective", "--out",
                                    str(tmp_path / "cli"), "--fit-fraction", "0.5"])
    assert res.exit_code == 0, res.output
    assert "held_out (n=120): calibration-in-the-large" in res.output
    with pytest.raises(FileExistsError, match="never overwrites"):
        recalibrate_run(run, "prospective", tmp_path / "cli")
    with pytest.raises(ValueError, match="no patient of cohort 'site-x'.*prospective"):
        recalibrate_run(run, "site-x", tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_card_of_recalibrated_run_leaves_out_the_fitting_patients(tmp_path):
    from mvi_tf.export.model_card import cdlm_calibration

    run, _ = _run_with_predictions(tmp_path)
    result = recalibrate_run(run, "prospective", tmp_path / "recal", fit_fraction=0.5, seed=3)
    card = cdlm_calibration(result.out_dir)
    assert card["prospective"]["n"] == 120
    assert card["prospective"]["intercept"] == pytest.approx(result.record["after"]["held_out"]["intercept"])
    assert "120 patients the recalibration was fitted on are left out" in card["definitions"]


def test_recalibration_scores_the_site_records(tmp_path):
    """--data: the site's TFRecords (cohort 'train' of data_prep's writer) are scored with the run's CDLM, and
    the intercept equals the recalibration fitted directly on those scores."""
    from export_support import write_records

    from mvi_tf.data import to_numpy
    from mvi_tf.export import model_card as card_lib

    model = build_tiny_cdlm()
    run = write_run_dir(tmp_path / "run", model, threshold=0.4)
    records = write_records(tmp_path / "records", run, n=24, n_val=8)
    result = recalibrate_run(run, "train", tmp_path / "recal", records_dir=records)
    arrays = to_numpy(str(records), "ct", cohorts=["train"])
    schema = json.loads((run / "schema.json").read_text())
    indices = card_lib.selected_indices(schema, json.loads((run / "feature_selection.json").read_text())["selected"])
    inputs = {p: arrays[p].astype(np.float32) for p in ("plain", "arterial", "portal")}
    inputs["tabular"] = arrays["tabular"][:, indices].astype(np.float32)
    scores = np.asarray(model(inputs, training=False)["mvi_probability"], dtype=float).reshape(-1)
    direct = calibration.logistic_recalibration(arrays["label"].reshape(-1).astype(int), scores, fit_slope=False)
    assert result.fit.intercept == pytest.approx(direct.intercept, abs=1e-5)
    site = pd.read_csv(result.out_dir / "site_predictions.csv", dtype={"patient_id": str})
    assert len(site) == 24 and site["recalibration_fit"].all()
    assert site["cdlm_before"].to_numpy() == pytest.approx(scores, abs=1e-6)
    assert result.record["source"] == "TFRecords in records"
    with pytest.raises(FileNotFoundError, match=r"No TFRecord shards for modality='ct', cohorts=\['prospective'\]"):
        recalibrate_run(run, "prospective", tmp_path / "none", records_dir=records)
