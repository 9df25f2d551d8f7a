"""The files `mvi-tf synth` writes: genuine DICOM, geometry, contrast, masks, truth and determinism."""

from __future__ import annotations

import gzip
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from scipy.ndimage import binary_erosion, distance_transform_edt

from data_prep.synthetic import generate_cohort
from data_prep.synthetic.cohort import (
    CLINICAL_COLUMNS,
    LESION_COLUMNS,
    MANIFEST_COLUMNS,
    _generate_patient,
)
from data_prep.synthetic.phenotype import centre_sizes, draw_cohort_phenotypes

SEED = 3
SCALE = 0.02
SIZE = 64


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "cohort"
    summary = generate_cohort(out, seed=SEED, scale=SCALE, image_size=SIZE, workers=2, progress=False)
    return summary


def _read_series(cohort_dir: Path, row: pd.Series) -> list[pydicom.Dataset]:
    files = sorted((cohort_dir / row.series_dir).glob("*.dcm"))
    datasets = [pydicom.dcmread(f) for f in files]
    datasets = [d for d in datasets if d.SeriesInstanceUID == row.series_uid]
    return sorted(datasets, key=lambda d: float(d.ImagePositionPatient[2]))


def _volume(datasets: list[pydicom.Dataset]) -> np.ndarray:
    vol = np.stack([d.pixel_array.astype(np.float32) for d in datasets])
    slope = float(getattr(datasets[0], "RescaleSlope", 1.0))
    intercept = float(getattr(datasets[0], "RescaleIntercept", 0.0))
    return vol * slope + intercept


def _world_grid(datasets: list[pydicom.Dataset]):
    ipp = np.array([[float(v) for v in d.ImagePositionPatient] for d in datasets])
    dy, dx = (float(v) for v in datasets[0].PixelSpacing)
    rows, cols = datasets[0].Rows, datasets[0].Columns
    x = ipp[0, 0] + dx * np.arange(cols)
    y = ipp[0, 1] + dy * np.arange(rows)
    return x[None, None, :], y[None, :, None], ipp[:, 2][:, None, None]


def test_tables_follow_the_contract(cohort):
    out = cohort.out_dir
    assert tuple(pd.read_csv(out / "manifest.csv").columns) == MANIFEST_COLUMNS
    assert tuple(pd.read_csv(out / "lesions.csv").columns) == LESION_COLUMNS
    clinical = pd.read_csv(out / "clinical.csv")
    assert tuple(clinical.columns[: len(CLINICAL_COLUMNS)]) == CLINICAL_COLUMNS
    # Patients with both modalities carry the CT reading in ct_-prefixed columns (MRI reading unprefixed).
    extra = list(clinical.columns[len(CLINICAL_COLUMNS):])
    assert extra and all(c.startswith("ct_") and c[3:] in CLINICAL_COLUMNS for c in extra), extra
    both = clinical["cohort"] == "prospective"
    assert clinical.loc[both, "ct_margin"].notna().all() and clinical.loc[~both, "ct_margin"].isna().all()
    assert cohort.per_centre == centre_sizes(SCALE)
    for centre, group in clinical.groupby("centre"):
        assert group["mvi"].sum() >= 2 and (1 - group["mvi"]).sum() >= 2, centre
    assert set(clinical["cohort"]) == {"train", "prospective"}
    manifest = pd.read_csv(out / "manifest.csv")
    counts = manifest.groupby(["patient_id", "modality"]).size()
    assert set(counts.xs("ct", level="modality")) == {3} and set(counts.xs("mri", level="modality")) == {5}
    prospective = clinical.loc[clinical["cohort"] == "prospective", "patient_id"]
    assert set(manifest[manifest["patient_id"].isin(prospective)]["modality"]) == {"ct", "mri"}
    truth = pd.read_csv(out / "truth" / "patients.csv")
    assert truth["p_mvi"].between(0, 1).all()
    assert len(truth) == len(pd.read_csv(out / "lesions.csv"))


