"""data_prep on real scanners' files: HCC-TACE-Seg portal CT (TCIA, CC BY 4.0) and the dcmqi CT + liver SEG.

The dcmqi case (BSD-3-Clause) ships in tests/data/real/. CT images from the HCC-TACE-Seg collection, The Cancer
Imaging Archive (Moawad et al., 2021), used under CC BY 4.0. https://doi.org/10.7937/TCIA.5FNA-0924 -- optional,
read in place from the folder named by MVI_TF_REAL_DATA / --real-data (default ``<repo>/../shared/data/real``),
never copied.
"""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from data_prep.dicom_series import read_series
from data_prep.errors import InputError
from data_prep.masks import load_mask, mask_on_volume
from data_prep.roi import roi_from_box, roi_from_mask, sample_stack

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def hcc_volume(data_files):
    return read_series(data_files.optional_real("hcc-tace-seg-hcc048-pv"), modality="ct")


@pytest.fixture(scope="module")
def dcmqi(data_files):
    """Folder of the shipped dcmqi case: ct-3slice/, liver.dcm, partial_overlaps.dcm."""
    return data_files.small_real("dcmqi-ct3slice-liver")


def test_hcc_series_sorts_by_position_not_file_name(hcc_volume):
    volume = hcc_volume
    assert volume.shape == (89, 512, 512)
    assert np.all(np.diff(volume.positions_mm) > 0)
    assert volume.slice_spacing_mm == pytest.approx(2.5)
    assert volume.slice_z_mm[0] == pytest.approx(-396.0) and volume.slice_z_mm[-1] == pytest.approx(-176.0)
    names = [p.name for p in volume.files]
    assert names != sorted(names)  # file names are out of slice order...
    instance = [int(pydicom.dcmread(p, stop_before_pixels=True).InstanceNumber) for p in volume.files[:3]]
    assert volume.files[0].name != "00000001.dcm" and instance[0] != 64
    z_check = [float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]) for p in volume.files[::11]]
    assert z_check == sorted(z_check)  # ...the sorted files climb in z


def test_hcc_padding_mismatch_and_liver_hu(hcc_volume):
    volume = hcc_volume
    # stored padding -1024 (-2048 HU) disagrees with PixelPaddingValue -2000: both end up as air
    assert volume.pixels.min() == pytest.approx(-1024.0)
    assert volume.pixels[0, 0, 0] == pytest.approx(-1024.0)
    # a 20 mm square inside the right liver lobe, pinned by inspection (z = -271 mm, portal-venous phase)
    roi = roi_from_box(-110.0, -30.0, -271.0, 20.0, volume)
    liver = sample_stack(volume, roi, 32)
    assert 80.0 < float(np.median(liver)) < 130.0
    assert 80.0 < float(liver.mean()) < 130.0
    assert roi.slice_z_mm == pytest.approx((-273.5, -271.0, -268.5))


@pytest.fixture(scope="module")
def dcmqi_volume(dcmqi):
    return read_series(dcmqi / "ct-3slice", modality="ct")


def test_dcmqi_seg_frames_map_to_slices_by_position(dcmqi, dcmqi_volume):
    volume = dcmqi_volume
    assert volume.shape == (3, 512, 512)
    mask = load_mask(dcmqi / "liver.dcm")
    grid, plane_to_slice = mask_on_volume(mask, volume)
    seg = pydicom.dcmread(dcmqi / "liver.dcm")
    frames = seg.pixel_array.astype(bool)
    for number, k in plane_to_slice.items():
        z = float(seg.PerFrameFunctionalGroupsSequence[number - 1].PlanePositionSequence[0].ImagePositionPatient[2])
        assert volume.slice_z_mm[k] == pytest.approx(z, abs=1e-3)
        np.testing.assert_array_equal(grid[k], frames[number - 1])
    # frame 1 of the SEG lies at the lowest z (-128.69 mm) although 01.dcm is the highest slice
    assert plane_to_slice[1] == int(np.argmin(volume.slice_z_mm))
    assert int(grid.sum()) == 107098
    assert 20.0 < float(volume.pixels[grid].mean()) < 50.0  # liver about 34 HU in this series


def test_dcmqi_roi_cropped_around_the_liver_mask(dcmqi, dcmqi_volume):
    volume = dcmqi_volume
    grid, _ = mask_on_volume(load_mask(dcmqi / "liver.dcm"), volume)
    roi = roi_from_mask(grid, volume, margin_mm=5.0)
    points = volume.index_to_patient(np.argwhere(grid).astype(float))
    half = roi.side_mm / 2
    assert np.all(points[:, 0] >= roi.center_x_mm - half) and np.all(points[:, 0] <= roi.center_x_mm + half)
    assert np.all(points[:, 1] >= roi.center_y_mm - half) and np.all(points[:, 1] <= roi.center_y_mm + half)
    assert roi.slice_z_mm == pytest.approx(tuple(sorted(volume.slice_z_mm)))
    stack = sample_stack(volume, roi, 64)
    assert stack.shape == (64, 64, 3)
    centre = stack[24:40, 24:40, 1]
    assert -50.0 < float(np.median(centre)) < 150.0  # soft tissue at the ROI centre, not air


def test_partial_overlaps_segment_selection(dcmqi, dcmqi_volume):
    path = dcmqi / "partial_overlaps.dcm"
    with pytest.raises(InputError, match="5 segments"):
        load_mask(path)
    with pytest.raises(InputError, match="no segment 9"):
        load_mask(path, segment=9)
    grid, plane_to_slice = mask_on_volume(load_mask(path, segment=3), dcmqi_volume)
    assert sorted(plane_to_slice.values()) == [0, 1, 2]  # segment 3 has frames on all three slices
    areas = grid.sum(axis=(1, 2))
    top = int(np.argmax(dcmqi_volume.slice_z_mm))
    assert areas[top] == 10509 and dcmqi_volume.slice_z_mm[top] == pytest.approx(-126.69, abs=1e-3)
    grid4, map4 = mask_on_volume(load_mask(path, segment=4), dcmqi_volume)
    assert list(map4.values()) == [int(np.argmin(dcmqi_volume.slice_z_mm))] and int(grid4.sum()) == 6693
