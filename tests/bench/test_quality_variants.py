"""Variants of the quality benchmark (another DICOM matrix, CT window or ROI sampling) keep their entries apart."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from bench import quality, quality_variants


def test_variant_folder_is_relative_to_the_mode_it_varies():
    default, quick = quality.QualitySettings(), quality.QualitySettings.quick()
    assert quality._variant(default) == "" and quality._variant(quick, quick) == ""
    assert quality._variant(dataclasses.replace(default, dicom_image_size_px=256)) == "dicom-256px/"
    assert quality._variant(dataclasses.replace(default, ct_window="hu", dicom_image_size_px=256)) == (
        "ct-hu-window/dicom-256px/")
    assert quality.fingerprint(default) != quality.fingerprint(dataclasses.replace(default, dicom_image_size_px=256))
    unwrapped = dataclasses.replace(default, sampling="unwrapped")
    assert quality._variant(unwrapped) == "unwrapped-roi/"
    assert quality.fingerprint(unwrapped) != quality.fingerprint(default)
    # The unwrapped records' augmentation is part of their entries' fingerprint only: square runs never use it.
    module = quality.ROOT / "mvi_tf" / "training" / "augment_unwrapped.py"
    assert module.is_file()
    assert module in quality.fingerprint_files(unwrapped) and module not in quality.fingerprint_files(default)
    assert quality.ROOT / "mvi_tf" / "training" / "augment.py" in quality.fingerprint_files(unwrapped)


def test_training_options_make_a_variant_of_their_own():
    """`--option NAME=VALUE` (a training config key) changes the fingerprint and the folder, so its entries never
    overwrite the default's; a value equal to the base's own override is no variant at all."""
    default, quick = quality.QualitySettings(), quality.QualitySettings.quick()
    assert quality.parse_options([], default) == () and quality.parse_options([], quick) == quick.overrides
    folds = dataclasses.replace(default, overrides=quality.parse_options(["cross_fit_folds=5"], default))
    assert folds.overrides == (("cross_fit_folds", 5),)
    assert quality._variant(folds) == "cross-fit-folds-5/"
    assert quality.fingerprint(folds) != quality.fingerprint(default)
    two = quality.parse_options(["cross_fit_folds=5", "learning_rate=0.0003"], default)
    assert quality._variant(dataclasses.replace(default, overrides=two)) == "cross-fit-folds-5_learning-rate-0.0003/"
    same = dataclasses.replace(quick, overrides=quality.parse_options(["batch_size=8"], quick))
    assert quality._variant(same, quick) == "" and quality.fingerprint(same) == quality.fingerprint(quick)
    assert quality._variant(dataclasses.replace(quick, overrides=quality.parse_options(["batch_size=4"], quick)),
                            quick) == "batch-size-4/"
    described = quality_variants._settings_changed({"settings": dataclasses.asdict(default)},
                                                   {"settings": json.loads(json.dumps(dataclasses.asdict(folds)))})
    assert described == "training option cross_fit_folds = 5 (default as configured)"
    with pytest.raises(ValueError, match="cross_fitfolds"):
        quality.parse_options(["cross_fitfolds=5"], default)
    with pytest.raises(ValueError, match="NAME=VALUE"):
        quality.parse_options(["cross_fit_folds"], default)


def test_a_setting_added_later_leaves_the_finished_entries_fingerprint_alone(monkeypatch):
    """The default's fingerprint is the hash of the settings without the later fields (as before they existed)."""
    default = quality.QualitySettings()
    without = {k: v for k, v in dataclasses.asdict(default).items() if k not in quality.LATER_SETTINGS}
    monkeypatch.setattr(quality.dataclasses, "asdict", lambda settings: dict(without))
    monkeypatch.setattr(quality, "LATER_SETTINGS", {})
    before = quality.fingerprint(default)
    monkeypatch.undo()
    assert quality.fingerprint(default) == before


def test_a_variant_neither_reads_nor_overwrites_the_default_table(tmp_path):
    results = tmp_path / "results"
    (results / "quality" / "dicom-256px").mkdir(parents=True)
    entry = {"fingerprint": "abc", "modality": "ct", "seed": 0}
    (results / "quality" / "ct-seed0.json").write_text(json.dumps(entry))
    (results / "quality" / "dicom-256px" / "ct-seed1.json").write_text(json.dumps({**entry, "seed": 1}))
    (results / "quality" / "dicom-256px" / "summary.json").write_text(json.dumps({"fingerprint": "abc"}))
    assert list(quality.load_entries(results, "abc")) == [("ct", 0)]
    assert list(quality.load_entries(results, "abc", "dicom-256px/")) == [("ct", 1)]
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n")
    variant = dataclasses.replace(quality.QualitySettings(), dicom_image_size_px=256)
    quality.write_outputs(results, {}, "abc", variant, md, "dicom-256px/")
    assert not (results / "quality.json").exists()
    # Only the variants section is added (nothing to pair without a default table); no default table is written.
    assert quality.SECTION_START not in md.read_text()
    assert md.read_text().startswith("# Benchmarks\n") and quality_variants.VARIANTS_START in md.read_text()
    assert "No variant has a finished entry yet." in md.read_text()
    assert json.loads((results / "quality" / "dicom-256px" / "summary.json").read_text())["settings"][
        "dicom_image_size_px"] == 256


