"""Tumour masks (DICOM-SEG or NIfTI) as points in patient coordinates, mapped onto a series' voxel grid.

A mask is first turned into the patient (LPS, mm) coordinates of its foreground voxels; that makes it
independent of how it was stored: DICOM-SEG frames carry their own ImagePositionPatient (frames are matched to
slices by position, never by frame order), NIfTI carries a RAS affine (converted to LPS here). The points are
then placed on the voxel grid of the series the mask was drawn on (`mask_on_volume`).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from scipy import ndimage

from data_prep.dicom_series import Volume
from data_prep.errors import InputError
from data_prep.geometry import RAS_TO_LPS, apply_affine, pixel_points
from data_prep.privacy import uid_tag

SEG_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.66.4"


@dataclasses.dataclass
class MaskPoints:
    """Foreground voxels of one tumour mask in patient coordinates.

    Attributes
    ----------
    points_mm : np.ndarray
        ``(N, 3)`` LPS coordinates of the foreground voxel centres.
    plane_ids : np.ndarray
        ``(N,)`` which stored plane each point came from (SEG: 1-based frame number; NIfTI: slice index).
    plane_origins_mm : dict of int -> np.ndarray
        Position (LPS) of each stored plane that holds foreground.
    path : Path
    segment : int or None
    referenced_series : frozenset of str
        DICOM-SEG: the SeriesInstanceUIDs it says it was drawn on (empty for NIfTI or when not recorded).
    referenced_instances : frozenset of str
        DICOM-SEG: the SOPInstanceUIDs of its source images (empty when not recorded).
    frame_of_reference : str
        DICOM-SEG: its FrameOfReferenceUID ('' for NIfTI).
    """

    points_mm: np.ndarray
    plane_ids: np.ndarray
    plane_origins_mm: dict[int, np.ndarray]
    path: Path
    segment: int | None
    referenced_series: frozenset[str] = frozenset()
    referenced_instances: frozenset[str] = frozenset()
    frame_of_reference: str = ""


@dataclasses.dataclass(frozen=True)
class LesionChoice:
    """The one lesion (3-D connected component) of a mask that the ROI is built on.

    Attributes
    ----------
    grid : np.ndarray
        ``(Z, Y, X)`` bool mask of the chosen lesion only.
    n_lesions : int
        Connected components (26-connectivity on the series' voxel grid) in the whole mask.
    rank : int
        The chosen lesion's rank by volume, 1 = largest.
    volumes_ml : tuple of float
        Every lesion's volume, largest first.
    rule : str
        How it was chosen: ``"only"``, ``"largest"``, ``"lesion_index"`` or ``"roi"``.
    n_specks : int
        Components smaller than the minimum lesion volume, left out.
    """

    grid: np.ndarray
    n_lesions: int
    rank: int
    volumes_ml: tuple[float, ...]
    rule: str
    n_specks: int = 0

    @property
    def volume_ml(self) -> float:
        return self.volumes_ml[self.rank - 1]

    def note(self) -> str:
        """A one-line account of the choice, for the report ('' when the mask holds one lesion)."""
        if self.n_lesions == 1:
            return ""
        shown = ", ".join(f"{v:.2f}" for v in self.volumes_ml[:6]) + (", ..." if self.n_lesions > 6 else "")
        why = {"largest": "the largest (default)", "lesion_index": "given by lesion_index",
               "roi": "the one at the explicit ROI"}[self.rule]
        return (f"mask holds {self.n_lesions} separate lesions ({shown} ml); used lesion {self.rank} "
                f"({self.volume_ml:.2f} ml), {why}")


def choose_lesion(grid: np.ndarray, voxel_volume_ml: float, lesion_index: int | None = None,
                  near_index: np.ndarray | None = None, min_lesion_ml: float = 0.0) -> LesionChoice:
    """Pick one lesion out of a mask that may hold several.

    Lesions are the 3-D connected components of the mask (26-connectivity on the series' voxel grid) of at
    least ``min_lesion_ml`` (smaller specks, stray voxels of a drawing, are counted apart and never used; if
    every component is a speck the largest counts as the lesion). Rule: the lesion named by ``lesion_index``
    (1 = largest, 2 = second largest, ...); else the lesion that holds, or lies nearest to, the voxel
    ``near_index`` (the centre of an explicit ROI); else the largest.

    Parameters
    ----------
    grid : np.ndarray
        ``(Z, Y, X)`` bool mask on a series' grid.
    voxel_volume_ml : float
        Volume of one voxel of that grid.
    lesion_index : int, optional
    near_index : np.ndarray, optional
        ``(3,)`` fractional ``(k, i, j)`` index.
    min_lesion_ml : float
        Smallest component that counts as a lesion.

    Raises
    ------
    InputError
        Empty mask, or ``lesion_index`` beyond the number of lesions.
    """
    labels, n_components = ndimage.label(grid, structure=ndimage.generate_binary_structure(3, 3))
    if n_components == 0:
        raise InputError("tumour mask is empty on the series grid")
    sizes = np.bincount(labels.ravel(), minlength=n_components + 1)[1:]
    order = np.argsort(-sizes, kind="stable")  # ties: the lower label (first in scan order) first
    volumes = sizes[order] * voxel_volume_ml
    n = max(1, int(np.sum(volumes >= min_lesion_ml)))
    if lesion_index is not None:
        if not 1 <= lesion_index <= n:
            raise InputError(f"lesion_index must lie in 1..{n} (the mask holds {n} lesion(s), 1 = largest). "
                             f"Received: lesion_index={lesion_index}")
        rank, rule = lesion_index, "lesion_index"
    elif near_index is not None and n > 1:
        voxels = np.argwhere(np.isin(labels, order[:n] + 1))
        nearest = voxels[int(np.argmin(np.sum((voxels - np.asarray(near_index)) ** 2, axis=1)))]
        rank, rule = int(np.flatnonzero(order == labels[tuple(nearest)] - 1)[0]) + 1, "roi"
    else:
        rank, rule = 1, "largest" if n > 1 else "only"
    return LesionChoice(labels == int(order[rank - 1]) + 1, n, rank, tuple(float(v) for v in volumes[:n]), rule,
                        n_components - n)


def load_mask(path: str | os.PathLike, segment: int | None = None) -> MaskPoints:
    """Read a DICOM-SEG (``.dcm``) or NIfTI (``.nii``/``.nii.gz``) tumour mask.

    Parameters
    ----------
    path : path
    segment : int, optional
        DICOM-SEG segment number, or NIfTI label value; required when a SEG holds several segments.

    Raises
    ------
    InputError
        Unreadable file, unknown or ambiguous segment, empty mask; the message names file and value.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"mask file {path} does not exist")
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return _load_nifti(path, segment)
    return _load_seg(path, segment)


def _functional(ds: pydicom.Dataset, frame: int, sequence: str, attribute: str):
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and sequence in per_frame[frame]:
        return getattr(per_frame[frame][sequence][0], attribute)
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared is not None and sequence in shared[0]:
        return getattr(shared[0][sequence][0], attribute)
    raise InputError(f"SEG frame {frame + 1} has no {sequence}/{attribute}")


def _load_seg(path: Path, segment: int | None) -> MaskPoints:
    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
    except (InvalidDicomError, OSError, EOFError, ValueError, AttributeError, KeyError, TypeError) as err:
        raise InputError(f"mask file {path} is not a readable DICOM-SEG: {type(err).__name__}: {err}") from err
    if str(ds.get("SOPClassUID", "")) != SEG_SOP_CLASS_UID:
        raise InputError(f"mask file {path} is not a DICOM-SEG. Received: SOPClassUID={ds.get('SOPClassUID')}")
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    pixels = pixels.reshape(n_frames, int(ds.Rows), int(ds.Columns))
    segments = {int(s.SegmentNumber): str(s.get("SegmentLabel", "")) for s in ds.SegmentSequence}
    if segment is None:
        if len(segments) != 1:
            raise InputError(f"mask file {path} holds {len(segments)} segments {segments}; give mask_segment. "
                             "Received: mask_segment=None")
        segment = next(iter(segments))
    if segment not in segments:
        raise InputError(f"mask file {path} has no segment {segment}; it holds {segments}. "
                         f"Received: mask_segment={segment}")
    threshold = 0
    if str(ds.get("SegmentationType", "BINARY")).upper() == "FRACTIONAL":
        threshold = float(ds.get("MaximumFractionalValue", 255)) / 2.0
    points, ids, origins = [], [], {}
    for frame in range(n_frames):
        number = int(_functional(ds, frame, "SegmentIdentificationSequence", "ReferencedSegmentNumber"))
        if number != segment:
            continue
        rows, cols = np.nonzero(pixels[frame] > threshold)
        if rows.size == 0:
            continue
        origin = np.asarray([float(v) for v in
                             _functional(ds, frame, "PlanePositionSequence", "ImagePositionPatient")])
        orientation = _functional(ds, frame, "PlaneOrientationSequence", "ImageOrientationPatient")
        spacing = _functional(ds, frame, "PixelMeasuresSequence", "PixelSpacing")
        points.append(pixel_points(origin, orientation, spacing, rows, cols))
        ids.append(np.full(rows.size, frame + 1, dtype=np.int64))
        origins[frame + 1] = origin
    if not points:
        raise InputError(f"mask file {path}: segment {segment} is empty")
    series, instances = _seg_references(ds)
    return MaskPoints(np.concatenate(points), np.concatenate(ids), origins, path, segment, series, instances,
                      str(ds.get("FrameOfReferenceUID", "") or ""))


def _seg_references(ds: pydicom.Dataset) -> tuple[frozenset[str], frozenset[str]]:
    """SeriesInstanceUIDs and SOPInstanceUIDs a SEG says it was derived from."""
    series, instances = set(), set()
    for item in ds.get("ReferencedSeriesSequence", None) or []:
        if item.get("SeriesInstanceUID"):
            series.add(str(item.SeriesInstanceUID))
        for ref in item.get("ReferencedInstanceSequence", None) or []:
            instances.add(str(ref.get("ReferencedSOPInstanceUID", "")))
    for frame in ds.get("PerFrameFunctionalGroupsSequence", None) or []:
        for derivation in frame.get("DerivationImageSequence", None) or []:
            for source in derivation.get("SourceImageSequence", None) or []:
                instances.add(str(source.get("ReferencedSOPInstanceUID", "")))
    instances.discard("")
    return frozenset(series), frozenset(instances)


def check_mask_identity(mask: MaskPoints, volume: Volume) -> None:
    """Reject a DICOM-SEG drawn on another series (another patient, another phase) than ``volume``.

    The SEG's referenced series (or, failing that, its source SOP instances) must include ``volume``'s series
    and its FrameOfReferenceUID must equal the series'; a NIfTI mask carries no identity and is checked by its
    grid only (`mask_on_volume`). Messages show UIDs only as `uid_tag` hashes.

    Raises
    ------
    InputError
    """
    name = mask.path.name
    if mask.referenced_series and volume.series_uid not in mask.referenced_series:
        tags = ", ".join(sorted(map(uid_tag, mask.referenced_series)))
        raise InputError(f"mask file {name} was drawn on another series ({tags}) than the mask phase's series "
                         f"({uid_tag(volume.series_uid)}); wrong patient or phase?")
    if not mask.referenced_series and mask.referenced_instances:
        own = {str(ds.get("SOPInstanceUID", "")) for ds in volume.datasets}
        if not mask.referenced_instances & own:
            raise InputError(f"mask file {name} refers to no image of the mask phase's series "
                             f"({uid_tag(volume.series_uid)}); wrong patient or phase?")
    frame = volume.frame_of_reference_uid
    if mask.frame_of_reference and frame and mask.frame_of_reference != frame:
        raise InputError(f"mask file {name} has FrameOfReferenceUID {uid_tag(mask.frame_of_reference)}, the mask "
                         f"phase's series {uid_tag(frame)}; the mask belongs to another scan")


def _load_nifti(path: Path, segment: int | None) -> MaskPoints:
    import nibabel as nib

    try:
        image = nib.load(str(path))
        data = np.asanyarray(image.dataobj)
    except (OSError, EOFError, ValueError, nib.filebasedimages.ImageFileError) as err:
        raise InputError(f"mask file {path} is not a readable NIfTI: {type(err).__name__}: {err}") from err
    data = np.squeeze(data)
    if data.ndim != 3:
        raise InputError(f"mask file {path}: expected a 3-D label map, got shape {data.shape}")
    foreground = data == segment if segment is not None else data > 0
    idx = np.argwhere(foreground)
    if idx.size == 0:
        raise InputError(f"mask file {path}: no voxel with label {segment if segment is not None else '> 0'}")
    affine = RAS_TO_LPS @ np.asarray(image.affine, dtype=np.float64)
    # nibabel's affine maps (i, j, k) -> RAS; reorder our apply_affine input accordingly.
    points = idx.astype(np.float64) @ affine[:3, :3].T + affine[:3, 3]
    origins = {int(k): apply_affine(affine, np.asarray([[0.0, 0.0, k]]))[0] for k in np.unique(idx[:, 2])}
    return MaskPoints(points, idx[:, 2].astype(np.int64), origins, path, segment)


def mask_on_volume(mask: MaskPoints, volume: Volume) -> tuple[np.ndarray, dict[int, int]]:
    """Place mask points on a series' voxel grid.

    Returns
    -------
    grid : np.ndarray
        ``(Z, Y, X)`` bool mask on the volume's grid.
    plane_to_slice : dict of int -> int
        Stored plane (SEG frame number / NIfTI slice) -> slice index of the volume, matched by position.

    Raises
    ------
    InputError
        If a mask plane lies between slices of the series or the mask reaches outside the volume.
    """
    indices = volume.patient_to_index(mask.points_mm)
    k_frac = np.abs(indices[:, 0] - np.round(indices[:, 0]))
    if k_frac.max() > 0.25:
        n = int(np.argmax(k_frac))
        raise InputError(f"mask file {mask.path}: plane {mask.plane_ids[n]} at z={mask.points_mm[n, 2]:.2f} mm "
                         f"matches no slice of series {uid_tag(volume.series_uid)} (slices every "
                         f"{volume.slice_spacing_mm:.2f} mm from z={volume.slice_z_mm[0]:.2f} mm)")
    inside = volume.contains(indices)
    if not np.all(inside):
        n = int(np.argmin(inside))
        raise InputError(f"mask file {mask.path}: voxel at {mask.points_mm[n].round(2).tolist()} mm lies outside "
                         f"series {uid_tag(volume.series_uid)} (shape {volume.shape})")
    voxels = np.clip(np.round(indices).astype(np.int64), 0, np.asarray(volume.shape) - 1)
    grid = np.zeros(volume.shape, dtype=bool)
    grid[voxels[:, 0], voxels[:, 1], voxels[:, 2]] = True
    plane_to_slice = {}
    for plane in np.unique(mask.plane_ids):
        ks = np.unique(voxels[mask.plane_ids == plane, 0])
        plane_to_slice[int(plane)] = int(ks[0]) if ks.size == 1 else -1
    return grid, plane_to_slice