def test_dicom_files_are_ordinary_dicom_with_geometry(cohort):
    out = cohort.out_dir
    manifest = pd.read_csv(out / "manifest.csv")
    clinical = pd.read_csv(out / "clinical.csv")
    shuffled_names = 0
    for (pid, modality), study in manifest.groupby(["patient_id", "modality"]):
        frames, studies = set(), set()
        for row in study.itertuples():
            datasets = _read_series(out, row)
            assert len(datasets) >= 12, (pid, row.phase)
            first = datasets[0]
            expected_class = "1.2.840.10008.5.1.4.1.1.2" if modality == "ct" else "1.2.840.10008.5.1.4.1.1.4"
            assert first.SOPClassUID == expected_class and first.file_meta.MediaStorageSOPClassUID == expected_class
            assert first.Modality == ("CT" if modality == "ct" else "MR")
            assert [float(v) for v in first.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
            assert all(float(v) > 0 for v in first.PixelSpacing) and float(first.SliceThickness) > 0
            z = np.array([float(d.ImagePositionPatient[2]) for d in datasets])
            np.testing.assert_allclose(np.diff(z), float(first.SpacingBetweenSlices), atol=1e-3)
            assert "PixelPaddingValue" in first
            assert (first.Rows, first.Columns) == (SIZE, SIZE)
            assert len({d.SOPInstanceUID for d in datasets}) == len(datasets)
            frames.add(first.FrameOfReferenceUID)
            studies.add(first.StudyInstanceUID)
            # Identity is plausible and never the study pseudonym.
            assert first.PatientID.startswith("MRN") and first.PatientID != pid
            assert str(first.PatientName) and first.PatientBirthDate and first.AccessionNumber
            assert first.InstitutionName
            names = [Path(d.filename).name for d in datasets]
            shuffled_names += names != sorted(names)
            assert pydicom.uid.UID(first.SeriesInstanceUID).is_valid
            assert pydicom.uid.UID(first.SOPInstanceUID).is_valid
        assert len(frames) == 1 and len(studies) == 1, (pid, modality)
    assert shuffled_names > 0
    first_ids = {pydicom.dcmread(next((out / r).glob("*.dcm"))).PatientID for r in manifest["series_dir"][:8]}
    assert first_ids.isdisjoint(set(clinical["patient_id"]))


def test_series_descriptions_name_the_phase(cohort):
    out = cohort.out_dir
    manifest = pd.read_csv(out / "manifest.csv")
    keywords = {
        "plain": "PLAIN", "arterial": "ARTERIAL", "portal": "PORTAL", "t2": "T2",
        "transitional": "TRANSITIONAL", "hepatobiliary": "HEPATOBILIARY",
    }
    for row in manifest.head(16).itertuples():
        ds = _read_series(out, row)[0]
        assert keywords[row.phase] in ds.SeriesDescription.upper()


def test_ct_hounsfield_ranges_per_phase(cohort):
    out = cohort.out_dir
    manifest = pd.read_csv(out / "manifest.csv")
    truth = pd.read_csv(out / "truth" / "patients.csv").set_index(["patient_id", "modality"])
    liver = {}
    for row in manifest[manifest["modality"] == "ct"].itertuples():
        datasets = _read_series(out, row)
        stored = np.stack([d.pixel_array for d in datasets])
        padding = int(datasets[0].PixelPaddingValue)
        assert (stored[:, 0, 0] == padding).all()  # corners lie outside the reconstruction circle
        hu = _volume(datasets)[stored != padding]
        assert hu.min() >= -1024 and hu.max() <= 3071
        assert (hu < -900).mean() > 0.05  # air around the body
        X, Y, Z = _world_grid(datasets)
        t = truth.loc[(row.patient_id, "ct")]
        # Liver parenchyma: a disc on the side of the tumour away from it, within the liver.
        d = np.sqrt((X - (t.tumour_center_x_mm - 0)) ** 2 + (Y - t.tumour_center_y_mm) ** 2)
        ring = (d > t.tumour_radius_mm * 1.5 + 15) & (d < t.tumour_radius_mm * 1.5 + 30) & (X < -30)
        ring = np.broadcast_to(ring, stored.shape) & (np.abs(Z - t.tumour_center_z_mm) < 15)
        liver.setdefault(row.phase, []).append(float(np.median(_volume(datasets)[ring])))
    plain, arterial, portal = (np.median(liver[p]) for p in ("plain", "arterial", "portal"))
    assert 35 < plain < 80
    assert plain < arterial < portal
    assert 90 < portal < 150


def _tumour_and_liver(out: Path, row, t) -> tuple[float, float]:
    datasets = _read_series(out, row)
    vol = _volume(datasets)
    X, Y, Z = _world_grid(datasets)
    d = np.sqrt((X - t.tumour_center_x_mm) ** 2 + (Y - t.tumour_center_y_mm) ** 2 + (Z - t.tumour_center_z_mm) ** 2)
    core = d < 0.6 * t.tumour_radius_mm
    # Liver just beyond the (lobulated) boundary and the capsule; the phantom keeps this ring inside the liver.
    shell = (d > t.tumour_radius_mm * 1.25 + 3) & (d < t.tumour_radius_mm * 1.25 + 12)
    shell &= np.abs(Z - t.tumour_center_z_mm) < 8
    return float(np.median(vol[core])), float(np.median(vol[shell]))


def test_phase_contrast_ordering(cohort):
    """Typical HCC: brighter than liver in the arterial phase, darker in portal/hepatobiliary phases."""
    out = cohort.out_dir
    manifest = pd.read_csv(out / "manifest.csv")
    truth = pd.read_csv(out / "truth" / "patients.csv")
    pixel = {"ct": 360 / SIZE, "mri": 380 / SIZE}
    ok = truth[
        (truth["typical_enhancement"] == 1)
        & (truth["necrosis"] == 0)
        & (truth["fat"] == 0)
        & (truth["haemorrhage"] == 0)
        & (truth["hbp_tumour_hypointense"] == 1)
        & (truth["tumour_radius_mm"] > 2.5 * truth["modality"].map(pixel))
        & (truth["tumour_radius_mm"] < 40)
    ]
    assert set(ok["modality"]) == {"ct", "mri"}, "fixture must hold a clear typical tumour per modality"
    checked = 0
    for t in ok.itertuples():
        rows = manifest[(manifest["patient_id"] == t.patient_id) & (manifest["modality"] == t.modality)]
        phases = {r.phase: _tumour_and_liver(out, r, t) for r in rows.itertuples()}
        tumour_art, liver_art = phases["arterial"]
        assert tumour_art > liver_art * (1.1 if t.modality == "mri" else 1.0) + (20 if t.modality == "ct" else 0)
        tumour_pv, liver_pv = phases["portal"]
        assert tumour_pv < liver_pv, (t.patient_id, t.modality, phases)
        if t.modality == "mri":
            tumour_hbp, liver_hbp = phases["hepatobiliary"]
            assert tumour_hbp < 0.75 * liver_hbp
            tumour_tp, liver_tp = phases["transitional"]
            assert tumour_tp < liver_tp
        checked += 1
    assert checked >= 2


def _load_tumour_mask(out: Path, lesion, manifest) -> tuple[np.ndarray, list[pydicom.Dataset]]:
    row = manifest[
        (manifest["patient_id"] == lesion.patient_id)
        & (manifest["modality"] == lesion.modality)
        & (manifest["phase"] == lesion.mask_phase)
    ].iloc[0]
    datasets = _read_series(out, row)
    path = out / lesion.mask_path
    if path.suffix == ".dcm":
        seg = hd.seg.segread(path)
        uids = [d.SOPInstanceUID for d in datasets]
        referenced = {u for _, _, u in seg.get_source_image_uids()}
        present = [u for u in uids if u in referenced]
        frames = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=present, segment_numbers=[int(lesion.mask_segment)]
        )[..., 0]
        mask = np.zeros((len(datasets), datasets[0].Rows, datasets[0].Columns), dtype=bool)
        for frame, uid in zip(frames, present, strict=True):
            mask[uids.index(uid)] = frame > 0
    else:
        image = nib.load(path)
        mask = np.transpose(np.asarray(image.dataobj), (2, 1, 0)) == int(lesion.mask_segment)
        # The RAS affine maps voxel (c, r, k) onto the DICOM patient position of that pixel.
        k = len(datasets) - 1
        ras = image.affine @ np.array([3, 5, k, 1.0])
        ipp = np.array([float(v) for v in datasets[k].ImagePositionPatient])
        dy, dx = (float(v) for v in datasets[k].PixelSpacing)
        lps = ipp + np.array([3 * dx, 5 * dy, 0.0])
        np.testing.assert_allclose(ras[:3] * np.array([-1, -1, 1]), lps, atol=1e-3)
    return mask, datasets


