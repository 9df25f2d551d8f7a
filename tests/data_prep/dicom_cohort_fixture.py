"""A tiny cohort in genuine DICOM for the data_prep tests (independent of the synthetic generator).

Each patient has a liver-like background with a bright (CT) or dark (MR) spherical tumour. The phases of one
study differ in field of view, pixel spacing and slice positions; file names are random and InstanceNumbers
are shuffled; CT padding outside the field of view disagrees with PixelPaddingValue (as on real scanners);
the DICOM headers carry identifying values that must never reach any output.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"

IDENTIFYING = {
    "PatientName": "DOE^JANE^QUINTINA",
    "PatientID": "HOSP-7731920",
    "PatientBirthDate": "19470321",
    "AccessionNumber": "ACC55512X",
    "InstitutionName": "Saint Examplia General Hospital",
    "StudyDate": "20190304",
}


@dataclasses.dataclass(frozen=True)
class SeriesGeometry:
    """Grid of one phase: ``rows x cols`` pixels of ``spacing_mm``, ``n_slices`` every ``dz_mm`` from ``z0_mm``."""

    rows: int
    cols: int
    spacing_mm: float
    n_slices: int
    dz_mm: float
    z0_mm: float
    x0_mm: float
    y0_mm: float


CT_GEOMETRY = {
    "plain": SeriesGeometry(48, 48, 1.0, 8, 2.5, -10.0, -24.0, -24.0),
    "arterial": SeriesGeometry(56, 56, 0.85, 8, 2.5, -10.0, -23.8, -23.8),
    "portal": SeriesGeometry(40, 40, 1.25, 10, 2.0, -9.0, -25.0, -25.0),
}
MRI_GEOMETRY = {
    "t2": SeriesGeometry(48, 48, 1.0, 7, 3.0, -9.0, -24.0, -24.0),
    "hepatobiliary": SeriesGeometry(44, 44, 1.1, 7, 3.0, -9.0, -24.2, -24.2),
}
TUMOUR_CENTER = (3.0, -2.0, 0.0)
TUMOUR_RADIUS_MM = 6.0


def _points(geometry: SeriesGeometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    zs = geometry.z0_mm + np.arange(geometry.n_slices) * geometry.dz_mm
    ys = geometry.y0_mm + np.arange(geometry.rows) * geometry.spacing_mm
    xs = geometry.x0_mm + np.arange(geometry.cols) * geometry.spacing_mm
    return np.meshgrid(zs, ys, xs, indexing="ij")


def tumour_mask(geometry: SeriesGeometry, center=TUMOUR_CENTER, radius=TUMOUR_RADIUS_MM) -> np.ndarray:
    """``(Z, Y, X)`` bool sphere on a series grid."""
    z, y, x = _points(geometry)
    return (x - center[0]) ** 2 + (y - center[1]) ** 2 + (z - center[2]) ** 2 <= radius ** 2


def write_series(folder: Path, geometry: SeriesGeometry, modality: str, study_uid: str, frame_uid: str,
                 rng: np.random.Generator, tumour_value: float, liver_value: float, mr_scale: float = 1.0,
                 center=TUMOUR_CENTER) -> list[pydicom.Dataset]:
    """Write one phase as single-slice files with random names; returns the datasets in slice order."""
    folder.mkdir(parents=True, exist_ok=True)
    mask = tumour_mask(geometry, center)
    _, y, x = _points(geometry)
    noise = rng.normal(0.0, 4.0 if modality == "CT" else 6.0, size=mask.shape)
    values = np.where(mask, tumour_value, liver_value) + noise + 0.05 * (x + y)
    series_uid = generate_uid()
    order = rng.permutation(geometry.n_slices)
    datasets = []
    for k in range(geometry.n_slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_STORAGE if modality == "CT" else MR_STORAGE
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        for key, value in IDENTIFYING.items():
            setattr(ds, key, value)
        ds.PatientSex = "F"
        ds.StudyTime = "101500"
        ds.ReferringPhysicianName = ""
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.StudyID = "1"
        ds.SeriesNumber = 3
        ds.InstanceNumber = int(order[k]) + 1
        ds.Modality = modality
        ds.Manufacturer = "TestVendor"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [geometry.x0_mm, geometry.y0_mm, geometry.z0_mm + k * geometry.dz_mm]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [geometry.spacing_mm, geometry.spacing_mm]
        ds.SliceThickness = geometry.dz_mm
        ds.Rows, ds.Columns = geometry.rows, geometry.cols
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        if modality == "CT":
            ds.PixelRepresentation = 1
            ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
            ds.PixelPaddingValue = -2000
            stored = np.round(values[k] + 1024).astype(np.int16)
            stored[:3, :3] = -1024  # padding outside the field of view: -2048 HU, not PixelPaddingValue
        else:
            ds.PixelRepresentation = 0
            stored = np.clip(np.round(values[k] * mr_scale), 0, 65535).astype(np.uint16)
        ds.PixelData = stored.tobytes()
        name = folder / f"{rng.integers(0, 2**48):012x}"
        ds.save_as(name, enforce_file_format=True)
        datasets.append(ds)
    return datasets


def write_nifti(path: Path, mask: np.ndarray, geometry: SeriesGeometry) -> None:
    """A NIfTI label map of a ``(Z, Y, X)`` mask on ``geometry``, with the usual RAS affine."""
    lps = np.eye(4)
    lps[:3, 0] = (geometry.spacing_mm, 0, 0)
    lps[:3, 1] = (0, geometry.spacing_mm, 0)
    lps[:3, 2] = (0, 0, geometry.dz_mm)
    lps[:3, 3] = (geometry.x0_mm, geometry.y0_mm, geometry.z0_mm)
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    nib.save(nib.Nifti1Image(np.transpose(mask, (2, 1, 0)).astype(np.uint8), ras), str(path))


def write_seg(path: Path, mask: np.ndarray, source: list[pydicom.Dataset]) -> None:
    """A binary DICOM-SEG (highdicom) of a ``(Z, Y, X)`` mask on the ``source`` slices."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    description = hd.seg.SegmentDescription(
        segment_number=1, segment_label="tumour",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
    seg = hd.seg.Segmentation(
        source_images=source, pixel_array=mask.astype(np.uint8), segmentation_type="BINARY",
        segment_descriptions=[description], series_instance_uid=generate_uid(), series_number=99,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="tests",
        manufacturer_model_name="fixture", software_versions="1", device_serial_number="1")
    seg.save_as(path)


