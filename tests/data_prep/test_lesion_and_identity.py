"""The right lesion and the right patient: multi-lesion masks, ROI beside a mask, SEG identity, series identity.

Everything is genuine DICOM (and DICOM-SEG / NIfTI masks) written by `dicom_cohort_fixture`; the real-scan case
adds a second lesion to the public dcmqi liver SEG.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_cohort_fixture import (
    CT_GEOMETRY,
    TUMOUR_CENTER,
    make_cohort,
    read_csv,
    tumour_mask,
    write_csv,
    write_nifti,
    write_seg,
)
from pydicom.uid import generate_uid

from data_prep.config import PrepareConfig
from data_prep.dicom_series import read_series
from data_prep.errors import InputError
from data_prep.masks import choose_lesion, load_mask, mask_on_volume
from data_prep.prepare import PrepareError, prepare_cohort, prepare_patient
from data_prep.roi import roi_from_mask

PLAIN = CT_GEOMETRY["plain"]
SECOND_CENTER = (-13.0, 11.0, 2.5)  # a smaller second lesion, 21 mm from the main one
SECOND_RADIUS_MM = 4.0
CONFIG = PrepareConfig(phases={"ct": ("plain", "arterial", "portal")}, margin_mm=5.0)

PATIENTS = {
    "P001": ("train", ("ct",), "nifti"),   # clean
    "P002": ("train", ("ct",), "seg"),     # clean SEG; its copy is given to S01
    "M01": ("train", ("ct",), "nifti"),    # two lesions, largest by default
    "M02": ("train", ("ct",), "seg"),      # two lesions in a SEG, lesion_index 2
    "M03": ("train", ("ct",), "nifti"),    # two lesions + explicit ROI on the second
    "M04": ("train", ("ct",), "nifti"),    # explicit ROI far from the mask's lesion
    "S01": ("train", ("ct",), "seg"),      # another patient's SEG (same geometry)
    "S02": ("train", ("ct",), "seg"),      # SEG whose frame of reference is another scan's
    "D01": ("train", ("ct",), "roi"),      # one series given for two phases
    "O01": ("train", ("ct",), "roi"),      # series_dir outside the cohort
    "I01": ("train", ("ct",), "roi"),      # phases of two different patients
}


def _two_lesions() -> np.ndarray:
    return tumour_mask(PLAIN) | tumour_mask(PLAIN, SECOND_CENTER, SECOND_RADIUS_MM)


def _plain_datasets(root: Path, pid: str) -> list[pydicom.Dataset]:
    files = (root / "dicom" / pid / "ct" / "plain").iterdir()
    return sorted((pydicom.dcmread(f) for f in files), key=lambda ds: float(ds.ImagePositionPatient[2]))


def _damage(root: Path) -> None:
    scout = _plain_datasets(root, "P001")[0]
    scout.SeriesInstanceUID, scout.SOPInstanceUID = generate_uid(), generate_uid()
    scout.ImageOrientationPatient, scout.ImageType = [1, 0, 0, 0, 0, -1], ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    scout.save_as(root / "dicom" / "P001" / "ct" / "plain" / "scout", enforce_file_format=True)
    write_nifti(root / "masks" / "M01_ct.nii.gz", _two_lesions(), PLAIN)
    write_nifti(root / "masks" / "M03_ct.nii.gz", _two_lesions(), PLAIN)
    write_seg(root / "masks" / "M02_ct_seg.dcm", _two_lesions(), _plain_datasets(root, "M02"))
    shutil.copy(root / "masks" / "P002_ct_seg.dcm", root / "masks" / "P002_copy_seg.dcm")
    seg = pydicom.dcmread(root / "masks" / "S02_ct_seg.dcm")
    seg.FrameOfReferenceUID = generate_uid()
    seg.save_as(root / "masks" / "S02_ct_seg.dcm")
    for path in (root / "dicom" / "I01" / "ct" / "portal").iterdir():
        ds = pydicom.dcmread(path)
        ds.PatientID = "HOSP-0000001"
        ds.save_as(path)
    outside = root.parent / "elsewhere"
    shutil.copytree(root / "dicom" / "O01" / "ct" / "portal", outside)
    lesions = read_csv(root / "lesions.csv")
    for row in lesions:
        row["lesion_index"] = "2" if row["patient_id"] == "M02" else ""
        if row["patient_id"] == "S01":
            row["mask_path"] = "masks/P002_copy_seg.dcm"
        if row["patient_id"] in ("M03", "M04"):
            x, y, z = SECOND_CENTER if row["patient_id"] == "M03" else (-15.0, -15.0, 0.0)
            row.update(roi_center_x_mm=x, roi_center_y_mm=y, roi_center_z_mm=z, roi_side_mm=14.0)
    write_csv(root / "lesions.csv", list(lesions[0]), lesions)
    manifest = read_csv(root / "manifest.csv")
    for row in manifest:
        if row["patient_id"] == "D01" and row["phase"] == "portal":
            row["series_dir"] = "dicom/D01/ct/arterial"
        if row["patient_id"] == "O01" and row["phase"] == "portal":
            row["series_dir"] = "../elsewhere"
    write_csv(root / "manifest.csv", list(manifest[0]), manifest)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = make_cohort(tmp_path_factory.mktemp("lesions") / "cohort", PATIENTS, seed=5)
    _damage(root)
    return root


@pytest.fixture(scope="module")
def run(cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("lesions_out")
    result = prepare_cohort(cohort, out, config=CONFIG, workers=2, progress=False)
    return result, {r["patient_id"]: r for r in read_csv(result.report_path)}


def _single_lesion_roi(cohort: Path):
    volume = read_series(cohort / "dicom" / "M01" / "ct" / "plain")
    return roi_from_mask(tumour_mask(PLAIN), volume, CONFIG.margin_mm)


def test_two_lesions_give_the_roi_of_the_larger(cohort, run):
    _, report = run
    row = report["M01"]
    alone = _single_lesion_roi(cohort)
    assert row["status"] == "written" and row["n_lesions"] == "2"
    assert float(row["roi_center_x_mm"]) == pytest.approx(alone.center_x_mm, abs=1e-3)
    assert float(row["roi_center_y_mm"]) == pytest.approx(alone.center_y_mm, abs=1e-3)
    assert float(row["roi_center_z_mm"]) == pytest.approx(TUMOUR_CENTER[2])  # its largest cross-section
    assert float(row["roi_side_mm"]) == pytest.approx(alone.side_mm, abs=1e-3)  # set by that lesion alone
    volume_ml = float(tumour_mask(PLAIN).sum()) * PLAIN.spacing_mm ** 2 * PLAIN.dz_mm / 1000
    assert float(row["lesion_volume_ml"]) == pytest.approx(volume_ml, abs=1e-3)
    assert "2 separate lesions" in row["warnings"] and "largest" in row["warnings"]
    assert report["P001"]["n_lesions"] == "1" and report["P001"]["warnings"] == ""
    assert report["P001"]["notes"] == "phase 'plain': 1 localizer/non-axial file(s) left out"  # reported, not hidden


def test_lesion_index_picks_the_second_lesion_of_a_seg(run):
    _, report = run
    row = report["M02"]
    assert row["status"] == "written" and row["n_lesions"] == "2" and row["warnings"] == ""
    assert float(row["roi_center_x_mm"]) == pytest.approx(SECOND_CENTER[0], abs=0.6)
    assert float(row["roi_center_y_mm"]) == pytest.approx(SECOND_CENTER[1], abs=0.6)
    assert float(row["roi_center_z_mm"]) == pytest.approx(SECOND_CENTER[2])
    assert float(row["roi_side_mm"]) < 2 * SECOND_RADIUS_MM + 2 * CONFIG.margin_mm + 1.5


def test_explicit_roi_beside_a_mask_names_the_lesion_and_is_checked(run):
    _, report = run
    on_second = report["M03"]  # the ROI points at the second lesion: the mask's ROI of that lesion is used
    assert on_second["roi_source"] == "mask" and on_second["warnings"] == ""
    assert float(on_second["roi_center_x_mm"]) == pytest.approx(SECOND_CENTER[0], abs=0.6)
    assert float(on_second["roi_center_y_mm"]) == pytest.approx(SECOND_CENTER[1], abs=0.6)
    assert "used lesion 2" in on_second["notes"] and "explicit ROI" in on_second["notes"]
    off = report["M04"]  # an ROI beside the only lesion: the mask wins, with a warning
    assert off["status"] == "written" and off["roi_source"] == "mask"
    assert float(off["roi_center_x_mm"]) == pytest.approx(TUMOUR_CENTER[0], abs=0.6)
    assert "disagree" in off["warnings"] and "(18.0, 13.0) mm" in off["warnings"]


def test_wrong_patient_and_wrong_series_are_rejected(run):
    _, report = run
    expected = {
        "S01": "drawn on another series",
        "S02": "FrameOfReferenceUID",
        "D01": "are the same series",
        "O01": "outside the cohort directory",
        "I01": "2 different patients",
    }
    for pid, words in expected.items():
        row = report[pid]
        assert row["status"] == "skipped" and words in row["reason"], (pid, row["reason"])
        assert "1.2.826" not in row["reason"] and "HOSP-" not in row["reason"], row["reason"]  # no UIDs, no IDs
    assert "'../elsewhere'" in report["O01"]["reason"]


def test_strict_fails_on_warnings(cohort, tmp_path):
    config = PrepareConfig(phases={"ct": ("plain", "arterial", "portal")}, margin_mm=5.0)
    with pytest.raises(PrepareError, match="with warnings"):
        prepare_cohort(cohort, tmp_path, config=config, workers=1, progress=False, strict=True)


def test_allowed_root_admits_a_series_outside_the_cohort(cohort, tmp_path):
    lesions = [r for r in read_csv(cohort / "lesions.csv") if r["patient_id"] == "O01"]
    manifest = [r for r in read_csv(cohort / "manifest.csv") if r["patient_id"] == "O01"]
    clinical = [r for r in read_csv(cohort / "clinical.csv") if r["patient_id"] == "O01"]
    small = tmp_path / "c"
    small.mkdir()
    (small / "dicom").symlink_to(cohort / "dicom")
    (tmp_path / "elsewhere").symlink_to(cohort.parent / "elsewhere")
    for name, rows in (("lesions.csv", lesions), ("manifest.csv", manifest), ("clinical.csv", clinical)):
        write_csv(small / name, list(rows[0]), rows)
    denied = prepare_cohort(small, tmp_path / "a", config=CONFIG, workers=1, progress=False)
    assert denied.n_written == 0
    allowed = prepare_cohort(small, tmp_path / "b", config=CONFIG, workers=1, progress=False,
                             allowed_roots=[cohort.parent / "elsewhere", cohort / "dicom"])
    assert allowed.n_written == 1, allowed.skipped


def test_choose_lesion_counts_specks_apart():
    grid = np.zeros((5, 20, 20), bool)
    grid[1:4, 2:8, 2:8] = True      # 108 voxels
    grid[2, 15:18, 15:18] = True    # 9 voxels
    grid[4, 19, 0] = True           # a stray voxel
    choice = choose_lesion(grid, 0.001, min_lesion_ml=0.005)
    assert (choice.n_lesions, choice.n_specks, choice.rank, choice.rule) == (2, 1, 1, "largest")
    assert choice.volumes_ml == pytest.approx((0.108, 0.009)) and int(choice.grid.sum()) == 108
    assert choose_lesion(grid, 0.001, lesion_index=2, min_lesion_ml=0.005).grid[2, 16, 16]
    assert choose_lesion(grid, 0.001, near_index=np.asarray([2.0, 14.0, 14.0]), min_lesion_ml=0.005).rank == 2
    with pytest.raises(InputError, match="lesion_index must lie in 1..2"):
        choose_lesion(grid, 0.001, lesion_index=3, min_lesion_ml=0.005)


def test_prepare_patient_records_the_choice(cohort):
    dirs = {p: cohort / "dicom" / "M02" / "ct" / p for p in ("plain", "arterial", "portal")}
    stacks = prepare_patient(dirs, "ct", cohort / "masks" / "M02_ct_seg.dcm", "plain", config=CONFIG,
                             mask_segment=1)
    assert stacks.lesion.n_lesions == 2 and stacks.lesion.rank == 1 and stacks.warnings
    assert stacks.roi.center_x_mm == pytest.approx(TUMOUR_CENTER[0], abs=0.6)


@pytest.mark.real
def test_real_seg_with_an_added_lesion_keeps_the_liver_roi(tmp_path, data_files):
    """The public dcmqi liver SEG on its real CT, with a second (smaller) blob drawn into two frames."""
    REAL = data_files.small_real("dcmqi-ct3slice-liver")  # noqa: N806
    from pydicom.pixels import pack_bits

    volume = read_series(REAL / "ct-3slice", modality="ct")
    original = load_mask(REAL / "liver.dcm")
    grid, _ = mask_on_volume(original, volume)
    voxel_ml = float(np.prod(volume.pixel_spacing_mm)) * volume.slice_spacing_mm / 1000
    liver = choose_lesion(grid, voxel_ml, min_lesion_ml=0.01)
    alone = roi_from_mask(liver.grid, volume, 5.0)
    seg = pydicom.dcmread(REAL / "liver.dcm")
    frames = seg.pixel_array.copy()
    frames[:2, 420:470, 400:450] = 1  # 50 x 50 px (16 cm^2 per frame), far from the liver
    seg.PixelData = pack_bits(frames)
    seg.save_as(tmp_path / "two.dcm")
    grid2, _ = mask_on_volume(load_mask(tmp_path / "two.dcm"), volume)
    choice = choose_lesion(grid2, voxel_ml, min_lesion_ml=0.01)
    assert choice.n_lesions == 2 and choice.n_specks == liver.n_specks == 3
    assert choice.volume_ml == pytest.approx(liver.volume_ml)
    roi = roi_from_mask(choice.grid, volume, 5.0)
    assert roi == alone
    boxed = roi_from_mask(grid2, volume, 5.0)  # what the whole mask gave before: a larger, shifted square
    assert boxed.side_mm > alone.side_mm + 20 and abs(boxed.center_y_mm - alone.center_y_mm) > 10
