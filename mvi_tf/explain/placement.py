"""Where a map lives: the ROI frame, the full axial DICOM slice, and the truth mask grid.

Coordinates are DICOM patient coordinates (LPS, mm) throughout.

**ROI frame.** The model sees a square ROI of side ``side_mm`` centred on ``center_mm`` and resampled to
``size_px x size_px`` pixels; the three channels are three contiguous axial slices around ``slice_z_mm`` and the map
refers to the central one. Row index ``i`` grows along patient +y (posterior) and column index ``j`` along patient +x
(patient left) — the usual radiological view of an axial slice with ``ImageOrientationPatient = [1, 0, 0, 0, 1, 0]``.
The centre of pixel ``(i, j)`` sits at ``x = cx - side/2 + (j + 0.5) * side/size`` and
``y = cy - side/2 + (i + 0.5) * side/size``.

**Slice frame.** A DICOM image plane: ``ImagePositionPatient`` is the centre of pixel ``(0, 0)``; the first three
``ImageOrientationPatient`` values are the direction in which the column index grows, the last three the direction in
which the row index grows; ``PixelSpacing = (row spacing, column spacing)``. Oblique planes are handled exactly
within the plane; the ROI is treated as lying in the plane of the chosen slice.

**Mask grid.** NIfTI volumes with a RAS affine (as written by ``nibabel``); LPS = RAS with x and y negated.

**Unwrapped frame.** Records prepared with ``--sampling unwrapped`` (`data_prep.unwrap.UnwrappedFrame`): row ``i`` is
the ray at angle ``2*pi*i/S`` from the tumour's centroid, column ``j`` a distance from the tumour boundary. Its maps
are placed on a square display frame centred on the centroid that holds the whole band
(`unwrapped_display_frame`, `unwrapped_to_roi`), and from there on as any ROI map.

The forward mappings are data_prep's (:mod:`data_prep.geometry`: ``square_grid`` builds the ROI grid the model
input was sampled on, ``pixel_points`` maps slice pixels to patient space), so a map is placed back with exactly
the geometry the input was cut with; this module adds the inverses.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from scipy import ndimage

from data_prep.geometry import RAS_TO_LPS, orientation_axes, pixel_points, square_grid
from data_prep.unwrap import UnwrappedFrame


@dataclasses.dataclass(frozen=True)
class RoiFrame:
    """The square, axis-aligned ROI a model input was cut from.

    Parameters
    ----------
    center_mm : tuple of float
        ROI centre ``(x, y, z)`` in patient coordinates (LPS, mm).
    side_mm : float
        Side of the square ROI in mm.
    size_px : int
        Number of pixels along each side of the model input.
    slice_z_mm : float, optional
        Patient z of the central slice the map refers to; defaults to the centre's z.
    """

    center_mm: tuple[float, float, float]
    side_mm: float
    size_px: int
    slice_z_mm: float | None = None

    def __post_init__(self) -> None:
        if len(self.center_mm) != 3 or not np.all(np.isfinite(self.center_mm)):
            raise ValueError(f"`center_mm` must be three finite numbers. Received: center_mm={self.center_mm}")
        if not (np.isfinite(self.side_mm) and self.side_mm > 0):
            raise ValueError(f"`side_mm` must be a positive number. Received: side_mm={self.side_mm}")
        if int(self.size_px) < 1:
            raise ValueError(f"`size_px` must be >= 1. Received: size_px={self.size_px}")

    @property
    def z_mm(self) -> float:
        """Patient z of the slice the ROI map refers to."""
        return float(self.center_mm[2] if self.slice_z_mm is None else self.slice_z_mm)

    @property
    def pixel_mm(self) -> float:
        """Edge length of one ROI pixel in mm."""
        return float(self.side_mm) / int(self.size_px)

    def grid(self) -> np.ndarray:
        """Patient coordinates ``(S, S, 3)`` of every ROI pixel centre on the map's slice."""
        return square_grid(self.center_mm[0], self.center_mm[1], self.side_mm, self.size_px, [self.z_mm])[0]

    def pixel_to_patient(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Patient coordinates ``(..., 3)`` of (fractional) ROI pixel centres."""
        rows = np.asarray(rows, dtype=np.float64)
        cols = np.asarray(cols, dtype=np.float64)
        half = self.side_mm / 2.0
        x = self.center_mm[0] - half + (cols + 0.5) * self.pixel_mm
        y = self.center_mm[1] - half + (rows + 0.5) * self.pixel_mm
        z = np.full(np.broadcast(rows, cols).shape, self.z_mm)
        return np.stack(np.broadcast_arrays(x, y, z), axis=-1)

    def patient_to_pixel(self, points_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fractional ``(rows, cols)`` in the ROI of patient points ``(..., 3)`` (z is ignored)."""
        points = np.asarray(points_mm, dtype=np.float64)
        half = self.side_mm / 2.0
        cols = (points[..., 0] - (self.center_mm[0] - half)) / self.pixel_mm - 0.5
        rows = (points[..., 1] - (self.center_mm[1] - half)) / self.pixel_mm - 0.5
        return rows, cols


@dataclasses.dataclass(frozen=True)
class SliceGeometry:
    """Geometry of one DICOM image plane (see the module docstring for the conventions)."""

    position_mm: tuple[float, float, float]
    row_direction: tuple[float, float, float]
    column_direction: tuple[float, float, float]
    pixel_spacing_mm: tuple[float, float]
    rows: int
    columns: int

    def __post_init__(self) -> None:
        orientation_axes(tuple(self.row_direction) + tuple(self.column_direction))
        if len(self.pixel_spacing_mm) != 2 or min(self.pixel_spacing_mm) <= 0:
            raise ValueError(f"PixelSpacing must be two positive numbers. Received: {self.pixel_spacing_mm}")
        if self.rows < 1 or self.columns < 1:
            raise ValueError(f"Rows and Columns must be >= 1. Received: rows={self.rows}, columns={self.columns}")

    @classmethod
    def from_dataset(cls, ds) -> SliceGeometry:
        """Read the plane geometry from a pydicom dataset."""
        iop = [float(v) for v in ds.ImageOrientationPatient]
        return cls(
            position_mm=tuple(float(v) for v in ds.ImagePositionPatient),
            row_direction=tuple(iop[:3]),
            column_direction=tuple(iop[3:]),
            pixel_spacing_mm=tuple(float(v) for v in ds.PixelSpacing),
            rows=int(ds.Rows),
            columns=int(ds.Columns),
        )

    @property
    def normal(self) -> np.ndarray:
        """Unit normal of the plane (row x column direction)."""
        n = np.cross(self.row_direction, self.column_direction)
        return n / np.linalg.norm(n)

    def pixel_to_patient(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Patient coordinates ``(..., 3)`` of (fractional) slice pixel centres."""
        rows, cols = np.broadcast_arrays(np.asarray(rows, dtype=np.float64), np.asarray(cols, dtype=np.float64))
        points = pixel_points(
            self.position_mm,
            tuple(self.row_direction) + tuple(self.column_direction),
            self.pixel_spacing_mm,
            rows.ravel(),
            cols.ravel(),
        )
        return points.reshape(rows.shape + (3,))

    def patient_to_pixel(self, points_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fractional ``(rows, cols)`` of patient points ``(..., 3)`` projected onto the plane."""
        d = np.asarray(points_mm, dtype=np.float64) - np.asarray(self.position_mm)
        cols = d @ np.asarray(self.row_direction) / self.pixel_spacing_mm[1]
        rows = d @ np.asarray(self.column_direction) / self.pixel_spacing_mm[0]
        return rows, cols


@dataclasses.dataclass(frozen=True)
class PlacedMap:
    """A ROI map placed on a full slice.

    Attributes
    ----------
    slice_map : np.ndarray
        ``(rows, columns)`` float32: the map where the ROI covers the slice, NaN elsewhere.
    corners_rc : np.ndarray
        ``(4, 2)`` fractional ``(row, col)`` slice coordinates of the ROI corners (outer pixel edges), in order
        top-left, top-right, bottom-right, bottom-left of the ROI.
    box_rc : tuple of int
        Axis-aligned integer bounding box ``(row0, col0, row1, col1)`` (exclusive ends) of the ROI, clipped to the
        slice.
    """

    slice_map: np.ndarray
    corners_rc: np.ndarray
    box_rc: tuple[int, int, int, int]


def roi_corners_rc(roi: RoiFrame, geometry: SliceGeometry) -> np.ndarray:
    """Slice ``(row, col)`` of the four outer corners of the ROI (top-left, top-right, bottom-right, bottom-left)."""
    s = roi.size_px
    r = np.array([-0.5, -0.5, s - 0.5, s - 0.5])
    c = np.array([-0.5, s - 0.5, s - 0.5, -0.5])
    rows, cols = geometry.patient_to_pixel(roi.pixel_to_patient(r, c))
    return np.stack([rows, cols], axis=-1)


def roi_to_slice(roi_map: np.ndarray, roi: RoiFrame, geometry: SliceGeometry) -> PlacedMap:
    """Place a ``(S, S)`` ROI map on the full slice (bilinear; NaN outside the ROI).

    Parameters
    ----------
    roi_map : np.ndarray
        Map in the ROI frame, shape ``(roi.size_px, roi.size_px)``.
    roi : RoiFrame
        The ROI the model input was cut from.
    geometry : SliceGeometry
        The slice to place it on.

    Returns
    -------
    PlacedMap
    """
    roi_map = np.asarray(roi_map, dtype=np.float32)
    if roi_map.shape != (roi.size_px, roi.size_px):
        raise ValueError(
            f"`roi_map` must have shape ({roi.size_px}, {roi.size_px}) to match the ROI. "
            f"Received: roi_map.shape={roi_map.shape}"
        )
    corners = roi_corners_rc(roi, geometry)
    r0 = int(np.clip(np.floor(corners[:, 0].min()), 0, geometry.rows))
    r1 = int(np.clip(np.ceil(corners[:, 0].max()) + 1, 0, geometry.rows))
    c0 = int(np.clip(np.floor(corners[:, 1].min()), 0, geometry.columns))
    c1 = int(np.clip(np.ceil(corners[:, 1].max()) + 1, 0, geometry.columns))
    slice_map = np.full((geometry.rows, geometry.columns), np.nan, dtype=np.float32)
    if r1 > r0 and c1 > c0:
        rr, cc = np.meshgrid(np.arange(r0, r1), np.arange(c0, c1), indexing="ij")
        points = geometry.pixel_to_patient(rr, cc)
        # Slice pixels are compared with the ROI in-plane (the ROI lies in the slice's plane by construction).
        points[..., 2] = roi.z_mm
        u, v = roi.patient_to_pixel(points)
        s = roi.size_px
        inside = (u >= -0.5) & (u <= s - 0.5) & (v >= -0.5) & (v <= s - 0.5)
        values = ndimage.map_coordinates(
            roi_map, [np.clip(u, 0, s - 1), np.clip(v, 0, s - 1)], order=1, mode="nearest"
        )
        slice_map[r0:r1, c0:c1] = np.where(inside, values, np.nan)
    return PlacedMap(slice_map=slice_map, corners_rc=corners, box_rc=(r0, c0, r1, c1))


def unwrapped_display_frame(frame: UnwrappedFrame) -> RoiFrame:
    """The square frame, centred on the rays' origin, that holds a patient's whole unwrapped band (``S x S``)."""
    side = 2.0 * (max(frame.boundary_mm) + max(frame.band_mm[1], 0.0)) + 2.0 * frame.column_mm
    return RoiFrame((frame.center_x_mm, frame.center_y_mm, frame.slice_z_mm[1]), side, frame.size_px,
                    frame.slice_z_mm[1])


@dataclasses.dataclass(frozen=True)
class UnwrappedPlacement:
    """Where each pixel of a square frame falls in a patient's unwrapped frame: worked out once per patient, then
    applied to each of its maps and image channels (:meth:`place`)."""

    size_px: int
    rows: np.ndarray
    cols: np.ndarray

    @classmethod
    def between(cls, frame: UnwrappedFrame, roi: RoiFrame) -> UnwrappedPlacement:
        rows, cols = frame.patient_to_pixel(roi.grid())
        return cls(frame.size_px, rows, cols)

    def place(self, values: np.ndarray) -> np.ndarray:
        """An unwrapped ``(S, S)`` map or ``(S, S, C)`` image on the square frame: bilinear, periodic along the
        rays, 0 where the square lies outside the band."""
        values = np.asarray(values, dtype=np.float64)
        s = self.size_px
        if values.shape[:2] != (s, s) or values.ndim not in (2, 3):
            raise ValueError(f"`values` must have shape ({s}, {s}) or ({s}, {s}, C) to match the unwrapped frame. "
                             f"Received: values.shape={values.shape}")
        if values.ndim == 3:
            return np.stack([self.place(values[..., c]) for c in range(values.shape[-1])], axis=-1)
        inside = (self.cols >= -0.5) & (self.cols <= s - 0.5)
        padded = np.concatenate([values[-1:], values, values[:1]])  # the ray after the last is the first
        sampled = ndimage.map_coordinates(padded, [self.rows + 1.0, np.clip(self.cols, 0, s - 1)], order=1,
                                          mode="nearest")
        return np.where(inside, sampled, 0.0)


def unwrapped_to_roi(values: np.ndarray, frame: UnwrappedFrame, roi: RoiFrame) -> np.ndarray:
    """Place an unwrapped ``(S, S)`` array (map or image channel) or ``(S, S, C)`` image on a square frame (see
    :meth:`UnwrappedPlacement.place`)."""
    return UnwrappedPlacement.between(frame, roi).place(values)


def slice_to_roi(slice_values: np.ndarray, geometry: SliceGeometry, roi: RoiFrame, order: int = 1) -> np.ndarray:
    """Resample a ``(rows, columns)`` slice array onto the ``(S, S)`` ROI frame (0 outside the slice)."""
    slice_values = np.asarray(slice_values)
    if slice_values.shape != (geometry.rows, geometry.columns):
        raise ValueError(
            f"`slice_values` must have shape ({geometry.rows}, {geometry.columns}). "
            f"Received: slice_values.shape={slice_values.shape}"
        )
    rows, cols = geometry.patient_to_pixel(roi.grid())
    return ndimage.map_coordinates(slice_values.astype(np.float64), [rows, cols], order=order, cval=0.0)


def volume_to_roi(
    volume: np.ndarray,
    affine_ras: np.ndarray,
    roi: RoiFrame,
    z_offsets_mm: tuple[float, ...] = (0.0,),
    order: int = 0,
) -> np.ndarray:
    """Sample a NIfTI volume (RAS affine) on the ROI frame at the ROI's slice z.

    Parameters
    ----------
    volume : np.ndarray
        3-D array indexed ``(i, j, k)`` as in the NIfTI file.
    affine_ras : np.ndarray
        ``4 x 4`` voxel-to-RAS affine.
    roi : RoiFrame
        Target frame.
    z_offsets_mm : tuple of float
        Offsets from ``roi.z_mm`` at which to sample; the result is their maximum (a union for masks).
    order : int
        Spline order (0 = nearest, for masks).

    Returns
    -------
    np.ndarray
        ``(S, S)`` float array, 0 outside the volume.
    """
    volume = np.asarray(volume)
    if volume.ndim == 4 and volume.shape[-1] == 1:
        volume = volume[..., 0]
    if volume.ndim != 3:
        raise ValueError(f"`volume` must be 3-D. Received: volume.shape={volume.shape}")
    # voxel -> RAS -> LPS, inverted: LPS -> voxel.
    inverse = np.linalg.inv(RAS_TO_LPS @ np.asarray(affine_ras, dtype=np.float64))
    base = roi.grid()
    out = np.zeros((roi.size_px, roi.size_px), dtype=np.float64)
    for dz in z_offsets_mm:
        lps = base.copy()
        lps[..., 2] += dz
        homogeneous = np.concatenate([lps, np.ones(lps.shape[:-1] + (1,))], axis=-1)
        voxel = homogeneous @ inverse.T
        sampled = ndimage.map_coordinates(
            volume.astype(np.float64), [voxel[..., 0], voxel[..., 1], voxel[..., 2]], order=order, cval=0.0
        )
        out = np.maximum(out, sampled)
    return out


def read_nifti_mask_in_roi(path: str | Path, roi: RoiFrame, z_offsets_mm: tuple[float, ...] = (0.0,)) -> np.ndarray:
    """Read a NIfTI mask and return it as a boolean ``(S, S)`` array in the ROI frame."""
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Truth mask not found: {path}")
    image = nib.load(str(path))
    return volume_to_roi(np.asarray(image.dataobj), image.affine, roi, z_offsets_mm=z_offsets_mm, order=0) > 0.5


@dataclasses.dataclass(frozen=True)
class AxialSlice:
    """One DICOM slice: pixel values (rescaled: HU for CT) and geometry. No identifying attributes are kept."""

    pixels: np.ndarray
    geometry: SliceGeometry
    modality: str
    file: str
    distance_mm: float


def read_nearest_slice(series_dir: str | Path, z_mm: float, series_uid: str | None = None) -> AxialSlice:
    """Read the slice of a DICOM series whose plane lies nearest to patient z ``z_mm``.

    Slices are ordered by ``ImagePositionPatient`` projected on the slice normal, never by file name. Only the
    geometry and the rescaled pixels are kept.

    Parameters
    ----------
    series_dir : str or Path
        Folder holding the series (other series in the folder are ignored when ``series_uid`` is given).
    z_mm : float
        Patient z (mm) of the wanted slice.
    series_uid : str, optional
        SeriesInstanceUID to pick when the folder holds several series.

    Returns
    -------
    AxialSlice
    """
    import pydicom

    series_dir = Path(series_dir)
    if not series_dir.is_dir():
        raise FileNotFoundError(f"DICOM series folder not found: {series_dir}")
    best: tuple[float, Path] | None = None
    uids: set[str] = set()
    for path in sorted(p for p in series_dir.iterdir() if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except pydicom.errors.InvalidDicomError:
            continue
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
            continue
        uid = str(ds.get("SeriesInstanceUID", ""))
        if series_uid is not None and uid != series_uid:
            continue
        uids.add(uid)
        geometry = SliceGeometry.from_dataset(ds)
        # Distance of the plane from the wanted z along the normal's z component.
        centre = geometry.pixel_to_patient((geometry.rows - 1) / 2.0, (geometry.columns - 1) / 2.0)
        distance = abs(float(centre[2]) - z_mm)
        if best is None or distance < best[0]:
            best = (distance, path)
    if best is None:
        raise ValueError(f"No image slices with ImagePositionPatient found in {series_dir}")
    if len(uids) > 1:
        raise ValueError(
            f"{series_dir} holds {len(uids)} series; pass the manifest's series_uid to pick one."
        )
    ds = pydicom.dcmread(best[1])
    pixels = ds.pixel_array.astype(np.float32)
    pixels = pixels * float(ds.get("RescaleSlope", 1.0)) + float(ds.get("RescaleIntercept", 0.0))
    return AxialSlice(
        pixels=pixels, geometry=SliceGeometry.from_dataset(ds), modality=str(ds.get("Modality", "")),
        file=best[1].name,
        distance_mm=float(best[0]),
    )
