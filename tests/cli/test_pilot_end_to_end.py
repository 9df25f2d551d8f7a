"""Every command on a pilot-sized cohort (issue 21): undefined figures are reported as not available, never a crash.

A hospital's first pilot has 20-40 patients: some statistics (an AUC with one class, a log-rank test without
events, a hit rate without a scorable patient) cannot be computed. Each command must still exit 0, write what it
could compute and say which figures are not available and why (``mvi_tf.na``).

Kept cheap: one synthetic pilot (scale 0.04, 64 px DICOM) shared by both tests, 32 px ROI stacks, one epoch,
two phases per modality on the pilot and one on the single-class cohort, all commands in-process.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from cli_support import invoke, predict_args

from mvi_tf import na

pytestmark = pytest.mark.slow

ROI_PX = "32"
# Figures that may be undefined on a small cohort: wherever one is null, its dict must say why.
FIGURES = {
    "hit_rate", "energy_fraction", "p_vs_centre", "p_vs_random", "p_vs_chance", "rank_corr_vs_randomised_mean",
    "mean", "median", "auc", "sensitivity", "specificity", "ct", "mri", "delong_p_value", "mcnemar_p_value",
    "p_value", "hazard_ratio", "value", "float32", "dynamic", "int8", "localisation",
}


def unexplained_nulls(obj, path: str = "") -> list[str]:
    """Paths of null figures (keys in FIGURES) that carry no not-available reason."""
    found = []
    if isinstance(obj, dict):
        reasons = obj.get(na.KEY) or {}
        for key, value in obj.items():
            where = f"{path}.{key}" if path else key
            if key in FIGURES and value is None and not reasons.get(key):
                found.append(where)
            found += unexplained_nulls(value, where)
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            found += unexplained_nulls(value, f"{path}[{i}]")
    return found


def read_json(path: Path) -> dict:
    data = json.loads(path.read_text())
    assert not unexplained_nulls(data), f"{path}: null figures without a reason: {unexplained_nulls(data)}"
    return data


def train_both(study: Path) -> None:
    for modality in ("ct", "mri"):
        out = invoke("train", "--data", study / "tfrecords", "--modality", modality, "--out",
                     study / "runs" / modality, "--epochs", "1", "--image-size", ROI_PX, "--seed", "0")
        assert "CDLM AUC:" in out


def downstream(study: Path, tflite: bool) -> dict[str, str]:
    """evaluate, compare, explain --cohort, survival, export, predict and report; returns each command's output."""
    runs = study / "runs"
    out = {
        "evaluate": invoke("evaluate", "--run", runs / "ct", "--run", runs / "mri", "--out", study / "evaluation"),
        "compare": invoke("compare", "--ct-run", runs / "ct", "--mri-run", runs / "mri", "--out", study / "compare"),
        "survival": invoke("survival", "--run", runs / "ct", "--run", runs / "mri", "--out", study / "survival"),
    }
    for modality in ("ct", "mri"):
        out[f"explain_{modality}"] = invoke(
            "explain", "--run", runs / modality, "--data", study / "tfrecords", "--out", study / "explain" / modality,
            "--cohort", study / "cohort", "--engine", "fused")
    out["export"] = invoke("export", "--run", runs / "ct", "--out", study / "saved_models", "--data",
                           study / "tfrecords", *([] if tflite else ["--no-tflite"]))
    model = study / "saved_models" / "mvi-cdlm-ct" / "1"
    out["predict"] = invoke("predict", "--model", model, *predict_args(study, "ct"), "--out", study / "predict" / "ct")
    out["report"] = invoke("report", "--study", study)
    return out


@pytest.fixture(scope="module")
def pilot(tmp_path_factory) -> Path:
    """A pilot study as in the issue: 30 synthetic patients (5 prospective), prepared and trained for one epoch."""
    study = tmp_path_factory.mktemp("pilot")
    invoke("synth", "--out", study / "cohort", "--scale", "0.04", "--image-size", "64", "--workers", "2")
    invoke("prepare", "--cohort", study / "cohort", "--out", study / "tfrecords", "--image-size", ROI_PX,
           "--phases", "ct=arterial,portal;mri=arterial,hepatobiliary", "--workers", "2")
    train_both(study)
    return study


