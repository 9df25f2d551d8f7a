"""Genuine DICOM and NIfTI output: CT/MR image series, DICOM-SEG and NIfTI masks.

Every image file is an ordinary single-frame CT Image Storage or MR Image Storage instance written with
pydicom: explicit VR little endian, image plane module (ImagePositionPatient, ImageOrientationPatient,
PixelSpacing, SliceThickness, SpacingBetweenSlices), a FrameOfReferenceUID shared by the series of one study,
a PixelPaddingValue, and a plausible fictitious identity (name, hospital ID, birth date, accession number,
institution) so that downstream privacy handling is exercised. UIDs come from
:func:`pydicom.uid.generate_uid` with entropy from the seed, so the same seed gives byte-identical files.

NIfTI masks hold a ``uint8`` array indexed ``[column, row, slice]`` of the mask phase's series with the
RAS affine of :meth:`SeriesGeometry.nifti_affine` (the DICOM LPS grid with x and y negated); they are gzip
compressed with a zero timestamp so that they are byte-identical across runs.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from data_prep.synthetic.phantom import (
    ScannerProfile,
    SeriesGeometry,
    reconstruction_circle,
)
from data_prep.synthetic.phenotype import Phenotype

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
CT_RESCALE_INTERCEPT = -1024.0
CT_PADDING_VALUE = -2000  # stored value outside the reconstruction circle
MR_MAX_VALUE = 4095

SERIES_DESCRIPTIONS = {
    ("ct", "plain"): "ABDOMEN PLAIN 5mm",
    ("ct", "arterial"): "ARTERIAL PHASE",
    ("ct", "portal"): "PORTAL VENOUS PHASE",
    ("mri", "t2"): "T2WI FS AX",
    ("mri", "arterial"): "T1 VIBE ARTERIAL",
    ("mri", "portal"): "T1 VIBE PORTAL VENOUS",
    ("mri", "transitional"): "T1 VIBE TRANSITIONAL",
    ("mri", "hepatobiliary"): "T1 VIBE HEPATOBILIARY 20MIN",
}
WINDOWS = {"plain": (40, 350), "arterial": (60, 400), "portal": (60, 400)}
PHASE_DELAY_S = {
    "plain": 0, "arterial": 35, "portal": 70, "t2": -600, "transitional": 180, "hepatobiliary": 1200,
}
_SURNAMES = ("WANG", "LI", "ZHANG", "LIU", "CHEN", "YANG", "HUANG", "ZHAO", "WU", "ZHOU", "XU", "SUN", "MA", "ZHU")
_GIVEN = ("WEI", "FANG", "MIN", "JING", "LEI", "JUN", "YAN", "HUI", "QIANG", "LING", "TAO", "XIN", "PING", "BO")


@dataclasses.dataclass(frozen=True)
class PatientIdentity:
    """Fictitious hospital identity of one patient: exactly what must never leave the DICOM files."""

    name: str
    hospital_id: str
    birth_date: str
    sex: str
    age: int
    study_dates: dict[str, str]
    accession_numbers: dict[str, str]


def draw_identity(seed: int, p: Phenotype) -> PatientIdentity:
    """Draw a plausible name, hospital ID (distinct from ``patient_id``), birth date and study dates."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, int(p.centre[1:]), p.index, 5]))
    first_study = datetime.date(2015, 1, 5) + datetime.timedelta(days=int(rng.integers(0, 4 * 365)))
    age = int(p.clinical["age"])
    birth = first_study - datetime.timedelta(days=int(365.25 * age + rng.integers(1, 360)))
    dates, accessions = {}, {}
    for i, modality in enumerate(p.modalities):
        day = first_study + datetime.timedelta(days=int(rng.integers(0, 12)) * i)
        dates[modality] = day.strftime("%Y%m%d")
        accessions[modality] = f"A{rng.integers(10**8, 10**9)}"
    return PatientIdentity(
        name=f"{rng.choice(_SURNAMES)}^{rng.choice(_GIVEN)}{rng.choice(_GIVEN).lower()}",
        hospital_id=f"MRN{rng.integers(10**7, 10**8)}",
        birth_date=birth.strftime("%Y%m%d"),
        sex=str(p.clinical["sex"]),
        age=age,
        study_dates=dates,
        accession_numbers=accessions,
    )


