"""Read one axial DICOM series from a folder: group, filter, sort by position, validate, convert intensities.

* Files are grouped by SeriesInstanceUID; images without geometry, localizers, images whose orientation is
  not axial or differs from the rest of their series, and stray single-slice series are dropped.
* Slices are sorted by ImagePositionPatient projected on the slice normal, never by file name or
  InstanceNumber, and the slice gaps must be uniform.
* Every slice's header is read and checked; pixels are decoded only for the slices an ROI samples.
* CT pixels become Hounsfield units through RescaleSlope/RescaleIntercept; anything below -1024 HU (padding
  outside the field of view, whatever PixelPaddingValue claims) becomes -1024 HU (air). MR pixels keep their
  scanner units (after any rescale); they are normalised later, per ROI, by percentiles (see `roi.py`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from data_prep.errors import InputError
from data_prep.geometry import apply_affine, index_to_patient_affine, orientation_axes
from data_prep.privacy import uid_tag

logger = logging.getLogger(__name__)

AIR_HU = -1024.0
_MODALITY_CODES = {"ct": ("CT",), "mri": ("MR",)}


@dataclasses.dataclass
class Volume:
    """One sorted axial series in patient coordinates.

    Slices are decoded lazily: `slab` decodes only the slices an ROI needs; `pixels` decodes them all.

    Attributes
    ----------
    pixels : np.ndarray
        ``(Z, Y, X)`` float32: HU for CT, rescaled scanner units for MR (decoded on first access).
    affine : np.ndarray
        4x4 index ``(k, i, j)`` -> patient LPS mm.
    positions_mm : np.ndarray
        ``(Z,)`` slice positions along the slice normal (ascending).
    slice_z_mm : np.ndarray
        ``(Z,)`` patient z of each slice's first pixel (ImagePositionPatient[2]).
    pixel_spacing_mm : tuple of float
        ``(row_spacing, col_spacing)``.
    slice_spacing_mm : float
    modality : str
        DICOM Modality (``CT`` or ``MR``).
    series_uid : str
    files : list of Path
        Files in slice order.
    n_dropped : int
        Files of the folder left out: localizers, non-axial or non-image objects, slices whose orientation
        differs from the series' (reported by `prepare`, never silently).
    """

    affine: np.ndarray
    positions_mm: np.ndarray
    slice_z_mm: np.ndarray
    pixel_spacing_mm: tuple[float, float]
    slice_spacing_mm: float
    modality: str
    series_uid: str
    files: list[Path]
    image_shape: tuple[int, int]
    datasets: list[pydicom.Dataset] = dataclasses.field(repr=False, default_factory=list)
    n_dropped: int = 0
    _decoded: dict[int, np.ndarray] = dataclasses.field(repr=False, default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.files), *self.image_shape)

    def slab(self, first: int, last: int) -> np.ndarray:
        """Slices ``first..last`` (inclusive) as ``(n, Y, X)`` float32, decoding only those."""
        first, last = max(0, first), min(len(self.files) - 1, last)
        for k in range(first, last + 1):
            if k not in self._decoded:
                self._decoded[k] = _to_physical(self.files[k], self.datasets[k], self.modality)
        return np.stack([self._decoded[k] for k in range(first, last + 1)])

    def _first(self, keyword: str) -> str:
        return str(self.datasets[0].get(keyword, "") or "").strip() if self.datasets else ""

    @property
    def frame_of_reference_uid(self) -> str:
        """FrameOfReferenceUID of the series ('' when absent); held in memory, never written."""
        return self._first("FrameOfReferenceUID")

    @property
    def study_uid(self) -> str:
        """StudyInstanceUID of the series ('' when absent); held in memory, never written."""
        return self._first("StudyInstanceUID")

    @property
    def patient_key(self) -> str:
        """PatientID of the series ('' when absent); compared in memory, never written."""
        return self._first("PatientID")

    @property
    def pixels(self) -> np.ndarray:
        return self.slab(0, len(self.files) - 1)

    def index_to_patient(self, indices: np.ndarray) -> np.ndarray:
        """Patient coordinates ``(N, 3)`` of ``(k, i, j)`` indices ``(N, 3)``."""
        return apply_affine(self.affine, indices)

    def patient_to_index(self, points: np.ndarray) -> np.ndarray:
        """Fractional ``(k, i, j)`` indices ``(N, 3)`` of patient points ``(N, 3)``."""
        return apply_affine(np.linalg.inv(self.affine), points)

    def contains(self, indices: np.ndarray, tolerance: float = 0.5) -> np.ndarray:
        """Whether fractional indices lie inside the volume, allowing ``tolerance`` voxels beyond the centres."""
        upper = np.asarray(self.shape, dtype=np.float64) - 1 + tolerance
        return np.all((indices >= -tolerance) & (indices <= upper), axis=-1)


# Files that sit next to DICOM in real folders and are not DICOM; everything else must parse as DICOM.
_NOT_DICOM_SUFFIXES = (".md", ".txt", ".json", ".csv", ".xml", ".html", ".pdf", ".png", ".jpg", ".jpeg",
                       ".nrrd", ".nii", ".nii.gz", ".zip", ".sha256", ".md5", ".log", ".yaml", ".yml")
_NOT_DICOM_NAMES = ("DICOMDIR", "SHA256SUMS", "MD5SUMS", "README", "LICENSE", "LICENCE", "ATTRIBUTION")


def _list_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise InputError(f"series folder {directory} does not exist or is not a folder")
    files = []
    for root, _, names in os.walk(directory):
        for name in names:
            if (name.startswith(".") or name.lower().endswith(_NOT_DICOM_SUFFIXES)
                    or name.upper() in _NOT_DICOM_NAMES):
                continue
            files.append(Path(root) / name)
    if not files:
        raise InputError(f"series folder {directory} holds no files")
    return sorted(files)


def _read(path: Path) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError) as err:
        raise InputError(f"file {path} is not readable DICOM: {type(err).__name__}: {err}") from err


def _is_axial_image(ds: pydicom.Dataset) -> bool:
    if "PixelData" not in ds or "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
        return False
    if "PixelSpacing" not in ds or int(getattr(ds, "NumberOfFrames", 1) or 1) != 1:
        return False
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    if "LOCALIZER" in image_type:
        return False
    try:
        _, _, normal = orientation_axes(ds.ImageOrientationPatient)
    except ValueError:
        return False
    return abs(normal[2]) >= 0.8


def _orientation_key(ds: pydicom.Dataset) -> tuple[float, ...]:
    return tuple(round(float(v), 3) for v in ds.ImageOrientationPatient)


@dataclasses.dataclass
class ScannedFile:
    """One file of a folder: its dataset (pixels not yet decoded), whether it is an axial image, its series."""

    path: Path
    dataset: pydicom.Dataset
    axial: bool
    series_uid: str


def scan_folder(directory: str | os.PathLike) -> list[ScannedFile]:
    """Read every DICOM file of a folder once (pixels are decoded later, only for the chosen series).

    Pass the result to `read_series(..., scan=...)` to pick several series out of one folder without reading
    it again.
    """
    scanned = []
    for path in _list_files(Path(directory)):
        ds = _read(path)
        scanned.append(ScannedFile(path, ds, _is_axial_image(ds), str(ds.get("SeriesInstanceUID", ""))))
    return scanned


def read_series(directory: str | os.PathLike, series_uid: str | None = None, modality: str | None = None,
                spacing_tolerance_mm: float = 0.1, scan: list[ScannedFile] | None = None) -> Volume:
    """Read, filter, sort and validate one axial series from a folder.

    Parameters
    ----------
    directory : path
        Folder holding the series' files (any names, any order; sub-folders are searched).
    series_uid : str, optional
        Pick this SeriesInstanceUID out of a folder holding several series.
    modality : {"ct", "mri"}, optional
        Expected modality; a series of another DICOM Modality is an error.
    spacing_tolerance_mm : float
        Largest allowed deviation of a slice gap from the median gap.
    scan : list of ScannedFile, optional
        `scan_folder`'s result for ``directory``, to avoid reading it twice.

    Returns
    -------
    Volume

    Raises
    ------
    InputError
        Naming the file and value: unreadable file, no or ambiguous series, wrong modality, inconsistent image
        size or pixel spacing, duplicate or non-uniform slice positions.
    """
    directory = Path(directory)
    if modality is not None and modality not in _MODALITY_CODES:
        raise ValueError(f"modality must be 'ct' or 'mri'. Received: modality={modality!r}")
    datasets = scan if scan is not None else scan_folder(directory)
    by_series: dict[str, list[tuple[Path, pydicom.Dataset]]] = defaultdict(list)
    dropped = 0
    for item in datasets:
        if item.axial:
            by_series[item.series_uid].append((item.path, item.dataset))
        else:
            dropped += 1
    if series_uid is not None:
        if series_uid not in by_series:
            raise InputError(f"series folder {directory} holds no axial series with the series_uid given in "
                             f"manifest.csv. Received: series_uid={uid_tag(series_uid)}")
        chosen = by_series[series_uid]
    else:
        stacks = {uid: items for uid, items in by_series.items() if len(items) > 1}
        if not stacks:
            raise InputError(f"series folder {directory} holds no axial image stack "
                             f"({len(datasets)} files, {dropped} not axial images)")
        if len(stacks) > 1:
            raise InputError(f"series folder {directory} holds {len(stacks)} axial series; give series_uid "
                             f"in manifest.csv. Received: series_uid=None, found {sorted(map(uid_tag, stacks))}")
        series_uid, chosen = next(iter(stacks.items()))
    # Drop images whose orientation differs from the majority (e.g. a reformatted slice in the same series).
    majority = Counter(_orientation_key(ds) for _, ds in chosen).most_common(1)[0][0]
    dropped += sum(1 for _, ds in chosen if _orientation_key(ds) != majority)
    chosen = [(p, ds) for p, ds in chosen if _orientation_key(ds) == majority]
    if len(chosen) < 2:
        raise InputError(f"series {uid_tag(series_uid)} in {directory} has fewer than 2 axial slices")
    if dropped:
        logger.debug("dropped %d non-axial or non-image files in %s", dropped, directory.name)

    first_path, first = chosen[0]
    dicom_modality = str(first.get("Modality", ""))
    if modality is not None and dicom_modality not in _MODALITY_CODES[modality]:
        raise InputError(f"file {first_path}: Modality={dicom_modality!r} but the manifest says {modality!r}")
    _, _, normal = orientation_axes(majority)
    rows, cols = int(first.Rows), int(first.Columns)
    spacing = tuple(float(v) for v in first.PixelSpacing)
    for path, ds in chosen:
        if dicom_modality == "CT" and ("RescaleIntercept" not in ds or "RescaleSlope" not in ds):
            raise InputError(f"file {path}: CT image without RescaleIntercept/RescaleSlope (Type 1 in the CT "
                             "Image IOD); its pixels cannot be converted to HU")
        if (int(ds.Rows), int(ds.Columns)) != (rows, cols):
            raise InputError(f"file {path}: image size {ds.Rows}x{ds.Columns} differs from {rows}x{cols} "
                             f"of {first_path.name}")
        if np.max(np.abs(np.asarray([float(v) for v in ds.PixelSpacing]) - spacing)) > 1e-3:
            raise InputError(f"file {path}: PixelSpacing={list(ds.PixelSpacing)} differs from {list(spacing)}")

    ipp = np.asarray([[float(v) for v in ds.ImagePositionPatient] for _, ds in chosen])
    proj = ipp @ normal
    order = np.argsort(proj, kind="stable")
    chosen = [chosen[n] for n in order]
    ipp, proj = ipp[order], proj[order]
    gaps = np.diff(proj)
    if np.any(gaps < 1e-3):
        n = int(np.argmin(gaps))
        raise InputError(f"files {chosen[n][0]} and {chosen[n + 1][0]} share slice position {proj[n]:.3f} mm")
    median_gap = float(np.median(gaps))
    bad = np.flatnonzero(np.abs(gaps - median_gap) > spacing_tolerance_mm)
    if bad.size:
        n = int(bad[0])
        raise InputError(
            f"non-uniform slice spacing in {directory}: gap {gaps[n]:.3f} mm between {chosen[n][0].name} and "
            f"{chosen[n + 1][0].name} (z={ipp[n, 2]:.2f} -> {ipp[n + 1, 2]:.2f} mm) vs median {median_gap:.3f} mm")
    affine = index_to_patient_affine(ipp[0], majority, spacing, median_gap)
    # Every slice origin must sit on the stack's axis (no gantry tilt shear, no jumps in x/y).
    expected = ipp[0] + (proj - proj[0])[:, None] * normal
    shear = np.linalg.norm(ipp - expected, axis=1)
    if shear.max() > 0.5:
        n = int(np.argmax(shear))
        raise InputError(f"file {chosen[n][0]}: ImagePositionPatient {ipp[n].round(3).tolist()} is "
                         f"{shear[n]:.2f} mm off the stack axis (gantry tilt or mixed series)")

    return Volume(affine=affine, positions_mm=proj, slice_z_mm=ipp[:, 2].copy(), pixel_spacing_mm=spacing,
                  slice_spacing_mm=median_gap, modality=dicom_modality, series_uid=str(series_uid),
                  files=[p for p, _ in chosen], image_shape=(rows, cols), datasets=[ds for _, ds in chosen],
                  n_dropped=dropped)


_NATIVE_LITTLE_ENDIAN = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")


def _fast_pixels(ds: pydicom.Dataset) -> np.ndarray | None:
    """Uncompressed little-endian greyscale pixels straight from the buffer; None where pydicom must decode.

    Gives exactly what ``ds.pixel_array`` gives for these transfer syntaxes, without its per-call overhead.
    """
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    bits = int(ds.get("BitsAllocated", 0) or 0)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    if (syntax not in _NATIVE_LITTLE_ENDIAN or bits not in (8, 16, 32) or int(ds.get("SamplesPerPixel", 1)) != 1
            or int(ds.get("NumberOfFrames", 1) or 1) != 1):
        return None
    rows, cols = int(ds.Rows), int(ds.Columns)
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    buffer = ds.PixelData
    if len(buffer) < rows * cols * dtype.itemsize:
        raise ValueError(f"PixelData holds {len(buffer)} bytes, {rows}x{cols}x{dtype.itemsize} expected")
    # Like pydicom's default (correct_unused_bits=False), bits above BitsStored are taken as stored.
    return np.frombuffer(buffer, dtype=dtype, count=rows * cols).reshape(rows, cols)


def _to_physical(path: Path, ds: pydicom.Dataset, dicom_modality: str) -> np.ndarray:
    """Decode one slice and convert it to HU (CT) or rescaled units (MR)."""
    try:
        raw = _fast_pixels(ds)
        if raw is None:
            raw = ds.pixel_array
    except (ValueError, AttributeError, RuntimeError, NotImplementedError, TypeError) as err:
        raise InputError(f"file {path}: pixel data cannot be decoded: {type(err).__name__}: {err}") from err
    if raw.ndim != 2:
        raise InputError(f"file {path}: expected one greyscale frame, got pixel array shape {raw.shape}")
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    values = raw.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    if dicom_modality == "CT":
        padding = ds.get("PixelPaddingValue")
        if padding is not None:
            values[(raw == int(padding)) & (values < -1000.0)] = AIR_HU
        np.maximum(values, AIR_HU, out=values)
    if not np.all(np.isfinite(values)):
        raise InputError(f"file {path}: non-finite pixel values after rescale (slope={slope}, "
                         f"intercept={intercept})")
    return values


def series_files(directories: Sequence[str | os.PathLike]) -> list[Path]:
    """All candidate files of the given series folders (used by the benchmark for the raw-read baseline)."""
    return [p for d in directories for p in _list_files(Path(d))]