def test_tumour_masks_and_rois(cohort):
    out = cohort.out_dir
    manifest = pd.read_csv(out / "manifest.csv")
    lesions = pd.read_csv(out / "lesions.csv")
    assert {Path(p).suffix for p in lesions["mask_path"]} == {".dcm", ".gz"}
    assert set(lesions.loc[lesions["modality"] == "ct", "mask_phase"]) == {"portal"}
    assert set(lesions.loc[lesions["modality"] == "mri", "mask_phase"]) == {"hepatobiliary"}
    truth = pd.read_csv(out / "truth" / "patients.csv").set_index(["patient_id", "modality"])
    for lesion in lesions.itertuples():
        mask, datasets = _load_tumour_mask(out, lesion, manifest)
        assert mask.any(), lesion.patient_id
        X, Y, _ = _world_grid(datasets)
        centre = np.array([lesion.roi_center_x_mm, lesion.roi_center_y_mm, lesion.roi_center_z_mm])
        t = truth.loc[(lesion.patient_id, lesion.modality)]
        xs, ys = np.broadcast_to(X, mask.shape)[mask], np.broadcast_to(Y, mask.shape)[mask]
        assert np.abs(xs - centre[0]).max() <= lesion.roi_side_mm / 2 and np.abs(ys - centre[1]).max() <= lesion.roi_side_mm / 2
        assert lesion.roi_side_mm >= 2 * t.tumour_radius_mm