def make_uid(seed: int, *parts: object) -> str:
    """A valid DICOM UID derived deterministically from the seed and ``parts``."""
    return generate_uid(entropy_srcs=["mvi-tf-synth", str(seed), *(str(x) for x in parts)])


def _time(seconds: int) -> str:
    t = datetime.datetime(2000, 1, 1, 9, 30, 0) + datetime.timedelta(seconds=seconds)
    return t.strftime("%H%M%S")


def _base_dataset(
    sop_class: str, sop_uid: str, p: Phenotype, identity: PatientIdentity, modality: str, profile: ScannerProfile
) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.PatientName = identity.name
    ds.PatientID = identity.hospital_id
    ds.PatientBirthDate = identity.birth_date
    ds.PatientSex = identity.sex
    ds.PatientAge = f"{identity.age:03d}Y"
    ds.StudyDate = identity.study_dates[modality]
    ds.SeriesDate = identity.study_dates[modality]
    ds.AcquisitionDate = identity.study_dates[modality]
    ds.ContentDate = identity.study_dates[modality]
    ds.StudyTime = _time(0)
    ds.AccessionNumber = identity.accession_numbers[modality]
    ds.ReferringPhysicianName = "ZHAO^MING"
    ds.InstitutionName = profile.institution
    ds.Manufacturer = profile.manufacturer
    ds.ManufacturerModelName = profile.model
    ds.StudyDescription = "LIVER CT 3-PHASE" if modality == "ct" else "LIVER MRI EOB"
    ds.StudyID = identity.accession_numbers[modality][-6:]
    return ds


def write_series(
    series_dir: Path,
    volume: np.ndarray,
    geom: SeriesGeometry,
    *,
    seed: int,
    p: Phenotype,
    identity: PatientIdentity,
    modality: str,
    phase: str,
    series_number: int,
    profile: ScannerProfile,
    name_rng: np.random.Generator,
    keep_datasets: bool = False,
) -> tuple[str, list[Dataset]]:
    """Write one phase as a DICOM series of single-frame files with random (non slice-ordered) names.

    Parameters
    ----------
    series_dir : Path
        Folder to write into (created; may already hold other series of the study).
    volume : numpy.ndarray
        ``(slices, rows, columns)``: HU for CT, signal for MR.
    geom : SeriesGeometry
        Grid of ``volume``.
    seed, p, identity, modality, phase, series_number, profile
        What the header says.
    name_rng : numpy.random.Generator
        Source of the random file names.
    keep_datasets : bool
        Return the written datasets (e.g. as DICOM-SEG source images); otherwise the list is empty.

    Returns
    -------
    tuple
        SeriesInstanceUID and the written datasets ordered by increasing z.
    """
    if volume.shape != geom.shape:
        raise ValueError(
            f"{p.patient_id} {modality}/{phase}: volume shape does not match the grid. "
            f"Received: volume.shape={volume.shape}, grid={geom.shape}"
        )
    series_dir.mkdir(parents=True, exist_ok=True)
    sop_class = CT_IMAGE_STORAGE if modality == "ct" else MR_IMAGE_STORAGE
    study_uid = make_uid(seed, p.patient_id, modality, "study")
    series_uid = make_uid(seed, p.patient_id, modality, phase, "series")
    frame_uid = make_uid(seed, p.patient_id, modality, "frame")
    delay = PHASE_DELAY_S[phase] + 900
    stored = _stored_pixels(volume, geom, modality)
    # One template per series; only the per-slice attributes change between files.
    ds = _base_dataset(sop_class, make_uid(seed, p.patient_id, modality, phase, "image", 0), p, identity,
                       modality, profile)
    ds.Modality = "CT" if modality == "ct" else "MR"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SeriesNumber = series_number
    ds.SeriesDescription = SERIES_DESCRIPTIONS[(modality, phase)]
    ds.SeriesTime = _time(delay)
    ds.AcquisitionTime = _time(delay)
    ds.ContentTime = _time(delay + 60)
    ds.AcquisitionNumber = 1
    ds.PatientPosition = "FFS" if modality == "ct" else "HFS"
    ds.BodyPartExamined = "ABDOMEN"
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [f"{geom.row_spacing_mm:.6f}", f"{geom.col_spacing_mm:.6f}"]
    ds.SliceThickness = f"{geom.slice_thickness_mm:.4f}"
    ds.SpacingBetweenSlices = f"{geom.slice_spacing_mm:.4f}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = geom.n_rows
    ds.Columns = geom.n_cols
    ds.BitsAllocated = 16
    if modality == "ct":
        _set_ct_attributes(ds, phase, profile)
    else:
        _set_mr_attributes(ds, phase, profile)
    datasets = _write_slices(ds, stored, geom, series_dir, seed=seed, patient_id=p.patient_id, modality=modality,
                             phase=phase, name_rng=name_rng, keep_datasets=keep_datasets)
    return series_uid, datasets