CLINICAL_COLUMNS = ["patient_id", "centre", "cohort", "mvi", "age", "sex", "aetiology", "bilirubin_umol_l",
                    "alt_u_l", "ast_u_l", "platelets_1e9_l", "afp_ng_ml", "tumour_size_cm", "tumour_number",
                    "margin", "peritumoral_enhancement", "enhancement_pattern", "capsule",
                    "hbp_tumour_hypointensity", "hbp_peritumoral_hypointensity", "pfs_months", "pfs_event",
                    "os_months", "os_event"]


def clinical_row(pid: str, n: int, cohort: str) -> dict[str, object]:
    """A plausible clinical row; values vary with ``n``."""
    return {"patient_id": pid, "centre": f"centre_{'ab'[n % 2]}", "cohort": cohort, "mvi": n % 2,
            "age": 45 + 3 * n, "sex": "male" if n % 3 else "female", "aetiology": ["HBV", "HCV", "other"][n % 3],
            "bilirubin_umol_l": 12.0 + 5 * n, "alt_u_l": 30 + 7 * n, "ast_u_l": 28 + 6 * n,
            "platelets_1e9_l": 110 + 15 * n, "afp_ng_ml": [5.0, 150.0, 900.0][n % 3], "tumour_size_cm": 2.0 + n,
            "tumour_number": 1 + n % 2, "margin": ["smooth", "non-smooth"][n % 2],
            "peritumoral_enhancement": ["absent", "present"][n % 2], "enhancement_pattern": "typical",
            "capsule": "present", "hbp_tumour_hypointensity": "present", "hbp_peritumoral_hypointensity": "absent",
            "pfs_months": 10.0 + n, "pfs_event": n % 2, "os_months": 20.0 + n, "os_event": 0}


