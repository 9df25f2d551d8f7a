"""Placement of ROI maps on DICOM slices and of truth masks in the ROI frame (no TensorFlow needed)."""

from __future__ import annotations

import numpy as np
import pytest

from data_prep.geometry import RAS_TO_LPS, square_grid
from data_prep.unwrap import UnwrappedFrame
from mvi_tf.explain.placement import (
    RoiFrame,
    SliceGeometry,
    UnwrappedPlacement,
    read_nearest_slice,
    read_nifti_mask_in_roi,
    roi_to_slice,
    slice_to_roi,
    unwrapped_display_frame,
    unwrapped_to_roi,
    volume_to_roi,
)

AXIAL = {"row_direction": (1.0, 0.0, 0.0), "column_direction": (0.0, 1.0, 0.0)}


def _slice(position=(-100.0, -120.0, 30.0), spacing=(0.8, 0.7), rows=256, columns=300, **orientation):
    return SliceGeometry(
        position_mm=position, pixel_spacing_mm=spacing, rows=rows, columns=columns, **(orientation or AXIAL)
    )


def test_roi_frame_matches_data_prep_grid_and_round_trips():
    roi = RoiFrame((10.0, -5.0, 30.0), 40.0, 32)
    np.testing.assert_allclose(roi.grid(), square_grid(10.0, -5.0, 40.0, 32, [30.0])[0])
    # Pixel (0, 0) centre: half a pixel (1.25 mm / 2) inside the top-left corner.
    np.testing.assert_allclose(roi.pixel_to_patient(0, 0), [10 - 20 + 0.625, -5 - 20 + 0.625, 30])
    rows, cols = roi.patient_to_pixel(roi.pixel_to_patient(np.array([3.0, 17.5]), np.array([29.0, 0.25])))
    np.testing.assert_allclose(rows, [3.0, 17.5])
    np.testing.assert_allclose(cols, [29.0, 0.25])


@pytest.mark.parametrize("bad", [{"side_mm": 0.0}, {"side_mm": float("nan")}, {"size_px": 0}])
def test_roi_frame_rejects_bad_values(bad):
    args = {"center_mm": (0.0, 0.0, 0.0), "side_mm": 10.0, "size_px": 8} | bad
    with pytest.raises(ValueError, match="Received"):
        RoiFrame(**args)


def test_slice_geometry_rejects_non_unit_orientation():
    with pytest.raises(ValueError, match="ImageOrientationPatient"):
        _slice(row_direction=(2.0, 0.0, 0.0), column_direction=(0.0, 1.0, 0.0))


@pytest.mark.parametrize(
    "orientation",
    [AXIAL, {"row_direction": (-1.0, 0.0, 0.0), "column_direction": (0.0, -1.0, 0.0)}],
    ids=["standard", "rotated180"],
)
def test_hot_pixel_lands_at_the_right_slice_pixel(orientation):
    position = (-100.0, -120.0, 30.0) if orientation is AXIAL else (110.0, 80.0, 30.0)
    geometry = _slice(position=position, **orientation)
    roi = RoiFrame((10.0, -5.0, 30.0), 40.0, 32)
    roi_map = np.zeros((32, 32), np.float32)
    roi_map[5, 20] = 1.0
    placed = roi_to_slice(roi_map, roi, geometry)

    # Worked out by hand: the hot pixel's centre is at x = 10 - 20 + 20.5 * 1.25, y = -5 - 20 + 5.5 * 1.25.
    x, y = 10 - 20 + 20.5 * 1.25, -5 - 20 + 5.5 * 1.25
    if orientation is AXIAL:
        expected = ((y - position[1]) / 0.8, (x - position[0]) / 0.7)
    else:
        expected = ((position[1] - y) / 0.8, (position[0] - x) / 0.7)
    peak = np.unravel_index(np.nanargmax(placed.slice_map), placed.slice_map.shape)
    assert abs(peak[0] - expected[0]) <= 1.0 and abs(peak[1] - expected[1]) <= 1.0
    assert placed.slice_map.shape == (256, 300)
    # Outside the ROI box the slice map is NaN; inside it covers the ROI's area (40 mm x 40 mm).
    r0, c0, r1, c1 = placed.box_rc
    assert np.isnan(placed.slice_map[:r0]).all() and np.isnan(placed.slice_map[r1:]).all()
    assert np.isnan(placed.slice_map[:, :c0]).all() and np.isnan(placed.slice_map[:, c1:]).all()
    covered = np.isfinite(placed.slice_map).sum() * 0.8 * 0.7
    assert covered == pytest.approx(40.0 * 40.0, rel=0.05)
    # The ROI corners: 40 mm / 0.8 mm rows tall and 40 mm / 0.7 mm columns wide.
    assert np.ptp(placed.corners_rc[:, 0]) == pytest.approx(50.0)
    assert np.ptp(placed.corners_rc[:, 1]) == pytest.approx(40.0 / 0.7)


