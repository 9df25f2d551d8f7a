"""The boundary-unwrapped ROI (data_prep.unwrap): geometry, windowing, and its place in prepare."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from click.testing import CliRunner
from dicom_cohort_fixture import (
    CT_GEOMETRY,
    TUMOUR_CENTER,
    TUMOUR_RADIUS_MM,
    make_cohort,
    tumour_mask,
    write_series,
)
from pydicom.uid import generate_uid

from data_prep.config import IntensityWindow, PrepareConfig
from data_prep.dicom_series import read_series
from data_prep.errors import InputError
from data_prep.prepare import REPORT_FILE, UNWRAPPED_REPORT_COLUMNS, prepare_cohort
from data_prep.roi import roi_from_mask
from data_prep.unwrap import UnwrappedFrame, unwrapped_frame, unwrapped_stack

GEOMETRY = CT_GEOMETRY["plain"]  # 1 mm pixels; a 6 mm sphere at (3, -2, 0) mm
SIZE = 32
BAND = (-4.0, 8.0)


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    folder = tmp_path_factory.mktemp("unwrap") / "plain"
    write_series(folder, GEOMETRY, "CT", generate_uid(), generate_uid(), np.random.default_rng(0), 140.0, 60.0)
    return read_series(folder, modality="ct")


@pytest.fixture(scope="module")
def frame(volume):
    mask = tumour_mask(GEOMETRY)
    return unwrapped_frame(mask, volume, roi_from_mask(mask, volume, 4.0), SIZE, BAND)


def test_rays_start_at_the_centroid_and_end_at_the_boundary(frame):
    assert (frame.center_x_mm, frame.center_y_mm) == pytest.approx(TUMOUR_CENTER[:2], abs=0.05)
    # The outermost mask pixel's outer edge: the 6 mm sphere on a 1 mm grid, within one pixel on every ray.
    assert np.all(np.abs(np.asarray(frame.boundary_mm) - TUMOUR_RADIUS_MM) <= 1.0)
    assert frame.slice_z_mm == pytest.approx((-2.5, 0.0, 2.5))
    assert frame.distances_mm[[0, -1]] == pytest.approx(BAND)


def test_pixels_and_patient_points_map_both_ways(frame):
    grid = frame.grid()
    assert grid.shape == (3, SIZE, SIZE, 3)
    assert grid[:, 0, 0, 2] == pytest.approx(frame.slice_z_mm)
    rows, cols = frame.patient_to_pixel(grid[1])
    np.testing.assert_allclose(rows, np.repeat(np.arange(SIZE)[:, None], SIZE, 1), atol=1e-9)
    np.testing.assert_allclose(cols, np.repeat(np.arange(SIZE)[None, :], SIZE, 0), atol=1e-9)
    # Row 0 runs along patient +x, row S/4 along +y (posterior): the angle grows from +x towards +y.
    r = frame.boundary_mm[0] + 2.0
    row, _ = frame.patient_to_pixel(np.asarray([frame.center_x_mm + r, frame.center_y_mm, 0.0]))
    assert float(row) == pytest.approx(0.0, abs=1e-9)
    r = frame.boundary_mm[SIZE // 4] + 2.0
    row, col = frame.patient_to_pixel(np.asarray([frame.center_x_mm, frame.center_y_mm + r, 0.0]))
    assert float(row) == pytest.approx(SIZE / 4)
    assert float(col) == pytest.approx((2.0 - BAND[0]) / frame.column_mm)


def test_the_tumour_fills_the_same_columns_on_every_ray(volume, frame):
    mask = tumour_mask(GEOMETRY)
    stack = unwrapped_stack(volume, frame, roi_from_mask(mask, volume, 4.0), IntensityWindow("hu", 0.0, 200.0))
    assert stack.shape == (SIZE, SIZE, 3) and stack.dtype == np.float32
    middle = stack[..., 1]
    inside = frame.distances_mm < -1.5
    outside = frame.distances_mm > 1.5
    # tumour 140 HU -> 0.7, liver 60 HU -> 0.3 (plus noise and a gentle ramp)
    assert np.all(np.abs(middle[:, inside].mean(axis=1) - 0.7) < 0.06)
    assert np.all(np.abs(middle[:, outside].mean(axis=1) - 0.3) < 0.06)


def test_bad_frames_and_bands_are_named(volume):
    with pytest.raises(InputError, match="invalid unwrapped frame"):
        UnwrappedFrame(0.0, 0.0, (5.0,) * 8, (3.0, 3.0), (0.0, 1.0, 2.0))
    with pytest.raises(InputError, match="empty"):
        unwrapped_frame(np.zeros(volume.shape, bool), volume, None, SIZE, BAND)
    with pytest.raises(ValueError, match=r"band_mm .* Received: band_mm=\(5.0, -5.0\)"):
        PrepareConfig(sampling="unwrapped", band_mm=(5.0, -5.0))
    with pytest.raises(ValueError, match="sampling must be one of"):
        PrepareConfig(sampling="polar")
    far = UnwrappedFrame(3.0, -2.0, (6.0,) * SIZE, (-4.0, 40.0), (-2.5, 0.0, 2.5))
    mask = tumour_mask(GEOMETRY)
    with pytest.raises(InputError, match="reaches outside series"):
        unwrapped_stack(volume, far, roi_from_mask(mask, volume, 4.0), IntensityWindow("hu", 0.0, 200.0))


def test_report_fields_round_trip(frame):
    fields = frame.report_fields()
    back = UnwrappedFrame.from_report(fields, frame.slice_z_mm)
    np.testing.assert_allclose(back.boundary_mm, frame.boundary_mm, atol=0.005)
    assert back.band_mm == BAND
    assert (back.center_x_mm, back.center_y_mm) == pytest.approx((frame.center_x_mm, frame.center_y_mm), abs=1e-3)


def test_prepare_writes_unwrapped_records_and_skips_a_patient_without_a_mask(tmp_path):
    from mvi_tf.cli import main
    from mvi_tf.data import load_schema, to_numpy
    from mvi_tf.export.predict import ModelContract, prepare_config

    cohort = make_cohort(tmp_path / "cohort", seed=2)
    # The fixture's series are 48 mm wide: the default band (out to 18 mm) leaves them (checked last).
    config = PrepareConfig(phases={"ct": ("plain", "arterial", "portal"), "mri": ("t2", "hepatobiliary")},
                           image_size=16, sampling="unwrapped", band_mm=BAND)
    result = prepare_cohort(cohort, tmp_path / "out", workers=1, progress=False, config=config)
    # P003 has a square ROI in lesions.csv and no mask: no boundary to unwrap along.
    assert [(p, m) for p, m, _ in result.skipped] == [("P003", "ct")]
    assert "sampling 'unwrapped' needs a tumour mask" in result.skipped[0][2]
    data = to_numpy(result.out_dir, "ct")
    assert sorted(data["patient_id"]) == ["P001", "P002", "P004"]
    assert data["arterial"].shape == (3, 16, 16, 3)
    # Each row is a ray: the tumour (140+ HU, bright) fills the first columns, liver the last, on every ray.
    middle = data["portal"][..., 1]
    assert np.all(middle[:, :, :4].mean(axis=2) > middle[:, :, -4:].mean(axis=2) + 0.1)
    schema = load_schema(result.out_dir, "mri")
    assert schema["prepare_config"]["sampling"] == "unwrapped"
    assert schema["prepare_config"]["band_mm"] == list(BAND)
    with result.report_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert set(UNWRAPPED_REPORT_COLUMNS) <= set(rows[0])
    written = [r for r in rows if r["status"] == "written"]
    assert all(len(r["unwrap_boundary_mm"].split(";")) == 16 for r in written)
    # predict rebuilds the same sampling from the model's schema
    contract = ModelContract("mri", ["t2", "hepatobiliary"], 16, [], schema, 0.5, "test")
    rebuilt = prepare_config(contract)
    assert (rebuilt.sampling, rebuilt.band_mm) == ("unwrapped", BAND)
    # The command line, with the default band: every band leaves the fixture's small series, each skip says so.
    wide = CliRunner().invoke(main, ["prepare", "--cohort", str(cohort), "--out", str(tmp_path / "wide"),
                                     "--phases", "mri=t2,hepatobiliary", "--image-size", "16", "--workers", "1",
                                     "--sampling", "unwrapped"])
    assert wide.exit_code == 0, wide.output
    assert "0 written, 5 skipped" in wide.output
    assert wide.output.count("the unwrapped band (centre x=3.00, y=-2.00 mm, out to 24.6 mm) reaches outside") == 4


def test_square_reports_keep_their_columns(tmp_path):
    cohort = make_cohort(tmp_path / "cohort", {"P001": ("train", ("ct",), "nifti")})
    result = prepare_cohort(cohort, tmp_path / "out", image_size=16, workers=1, progress=False)
    with (result.out_dir / REPORT_FILE).open(newline="") as f:
        header = next(csv.reader(f))
    assert not set(UNWRAPPED_REPORT_COLUMNS) & set(header)
