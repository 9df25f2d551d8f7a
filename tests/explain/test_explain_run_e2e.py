"""`explain_run` and `mvi-tf explain` end to end on a tiny synthetic cohort (synth -> prepare -> run dir)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow
SIZE = 64


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict[str, Path]:
    keras = pytest.importorskip("keras")
    from data_prep.prepare import prepare_cohort
    from data_prep.synthetic import generate_cohort
    from mvi_tf.models.cdlm import build_cdlm

    root = tmp_path_factory.mktemp("explain_e2e")
    cohort = root / "cohort"
    generate_cohort(cohort, seed=1, scale=0.02, image_size=64, workers=1, progress=False)
    records = root / "records"
    prepare_cohort(cohort, records, image_size=SIZE, workers=1, progress=False)
    # A run directory as `mvi-tf train` writes it (random weights: explain must not care how they were fitted).
    run = root / "run_ct"
    run.mkdir()
    schema = json.loads((records / "ct" / "schema.json").read_text())
    selected = schema["tabular"]["feature_names"][:2]
    keras.utils.set_random_seed(0)
    build_cdlm(schema["phases"], SIZE, n_tabular=len(selected), hidden_units=8).save(run / "cdlm.keras")
    shutil.copy(records / "ct" / "schema.json", run / "schema.json")
    (run / "feature_selection.json").write_text(json.dumps({"selected": selected}))
    return {"cohort": cohort, "records": records, "run": run, "root": root}


def _identifying_values(cohort: Path) -> set[str]:
    import pydicom

    values = set()
    for path in list((cohort / "dicom").rglob("*"))[:200]:
        if path.is_file():
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            for key in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "InstitutionName"):
                value = str(ds.get(key, "")).strip()
                if len(value) >= 4:
                    values.add(value)
    return values


def test_explain_run_writes_maps_overlays_and_a_summary(study):
    from mvi_tf.explain import explain_run

    out = study["root"] / "explain_ct"
    summary = explain_run(study["run"], study["records"], out, cohort_dir=study["cohort"], cohorts=None,
                          max_patients=4, progress=False)
    assert summary["phases"] == ["plain", "arterial", "portal"]
    assert summary["target_layers"] == {p: f"{p}_stage4_block2_out" for p in summary["phases"]}
    assert summary["n_patients"] == 4 and summary["n_mvi_positive"] >= 2
    assert json.loads((out / "explain_summary.json").read_text()) == summary
    loc = summary["localisation"]
    for phase in summary["phases"]:
        row = loc["per_phase"][phase]
        assert row["n"] >= 1 and 0.0 <= row["hit_rate"] <= 1.0
        # A one-epoch model's Grad-CAM can be empty (ReLU of a negative sum); then the map has no energy to share.
        if row["energy_fraction"] is None:
            assert row["n_empty_maps"] == row["n"] and row["hit_rate"] == 0.0
        else:
            assert 0.0 <= row["energy_fraction"] <= 1.0
        assert 0.0 <= row["centre_baseline"]["hit_rate"] <= 1.0 and 0.0 < row["chance"] < 1.0
        corr = summary["rank_corr_trained_vs_randomised"][phase]
        assert corr["n"] == summary["n_patients"]
        # None only when one map of every pair is flat (Grad-CAM's ReLU can empty a random model's map).
        if corr["mean"] is None:
            assert row["n_empty_maps"] + row["randomised_weights"]["n_empty_maps"] >= row["n"]
        else:
            assert -1.0 <= corr["mean"] <= 1.0
        # The synthetic truth tells which patients' images show a sign in this phase.
        assert 0 <= row["n_sign_visible"] <= row["n"]
    assert sorted(loc["phase_ranking"]) == sorted(summary["phases"])

    with (study["records"] / "prepare_report.csv").open() as f:
        report = {r["patient_id"]: r for r in csv.DictReader(f) if r["modality"] == "ct"}
    overlays = sorted(p.stem for p in (out / "overlays").glob("*.png"))
    assert len(overlays) == 4 and set(overlays) <= set(report)
    for pid in overlays:
        arrays = np.load(out / "maps" / f"{pid}.npz")
        for phase in summary["phases"]:
            roi_map, slice_map = arrays[f"roi_{phase}"], arrays[f"slice_{phase}"]
            assert roi_map.shape == (SIZE, SIZE)
            # Placed inside the slice, at the ROI: the map's area on the slice matches the ROI's side.
            r0, c0, r1, c1 = arrays[f"box_{phase}"]
            assert 0 <= r0 < r1 <= slice_map.shape[0] and 0 <= c0 < c1 <= slice_map.shape[1]
            assert np.isfinite(slice_map).any() and np.nanmax(slice_map) <= 1.0
    assert len(list((out / "feature_maps").glob("*.png"))) == 3
    rows = list(csv.DictReader((out / "localisation.csv").open()))
    assert rows and {r["phase"] for r in rows} == set(summary["phases"])
    assert {r["sign_visible"] for r in rows} <= {"True", "False"}

    # Privacy: no identifying DICOM value in any output file.
    secrets = _identifying_values(study["cohort"])
    assert secrets
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            leaked = [s for s in secrets if s.encode() in data]
            assert not leaked, f"{path} contains identifying values {leaked}"


def test_cli_explain_selected_patients_with_gradcam_plus_plus(study):
    from click.testing import CliRunner

    from mvi_tf.cli import main

    with (study["records"] / "prepare_report.csv").open() as f:
        pid = next(r["patient_id"] for r in csv.DictReader(f) if r["modality"] == "ct" and r["status"] == "written")
    out = study["root"] / "explain_cli"
    result = CliRunner().invoke(main, [
        "explain", "--run", str(study["run"]), "--data", str(study["records"]), "--patients", pid,
        "--out", str(out), "--method", "gradcam++", "--cohorts", "all", "--stage", "3",
    ])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "explain_summary.json").read_text())
    assert summary["method"] == "gradcam++" and summary["n_patients"] == 1
    assert summary["target_layers"]["portal"] == "portal_stage3_block2_out"
    assert np.load(out / "maps" / f"{pid}.npz")["roi_portal"].shape == (SIZE, SIZE)
    assert (out / "overlays" / f"{pid}.png").is_file()
    # Without --cohort there is nothing to score against, and the summary says so.
    assert summary["localisation"] is None and "cohort" in summary["localisation_note"]

    bad = CliRunner().invoke(main, ["explain", "--run", str(study["run"]), "--data", str(study["records"]),
                                    "--patients", "NOPE-1", "--out", str(out), "--cohorts", "all"])
    assert bad.exit_code != 0 and "NOPE-1" in bad.output


def test_a_cdlm_that_dropped_the_signatures_is_explained_through_a_model_that_uses_them(study, tmp_path):
    """A stacked CDLM whose head gave every signature zero weight ignores the images (its maps would be empty):
    explain shows the fusion model's maps instead and says so in the summary and on the console; when the fusion
    head dropped them as well, each signature network's own maps."""
    import keras
    from click.testing import CliRunner

    from mvi_tf.cli import main
    from mvi_tf.explain.run import ignores_images
    from mvi_tf.models.cdlm import build_stacked_model, set_stacking_weights

    run = tmp_path / "run_dropped"
    shutil.copytree(study["run"], run)
    schema = json.loads((run / "schema.json").read_text())
    phases, n_tab = schema["phases"], len(json.loads((run / "feature_selection.json").read_text())["selected"])
    keras.utils.set_random_seed(1)
    cdlm = build_stacked_model(phases, SIZE, n_tab)
    set_stacking_weights(cdlm, [0.0] * len(phases), -0.5, [0.3] * n_tab)
    fusion = build_stacked_model(phases, SIZE, None)
    set_stacking_weights(fusion, [1.0] * len(phases), 0.0)
    assert ignores_images(cdlm) and not ignores_images(fusion)
    cdlm.save(run / "cdlm.keras")
    fusion.save(run / "fusion.keras")

    def explain(out: Path):
        result = CliRunner().invoke(main, ["explain", "--run", str(run), "--data", str(study["records"]), "--out",
                                           str(out), "--cohorts", "all", "--max-patients", "2"])
        assert result.exit_code == 0, result.output
        return result, json.loads((out / "explain_summary.json").read_text())

    out = tmp_path / "explain"
    result, summary = explain(out)
    assert summary["explained_model"] == "fusion" and "zero weight" in summary["explained_model_note"]
    assert "maps of the fusion model" in result.output
    maps = np.load(next((out / "maps").glob("*.npz")))
    assert any(np.abs(maps[f"roi_{p}"]).max() > 0 for p in phases)  # the fusion model's maps are not empty

    # When the fusion head dropped them too, neither model depends on the images: the maps shown are each
    # signature network's own, i.e. those of the fusion model with every weight 1 (the one explained above).
    set_stacking_weights(fusion, [0.0] * len(phases), -0.7)
    assert ignores_images(fusion)
    fusion.save(run / "fusion.keras")
    out_both = tmp_path / "explain_both"
    result, summary = explain(out_both)
    assert summary["explained_model"] == "equal-weight fusion" and "neither" in summary["explained_model_note"]
    assert "maps of the equal-weight fusion model" in result.output
    for path in sorted((out / "maps").glob("*.npz")):
        before, after = np.load(path), np.load(out_both / "maps" / path.name)
        for p in phases:
            np.testing.assert_allclose(after[f"roi_{p}"], before[f"roi_{p}"], atol=1e-6)