def test_placed_map_samples_back_to_the_roi_map():
    geometry = _slice(spacing=(0.5, 0.5), rows=320, columns=320)
    roi = RoiFrame((-10.0, -20.0, 30.0), 48.0, 24)
    yy, xx = np.mgrid[0:24, 0:24]
    roi_map = np.exp(-((yy - 7.0) ** 2 + (xx - 15.0) ** 2) / 30.0).astype(np.float32)
    placed = roi_to_slice(roi_map, roi, geometry)
    back = slice_to_roi(np.nan_to_num(placed.slice_map), geometry, roi, order=1)
    np.testing.assert_allclose(back[2:-2, 2:-2], roi_map[2:-2, 2:-2], atol=0.02)


def test_roi_map_shape_is_checked():
    with pytest.raises(ValueError, match="roi_map.shape"):
        roi_to_slice(np.zeros((8, 8)), RoiFrame((0.0, 0.0, 30.0), 10.0, 16), _slice())


def _nifti_affine_for_axial(position_lps, spacing_mm, slice_mm):
    """RAS affine of a volume indexed (i=column, j=row, k=slice) with an axial DICOM geometry."""
    lps = np.eye(4)
    lps[:3, 0] = [spacing_mm, 0, 0]
    lps[:3, 1] = [0, spacing_mm, 0]
    lps[:3, 2] = [0, 0, slice_mm]
    lps[:3, 3] = position_lps
    return RAS_TO_LPS @ lps  # LPS -> RAS (the matrix is its own inverse)


def test_truth_mask_lands_in_the_roi_frame(tmp_path):
    import nibabel as nib

    position = np.array([-60.0, -50.0, 10.0])
    volume = np.zeros((120, 100, 5), np.uint8)  # (column, row, slice)
    volume[70:80, 40:45, 2] = 1  # x in [-60+70, -60+79], y in [-50+40, -50+44], z = 10 + 2*2.5 = 15
    affine = _nifti_affine_for_axial(position, 1.0, 2.5)
    path = tmp_path / "P-001_ct.nii.gz"
    nib.save(nib.Nifti1Image(volume, affine), str(path))
    roi = RoiFrame((15.0, -8.0, 15.0), 32.0, 32)  # 1 mm pixels, x0 = -1, y0 = -24
    mask = read_nifti_mask_in_roi(path, roi)
    rows, cols = np.nonzero(mask)
    # x = -1 + col + 0.5 in [10, 19] -> cols 11..19 (+-1 for nearest sampling); y = -24 + row + 0.5 in [-10, -6].
    assert set(cols) <= set(range(10, 21)) and set(rows) <= set(range(13, 19))
    assert mask.sum() == pytest.approx(50, abs=12)
    # A slice off the sector holds nothing.
    assert not read_nifti_mask_in_roi(path, RoiFrame((15.0, -8.0, 25.0), 32.0, 32)).any()
    # The union over neighbouring slices reaches it again.
    assert volume_to_roi(volume, affine, RoiFrame((15.0, -8.0, 17.5), 32.0, 32), z_offsets_mm=(0.0, -2.5)).any()