def test_invasion_masks_lie_on_the_tumour_periphery(cohort):
    out = cohort.out_dir
    manifest = pd.read_csv(out / "manifest.csv")
    lesions = pd.read_csv(out / "lesions.csv")
    truth = pd.read_csv(out / "truth" / "patients.csv").set_index(["patient_id", "modality"])
    n_positive = 0
    for lesion in lesions.itertuples():
        t = truth.loc[(lesion.patient_id, lesion.modality)]
        invasion_path = out / "truth" / "invasion" / f"{lesion.patient_id}_{lesion.modality}.nii.gz"
        invasion = np.transpose(np.asarray(nib.load(invasion_path).dataobj), (2, 1, 0)) > 0
        tumour, datasets = _load_tumour_mask(out, lesion, manifest)
        assert invasion.shape == tumour.shape
        if not t.mvi:
            assert not invasion.any()
            continue
        n_positive += 1
        assert invasion.any(), lesion.patient_id
        dy, dx = (float(v) for v in datasets[0].PixelSpacing)
        dz = float(datasets[0].SpacingBetweenSlices)
        outside_mm = distance_transform_edt(~tumour, sampling=(dz, dy, dx))
        assert outside_mm[invasion].max() <= t.sector_band_mm + max(dx, dz) + 1.0
        core = binary_erosion(tumour, iterations=2)
        assert not (invasion & core).any()
        X, Y, _ = _world_grid(datasets)
        angle = np.degrees(np.arctan2(Y - t.tumour_center_y_mm, X - t.tumour_center_x_mm))
        angle = np.broadcast_to(angle, invasion.shape)[invasion]
        off = (angle - t.sector_center_deg + 180) % 360 - 180
        assert np.abs(off).max() <= (t.sector_end_deg - t.sector_start_deg) / 2 + 1e-6
    assert n_positive >= 8


def test_same_seed_gives_identical_files(cohort, tmp_path):
    """Regenerating one patient (both modalities, DICOM-SEG) from the same seed reproduces every byte."""
    out = cohort.out_dir
    patient = next(p for p in draw_cohort_phenotypes(SEED, SCALE) if p.centre == "C5")
    _generate_patient((SEED, patient, str(tmp_path), SIZE))
    written = sorted(f.relative_to(tmp_path) for f in tmp_path.rglob("*") if f.is_file())
    assert len(written) > 100
    for rel in written:
        assert (out / rel).read_bytes() == (tmp_path / rel).read_bytes(), rel
    nifti = out / "truth" / "invasion" / f"{patient.patient_id}_ct.nii.gz"
    assert gzip.decompress(nifti.read_bytes())[:4]  # readable gzip


def test_regenerating_into_the_same_directory_keeps_an_identical_cohort(cohort):
    again = generate_cohort(cohort.out_dir, seed=SEED, scale=SCALE, image_size=SIZE, workers=0, progress=False)
    assert again.reused and again.n_files == cohort.n_files


def test_refuses_a_foreign_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.txt"):
        generate_cohort(tmp_path, scale=0.01, image_size=64, workers=0, progress=False)


@pytest.mark.parametrize("kwargs", [{"image_size": 32}, {"image_size": 1024}, {"scale": 0.0}, {"workers": -1}])
def test_bad_arguments_are_refused(tmp_path, kwargs):
    with pytest.raises(ValueError, match="Received"):
        generate_cohort(tmp_path / "c", **{"scale": 0.01, "image_size": 64, **kwargs})
