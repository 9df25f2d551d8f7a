"""`mvi-tf train` end to end on tiny real TFRecords: three stages, run directory contract, determinism."""

from __future__ import annotations

import json

import keras
import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from training_records_fixture import write_tiny_records

from mvi_tf.cli import main

PHASES = ["arterial", "portal"]
ARGS = {"epochs": 1, "batch_size": 8, "seed": 3, "deterministic": True}


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return write_tiny_records(tmp_path_factory.mktemp("records"), n_train=20, n_prospective=6)


@pytest.fixture(scope="module")
def cli_run(records, tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    config = base / "tiny.yaml"
    config.write_text(yaml.safe_dump({"data": {"phases": PHASES}, "train": {"patience": 2}}))
    out = base / "run"
    result = CliRunner().invoke(
        main,
        ["train", "--data", str(records), "--modality", "ct", "--out", str(out), "--config", str(config),
         "--epochs", "1", "--batch-size", "8", "--seed", "3", "--deterministic"],
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "CDLM AUC" in result.output and "[SYNTHETIC DATA]" in result.output
    return out


def test_run_directory_contract(cli_run):
    run = cli_run
    for name in ["config.yaml", "schema.json", "feature_selection.json", "feature_selection.csv", "fusion.keras",
                 "cdlm.keras", "clinical_model.json", "radiological_model.json", "thresholds.json",
                 "predictions.csv", "metrics.json", *[f"signature_{p}.keras" for p in PHASES]]:
        assert (run / name).is_file(), name
    folds = [f"signature_{p}_fold{k}" for p in PHASES for k in range(3)]
    for stage in [*[f"signature_{p}" for p in PHASES], *folds]:
        history = pd.read_csv(run / "history" / f"{stage}.csv")
        assert list(history["epoch"]) == [0] and {"auc", "val_auc", "loss"} <= set(history.columns)
        assert any((run / "logs" / stage).rglob("events.out.tfevents.*")), stage
        assert not (run / "checkpoints" / f"backup_{stage}").exists()  # removed once the stage finished

    for stage in folds:
        assert (run / "folds" / f"{stage}.keras").is_file(), stage
    assert not (run / "checkpoints").exists()  # a finished run keeps its stage models, not their checkpoints
    stacking = json.loads((run / "stacking.json").read_text())
    assert stacking["cross_fit_folds"] == 3 and "out-of-fold" in stacking["source"]
    oof = pd.read_csv(run / "oof_signatures.csv")
    assert set(oof["fold"]) == {0, 1, 2} and oof["patient_id"].is_unique
    assert len(oof) == (predictions_split := pd.read_csv(run / "predictions.csv"))["split"].eq("train").sum()
    assert set(oof["patient_id"]) == set(predictions_split.loc[predictions_split["split"] == "train", "patient_id"])

    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["data"]["phases"] == PHASES and config["train"]["seed"] == 3 and config["data"]["synthetic"]

    selection = json.loads((run / "feature_selection.json").read_text())
    schema = json.loads((run / "schema.json").read_text())
    assert selection["selected"] and set(selection["selected"]) <= set(schema["tabular"]["feature_names"])
    assert selection["clinical"]["univariable"][0]["odds_ratio"] is not None

    predictions = pd.read_csv(run / "predictions.csv")
    assert set(predictions["split"]) == {"train", "val", "prospective"}
    assert (predictions.loc[predictions["cohort"] == "prospective", "split"] == "prospective").all()
    scores = ["clinical", "radiological", *[f"signature_{p}" for p in PHASES], "fusion", "cdlm"]
    assert list(predictions.columns[-len(scores):]) == scores
    assert predictions[scores].apply(lambda c: c.between(0, 1).all()).all()
    assert len(predictions) == 26 and predictions["patient_id"].is_unique

    thresholds = json.loads((run / "thresholds.json").read_text())
    assert set(thresholds) == set(scores)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["synthetic"] is True and metrics["seed"] == 3
    assert set(metrics["auc"]["cdlm"]) == {"train", "val", "prospective"}


def test_cdlm_integrates_the_signatures_with_tabular(cli_run):
    run = cli_run
    selection = json.loads((run / "feature_selection.json").read_text())["selected"]
    cdlm = keras.models.load_model(run / "cdlm.keras")
    fusion = keras.models.load_model(run / "fusion.keras")
    signature = keras.models.load_model(run / "signature_arterial.keras")
    assert cdlm.get_layer("tabular").output.shape[-1] == len(selection)
    assert {"arterial_stage4_block2_conv2", "portal_stage4_block2_conv2"} <= {layer.name for layer in cdlm.layers}
    assert cdlm.get_layer("cdlm_signatures").output.shape[-1] == len(PHASES)
    # Frozen backbones (fine_tune_backbones: false): branch weights flow unchanged signature -> fusion and
    # signature -> CDLM, and the CDLM keeps each signature's head: it integrates the signatures as trained.
    for name in ("arterial_stage4_block2_conv2", "arterial_signature_logit"):
        for model in (fusion, cdlm):
            np.testing.assert_array_equal(model.get_layer(name).get_weights()[0],
                                          signature.get_layer(name).get_weights()[0])
    # The stacking head: a rising signature never lowers the combined risk, and its coefficients are those of
    # stacking.json (fitted on out-of-fold signatures).
    stacking = json.loads((run / "stacking.json").read_text())
    kernel = cdlm.get_layer("cdlm_signature_dense").get_weights()[0].ravel()
    assert np.all(kernel >= 0)
    np.testing.assert_allclose(kernel, stacking["cdlm"]["signature_coef"], rtol=1e-6)
    np.testing.assert_allclose(cdlm.get_layer("cdlm_tabular_dense").get_weights()[0].ravel(),
                               stacking["cdlm_tabular_coef"], rtol=1e-6)
    np.testing.assert_allclose(fusion.get_layer("fusion_logit").get_weights()[0].ravel(),
                               stacking["fusion"]["signature_coef"], rtol=1e-6)


def test_the_papers_dense_heads_still_train(records, tmp_path):
    from mvi_tf.training import train

    result = train(records, "ct", tmp_path / "dense", phases=PHASES, head="dense", verbose=0, **ARGS)
    cdlm = keras.models.load_model(result.model_path)
    assert cdlm.get_layer("cdlm_dense").output.shape[-1] == 64
    assert np.all(cdlm.get_layer("cdlm_logit").get_weights()[0] >= 0)
    assert {"fusion", "cdlm"} <= set(result.metrics["best_val_auc"])
    assert not (tmp_path / "dense" / "stacking.json").exists()


def test_same_seed_gives_identical_metrics(cli_run, records, tmp_path):
    from mvi_tf.training import train

    again = train(records, "ct", tmp_path / "again", phases=PHASES, patience=2, verbose=0, **ARGS)
    first = json.loads((cli_run / "metrics.json").read_text())
    assert again.metrics["auc"] == first["auc"]
    a = pd.read_csv(cli_run / "predictions.csv")
    b = pd.read_csv(tmp_path / "again" / "predictions.csv")
    pd.testing.assert_frame_equal(a, b, check_exact=True)
