"""Square ROIs on three contiguous axial slices, sampled in patient coordinates and windowed per phase.

The ROI (paper, section 2.5) is the square that holds the whole tumour plus a margin for the peritumoral zone,
on the three contiguous axial slices centred on the tumour's largest cross-section. It is defined once, in
patient coordinates (mm), on the mask (reference) phase; every phase is then sampled on the same ``S x S``
patient-coordinate grid (common in-plane spacing ``side_mm / S``) by trilinear interpolation, so phases acquired
with different fields of view, pixel spacings or slice positions still give aligned stacks.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from data_prep.config import IntensityWindow
from data_prep.dicom_series import Volume
from data_prep.errors import InputError
from data_prep.geometry import square_grid
from data_prep.privacy import uid_tag


@dataclasses.dataclass(frozen=True)
class Roi:
    """A square axial ROI in DICOM patient coordinates (LPS, mm).

    Attributes
    ----------
    center_x_mm, center_y_mm, center_z_mm : float
        Centre of the square; ``center_z_mm`` is the middle slice.
    side_mm : float
        Side of the square.
    slice_z_mm : tuple of float
        Patient z of the three slices, ascending (inferior to superior); channel ``c`` of a stack is slice ``c``.
    source : str
        ``"mask"`` (derived from a tumour mask) or ``"roi"`` (given in lesions.csv).
    """

    center_x_mm: float
    center_y_mm: float
    center_z_mm: float
    side_mm: float
    slice_z_mm: tuple[float, float, float]
    source: str

    def __post_init__(self) -> None:
        values = [self.center_x_mm, self.center_y_mm, self.center_z_mm, self.side_mm, *self.slice_z_mm]
        if not all(np.isfinite(values)) or self.side_mm <= 0 or len(self.slice_z_mm) != 3:
            raise InputError(f"invalid ROI: centre ({self.center_x_mm}, {self.center_y_mm}, {self.center_z_mm}) mm, "
                             f"side {self.side_mm} mm, slices {self.slice_z_mm}")

    def report_fields(self) -> dict[str, object]:
        """The prepare_report.csv columns describing this ROI."""
        return {
            "roi_center_x_mm": round(self.center_x_mm, 3),
            "roi_center_y_mm": round(self.center_y_mm, 3),
            "roi_center_z_mm": round(self.center_z_mm, 3),
            "roi_side_mm": round(self.side_mm, 3),
            "slice_z_mm": ";".join(f"{z:.3f}" for z in self.slice_z_mm),
            "roi_source": self.source,
        }


def _triplet(volume: Volume, k: int, slice_spacing_mm: float | None) -> tuple[float, float, float]:
    """Patient z of three contiguous slices centred on slice ``k`` (moved inward at the stack's ends)."""
    n = volume.shape[0]
    if n < 3:
        raise InputError(f"series {uid_tag(volume.series_uid)} has {n} slices; three contiguous slices are needed")
    if slice_spacing_mm is None:
        k = min(max(k, 1), n - 2)
        zs = volume.slice_z_mm[k - 1:k + 2]
    else:
        zs = volume.slice_z_mm[k] + np.asarray([-1.0, 0.0, 1.0]) * slice_spacing_mm
    zs = np.sort(np.asarray(zs, dtype=np.float64))
    return float(zs[0]), float(zs[1]), float(zs[2])


def roi_from_mask(grid: np.ndarray, volume: Volume, margin_mm: float,
                  slice_spacing_mm: float | None = None) -> Roi:
    """The square that holds the whole tumour plus ``margin_mm``, on the slices around its largest section.

    Parameters
    ----------
    grid : np.ndarray
        ``(Z, Y, X)`` bool tumour mask on ``volume``'s grid (see `masks.mask_on_volume`).
    volume : Volume
        The series the mask was drawn on.
    margin_mm : float
        Margin added on each side of the tumour's bounding square.
    slice_spacing_mm : float, optional
        Spacing of the three slices; default: the series' own contiguous slices.
    """
    if grid.shape != volume.shape or not grid.any():
        raise InputError(f"tumour mask on series {uid_tag(volume.series_uid)} is empty or has shape {grid.shape} "
                         f"instead of {volume.shape}")
    areas = grid.sum(axis=(1, 2))
    k = int(np.argmax(areas))
    points = volume.index_to_patient(np.argwhere(grid).astype(np.float64))
    low, high = points.min(axis=0), points.max(axis=0)
    row_spacing, col_spacing = volume.pixel_spacing_mm
    extent = max(high[0] - low[0] + col_spacing, high[1] - low[1] + row_spacing)
    slices = _triplet(volume, k, slice_spacing_mm)
    return Roi(float((low[0] + high[0]) / 2), float((low[1] + high[1]) / 2), float(volume.slice_z_mm[k]),
               float(extent + 2.0 * margin_mm), slices, "mask")


def roi_from_box(center_x_mm: float, center_y_mm: float, center_z_mm: float, side_mm: float, volume: Volume,
                 slice_spacing_mm: float | None = None) -> Roi:
    """An explicit square ROI; its slices are centred on the reference series' slice nearest ``center_z_mm``."""
    values = [center_x_mm, center_y_mm, center_z_mm, side_mm]
    if not all(np.isfinite(values)) or side_mm <= 0:
        raise InputError(f"invalid ROI in lesions.csv: centre ({center_x_mm}, {center_y_mm}, {center_z_mm}) mm, "
                         f"side {side_mm} mm")
    k = int(np.argmin(np.abs(volume.slice_z_mm - center_z_mm)))
    if abs(volume.slice_z_mm[k] - center_z_mm) > volume.slice_spacing_mm:
        raise InputError(f"ROI centre z={center_z_mm} mm lies outside series {uid_tag(volume.series_uid)} "
                         f"(z {volume.slice_z_mm.min():.2f} .. {volume.slice_z_mm.max():.2f} mm)")
    return Roi(float(center_x_mm), float(center_y_mm), float(volume.slice_z_mm[k]), float(side_mm),
               _triplet(volume, k, slice_spacing_mm), "roi")


def _sample(volume: Volume, center_x: float, center_y: float, side: float, size: int,
            z_mm: tuple[float, ...], outside: str) -> np.ndarray:
    grid = square_grid(center_x, center_y, side, size, z_mm)
    indices = volume.patient_to_index(grid.reshape(-1, 3))
    inside = volume.contains(indices)
    if outside == "raise" and not np.all(inside):
        corner = grid.reshape(-1, 3)[int(np.argmin(inside))]
        lo = volume.index_to_patient(np.zeros((1, 3)))[0]
        hi = volume.index_to_patient(np.asarray([volume.shape], dtype=np.float64) - 1)[0]
        raise InputError(
            f"ROI (centre x={center_x:.2f}, y={center_y:.2f} mm, side {side:.2f} mm, slices z={list(z_mm)}) reaches "
            f"outside series {uid_tag(volume.series_uid)}: point {corner.round(2).tolist()} mm; the series spans "
            f"{np.minimum(lo, hi).round(2).tolist()} .. {np.maximum(lo, hi).round(2).tolist()} mm")
    # Decode only the slices the grid touches (plus one either side for the interpolation).
    first = int(np.floor(np.clip(indices[:, 0], 0, volume.shape[0] - 1).min()))
    last = int(np.ceil(np.clip(indices[:, 0], 0, volume.shape[0] - 1).max()))
    slab = volume.slab(first, last)
    local = indices - np.asarray([first, 0.0, 0.0])
    values = ndimage.map_coordinates(slab, local.T, order=1, mode="nearest", prefilter=False)
    values = values.astype(np.float32)
    if outside == "nan":
        values[~inside] = np.nan
    # (Z, S, S) -> (S, S, Z): the three slices become channels.
    return np.moveaxis(values.reshape(len(z_mm), size, size), 0, -1)


def sample_stack(volume: Volume, roi: Roi, image_size: int) -> np.ndarray:
    """Raw (HU or MR units) ``(S, S, 3)`` float32 stack of ``volume`` on the ROI's patient-coordinate grid.

    Raises
    ------
    InputError
        If any part of the ROI lies outside the volume.
    """
    return _sample(volume, roi.center_x_mm, roi.center_y_mm, roi.side_mm, image_size, roi.slice_z_mm, "raise")


@dataclasses.dataclass(frozen=True)
class HounsfieldWindow:
    """Map ``[lower_hu, upper_hu]`` linearly to [0, 1], clipping outside."""

    lower_hu: float
    upper_hu: float

    def __call__(self, hu: np.ndarray) -> np.ndarray:
        scaled = (np.asarray(hu, dtype=np.float32) - self.lower_hu) / (self.upper_hu - self.lower_hu)
        return np.clip(scaled, 0.0, 1.0).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class PercentileWindow:
    """Map the ``[lower, upper]`` percentiles of a reference region linearly to [0, 1], clipping outside.

    The reference region is the ROI's neighbourhood, so 1.5 T and 3 T (and different vendors') MR units land
    on the same scale.
    """

    lower_percentile: float
    upper_percentile: float

    def __call__(self, values: np.ndarray, reference: np.ndarray) -> np.ndarray:
        reference = np.asarray(reference, dtype=np.float64)
        reference = reference[np.isfinite(reference)]
        if reference.size == 0:
            raise InputError("no intensities inside the volume around the ROI for percentile scaling")
        lo, hi = np.percentile(reference, [self.lower_percentile, self.upper_percentile])
        if not hi - lo > 1e-6 * max(1.0, abs(hi)):
            raise InputError(f"flat intensities around the ROI: percentiles {self.lower_percentile}/"
                             f"{self.upper_percentile} are {lo:.4g}/{hi:.4g}")
        return np.clip((np.asarray(values, dtype=np.float32) - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def window_stack(volume: Volume, roi: Roi, image_size: int, window: IntensityWindow,
                 context_factor: float = 2.0) -> np.ndarray:
    """The ``(S, S, 3)`` float32 stack in [0, 1] of one phase: sample on the ROI grid, then window."""
    raw = sample_stack(volume, roi, image_size)
    if window.kind == "hu":
        if volume.modality != "CT":
            raise InputError(f"series {uid_tag(volume.series_uid)}: a HU window needs CT, got Modality={volume.modality}")
        return HounsfieldWindow(window.lower, window.upper)(raw)
    return PercentileWindow(window.lower, window.upper)(raw, context_values(volume, roi, context_factor, image_size))


def context_values(volume: Volume, roi: Roi, context_factor: float, image_size: int) -> np.ndarray:
    """Intensities of the context square (``context_factor`` times the ROI's side, NaN outside the volume) whose
    percentiles scale a percentile window."""
    return _sample(volume, roi.center_x_mm, roi.center_y_mm, roi.side_mm * context_factor,
                   max(16, image_size // 2), roi.slice_z_mm, "nan")
