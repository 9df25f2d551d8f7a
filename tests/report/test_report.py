"""The HTML study report: Table 2 shape, embedded figures, synthetic banner, and a real browser opening it."""

from __future__ import annotations

import json
import re
import shutil

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from mvi_tf.report import build_report, cohort_characteristics  # noqa: E402
from mvi_tf.report.formatting import fmt_ci, fmt_p  # noqa: E402


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
    size = ct[ct["characteristic"].str.startswith("Tumour size (cm)")].iloc[0]
    assert size["mvi_present"] == "6.0 [6.0–6.0]" and size["mvi_absent"] == "3.0 [3.0–3.0]"
    assert size["test"] == "Kruskal-Wallis" and size["p_value"] < 0.001
    age = ct[ct["characteristic"] == "Age (years), mean ± SD"].iloc[0]
    assert " ± " in age["mvi_present"] and age["test"] == "Welch's t-test"
    # AFP categorised with the paper's cut-offs, levels in their natural order (< 20, 20-400, > 400 ng/mL).
    start = ct.index[ct["characteristic"] == "AFP (ng/mL), n (%)"][0]
    assert list(ct.loc[start + 1:start + 3, "level"]) == ["<20", "20-400", ">400"]
    # 5, 500 ng/mL in MVI-positive and 50, 10 in MVI-negative patients: 8 of 15 positives have 5 (< 20).
    assert list(ct.loc[start + 1:start + 3, "mvi_present"]) == ["8 (53.3)", "0 (0.0)", "7 (46.7)"]
    assert ct.loc[start, "test"].startswith("Chi-squared")


def _bare_study(tmp_path, synthetic=True):
    """Only the cohort has been written: every later stage is missing."""
    study = tmp_path / "study"
    _write_cohort(study / "cohort", synthetic=synthetic)
    return study


@pytest.fixture(scope="module")
def full_report(small_study):
    """The report of a complete small study (see study_fixture.py) and its study directory."""
    return small_study, build_report(small_study).read_text()


def test_report_embeds_figures_and_banner(full_report):
    study, html = full_report
    # One banner; the text says it nowhere else (the model cards, shown as they are, carry their own label).
    outside_cards = re.sub(r"<details>.*?</details>", "", html, flags=re.S)
    assert html.count('id="synthetic-banner"') == 1 and outside_cards.count("SYNTHETIC DATA") == 1
    assert "data:image/png;base64," in html
    assert "Table 2." in html and "Table 3." in html
    # The summary comes first and links to the sections it summarises.
    assert html.index('id="summary"') < html.index('id="contents"') < html.index('id="cohorts"')
    for anchor in ("#cohorts", "#performance", "#head-to-head", "#attention", "#survival", "#deployment"):
        assert f'href="{anchor}"' in html
    # Full-precision CSVs are linked, not pasted; no data_label column, no raw JSON key dump.
    assert 'href="evaluation/performance.csv"' in html and 'href="report_tables/table2_characteristics.csv"' in html
    assert (study / "report_tables" / "table2_characteristics.csv").is_file()
    assert "data_label" not in html and "auc_variance" not in html and "per_phase" not in html
    assert 'href="explain/ct/explain_summary.json"' in html
    # Decision curves drawn for the report: the models a surgeon weighs apart from the signatures.
    for modality in ("ct", "mri"):
        for cohort in ("training", "prospective"):
            assert (study / "report_figures" / f"decision_curves_{modality}_{cohort}.png").is_file()
    assert "left, net benefit of the CDLM, radiological and clinical models; right, the single-phase" in html


def test_report_formats_numbers_like_a_paper(full_report):
    study, html = full_report
    perf = pd.read_csv(study / "evaluation" / "performance.csv")
    cdlm = perf[(perf["modality"] == "ct") & (perf["model"] == "cdlm") & (perf["cohort"] == "prospective")].iloc[0]
    assert f"{cdlm['auc']:.3f} ({cdlm['auc_ci_low']:.3f}–{cdlm['auc_ci_high']:.3f})" in html
    head = json.loads((study / "compare" / "head_to_head.json").read_text())
    assert f"<td class=\"num\">{fmt_p(head['auc']['delong_p_value'])}</td>" in html
    # No p-value printed with more than 3 significant digits.
    assert not re.search(r">0\.\d{6,}<", html)


def test_p_value_and_missing_formatting():
    assert fmt_p(0.0002) == "< 0.001" and fmt_p(0.002109) == "0.00211" and fmt_p(0.1666666) == "0.167"
    assert fmt_p(1.0) == "1" and fmt_p(None) == "n/a" and fmt_p(float("nan"), "1 MVI+ patient") == "n/a (1 MVI+ patient)"
    assert fmt_ci(0.81234, 0.7, 0.9) == "0.812 (0.700–0.900)" and fmt_ci(0.8, None, None) == "0.800"


def test_report_without_truth_has_no_banner(tmp_path):
    html = build_report(_bare_study(tmp_path, synthetic=False)).read_text()
    assert "synthetic-banner" not in html


def test_report_names_stages_that_have_not_run(tmp_path):
    html = build_report(_bare_study(tmp_path)).read_text()
    for stage in ("evaluation", "calibration", "survival", "explain", "export"):
        assert f"Not available: {stage}" in html


def test_report_missing_study_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        build_report(tmp_path / "nope")


def test_report_shows_calibration_and_comparison(tmp_path):
    study = _bare_study(tmp_path)
    evaluation = study / "evaluation"
    evaluation.mkdir()
    pd.DataFrame(
        {"modality": ["ct"], "model": ["cdlm"], "model_label": ["CDLM"], "cohort": ["prospective"], "centre": ["all"],
         "n": [50], "intercept": [-0.4321], "intercept_ci_low": [-0.9], "intercept_ci_high": [0.1], "slope": [0.8765],
         "brier": [0.2], "oe_ratio": [0.9], "unused_column": [1]}
    ).to_csv(evaluation / "calibration.csv", index=False)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    fig.savefig(evaluation / "calibration_ct_prospective.png")
    plt.close(fig)
    pd.DataFrame({"modality": ["ct"], "cohort": ["prospective"], "n": [50], "nri": [0.5123], "idi": [0.0789],
                  "nri_p": [float("nan")], "note": ["NRI p not estimable"]}).to_csv(
        evaluation / "improvement.csv", index=False
    )
    html = build_report(study).read_text()
    assert "-0.43 (-0.90–0.10)" in html and "0.88" in html and "unused_column" not in html
    assert "Calibration of the CDLM on the CE-CT, prospective validation cohort" in html
    assert "CDLM versus radiological model" in html and "0.512" in html and "NRI p not estimable" in html


def test_report_shows_missing_numbers_with_their_reason_and_survives_odd_outputs(full_report, tmp_path):
    study, _ = full_report
    copy = shutil.copytree(study, tmp_path / "study")
    head = json.loads((copy / "compare" / "head_to_head.json").read_text())
    head["auc"] = {"ct": None, "mri": None, "ct_ci": None, "mri_ci": None, "delong_p_value": None,
                   "reason": "a single class among the paired patients"}
    (copy / "compare" / "head_to_head.json").write_text(json.dumps(head))
    (copy / "explain" / "mri" / "explain_summary.json").write_text(json.dumps({"modality": "mri", "localisation": 3}))
    html = build_report(copy).read_text()
    assert "n/a (a single class among the paired patients)" in html
    assert "Not available: attention: its outputs could not be read" in html
    # The other sections are all there.
    for anchor in ('id="performance"', 'id="survival"', 'id="deployment"'):
        assert anchor in html
