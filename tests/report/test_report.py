"""The HTML study report: Table 2 shape, embedded figures, synthetic banner, and a real browser opening it."""

from __future__ import annotations

import json
import shutil
import subprocess

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from mvi_tf.report import build_report, cohort_characteristics  # noqa: E402


def _write_cohort(cohort, synthetic=True):
    cohort.mkdir(parents=True)
    rng = np.random.default_rng(0)
    n = 40
    ids = [f"P{i:03d}" for i in range(n)]
    clinical = pd.DataFrame({
        "patient_id": ids,
        "centre": ["A"] * 20 + ["B"] * 20,
        "cohort": ["train"] * 30 + ["prospective"] * 10,
        "mvi": [1, 0] * 20,
        "age": rng.normal(55, 10, n).round(),
        "sex": ["M", "F", "M", "M"] * 10,
        "afp_ng_ml": [5.0, 50.0, 500.0, 10.0] * 10,
        "tumour_size_cm": [6.0, 3.0] * 20,
    })
    clinical.to_csv(cohort / "clinical.csv", index=False)
    pd.DataFrame({"patient_id": ids, "modality": ["ct"] * 30 + ["mri"] * 10, "phase": "arterial",
                  "series_dir": "x"}).to_csv(cohort / "manifest.csv", index=False)
    if synthetic:
        (cohort / "truth").mkdir()
    return clinical


def test_cohort_table_counts_and_tests(tmp_path):
    _write_cohort(tmp_path / "cohort")
    tables = cohort_characteristics(tmp_path / "cohort")
    assert set(tables) == {"CT / Training (n = 30)", "MRI / Prospective validation (n = 10)"}
    ct = tables["CT / Training (n = 30)"]
    assert ct.iloc[0]["mvi_present"] == "15" and ct.iloc[0]["mvi_absent"] == "15"
    # Tumour size is 6 cm in every MVI-positive and 3 cm in every negative patient: mean 6.0 ± 0.0.
    size = ct[ct["characteristic"] == "Tumour size (cm)"].iloc[0]
    assert size["mvi_present"].startswith("6.0") and size["mvi_absent"].startswith("3.0")
    # AFP categorised with the paper's cut-offs (< 20, 20-400, > 400 ng/mL).
    afp_levels = set(ct.loc[ct.index > ct.index[ct["characteristic"] == "AFP (ng/mL)"][0], "level"].head(3))
    assert afp_levels == {"<20", "20-400", ">400"}


def _study(tmp_path, synthetic=True):
    study = tmp_path / "study"
    _write_cohort(study / "cohort", synthetic=synthetic)
    evaluation = study / "evaluation"
    evaluation.mkdir()
    pd.DataFrame({"model": ["cdlm"], "auc": [0.8]}).to_csv(evaluation / "table3.csv", index=False)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    fig.savefig(evaluation / "roc_ct_prospective.png")
    plt.close(fig)
    (study / "timings.json").write_text(json.dumps({"prepare": 1.0}))
    return study


def test_report_embeds_figures_and_banner(tmp_path):
    study = _study(tmp_path)
    html = build_report(study).read_text()
    assert 'id="synthetic-banner"' in html
    assert "data:image/png;base64," in html
    assert "Table 2" in html and "Table 3" in html
    # Stages that have not run are named, not silently left out.
    assert "Not available: survival" in html


def test_report_without_truth_has_no_banner(tmp_path):
    html = build_report(_study(tmp_path, synthetic=False)).read_text()
    assert "synthetic-banner" not in html


def test_report_missing_study_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        build_report(tmp_path / "nope")


def test_report_opens_in_headless_chromium(tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("[chromium] Chromium is not installed; to run it: install the Debian package 'chromium' "
                    "(.ci/run does where apt works)")
    path = build_report(_study(tmp_path))
    result = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
         "--dump-dom", path.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'id="synthetic-banner"' in result.stdout
    assert result.stdout.count("<img") == 1
    assert "Uncaught" not in result.stderr


def test_report_shows_calibration_and_comparison(tmp_path):
    study = _study(tmp_path)
    evaluation = study / "evaluation"
    assert "Not available: calibration" in build_report(study).read_text()
    pd.DataFrame(
        {"modality": ["ct"], "model_label": ["CDLM"], "cohort": ["prospective"], "centre": ["all"], "n": [50],
         "intercept": [-0.4321], "slope": [0.8765], "brier": [0.2], "oe_ratio": [0.9], "unused_column": [1]}
    ).to_csv(evaluation / "calibration.csv", index=False)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    fig.savefig(evaluation / "calibration_ct_prospective.png")
    plt.close(fig)
    pd.DataFrame({"modality": ["ct"], "cohort": ["prospective"], "n": [50], "nri": [0.5123], "idi": [0.0789]}).to_csv(
        evaluation / "improvement.csv", index=False
    )
    html = build_report(study).read_text()
    assert "-0.4321" in html and "0.8765" in html and "unused_column" not in html
    assert "calibration_ct_prospective.png" in html
    assert "CDLM versus radiological model" in html and "0.5123" in html