def test_maps_of_unwrapped_records_are_shown_around_the_tumour(study, tmp_path):
    """Records cut along the tumour boundary (`prepare --sampling unwrapped`): each map and image is placed back
    on a square display frame around the band, so the square's corners (outside the band) hold nothing, and the
    maps are scored on the slice as usual."""
    import keras

    from data_prep.prepare import prepare_cohort
    from mvi_tf.explain import explain_run
    from mvi_tf.models.cdlm import build_cdlm

    records = tmp_path / "records"
    prepare_cohort(study["cohort"], records, image_size=SIZE, workers=1, progress=False, sampling="unwrapped")
    schema = json.loads((records / "ct" / "schema.json").read_text())
    assert schema["prepare_config"]["sampling"] == "unwrapped"
    run = tmp_path / "run"
    run.mkdir()
    selected = schema["tabular"]["feature_names"][:2]
    keras.utils.set_random_seed(0)
    build_cdlm(schema["phases"], SIZE, n_tabular=len(selected), hidden_units=8).save(run / "cdlm.keras")
    shutil.copy(records / "ct" / "schema.json", run / "schema.json")
    (run / "feature_selection.json").write_text(json.dumps({"selected": selected}))

    out = tmp_path / "explain"
    summary = explain_run(run, records, out, cohort_dir=study["cohort"], cohorts=None, max_patients=3,
                          progress=False)
    assert summary["n_patients"] == 3
    assert all(summary["localisation"]["per_phase"][p]["n"] >= 1 for p in summary["phases"])
    corners = (slice(None, 2), slice(None, 2))
    for path in sorted((out / "maps").glob("*.npz")):
        arrays = np.load(path)
        for phase in summary["phases"]:
            for kind in ("roi", "random"):
                placed = arrays[f"{kind}_{phase}"]
                assert placed.shape == (SIZE, SIZE) and np.all(placed[corners] == 0.0), (path.stem, kind, phase)
            assert np.isfinite(arrays[f"slice_{phase}"]).any()
    assert len(list((out / "overlays").glob("*.png"))) == 3
