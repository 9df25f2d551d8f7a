"""`prepare_cohort` end to end on a tiny genuine-DICOM cohort: round trip, report, bad input, privacy, CLI."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from dicom_cohort_fixture import (
    IDENTIFYING,
    clinical_row,
    make_cohort,
    read_csv,
    write_csv,
)

from data_prep.config import PrepareConfig
from data_prep.prepare import REPORT_FILE, PrepareError, prepare_cohort, prepare_patient

REPORT_COLUMNS = ["patient_id", "modality", "status", "reason", "roi_center_x_mm", "roi_center_y_mm",
                  "roi_center_z_mm", "roi_side_mm", "slice_z_mm"]
MRI_PHASES = {"mri": ["t2", "hepatobiliary"]}

BAD_PATIENTS = {
    "B01": ("train", ("ct",), "roi"),   # corrupt file
    "B02": ("train", ("ct",), "roi"),   # missing phase
    "B03": ("train", ("ct",), "roi"),   # ROI outside the volume
    "B04": ("train", ("ct",), "roi"),   # non-uniform spacing
    "B05": ("train", ("ct",), "roi"),   # unknown label
    "B06": ("train", ("ct",), "roi"),   # NaN in a required column
    "B07": ("train", ("ct",), "roi"),   # duplicate patient
    "B08": ("train", ("ct",), "roi"),   # in manifest, not in clinical.csv
}


@pytest.fixture(scope="module")
def good_cohort(tmp_path_factory) -> Path:
    return make_cohort(tmp_path_factory.mktemp("good") / "cohort", seed=1)


@pytest.fixture(scope="module")
def good_run(good_cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("good_out")
    return prepare_cohort(good_cohort, out, phases=MRI_PHASES, margin_mm=5.0, workers=1, progress=False)


def _damage(root: Path) -> None:
    """Give every B0x patient its defect."""
    arterial = sorted((root / "dicom" / "B01" / "ct" / "arterial").iterdir())[3]
    arterial.write_bytes(b"this is not DICOM at all" * 20)
    manifest = [r for r in read_csv(root / "manifest.csv") if not (r["patient_id"] == "B02" and r["phase"] == "portal")]
    write_csv(root / "manifest.csv", list(manifest[0]), manifest)
    lesions = read_csv(root / "lesions.csv")
    for row in lesions:
        if row["patient_id"] == "B03":
            row["roi_center_x_mm"] = "200.0"
    write_csv(root / "lesions.csv", list(lesions[0]), lesions)
    portal = root / "dicom" / "B04" / "ct" / "portal"
    import pydicom

    by_z = sorted(portal.iterdir(), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    by_z[3].unlink()
    clinical = read_csv(root / "clinical.csv")
    for row in clinical:
        if row["patient_id"] == "B05":
            row["mvi"] = "maybe"
        if row["patient_id"] == "B06":
            row["afp_ng_ml"] = "nan"
    clinical.append(dict(next(r for r in clinical if r["patient_id"] == "B07")))
    clinical = [r for r in clinical if r["patient_id"] != "B08"]
    clinical.append({k: str(v) for k, v in clinical_row("B09", 9, "train").items()})  # clinical only
    write_csv(root / "clinical.csv", list(clinical[0]), clinical)


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory):
    root = make_cohort(tmp_path_factory.mktemp("bad") / "cohort",
                       {"P001": ("train", ("ct",), "nifti"), "P002": ("prospective", ("ct",), "roi"),
                        **BAD_PATIENTS}, seed=2)
    _damage(root)
    out = tmp_path_factory.mktemp("bad_out")
    return prepare_cohort(root, out, margin_mm=5.0, workers=2, progress=False), root


def _report(result) -> dict[tuple[str, str], dict[str, str]]:
    with open(result.report_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and list(rows[0])[:len(REPORT_COLUMNS)] == REPORT_COLUMNS
    return {(r["patient_id"], r["modality"]): r for r in rows}


def test_round_trip_written_arrays_equal_read_arrays(good_cohort, good_run):
    from mvi_tf.data import load_schema, to_numpy

    assert good_run.n_written == 5 and good_run.n_skipped == 0
    data = to_numpy(good_run.out_dir, "ct")
    schema = load_schema(good_run.out_dir, "ct")
    assert schema["synthetic"] is False, "a cohort without truth/ is not labelled synthetic"
    assert schema["phases"] == ["plain", "arterial", "portal"]
    assert sorted(data["patient_id"]) == ["P001", "P002", "P003", "P004"]
    manifest = read_csv(good_cohort / "manifest.csv")
    config = PrepareConfig(phases={"ct": ("plain", "arterial", "portal")}, margin_mm=5.0)
    n = list(data["patient_id"]).index("P002")
    dirs = {r["phase"]: good_cohort / r["series_dir"] for r in manifest if r["patient_id"] == "P002"
            and r["modality"] == "ct"}
    stacks = prepare_patient(dirs, "ct", good_cohort / "masks" / "P002_ct_seg.dcm", "plain", config=config,
                             mask_segment=1)
    for phase in schema["phases"]:
        assert data[phase].shape == (4, 64, 64, 3) and data[phase].dtype == np.float32
        np.testing.assert_array_equal(data[phase][n], stacks[phase])
    assert stacks.roi.source == "mask"
    assert data["tabular"].shape == (4, len(schema["tabular"]["feature_names"]))
    assert data["label"][n] == 1 and data["cohort"][n] == "train"


def test_phases_are_aligned_and_tumour_centred(good_run):
    from mvi_tf.data import to_numpy

    data = to_numpy(good_run.out_dir, "ct")
    for phase in ("plain", "arterial", "portal"):
        for image in data[phase]:
            bright = image[..., 1] > 0.65  # tumour 140+ HU vs liver 60 HU in a [-160, 240] window
            rows, cols = np.nonzero(bright)
            assert bright.sum() > 100, phase
            assert abs(rows.mean() - 31.5) < 1.5 and abs(cols.mean() - 31.5) < 1.5, phase


def test_mri_percentile_scaling_is_stable_across_field_strength(good_run):
    from mvi_tf.data import to_numpy

    data = to_numpy(good_run.out_dir, "mri")
    t2, hbp = data["t2"][0], data["hepatobiliary"][0]  # the same anatomy in units 2.7x apart
    assert abs(float(t2.mean()) - float(hbp.mean())) < 0.05
    assert float(np.mean(np.abs(t2 - hbp))) < 0.12


def test_report_locates_roi_in_patient_coordinates(good_run):
    report = _report(good_run)
    row = report[("P001", "ct")]
    assert row["status"] == "written" and row["roi_source"] == "mask"
    assert float(row["roi_center_x_mm"]) == pytest.approx(3.0, abs=0.6)
    assert float(row["roi_center_y_mm"]) == pytest.approx(-2.0, abs=0.6)
    assert float(row["roi_center_z_mm"]) == pytest.approx(0.0, abs=1e-6)
    assert float(row["roi_side_mm"]) == pytest.approx(12.0 + 1.0 + 10.0, abs=1.1)
    assert [float(z) for z in row["slice_z_mm"].split(";")] == [-2.5, 0.0, 2.5]
    assert report[("P003", "ct")]["roi_source"] == "roi"
    assert report[("P004", "mri")]["slice_z_mm"] == "-3.000;0.000;3.000"


def test_tabular_scaling_fitted_on_train_only(good_run):
    from mvi_tf.data import load_schema

    tab = load_schema(good_run.out_dir, "ct")["tabular"]
    age = next(c for c in tab["columns"] if c["name"] == "age")
    # train patients P001, P002, P004 are n = 0, 1, 3 -> ages 45, 48, 54; P003 (prospective, 51) excluded.
    assert age["scaling"]["mean"] == pytest.approx(np.mean([45, 48, 54]))
    assert age["scaling"]["n"] == 3


def test_every_bad_input_is_skipped_with_a_named_reason(bad_run):
    result, _ = bad_run
    report = _report(result)
    assert report[("P001", "ct")]["status"] == "written" and report[("P002", "ct")]["status"] == "written"
    expected = {
        "B01": ["not readable DICOM", "arterial"],
        "B02": ["missing phase", "portal"],
        "B03": ["outside", "200"],
        "B04": ["non-uniform slice spacing", "portal", "4.000"],
        "B05": ["unknown label", "maybe"],
        "B06": ["afp_ng_ml", "nan"],
        "B07": ["duplicate patient"],
        "B08": ["not in clinical.csv"],
    }
    for pid, words in expected.items():
        row = report[(pid, "ct")]
        assert row["status"] == "skipped", pid
        assert pid in row["reason"], row["reason"]
        for word in words:
            assert word in row["reason"], (pid, word, row["reason"])
    assert report[("B09", "")]["status"] == "skipped" and "not in manifest" in report[("B09", "")]["reason"]
    assert "B01/ct/arterial/" in report[("B01", "ct")]["reason"]  # the file, relative to the cohort
    assert result.n_written == 2 and result.n_skipped == 9 == len(result.skipped)


def test_strict_raises_after_writing_the_report(bad_run, tmp_path):
    _, root = bad_run
    with pytest.raises(PrepareError, match="skipped"):
        prepare_cohort(root, tmp_path, margin_mm=5.0, workers=1, progress=False, strict=True)
    assert (tmp_path / REPORT_FILE).is_file()


def _scan(paths: list[Path], texts: list[str]) -> list[str]:
    needles = [v for v in IDENTIFYING.values()] + ["QUINTINA", "2019-03-04", "1947-03-21", "Examplia"]
    hits = []
    for path in paths:
        blob = path.read_bytes()
        hits += [f"{path}: {n}" for n in needles if n.encode() in blob]
    for text in texts:
        hits += [f"log: {n}" for n in needles if n in text]
    return hits


def test_no_identifying_value_reaches_any_output(good_cohort, tmp_path, caplog):
    from mvi_tf.cli import main

    caplog.set_level(logging.DEBUG)
    out = tmp_path / "records"
    cli = CliRunner().invoke(main, ["prepare", "--cohort", str(good_cohort), "--out", str(out),
                                    "--phases", "mri=t2,hepatobiliary", "--margin-mm", "5", "--workers", "1"])
    assert cli.exit_code == 0, cli.output
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) >= 6
    # the inputs do carry the values, so the scan can fail
    assert _scan([next((good_cohort / "dicom" / "P001" / "ct" / "plain").iterdir())], [])
    assert _scan(files, [caplog.text, cli.output]) == []
    texts = [caplog.text, cli.output, *(p.read_bytes().decode("latin-1") for p in files)]
    assert not any("1.2.826.0.1.3680043" in t for t in texts)  # no DICOM UID (pydicom's generated root)
    assert not any(str(good_cohort.resolve()) in t for t in texts)  # no absolute cohort path, logs included


def test_cli_phases_replace_ct_set_and_strict_exit(good_cohort, tmp_path):
    from mvi_tf.cli import main

    out = tmp_path / "records"
    result = CliRunner().invoke(main, ["prepare", "--cohort", str(good_cohort), "--out", str(out),
                                       "--phases", "ct=arterial,portal;mri=t2,hepatobiliary", "--image-size", "32",
                                       "--workers", "1"])
    assert result.exit_code == 0, result.output
    from mvi_tf.data import load_schema

    assert load_schema(out, "ct")["phases"] == ["arterial", "portal"]
    assert load_schema(out, "ct")["image_size"] == 32
    # the default MRI set needs five phases; the fixture has two -> skips -> --strict exits non-zero
    strict = CliRunner().invoke(main, ["prepare", "--cohort", str(good_cohort), "--out", str(tmp_path / "s"),
                                       "--phases", "ct=arterial,equilibrium", "--strict", "--workers", "1"])
    assert strict.exit_code != 0
    assert "equilibrium" in strict.output
    bad = CliRunner().invoke(main, ["prepare", "--cohort", str(good_cohort), "--phases", "pet=a"])
    assert bad.exit_code == 2 and "pet=a" in bad.output
