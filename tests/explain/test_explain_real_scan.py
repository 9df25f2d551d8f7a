"""Grad-CAM on a real CT series (TCIA HCC-TACE-Seg HCC_048, portal venous phase; CC BY 4.0).

CT images from the HCC-TACE-Seg collection, The Cancer Imaging Archive (Moawad et al., 2021), used under
CC BY 4.0. https://doi.org/10.7937/TCIA.5FNA-0924 -- optional: read from the folder named by MVI_TF_REAL_DATA /
--real-data (default ``<repo>/../shared/data/real``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

# A 40 mm square inside the right liver lobe on the slice at z = -286 mm (picked once by inspection: mean ~100 HU).
LIVER_ROI_MM = (-101.0, -22.5, -286.0, 40.0)
SIZE = 64

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def series_dir(data_files) -> Path:
    return data_files.optional_real("hcc-tace-seg-hcc048-pv")


def test_maps_on_a_real_series_are_produced_and_stay_inside_the_image(series_dir):
    keras = pytest.importorskip("keras")
    from data_prep.config import PrepareConfig
    from data_prep.prepare import prepare_patient
    from mvi_tf.explain.gradcam import compute_gradcam
    from mvi_tf.explain.placement import RoiFrame, read_nearest_slice, roi_to_slice
    from mvi_tf.models.cdlm import build_cdlm

    config = PrepareConfig(phases={"ct": ("portal",), "mri": ("portal",)}, image_size=SIZE)
    stacks = prepare_patient({"portal": series_dir}, "ct", roi=LIVER_ROI_MM, config=config)
    image = np.asarray(stacks["portal"], dtype=np.float32)
    assert image.shape == (SIZE, SIZE, 3) and 0.0 <= image.min() and image.max() <= 1.0

    keras.utils.set_random_seed(0)
    model = build_cdlm(["portal"], SIZE, n_tabular=1, hidden_units=8)
    maps = compute_gradcam(model, {"portal": image[None], "tabular": np.zeros((1, 1), np.float32)}, ["portal"])
    cam = maps["portal"][0]
    assert cam.shape == (SIZE, SIZE) and np.isfinite(cam).all() and 0.0 <= cam.min() and cam.max() <= 1.0

    roi = stacks.roi
    frame = RoiFrame((roi.center_x_mm, roi.center_y_mm, roi.center_z_mm), roi.side_mm, SIZE, roi.slice_z_mm[1])
    axial = read_nearest_slice(series_dir, frame.z_mm)
    assert axial.distance_mm < 1.3  # 2.5 mm slices
    assert axial.pixels.shape == (512, 512)
    placed = roi_to_slice(cam, frame, axial.geometry)
    r0, c0, r1, c1 = placed.box_rc
    assert 0 <= r0 < r1 <= 512 and 0 <= c0 < c1 <= 512
    assert (placed.corners_rc >= -0.5).all() and (placed.corners_rc <= 511.5).all()
    # 40 mm / 0.703125 mm = 56.9 pixels per side, all of it covered by the map.
    assert np.isfinite(placed.slice_map).sum() == pytest.approx((40.0 / 0.703125) ** 2, rel=0.05)
    # The map sits over liver: the placed pixels are soft tissue around 100 HU.
    liver = axial.pixels[np.isfinite(placed.slice_map)]
    assert 60.0 < float(np.median(liver)) < 160.0
