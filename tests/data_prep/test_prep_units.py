"""Unit tests of data_prep: series reading, masks, ROI geometry, windows, phases config, tabular schema."""

from __future__ import annotations

import copy

import numpy as np
import pydicom
import pytest
from dicom_cohort_fixture import (
    CT_GEOMETRY,
    SeriesGeometry,
    tumour_mask,
    write_nifti,
    write_series,
)
from pydicom.uid import generate_uid

from data_prep.config import (
    DEFAULT_PHASES,
    IntensityWindow,
    PrepareConfig,
    parse_phases,
)
from data_prep.dicom_series import read_series
from data_prep.errors import InputError
from data_prep.masks import load_mask, mask_on_volume
from data_prep.privacy import uid_tag
from data_prep.roi import (
    HounsfieldWindow,
    PercentileWindow,
    roi_from_box,
    roi_from_mask,
    sample_stack,
)
from data_prep.tabular import encode_row, fit_schema, validate_row

GEOMETRY = CT_GEOMETRY["plain"]


@pytest.fixture()
def series(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "plain"
    written = write_series(folder, GEOMETRY, "CT", generate_uid(), generate_uid(), rng, 140.0, 60.0)
    return folder, written


def test_series_sorted_by_position_with_random_names_and_instance_numbers(series):
    folder, _ = series
    volume = read_series(folder, modality="ct")
    assert volume.shape == (8, 48, 48)
    np.testing.assert_allclose(volume.slice_z_mm, GEOMETRY.z0_mm + 2.5 * np.arange(8))
    instance = [int(pydicom.dcmread(p).InstanceNumber) for p in volume.files]
    assert instance != sorted(instance)
    assert volume.pixels.min() == -1024.0  # padding stored as -2048 HU, PixelPaddingValue says -2000
    assert volume.pixels[4, 24 - 2, 24 + 3] > 120.0  # tumour centre (3, -2, 0) mm in HU
    np.testing.assert_allclose(volume.index_to_patient(np.array([[4, 22, 27]]))[0], [3.0, -2.0, 0.0])


def test_localizer_dropped_and_several_series_need_a_uid(series, tmp_path):
    folder, written = series
    scout = copy.deepcopy(written[0])
    scout.SeriesInstanceUID, scout.SOPInstanceUID = generate_uid(), generate_uid()
    scout.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]  # coronal localizer
    scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    scout.save_as(folder / "scout.dcm", enforce_file_format=True)
    volume = read_series(folder)
    assert volume.shape[0] == 8 and volume.n_dropped == 1  # the localizer is counted, for the report
    other_uid = generate_uid()
    write_series(folder / "second", GEOMETRY, "CT", generate_uid(), generate_uid(), np.random.default_rng(1),
                 100.0, 50.0)
    with pytest.raises(InputError, match="2 axial series"):
        read_series(folder)
    uid = written[0].SeriesInstanceUID
    assert read_series(folder, series_uid=uid).series_uid == uid
    with pytest.raises(InputError, match=uid_tag(other_uid)) as raised:
        read_series(folder, series_uid=other_uid)
    assert other_uid not in str(raised.value)  # UIDs only as salted hashes in messages


def test_wrong_modality_and_gap_are_named(series):
    folder, _ = series
    with pytest.raises(InputError, match="Modality='CT'"):
        read_series(folder, modality="mri")
    victim = next(p for p in folder.iterdir()
                  if float(pydicom.dcmread(p).ImagePositionPatient[2]) == GEOMETRY.z0_mm + 2.5 * 4)
    victim.unlink()
    with pytest.raises(InputError, match=r"gap 5\.000 mm .* \(z=-2\.50 -> 2\.50 mm\)"):
        read_series(folder)


def test_nifti_ras_affine_becomes_lps(series, tmp_path):
    folder, _ = series
    volume = read_series(folder)
    mask = tumour_mask(GEOMETRY)
    write_nifti(tmp_path / "m.nii.gz", mask, GEOMETRY)
    grid, plane_to_slice = mask_on_volume(load_mask(tmp_path / "m.nii.gz"), volume)
    np.testing.assert_array_equal(grid, mask)
    assert plane_to_slice == {k: k for k in np.flatnonzero(mask.any(axis=(1, 2)))}
    # a mask drawn on a grid shifted half a slice matches no slice
    shifted = SeriesGeometry(**{**GEOMETRY.__dict__, "z0_mm": GEOMETRY.z0_mm + 1.25})
    write_nifti(tmp_path / "s.nii.gz", mask, shifted)
    with pytest.raises(InputError, match="matches no slice"):
        mask_on_volume(load_mask(tmp_path / "s.nii.gz"), volume)


def test_roi_from_mask_geometry_and_outside_volume(series):
    folder, _ = series
    volume = read_series(folder)
    roi = roi_from_mask(tumour_mask(GEOMETRY), volume, margin_mm=4.0)
    assert (roi.center_x_mm, roi.center_y_mm, roi.center_z_mm) == pytest.approx((3.0, -2.0, 0.0))
    assert roi.side_mm == pytest.approx(12.0 + 1.0 + 8.0)
    assert roi.slice_z_mm == pytest.approx((-2.5, 0.0, 2.5))
    edge = roi_from_box(0.0, 0.0, -10.0, 10.0, volume)  # bottom slice: triplet moves inward
    assert edge.slice_z_mm == pytest.approx((-10.0, -7.5, -5.0))
    stack = sample_stack(volume, roi, 21)
    assert stack.shape == (21, 21, 3) and stack[10, 10, 1] > 120.0
    with pytest.raises(InputError, match="outside series"):
        sample_stack(volume, roi_from_box(20.0, 0.0, 0.0, 20.0, volume), 16)
    with pytest.raises(InputError, match="z=40"):
        roi_from_box(0.0, 0.0, 40.0, 10.0, volume)