def write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


# patient id -> (cohort, modalities, how the lesion is given)
DEFAULT_PATIENTS = {
    "P001": ("train", ("ct",), "nifti"),
    "P002": ("train", ("ct",), "seg"),
    "P003": ("prospective", ("ct",), "roi"),
    "P004": ("train", ("ct", "mri"), "nifti"),
}


def make_cohort(root: Path, patients: dict[str, tuple] | None = None, seed: int = 0) -> Path:
    """Write manifest.csv, lesions.csv, clinical.csv and the DICOM/mask files under ``root``."""
    patients = patients or DEFAULT_PATIENTS
    rng = np.random.default_rng(seed)
    manifest, lesions, clinical = [], [], []
    for n, (pid, (cohort, modalities, lesion_kind)) in enumerate(sorted(patients.items())):
        clinical.append(clinical_row(pid, n, cohort))
        for modality in modalities:
            study_uid, frame_uid = generate_uid(), generate_uid()
            geometries = CT_GEOMETRY if modality == "ct" else MRI_GEOMETRY
            written = {}
            for phase, geometry in geometries.items():
                folder = root / "dicom" / pid / modality / phase
                if modality == "ct":
                    written[phase] = write_series(folder, geometry, "CT", study_uid, frame_uid, rng,
                                                  tumour_value=140.0 + 10 * n, liver_value=60.0)
                else:
                    scale = 1.0 if phase == "t2" else 2.7  # 1.5 T vs 3 T units
                    written[phase] = write_series(folder, geometry, "MR", study_uid, frame_uid, rng,
                                                  tumour_value=250.0, liver_value=400.0, mr_scale=scale)
                manifest.append({"patient_id": pid, "modality": modality, "phase": phase,
                                 "series_dir": str(folder.relative_to(root))})
            mask_phase = next(iter(geometries))
            geometry = geometries[mask_phase]
            lesion = {"patient_id": pid, "modality": modality, "mask_path": "", "mask_segment": "",
                      "mask_phase": mask_phase, "roi_center_x_mm": "", "roi_center_y_mm": "",
                      "roi_center_z_mm": "", "roi_side_mm": ""}
            if lesion_kind == "nifti":
                path = root / "masks" / f"{pid}_{modality}.nii.gz"
                path.parent.mkdir(parents=True, exist_ok=True)
                write_nifti(path, tumour_mask(geometry), geometry)
                lesion["mask_path"] = str(path.relative_to(root))
            elif lesion_kind == "seg":
                path = root / "masks" / f"{pid}_{modality}_seg.dcm"
                path.parent.mkdir(parents=True, exist_ok=True)
                write_seg(path, tumour_mask(geometry), written[mask_phase])
                lesion.update(mask_path=str(path.relative_to(root)), mask_segment=1)
            else:
                lesion.update(roi_center_x_mm=TUMOUR_CENTER[0], roi_center_y_mm=TUMOUR_CENTER[1],
                              roi_center_z_mm=TUMOUR_CENTER[2], roi_side_mm=2 * TUMOUR_RADIUS_MM + 8)
            lesions.append(lesion)
    write_csv(root / "manifest.csv", ["patient_id", "modality", "phase", "series_dir"], manifest)
    write_csv(root / "lesions.csv", list(lesions[0]), lesions)
    write_csv(root / "clinical.csv", CLINICAL_COLUMNS, clinical)
    return root
