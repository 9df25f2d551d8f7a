"""`make quality --quick`: the quality benchmark's whole path on a tiny synthetic cohort (its numbers mean nothing)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_quick_quality_benchmark_writes_fingerprinted_entries_and_resumes(tmp_path, caplog):
    from bench import quality
    from mvi_tf.explain.run import EQUAL_WEIGHT_FUSION

    out = tmp_path / "results"
    summary = quality.main(["--quick", "--seeds", "0", "--modalities", "ct", "--work", str(tmp_path / "work"),
                            "--out", str(out), "--benchmarks-md", str(tmp_path / "BENCHMARKS.md")])
    doc = json.loads((out / "quality.json").read_text())
    assert doc["synthetic"] is True and doc["ct"]["seeds"] == [0]
    for model in ("clinical", "radiological", "fusion", "cdlm", "signature_plain", "signature_arterial",
                  "signature_portal"):
        assert len(doc["ct"][model]["prospective_auc"]) == 1, model
    assert 0.5 < doc["ct"]["bayes_auc"] < 1.0
    assert set(doc["ct"]["sign_ceiling"]) == {"plain", "arterial", "portal"}
    assert doc["ct"]["explained_model"] == [entry_model := json.loads(
        (out / "quality" / "ct-seed0.json").read_text())["hit_rates"]["explained_model"]]
    assert entry_model in ("cdlm", "fusion", EQUAL_WEIGHT_FUSION)
    entry = json.loads((out / "quality" / "ct-seed0.json").read_text())
    assert entry["fingerprint"] == doc["fingerprint"] == quality.fingerprint(quality.QualitySettings.quick())
    assert entry["stacking"]["cross_fit_folds"] == 2 and set(entry["hit_rates"]["per_phase"]) == {
        "plain", "arterial", "portal"}
    assert summary["ct"]["cdlm"]["prospective_auc"] == doc["ct"]["cdlm"]["prospective_auc"]
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert quality.SECTION_START in text and "| cdlm |" in text and doc["fingerprint"] in text
    assert "true-sign ceiling (with size)" in text

    mtime = (out / "quality" / "ct-seed0.json").stat().st_mtime_ns
    with caplog.at_level("INFO", logger="bench.quality"):
        quality.main(["--quick", "--seeds", "0", "--modalities", "ct", "--work", str(tmp_path / "work"),
                      "--out", str(out), "--benchmarks-md", str(tmp_path / "BENCHMARKS.md")])
    assert "skipped" in caplog.text
    assert (out / "quality" / "ct-seed0.json").stat().st_mtime_ns == mtime