def _entry(fp, modality, seed, aucs, cdlm_scores):
    labels = [0, 0, 0, 1, 1, 1]
    return {"fingerprint": fp, "modality": modality, "seed": seed,
            "auc": {m: {"prospective": v} for m, v in aucs.items()},
            "prospective_predictions": {"patient_id": [f"P{i}" for i in range(6)], "label": labels,
                                        "cdlm": cdlm_scores, "radiological": [0.5] * 6,
                                        "signature_plain": [0.2, 0.1, 0.4, 0.3, 0.6, 0.5]}}


def _write_summary(path, fp, entries, settings):
    summary = {"seeds": [e["seed"] for e in entries]}
    for model in entries[0]["auc"]:
        summary[model] = {"prospective_auc": [e["auc"][model]["prospective"] for e in entries]}
    summary["signature_gap"] = {"signature_plain": [0.0] * len(entries)}
    summary["head_bound"] = [quality.head_bound(e["prospective_predictions"]) for e in entries]
    path.write_text(json.dumps({"fingerprint": fp, "settings": settings, "ct": summary}))


def test_head_bound_is_what_the_best_head_makes_of_the_signatures():
    """In sample on the prospective patients: a signature that orders the cases the CDLM misorders lifts the
    bound above the CDLM alone; without the signatures' predictions (older entries) there is no bound."""
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    cdlm = [0.1, 0.2, 0.6, 0.7, 0.3, 0.4, 0.8, 0.9]
    signature = [0.2, 0.3, 0.1, 0.2, 0.8, 0.9, 0.7, 0.6]
    predictions = {"label": labels, "cdlm": cdlm, "radiological": cdlm}
    assert quality.head_bound(predictions) is None
    bound = quality.head_bound({**predictions, "signature_arterial": signature})
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(labels, cdlm) == 0.75 and bound == 1.0
    assert quality.head_bound({**predictions, "label": [1] * 8, "signature_arterial": signature}) is None


def test_variants_section_pairs_each_variant_with_the_default_seed_by_seed(tmp_path):
    """Seeds finished by both are paired (variant minus default), a seed only one has is left out, the two CDLMs
    are tested on the same patients, and the default table around the section is kept."""
    results, q = tmp_path / "results", tmp_path / "results" / "quality"
    (q / "unwrapped-roi").mkdir(parents=True)
    default = [_entry("d", "ct", 0, {"signature_plain": 0.60, "cdlm": 0.70}, [0.1, 0.2, 0.6, 0.5, 0.7, 0.8]),
               _entry("d", "ct", 1, {"signature_plain": 0.62, "cdlm": 0.72}, [0.1, 0.2, 0.3, 0.5, 0.7, 0.8])]
    variant = [_entry("v", "ct", 1, {"signature_plain": 0.66, "cdlm": 0.71}, [0.6, 0.2, 0.1, 0.5, 0.7, 0.8]),
               _entry("v", "ct", 2, {"signature_plain": 0.90, "cdlm": 0.90}, [0.1, 0.2, 0.3, 0.5, 0.7, 0.8])]
    for e in default:
        (q / f"ct-seed{e['seed']}.json").write_text(json.dumps(e))
    for e in variant:
        (q / "unwrapped-roi" / f"ct-seed{e['seed']}.json").write_text(json.dumps(e))
    settings = dataclasses.asdict(quality.QualitySettings())
    _write_summary(results / "quality.json", "d", default, {k: v for k, v in settings.items() if k != "sampling"})
    _write_summary(q / "unwrapped-roi" / "summary.json", "v", variant, {**settings, "sampling": "unwrapped"})

    assert quality_variants.find_variants(results) == ["unwrapped-roi/"]
    rows = quality_variants.pair_models(json.loads((results / "quality.json").read_text()),
                                        json.loads((q / "unwrapped-roi" / "summary.json").read_text()), "ct")
    assert [(r.model, r.seeds) for r in rows] == [("signature_plain", (1,)), ("cdlm", (1,)), ("head_bound", (1,))]
    assert np.allclose(rows[0].differences, [0.04]) and rows[0].seeds_better == 1 and rows[1].seeds_better == 0

    (test,) = quality_variants.cdlm_tests(quality.load_entries(results, "d"),
                                          quality.load_entries(results, "v", "unwrapped-roi/"))
    assert (test.seed, test.n, test.auc_default, test.auc_variant) == (1, 6, 1.0, pytest.approx(8 / 9))
    assert test.z < 0

    md = tmp_path / "BENCHMARKS.md"
    md.write_text(f"# Benchmarks\n\n{quality.SECTION_START}\ndefault table\n{quality.SECTION_END}\n\nafter\n")
    quality_variants.write_variants_section(results, md)
    quality_variants.write_variants_section(results, md)  # rewritten in place, not appended twice
    text = md.read_text()
    assert text.count(quality_variants.VARIANTS_START) == 1 and "default table" in text and "after" in text
    assert "sampling unwrapped (default square)" in text
    assert "| CT | signature_plain | 1 | 0.620 | 0.660 | +0.040 | +0.040 | 1 of 1 |" in text
    assert "CT seed 1 (n = 6) 0.889 vs 1.000" in text