def _stored_pixels(volume: np.ndarray, geom: SeriesGeometry, modality: str) -> np.ndarray:
    """Stored pixel values: CT as int16 (HU - intercept, padding outside the reconstruction circle), MR as 12-bit
    uint16."""
    if modality == "ct":
        hu = np.clip(np.rint(volume), -1024, 3071)
        stored = (hu - CT_RESCALE_INTERCEPT).astype(np.int16)
        stored[:, ~reconstruction_circle(geom)] = CT_PADDING_VALUE
    else:
        stored = np.clip(np.rint(volume), 0, MR_MAX_VALUE).astype(np.uint16)
    return stored


def _set_ct_attributes(ds: Dataset, phase: str, profile: ScannerProfile) -> None:
    """CT pixel encoding, acquisition and display attributes of a series template."""
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.add_new(0x00280120, "SS", CT_PADDING_VALUE)  # PixelPaddingValue
    ds.RescaleIntercept = f"{CT_RESCALE_INTERCEPT:.0f}"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.KVP = f"{profile.kvp:.0f}"
    ds.ConvolutionKernel = "STANDARD"
    ds.WindowCenter, ds.WindowWidth = WINDOWS[phase]
    if phase != "plain":
        ds.ContrastBolusAgent = "IOPAMIDOL 370"


def _set_mr_attributes(ds: Dataset, phase: str, profile: ScannerProfile) -> None:
    """MR pixel encoding and sequence attributes of a series template (T2WI spin echo, else 3D gradient echo)."""
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NORM"]
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.add_new(0x00280120, "US", 0)  # PixelPaddingValue
    t2 = phase == "t2"
    ds.ScanningSequence = "SE" if t2 else "GR"
    ds.SequenceVariant = ["SK", "SP"] if t2 else ["SP", "SS"]
    ds.ScanOptions = "FS"
    ds.MRAcquisitionType = "2D" if t2 else "3D"
    ds.RepetitionTime = "2500" if t2 else "4.2"
    ds.EchoTime = "85" if t2 else "1.9"
    ds.FlipAngle = "150" if t2 else "10"
    ds.MagneticFieldStrength = f"{profile.field_strength_t:.1f}"
    ds.ImagingFrequency = f"{42.577 * profile.field_strength_t:.3f}"
    ds.ImagedNucleus = "1H"
    if not t2:
        ds.ContrastBolusAgent = "GADOXETATE DISODIUM"