def test_pilot_every_command_reports_what_it_cannot_compute(pilot):
    outputs = downstream(pilot, tflite=True)
    for modality in ("ct", "mri"):
        summary = read_json(pilot / "explain" / modality / "explain_summary.json")
        text = outputs[f"explain_{modality}"]
        for phase in summary["phases"]:
            assert f"  {phase}: " in text, text
        if list(na.reasons(summary)):
            assert "Not available (figures the cohort cannot define):" in text, text
    read_json(pilot / "evaluation" / "evaluation.json")
    read_json(pilot / "compare" / "head_to_head.json")
    read_json(pilot / "survival" / "survival.json")
    prediction = json.loads((pilot / "predict" / "ct" / "prediction.json").read_text())
    assert 0.0 <= prediction["mvi_probability"] <= 1.0
    html = (pilot / "report.html").read_text()
    for stage in ("evaluation", "subgroups", "compare", "explain", "survival", "export"):
        assert f"Not available: {stage} (stage not run" not in html, stage


def test_single_class_split_every_command_says_why(pilot, tmp_path):
    """The prospective cohort is all MVI-negative and event-free: AUC, DeLong, log-rank, Cox and the
    localisation scores are undefined there; every command exits 0 and names the reason."""
    study = tmp_path / "single_class"
    cohort = study / "cohort"
    cohort.mkdir(parents=True)
    # Copied, not linked: prepare refuses series folders that resolve outside the cohort folder.
    for name in ("dicom", "masks", "truth"):
        shutil.copytree(pilot / "cohort" / name, cohort / name)
    for name in ("manifest.csv", "lesions.csv"):
        shutil.copy(pilot / "cohort" / name, cohort / name)
    with (pilot / "cohort" / "clinical.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        if row["cohort"] == "prospective":
            row.update(mvi="0", pfs_event="0", os_event="0")
    with (cohort / "clinical.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    invoke("prepare", "--cohort", cohort, "--out", study / "tfrecords", "--image-size", ROI_PX,
           "--phases", "ct=arterial;mri=hepatobiliary", "--workers", "2")
    train_both(study)
    metrics = read_json(study / "runs" / "ct" / "metrics.json")
    assert "0 MVI+" in metrics["auc"]["cdlm"][na.KEY]["prospective"]

    outputs = downstream(study, tflite=False)
    assert "ct CDLM prospective: AUC not available (AUC needs >= 2 MVI+" in outputs["evaluate"]
    evaluation = read_json(study / "evaluation" / "evaluation.json")
    prospective = [r for r in evaluation["performance"] if r["cohort"] == "prospective"]
    assert prospective and all("0 MVI+ and 5 MVI-" in r[na.KEY]["auc"] for r in prospective)

    compare = read_json(study / "compare" / "head_to_head.json")
    assert "0 MVI+" in compare["auc"][na.KEY]["delong_p_value"]
    assert compare["specificity"]["n"] == 5 and compare["specificity"]["mcnemar_exact_p_value"] is not None
    assert "AUC needs >= 2 MVI+" in outputs["compare"] and not (study / "compare" / "head_to_head_roc.png").exists()

    for modality in ("ct", "mri"):
        summary = read_json(study / "explain" / modality / "explain_summary.json")
        assert "no MVI-positive patient" in summary[na.KEY]["localisation"]
        assert "localisation not available (no MVI-positive patient" in outputs[f"explain_{modality}"]
        assert (study / "explain" / modality / "localisation.csv").exists()
        assert len(list((study / "explain" / modality / "overlays").glob("*.png"))) == summary["n_patients"]

    survival = read_json(study / "survival" / "survival.json")
    for analysis in survival["analyses"]:
        assert analysis["events"] == 0
        assert "No events" in analysis["predicted"]["logrank"][na.KEY]["p_value"]
    assert "log-rank test not possible" in outputs["survival"]

    html = (study / "report.html").read_text()
    assert "n/a (AUC not estimable: 0 MVI+ and 5 MVI- patients" in html
