"""Variants of the quality benchmark (another DICOM matrix, CT window or ROI sampling) keep their entries apart."""

from __future__ import annotations

import dataclasses
import json

from bench import quality


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
    assert not (results / "quality.json").exists() and md.read_text() == "# Benchmarks\n"
    assert json.loads((results / "quality" / "dicom-256px" / "summary.json").read_text())["settings"][
        "dicom_image_size_px"] == 256