def _write_slices(
    ds: Dataset, stored: np.ndarray, geom: SeriesGeometry, series_dir: Path, *, seed: int, patient_id: str,
    modality: str, phase: str, name_rng: np.random.Generator, keep_datasets: bool,
) -> list[Dataset]:
    """One file per slice from the series template ``ds``; the headers written when ``keep_datasets``."""
    n = geom.n_slices
    datasets = []
    for k in range(n):
        sop_uid = make_uid(seed, patient_id, modality, phase, "image", k)
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.SOPInstanceUID = sop_uid
        # CT stacks are numbered head to foot, MR foot to head, as scanners commonly do.
        ds.InstanceNumber = (n - k) if modality == "ct" else (k + 1)
        ds.ImagePositionPatient = [f"{v:.4f}" for v in geom.slice_position(k)]
        ds.SliceLocation = f"{geom.slice_position(k)[2]:.4f}"
        ds.PixelData = stored[k].tobytes()
        ds.save_as(series_dir / f"{name_rng.bytes(8).hex()}.dcm", enforce_file_format=True)
        if keep_datasets:
            header = copy.deepcopy(ds)
            del header.PixelData  # highdicom needs the source images' metadata only
            datasets.append(header)
    return datasets


def write_seg(
    path: Path,
    source: list[Dataset],
    mask: np.ndarray,
    *,
    seed: int,
    p: Phenotype,
    modality: str,
    content_date: str,
) -> None:
    """Write the tumour mask as a binary DICOM-SEG (segment 1, "Tumour") referencing ``source``.

    Parameters
    ----------
    path : Path
        Output ``.dcm`` file.
    source : list of pydicom.Dataset
        The mask phase's images, ordered as the mask's first axis.
    mask : numpy.ndarray
        Boolean ``(slices, rows, columns)``.
    seed, p, modality
        For deterministic UIDs.
    content_date : str
        DICOM date written as creation and content date (keeps output byte-identical).
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if mask.shape[0] != len(source):
        raise ValueError(
            f"{p.patient_id} {modality}: mask has {mask.shape[0]} slices for {len(source)} source images. "
            f"Received: mask.shape={mask.shape}"
        )
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="Tumour",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    seg = hd.seg.Segmentation(
        source_images=source,
        pixel_array=mask.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=make_uid(seed, p.patient_id, modality, "seg-series"),
        series_number=300,
        sop_instance_uid=make_uid(seed, p.patient_id, modality, "seg"),
        instance_number=1,
        manufacturer="mvi-tf",
        manufacturer_model_name="mvi-tf synth",
        software_versions="0.1.0",
        device_serial_number="SYNTH-0001",
        series_description="TUMOUR SEGMENTATION",
    )
    # highdicom stamps creation times and a random dimension organisation UID; fix them so that the same
    # seed gives a byte-identical file.
    seg.InstanceCreationDate = content_date
    seg.InstanceCreationTime = "120000"
    seg.ContentDate = content_date
    seg.ContentTime = "120000"
    dimension_uid = make_uid(seed, p.patient_id, modality, "seg-dimensions")
    for item in list(seg.get("DimensionOrganizationSequence", [])) + list(seg.get("DimensionIndexSequence", [])):
        item.DimensionOrganizationUID = dimension_uid
    for item in seg.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = f"{content_date}120000"
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(path, enforce_file_format=True)


def write_nifti(path: Path, mask: np.ndarray, geom: SeriesGeometry) -> None:
    """Write a ``(slices, rows, columns)`` mask as gzip NIfTI-1 on ``geom`` (RAS affine, zero gzip mtime)."""
    if mask.shape != geom.shape:
        raise ValueError(f"Mask shape does not match the grid. Received: mask.shape={mask.shape}, grid={geom.shape}")
    data = np.ascontiguousarray(np.transpose(mask.astype(np.uint8), (2, 1, 0)))
    image = nib.Nifti1Image(data, geom.nifti_affine())
    image.header.set_xyzt_units("mm")
    image.set_qform(geom.nifti_affine(), code=1)
    image.set_sform(geom.nifti_affine(), code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(image.to_bytes(), mtime=0))
