"""The peritumoral band unwrapped along the tumour boundary: an alternative to the square ROI.

The square ROI (paper, section 2.5; `data_prep.roi`) shows the tumour at its own scale, so a network trained on MVI
labels finds tumour size first, a factor the radiological model already holds, and the few-millimetre peritumoral
signs (arterial enhancement, hepatobiliary hypointensity, capsule interruption) fill a small, size-dependent part
of the picture. The unwrapped frame samples the image along ``S`` rays from the centroid of the tumour's largest
section: row ``i`` is the ray at angle ``2*pi*i/S`` (from patient +x towards +y), column ``j`` the point at distance
``band_mm[0] + j * (band_mm[1] - band_mm[0]) / (S - 1)`` mm outside the tumour boundary on that ray (negative:
inside the tumour). Every tumour then fills the same columns, and a peritumoral sign is a band of rows in fixed
columns, whatever the tumour's size (docs/branch-experiments.md, "The boundary-unwrapped ROI").

The three channels are the square ROI's three contiguous slices; the boundary is the one of the middle (largest)
section, used on all three. The intensity window is the square ROI's (its context square for percentiles), so the
two samplings of one patient share one scale. The frame needs a tumour mask: an ROI given as a square holds no
boundary.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from data_prep.config import IntensityWindow
from data_prep.dicom_series import Volume
from data_prep.errors import InputError
from data_prep.privacy import uid_tag
from data_prep.roi import HounsfieldWindow, PercentileWindow, Roi, context_values

#: Longest ray searched for the tumour boundary, in mm.
MAX_RADIUS_MM = 300.0


@dataclasses.dataclass(frozen=True)
class UnwrappedFrame:
    """Where each pixel of an unwrapped stack lies in patient coordinates (LPS, mm).

    Attributes
    ----------
    center_x_mm, center_y_mm : float
        Centroid of the tumour's largest axial section (the rays' origin).
    boundary_mm : tuple of float
        Distance from the centroid to the tumour boundary along each ray (``S`` values, ray ``i`` at angle
        ``2*pi*i/S``).
    band_mm : (float, float)
        Distances from the boundary of the first and the last column (negative: inside the tumour).
    slice_z_mm : tuple of float
        Patient z of the three slices (the square ROI's), ascending.
    """

    center_x_mm: float
    center_y_mm: float
    boundary_mm: tuple[float, ...]
    band_mm: tuple[float, float]
    slice_z_mm: tuple[float, float, float]

    def __post_init__(self) -> None:
        values = [self.center_x_mm, self.center_y_mm, *self.boundary_mm, *self.band_mm, *self.slice_z_mm]
        if (not all(np.isfinite(values)) or len(self.boundary_mm) < 4 or min(self.boundary_mm) < 0
                or not self.band_mm[0] < self.band_mm[1] or len(self.slice_z_mm) != 3):
            raise InputError(f"invalid unwrapped frame: centre ({self.center_x_mm}, {self.center_y_mm}) mm, "
                             f"{len(self.boundary_mm)} rays, band {self.band_mm} mm")

    @property
    def size_px(self) -> int:
        """Rows (rays) and columns (distances) of the stack."""
        return len(self.boundary_mm)

    @property
    def angles_rad(self) -> np.ndarray:
        return 2.0 * np.pi * np.arange(self.size_px) / self.size_px

    @property
    def distances_mm(self) -> np.ndarray:
        """Distance from the boundary of each column."""
        return np.linspace(self.band_mm[0], self.band_mm[1], self.size_px)

    @property
    def column_mm(self) -> float:
        """Step between two columns, in mm."""
        return (self.band_mm[1] - self.band_mm[0]) / (self.size_px - 1)

    def boundary_at(self, rows: np.ndarray) -> np.ndarray:
        """Boundary radius at fractional rows (linear between rays, periodic)."""
        radii = np.asarray(self.boundary_mm, dtype=np.float64)
        rows = np.mod(np.asarray(rows, dtype=np.float64), self.size_px)
        low = np.floor(rows).astype(int)
        frac = rows - low
        return (1.0 - frac) * radii[low % self.size_px] + frac * radii[(low + 1) % self.size_px]

    def pixel_to_patient(self, rows: np.ndarray, cols: np.ndarray, z_mm: float) -> np.ndarray:
        """Patient coordinates ``(..., 3)`` of (fractional) pixel centres on the slice at ``z_mm``."""
        rows, cols = np.broadcast_arrays(np.asarray(rows, dtype=np.float64), np.asarray(cols, dtype=np.float64))
        angle = 2.0 * np.pi * rows / self.size_px
        radius = np.clip(self.boundary_at(rows) + self.band_mm[0] + cols * self.column_mm, 0.0, None)
        x = self.center_x_mm + radius * np.cos(angle)
        y = self.center_y_mm + radius * np.sin(angle)
        return np.stack([x, y, np.full(x.shape, float(z_mm))], axis=-1)

    def patient_to_pixel(self, points_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fractional ``(rows, cols)`` of patient points ``(..., 3)`` (z is ignored); rows lie in ``[0, S)``.

        Points inside the tumour nearer the centroid than ``boundary + band_mm[0]`` get columns below 0, points
        beyond the band columns above ``S - 1``.
        """
        points = np.asarray(points_mm, dtype=np.float64)
        dx, dy = points[..., 0] - self.center_x_mm, points[..., 1] - self.center_y_mm
        rows = np.mod(np.arctan2(dy, dx), 2.0 * np.pi) / (2.0 * np.pi) * self.size_px
        distance = np.hypot(dx, dy) - self.boundary_at(rows)
        return rows, (distance - self.band_mm[0]) / self.column_mm

    def grid(self) -> np.ndarray:
        """Patient coordinates ``(3, S, S, 3)`` of every pixel of the stack, one plane per slice."""
        rows, cols = np.meshgrid(np.arange(self.size_px), np.arange(self.size_px), indexing="ij")
        return np.stack([self.pixel_to_patient(rows, cols, z) for z in self.slice_z_mm])

    def report_fields(self) -> dict[str, object]:
        """The prepare_report.csv columns describing this frame."""
        return {
            "unwrap_center_x_mm": round(self.center_x_mm, 3),
            "unwrap_center_y_mm": round(self.center_y_mm, 3),
            "unwrap_boundary_mm": ";".join(f"{r:.2f}" for r in self.boundary_mm),
            "unwrap_band_mm": ";".join(f"{b:g}" for b in self.band_mm),
        }

    @classmethod
    def from_report(cls, row: dict, slice_z_mm: tuple[float, float, float]) -> UnwrappedFrame:
        """The frame of one prepare_report.csv row (`report_fields`' columns)."""
        return cls(float(row["unwrap_center_x_mm"]), float(row["unwrap_center_y_mm"]),
                   tuple(float(v) for v in str(row["unwrap_boundary_mm"]).split(";")),
                   tuple(float(v) for v in str(row["unwrap_band_mm"]).split(";")),  # type: ignore[arg-type]
                   tuple(slice_z_mm))  # type: ignore[arg-type]


def unwrapped_frame(lesion_grid: np.ndarray, volume: Volume, roi: Roi, size: int,
                    band_mm: tuple[float, float]) -> UnwrappedFrame:
    """The frame of one lesion: rays from the centroid of its largest section to its outermost voxel on each.

    Parameters
    ----------
    lesion_grid : np.ndarray
        ``(Z, Y, X)`` bool mask of the chosen lesion on ``volume``'s grid.
    volume : Volume
        The series the mask was drawn on.
    roi : Roi
        The lesion's square ROI (`roi.roi_from_mask`): its slices become the stack's channels.
    size : int
        Rays (rows) and distances (columns).
    band_mm : (float, float)
        Distance from the boundary of the first and last column.
    """
    if lesion_grid.shape != volume.shape or not lesion_grid.any():
        raise InputError(f"tumour mask on series {uid_tag(volume.series_uid)} is empty or has shape "
                         f"{lesion_grid.shape} instead of {volume.shape}")
    k = int(np.argmax(lesion_grid.sum(axis=(1, 2))))
    section = lesion_grid[k]
    ci, cj = ndimage.center_of_mass(section)
    centre = volume.index_to_patient(np.asarray([[k, ci, cj]], dtype=np.float64))[0]
    step = min(volume.pixel_spacing_mm) / 4.0
    radii = np.arange(0.0, MAX_RADIUS_MM, step)
    angles = 2.0 * np.pi * np.arange(size) / size
    xs = centre[0] + radii[None, :] * np.cos(angles)[:, None]
    ys = centre[1] + radii[None, :] * np.sin(angles)[:, None]
    points = np.stack([xs.ravel(), ys.ravel(), np.full(xs.size, centre[2])], axis=1)
    index = volume.patient_to_index(points)
    inside = ndimage.map_coordinates(section.astype(np.float32), index[:, 1:].T, order=0, mode="constant",
                                     cval=0.0).reshape(xs.shape) > 0.5
    # The outermost mask pixel on each ray (a lobulated or C-shaped section can leave and re-enter a ray), to its
    # outer edge; a ray that misses the section (centroid outside it) starts at the centroid.
    last = np.where(inside.any(axis=1), inside.shape[1] - 1 - np.argmax(inside[:, ::-1], axis=1), -1)
    boundary = np.where(last >= 0, radii[np.clip(last, 0, None)] + step / 2.0, 0.0)
    return UnwrappedFrame(float(centre[0]), float(centre[1]), tuple(float(r) for r in boundary),
                          (float(band_mm[0]), float(band_mm[1])), tuple(roi.slice_z_mm))  # type: ignore[arg-type]


def unwrapped_stack(volume: Volume, frame: UnwrappedFrame, roi: Roi, window: IntensityWindow,
                    context_factor: float = 2.0) -> np.ndarray:
    """The ``(S, S, 3)`` float32 unwrapped stack in [0, 1] of one phase, windowed as the square ROI would be."""
    grid = frame.grid()
    index = volume.patient_to_index(grid.reshape(-1, 3))
    if not np.all(volume.contains(index)):
        corner = grid.reshape(-1, 3)[int(np.argmin(volume.contains(index)))]
        raise InputError(f"the unwrapped band (centre x={frame.center_x_mm:.2f}, y={frame.center_y_mm:.2f} mm, "
                         f"out to {max(frame.boundary_mm) + frame.band_mm[1]:.1f} mm) reaches outside series "
                         f"{uid_tag(volume.series_uid)}: point {corner.round(2).tolist()} mm")
    first = int(np.floor(index[:, 0].min()))
    last = int(np.ceil(index[:, 0].max()))
    slab = volume.slab(first, last)
    local = index - np.asarray([first, 0.0, 0.0])
    values = ndimage.map_coordinates(slab, local.T, order=1, mode="nearest", prefilter=False).astype(np.float32)
    raw = np.moveaxis(values.reshape(grid.shape[:3]), 0, -1)
    if window.kind == "hu":
        if volume.modality != "CT":
            raise InputError(f"series {uid_tag(volume.series_uid)}: a HU window needs CT, got Modality={volume.modality}")
        return HounsfieldWindow(window.lower, window.upper)(raw)
    return PercentileWindow(window.lower, window.upper)(raw, context_values(volume, roi, context_factor,
                                                                            frame.size_px))
