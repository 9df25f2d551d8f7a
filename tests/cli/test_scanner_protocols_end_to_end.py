"""A CT protocol other than the paper's, end to end: the portal series relabelled ``equilibrium``.

Many hospitals scan liver CT as arterial + portal + delayed/equilibrium, or skip the plain phase. The phases a
model reads come from the records' schema, which `prepare --phases` writes: every later command must follow it.
Two protocols: ``plain,arterial,equilibrium`` and the two-phase ``arterial,equilibrium``; each goes through
prepare -> train -> evaluate -> explain -> export -> predict (Keras, SavedModel, TFLite) -> report.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from cli_support import invoke, predict_args

pytestmark = pytest.mark.slow


def _relabel(path: Path, column: str, old: str, new: str) -> None:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        if row["modality"] == "ct" and row[column] == old:
            row[column] = new
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """A pilot-sized synthetic cohort whose CT portal series (and the masks drawn on it) are called equilibrium."""
    cohort = tmp_path_factory.mktemp("protocol") / "cohort"
    invoke("synth", "--out", cohort, "--scale", "0.04", "--image-size", "64", "--workers", "2")
    _relabel(cohort / "manifest.csv", "phase", "portal", "equilibrium")
    _relabel(cohort / "lesions.csv", "mask_phase", "portal", "equilibrium")
    return cohort


@pytest.mark.parametrize("phases", [("plain", "arterial", "equilibrium"), ("arterial", "equilibrium")],
                         ids=["three-phase", "two-phase"])
def test_an_equilibrium_protocol_runs_through_every_command(cohort, tmp_path, phases):
    study = tmp_path / "study"
    study.mkdir()
    (study / "cohort").symlink_to(cohort, target_is_directory=True)
    records, run = study / "tfrecords", study / "runs" / "ct"
    invoke("prepare", "--cohort", cohort, "--out", records, "--image-size", "32",
           "--phases", f"ct={','.join(phases)};mri=arterial", "--workers", "2")
    assert json.loads((records / "ct" / "schema.json").read_text())["phases"] == list(phases)

    # Heads fitted on the validation split (no fold networks): the protocol, not the stacking, is under test.
    config = study / "train.yaml"
    config.write_text("train:\n  cross_fit_folds: 0\n")
    out = invoke("train", "--data", records, "--modality", "ct", "--out", run, "--epochs", "1", "--seed", "0",
                 "--config", config)
    assert "CDLM AUC:" in out
    import keras

    model = keras.models.load_model(run / "cdlm.keras", compile=False)
    assert sorted(model.input) == sorted([*phases, "tabular"])

    invoke("evaluate", "--run", run, "--out", study / "evaluation")
    performance = (study / "evaluation" / "performance.csv").read_text()
    assert "signature_equilibrium" in performance
    invoke("explain", "--run", run, "--data", records, "--out", study / "explain" / "ct", "--cohort", cohort)
    summary = json.loads((study / "explain" / "ct" / "explain_summary.json").read_text())
    assert summary["phases"] == list(phases)

    invoke("export", "--run", run, "--out", study / "saved_models", "--data", records)
    saved_model = study / "saved_models" / "mvi-cdlm-ct" / "1"
    card = json.loads((saved_model / "model_card.json").read_text())
    assert "equilibrium" in json.dumps(card)

    args = predict_args(study, "ct")
    assert any(str(a).startswith("equilibrium=") for a in args), args
    probabilities = {}
    for backend, model_path in (("keras", run / "cdlm.keras"), ("savedmodel", saved_model),
                                ("tflite", study / "saved_models" / "mvi-cdlm-ct-float32.tflite")):
        target = study / "predict" / backend
        invoke("predict", "--model", model_path, "--backend", backend, *args, "--out", target)
        prediction = json.loads((target / "prediction.json").read_text())
        assert "equilibrium" in prediction["signatures"], prediction
        probabilities[backend] = prediction["mvi_probability"]
    assert max(probabilities.values()) - min(probabilities.values()) < 1e-4, probabilities

    invoke("report", "--study", study)
    html = (study / "report.html").read_text()
    assert "equilibrium" in html
    assert "Not available: explain (stage not run" not in html
