"""The model card states the CDLM's calibration per split, the prospective cohort first (issue 17), and how its
images were sampled."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from export_support import SELECTED, records_schema
from scipy import special

from mvi_tf import calibration
from mvi_tf.export import model_card


def _predictions(run_dir, seed: int = 0) -> pd.DataFrame:
    """Train/val well calibrated; prospective over-predicting (true logit = predicted logit - 1)."""
    rng = np.random.default_rng(seed)
    rows = []
    for split, n, shift in (("train", 120, 0.0), ("val", 40, 0.0), ("prospective", 150, -1.0)):
        logit = rng.normal(0.0, 1.5, n)
        y = (rng.random(n) < special.expit(logit + shift)).astype(int)
        rows.append(pd.DataFrame({"patient_id": [f"{split}{i}" for i in range(n)], "split": split, "label": y,
                                  "cdlm": special.expit(logit)}))
    frame = pd.concat(rows, ignore_index=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    frame.to_csv(run_dir / "predictions.csv", index=False)
    return frame


def _card(run_dir) -> dict:
    run = {"schema": records_schema(), "selected": SELECTED, "threshold": 0.5, "metrics": {}, "run_dir": run_dir}
    return model_card.build_model_card(name="mvi-cdlm-ct", version=1, modality="ct", phases=["plain"], image_size=32,
                                       run=run, signature={"outputs": {}}, tflite={}, parity={}, synthetic=True)


def test_card_reports_prospective_calibration(tmp_path):
    frame = _predictions(tmp_path / "run")
    card = _card(tmp_path / "run")
    prosp = frame[frame["split"] == "prospective"]
    direct = calibration.calibration(prosp["label"], prosp["cdlm"])
    entry = card["calibration"]["prospective"]
    assert entry["n"] == 150 and entry["intercept"] == pytest.approx(direct.intercept)
    assert entry["slope"] == pytest.approx(direct.slope) and entry["oe_ratio"] == pytest.approx(direct.oe_ratio)
    assert entry["intercept"] < -0.5  # the simulated over-prediction is visible
    assert set(card["calibration"]) >= {"train", "val", "prospective", "definitions"}
    text = model_card.render_markdown(card)
    assert "## Calibration" in text
    assert f"calibration-in-the-large is {entry['intercept']:.2f}" in text
    assert "rms::val.prob" in text and "internal validation split" in text
    assert "train0" not in text  # no patient identifier reaches the card


def test_card_without_predictions_or_single_class(tmp_path):
    card = _card(tmp_path)
    assert "predictions.csv not found" in card["calibration"]["note"]
    assert "predictions.csv not found" in model_card.render_markdown(card)
    frame = _predictions(tmp_path / "run")
    frame.loc[frame["split"] == "val", "label"] = 0
    frame.to_csv(tmp_path / "run" / "predictions.csv", index=False)
    val = _card(tmp_path / "run")["calibration"]["val"]
    assert val["intercept"] is None and val["brier"] is not None and "undefined" in val["note"]


def test_the_card_says_how_the_images_were_sampled():
    square = model_card.image_input_text({"prepare_config": {"sampling": "square"}})
    unwrapped = model_card.image_input_text({"prepare_config": {"sampling": "unwrapped", "band_mm": [-12.0, 18.0]}})
    assert "square tumour ROI" in square and model_card.image_input_text({}) == square
    assert "unwrapped along the tumour boundary" in unwrapped and "-12.0 to 18.0 mm" in unwrapped
