"""Patient (DICOM LPS, mm) <-> voxel index mapping for axial image stacks and masks.

Index order everywhere is ``(slice, row, column)`` = ``(k, i, j)``, matching ``pixels[k, i, j]``. A voxel's
centre lies at ``origin + j * col_spacing * row_dir + i * row_spacing * col_dir + k * slice_spacing * normal``
where ``row_dir``/``col_dir`` are the two halves of ImageOrientationPatient (direction of increasing column /
increasing row index) and ``PixelSpacing = (row_spacing, col_spacing)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# NIfTI stores RAS+ affines; DICOM patient coordinates are LPS+.
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def orientation_axes(orientation: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit row direction, column direction and slice normal from ImageOrientationPatient.

    Raises
    ------
    ValueError
        If the six values are not two orthogonal unit vectors.
    """
    values = np.asarray([float(v) for v in orientation], dtype=np.float64)
    if values.shape != (6,):
        raise ValueError(f"ImageOrientationPatient needs 6 values. Received: {list(orientation)}")
    row_dir, col_dir = values[:3], values[3:]
    if (abs(np.linalg.norm(row_dir) - 1) > 1e-3 or abs(np.linalg.norm(col_dir) - 1) > 1e-3
            or abs(float(row_dir @ col_dir)) > 1e-3):
        raise ValueError(f"ImageOrientationPatient is not two orthonormal vectors. Received: {list(orientation)}")
    row_dir = row_dir / np.linalg.norm(row_dir)
    col_dir = col_dir / np.linalg.norm(col_dir)
    return row_dir, col_dir, np.cross(row_dir, col_dir)


def index_to_patient_affine(origin: Sequence[float], orientation: Sequence[float],
                            pixel_spacing: Sequence[float], slice_spacing_mm: float) -> np.ndarray:
    """4x4 affine mapping homogeneous ``(k, i, j, 1)`` indices to patient ``(x, y, z, 1)`` in mm."""
    row_dir, col_dir, normal = orientation_axes(orientation)
    row_spacing, col_spacing = (float(v) for v in pixel_spacing)
    affine = np.eye(4)
    affine[:3, 0] = normal * float(slice_spacing_mm)
    affine[:3, 1] = col_dir * row_spacing
    affine[:3, 2] = row_dir * col_spacing
    affine[:3, 3] = np.asarray(origin, dtype=np.float64)
    return affine


def apply_affine(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 affine to an ``(N, 3)`` array of points."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    return points @ affine[:3, :3].T + affine[:3, 3]


def pixel_points(origin: Sequence[float], orientation: Sequence[float], pixel_spacing: Sequence[float],
                 rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Patient coordinates ``(N, 3)`` of pixels ``(rows[n], cols[n])`` of one 2-D image plane."""
    row_dir, col_dir, _ = orientation_axes(orientation)
    row_spacing, col_spacing = (float(v) for v in pixel_spacing)
    rows = np.asarray(rows, dtype=np.float64)[:, None]
    cols = np.asarray(cols, dtype=np.float64)[:, None]
    return np.asarray(origin, dtype=np.float64) + cols * col_spacing * row_dir + rows * row_spacing * col_dir


def square_grid(center_x_mm: float, center_y_mm: float, side_mm: float, size: int,
                z_mm: Sequence[float]) -> np.ndarray:
    """Patient coordinates of an axial ``len(z) x size x size`` sampling grid, shape ``(Z, S, S, 3)``.

    Pixel ``(r, c)`` of the grid has its centre at ``x = x0 + (c + 0.5) * side / S`` and
    ``y = y0 + (r + 0.5) * side / S`` (rows run towards posterior, columns towards the patient's left, the
    usual radiological display).
    """
    step = side_mm / size
    offsets = (np.arange(size) + 0.5) * step - side_mm / 2.0
    xs = center_x_mm + offsets
    ys = center_y_mm + offsets
    z = np.asarray(z_mm, dtype=np.float64)
    grid = np.empty((len(z), size, size, 3), dtype=np.float64)
    grid[..., 0] = xs[None, None, :]
    grid[..., 1] = ys[None, :, None]
    grid[..., 2] = z[:, None, None]
    return grid