def test_read_nearest_slice_sorts_by_position_and_rescales(tmp_path):
    pytest.importorskip("pydicom")
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    series_uid = generate_uid()
    for k, (name, z) in enumerate([("b7.dcm", 12.5), ("a1.dcm", 10.0), ("c3.dcm", 7.5)]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(tmp_path / name), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID = series_uid
        ds.Modality = "CT"
        ds.ImagePositionPatient = [-10.0, -10.0, z]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [1.0, 1.0]
        ds.Rows, ds.Columns = 8, 8
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = np.full((8, 8), 1024 + 10 * k, np.int16).tobytes()
        ds.save_as(tmp_path / name, enforce_file_format=True)
    axial = read_nearest_slice(tmp_path, 10.4)
    assert axial.file == "a1.dcm" and axial.geometry.position_mm[2] == 10.0
    assert axial.distance_mm == pytest.approx(0.4)
    np.testing.assert_allclose(axial.pixels, 10.0)  # stored 1034, intercept -1024
    with pytest.raises(FileNotFoundError, match="not found"):
        read_nearest_slice(tmp_path / "missing", 0.0)


def test_an_unwrapped_map_lands_on_its_rays_in_the_square_frame():
    # A 10 mm round tumour at (4, -6) mm; band from 3 mm inside to 9 mm outside; 48 rays.
    frame = UnwrappedFrame(4.0, -6.0, (10.0,) * 48, (-3.0, 9.0), (27.0, 30.0, 33.0))
    square = unwrapped_display_frame(frame)
    assert square.center_mm == (4.0, -6.0, 30.0) and square.size_px == 48
    assert square.side_mm >= 2 * (10.0 + 9.0)
    values = np.zeros((48, 48))
    values[:6, 24:] = 1.0  # rays 0-5 (angles 0-45 degrees, +x towards +y), outer half of the band
    placed = unwrapped_to_roi(values, frame, square)
    assert placed.shape == (48, 48)
    points = square.grid()
    dx, dy = points[..., 0] - 4.0, points[..., 1] + 6.0
    radius, angle = np.hypot(dx, dy), np.degrees(np.arctan2(dy, dx))
    hot = placed > 0.5
    assert hot.sum() > 10
    assert np.all((angle[hot] > -4.0) & (angle[hot] < 45.0))
    assert np.all((radius[hot] > 10.0 + 2.0) & (radius[hot] < 10.0 + 9.6))
    # outside the band (the tumour's core, the corners) nothing is placed
    assert np.all(placed[radius < 10.0 - 3.6] == 0.0) and np.all(placed[radius > 10.0 + 9.6] == 0.0)
    with pytest.raises(ValueError, match="to match the unwrapped frame"):
        unwrapped_to_roi(np.zeros((8, 8)), frame, square)
    # An image's channels are placed one by one through the same placement (worked out once per patient).
    image = np.stack([values, 2.0 * values, np.ones_like(values)], axis=-1)
    placement = UnwrappedPlacement.between(frame, square)
    placed_image = placement.place(image)
    assert placed_image.shape == (48, 48, 3)
    np.testing.assert_array_equal(placed_image[..., 0], placed)
    np.testing.assert_array_equal(placed_image[..., 1], 2.0 * placed)
    band = placed_image[..., 2]
    np.testing.assert_allclose(band[(radius > 10.0 - 2.0) & (radius < 10.0 + 8.0)], 1.0)
    assert np.all(band[radius > 10.0 + 9.6] == 0.0)
    with pytest.raises(ValueError, match="Received: values.shape=\\(48, 48, 3, 1\\)"):
        placement.place(image[..., None])
