"""PNG overlays of attention maps: every phase of a patient side by side, and the raw maps as ``.npz``.

Top row (when the DICOM series were available): the full axial slice nearest the ROI's central slice, the map
placed on it, and the ROI box. Bottom row: the model's input (central slice of the ROI stack) with the map and, for
MVI-positive synthetic patients, the truth invasion sector outlined. One colour bar for all panels (maps are in
[0, 1]). Only the cohort's ``patient_id`` pseudonym appears in titles and file names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from mvi_tf.explain.placement import AxialSlice, PlacedMap

HEAT_ALPHA = 0.45
CT_DISPLAY_WINDOW_HU = (-160.0, 240.0)


def display_window(pixels: np.ndarray, modality: str) -> tuple[float, float]:
    """Grey-level range for showing a slice: an abdominal HU window for CT, 1st-99th percentile otherwise."""
    if modality.upper() == "CT":
        return CT_DISPLAY_WINDOW_HU
    finite = pixels[np.isfinite(pixels)]
    low, high = np.percentile(finite, [1.0, 99.0]) if finite.size else (0.0, 1.0)
    return float(low), float(max(high, low + 1e-6))


def save_patient_overlay(
    path: str | Path,
    patient_id: str,
    phases: Sequence[str],
    roi_images: Mapping[str, np.ndarray],
    roi_maps: Mapping[str, np.ndarray],
    slices: Mapping[str, AxialSlice | None] | None = None,
    placed: Mapping[str, PlacedMap | None] | None = None,
    sector: np.ndarray | None = None,
    subtitle: str = "",
) -> Path:
    """Write one patient's overlay PNG.

    Parameters
    ----------
    path : str or Path
        Output PNG.
    patient_id : str
        Study pseudonym, used in the title.
    phases : sequence of str
        Phases, one column each.
    roi_images : mapping
        ``phase -> (S, S, 3)`` model inputs in [0, 1].
    roi_maps : mapping
        ``phase -> (S, S)`` maps in [0, 1].
    slices, placed : mapping, optional
        ``phase -> AxialSlice`` and ``phase -> PlacedMap`` for the full-slice row (phases may map to None).
    sector : np.ndarray, optional
        ``(S, S)`` boolean truth invasion sector in the ROI frame, outlined in the ROI row.
    subtitle : str
        Extra text under the title (e.g. the predicted probability and label).

    Returns
    -------
    Path
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Polygon

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    slices = slices or {}
    placed = placed or {}
    with_slices = any(slices.get(p) is not None and placed.get(p) is not None for p in phases)
    n_rows = 2 if with_slices else 1
    fig, axes = plt.subplots(n_rows, len(phases), figsize=(3.0 * len(phases) + 0.8, 3.1 * n_rows + 0.5), squeeze=False)
    heat = None
    for c, phase in enumerate(phases):
        if with_slices:
            ax = axes[0, c]
            ax.set_axis_off()
            axial, placement = slices.get(phase), placed.get(phase)
            if axial is None or placement is None:
                ax.text(0.5, 0.5, "series not available", ha="center", va="center", fontsize=8, transform=ax.transAxes)
            else:
                low, high = display_window(axial.pixels, axial.modality)
                ax.imshow(axial.pixels, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
                heat = ax.imshow(
                    np.ma.masked_invalid(placement.slice_map), cmap="jet", vmin=0.0, vmax=1.0, alpha=HEAT_ALPHA
                )
                # corners are (row, col); matplotlib wants (x=col, y=row).
                ax.add_patch(Polygon(placement.corners_rc[:, ::-1], closed=True, fill=False, edgecolor="yellow", lw=1))
            ax.set_title(f"{phase} (slice)", fontsize=9)
        ax = axes[n_rows - 1, c]
        ax.set_axis_off()
        image = np.asarray(roi_images[phase])
        ax.imshow(image[..., image.shape[-1] // 2], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        heat = ax.imshow(roi_maps[phase], cmap="jet", vmin=0.0, vmax=1.0, alpha=HEAT_ALPHA, interpolation="bilinear")
        if sector is not None and np.any(sector):
            ax.contour(np.asarray(sector, dtype=float), levels=[0.5], colors="white", linewidths=1.0)
        ax.set_title(f"{phase} (ROI)", fontsize=9)
    fig.suptitle(f"{patient_id}  {subtitle}".strip(), fontsize=10)
    fig.tight_layout(rect=(0.0, 0.0, 0.9, 1.0))
    if heat is not None:
        cax = fig.add_axes((0.91, 0.15, 0.015, 0.7))
        fig.colorbar(heat, cax=cax, label="attention (normalised)")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def save_patient_maps(
    path: str | Path,
    roi_maps: Mapping[str, np.ndarray],
    placed: Mapping[str, PlacedMap | None] | None = None,
    random_maps: Mapping[str, np.ndarray] | None = None,
    sector: np.ndarray | None = None,
) -> Path:
    """Save a patient's raw maps as ``.npz``.

    Keys: ``roi_<phase>`` (S, S) maps, ``slice_<phase>`` (rows, cols) placed maps (NaN outside the ROI) and
    ``box_<phase>`` (row0, col0, row1, col1), ``random_<phase>`` randomised-weight maps, ``sector`` (S, S).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    for phase, m in roi_maps.items():
        arrays[f"roi_{phase}"] = np.asarray(m, dtype=np.float32)
    for phase, p in (placed or {}).items():
        if p is not None:
            arrays[f"slice_{phase}"] = p.slice_map.astype(np.float32)
            arrays[f"box_{phase}"] = np.asarray(p.box_rc, dtype=np.int32)
    for phase, m in (random_maps or {}).items():
        arrays[f"random_{phase}"] = np.asarray(m, dtype=np.float32)
    if sector is not None:
        arrays["sector"] = np.asarray(sector, dtype=bool)
    np.savez_compressed(path, **arrays)
    return path