def test_windows():
    np.testing.assert_allclose(HounsfieldWindow(-160, 240)(np.array([-500.0, -160.0, 40.0, 240.0, 900.0])),
                               [0.0, 0.0, 0.5, 1.0, 1.0])
    values = np.linspace(0, 100, 101)
    out = PercentileWindow(10, 90)(values * 2.7, reference=values * 2.7)
    np.testing.assert_allclose(out, PercentileWindow(10, 90)(values, reference=values), atol=1e-6)
    with pytest.raises(InputError, match="flat"):
        PercentileWindow(1, 99)(np.ones(5), reference=np.ones(5))
    with pytest.raises(ValueError, match="kind='gamma'"):
        IntensityWindow("gamma", 0, 1)


def test_parse_phases_replaces_only_named_modality():
    phases = parse_phases("ct=arterial,equilibrium")
    assert phases["ct"] == ("arterial", "equilibrium") and phases["mri"] == DEFAULT_PHASES["mri"]
    both = parse_phases(["ct=portal;mri=t2,hepatobiliary"])
    assert both == {"ct": ("portal",), "mri": ("t2", "hepatobiliary")}
    for bad in ("ct", "pet=a", "ct="):
        with pytest.raises(ValueError, match="Received: phases="):
            parse_phases(bad)
    with pytest.raises(ValueError, match="image_size"):
        PrepareConfig(image_size=3)


def _row(**overrides):
    row = {"age": "60", "sex": "M", "aetiology": "HBV", "bilirubin_umol_l": "20.4", "alt_u_l": "41",
           "ast_u_l": "35", "platelets_1e9_l": "200", "afp_ng_ml": "400", "tumour_size_cm": "5",
           "tumour_number": "2", "margin": "non-smooth", "peritumoral_enhancement": "present",
           "enhancement_pattern": "atypical", "capsule": "interrupted", "hbp_tumour_hypointensity": "present",
           "hbp_peritumoral_hypointensity": "absent"}
    row.update(overrides)
    return row


def test_tabular_cutoffs_dummy_coding_and_train_scaling():
    schema = fit_schema([_row(age="50", tumour_size_cm="2"), _row(age="70", tumour_size_cm="6")], "ct")
    names = schema["feature_names"]
    assert "hbp_tumour_hypointensity" not in names
    features = dict(zip(names, encode_row(_row(), schema)))
    assert features["age"] == pytest.approx(0.0) and features["tumour_size_cm"] == pytest.approx(0.5)
    assert features["bilirubin_gt_20_4"] == 0.0 and features["alt_gt_40"] == 1.0 and features["ast_gt_35"] == 0.0
    assert (features["afp_20_400"], features["afp_gt_400"]) == (1.0, 0.0)
    afp = dict(zip(names, encode_row(_row(afp_ng_ml="400.5"), schema)))
    assert (afp["afp_20_400"], afp["afp_gt_400"]) == (0.0, 1.0)
    assert features["sex_male"] == 1.0 and features["tumour_number_multiple"] == 1.0
    assert (features["capsule_complete"], features["capsule_interrupted"]) == (0.0, 1.0)
    mri = fit_schema([_row()], "mri")
    assert mri["feature_names"][-2:] == ["hbp_tumour_hypointensity", "hbp_peritumoral_hypointensity"]
    assert encode_row(_row(), {"tabular": mri}).shape == (len(mri["feature_names"]),)


@pytest.mark.parametrize("column, value, match", [
    ("afp_ng_ml", "", "missing value in required column 'afp_ng_ml'"),
    ("afp_ng_ml", "NaN", "afp_ng_ml='NaN'"),
    ("alt_u_l", "high", "not a number"),
    ("margin", "wavy", "margin='wavy'"),
    ("age", "-3", "age='-3'"),
])
def test_tabular_bad_values_name_column_and_value(column, value, match):
    schema = fit_schema([_row()], "ct")
    with pytest.raises(InputError, match=match):
        encode_row(_row(**{column: value}), schema)
    with pytest.raises(InputError, match=match):
        validate_row(_row(**{column: value}), "ct")


def test_uid_tags_are_keyed_by_the_sites_secret(tmp_path, monkeypatch):
    """The same UID tags alike under one key and differently under another; the key file is the owner's only."""
    import stat

    from data_prep import privacy

    monkeypatch.delenv(privacy.SALT_ENV, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    privacy.site_salt.cache_clear()
    try:
        first = privacy.uid_tag("1.2.840.99.1")
        key_file = tmp_path / "config" / "mvi-tf" / "uid-salt"
        assert key_file.is_file() and stat.S_IMODE(key_file.stat().st_mode) == 0o600
        privacy.site_salt.cache_clear()
        assert privacy.uid_tag("1.2.840.99.1") == first  # the kept key: stable across runs
        assert [p.name for p in key_file.parent.iterdir()] == ["uid-salt"]  # no temporary file left behind
        monkeypatch.setenv(privacy.SALT_ENV, "another site")
        privacy.site_salt.cache_clear()
        assert privacy.uid_tag("1.2.840.99.1") != first and privacy.uid_tag("1.2.840.99.1").startswith("uid#")
    finally:
        privacy.site_salt.cache_clear()
