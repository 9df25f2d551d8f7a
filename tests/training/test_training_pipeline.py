"""Patient split, class weights, augmentation and the tf.data pipeline from real TFRecords."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from training_records_fixture import write_tiny_records

from mvi_tf.training.augment import Augmentation
from mvi_tf.training.augment_unwrapped import UnwrappedAugmentation
from mvi_tf.training.pipeline import (
    class_weights,
    make_dataset,
    select_inputs,
    split_patients,
)


def _cohort(n=60, seed=0):
    rng = np.random.default_rng(seed)
    ids = [f"P{i:03d}" for i in range(n)]
    labels = (rng.random(n) < 0.4).astype(int)
    centres = rng.choice(["A", "B"], n)
    return ids, labels, centres


def test_split_is_stratified_reproducible_and_patient_level():
    ids, labels, centres = _cohort()
    split = split_patients(ids, labels, centres, 0.2, seed=7)
    assert split == split_patients(ids, labels, centres, 0.2, seed=7)
    assert split != split_patients(ids, labels, centres, 0.2, seed=8)
    assert set(split) == set(ids)
    for y in (0, 1):
        for c in ("A", "B"):
            members = [p for p, yy, cc in zip(ids, labels, centres, strict=True) if yy == y and cc == c]
            n_val = sum(split[p] == "val" for p in members)
            assert n_val == int(np.floor(0.2 * len(members) + 0.5)), (y, c)


def test_split_rejects_duplicates_and_tiny_cohorts():
    with pytest.raises(ValueError, match="P1"):
        split_patients(["P1", "P1", "P2", "P3"], [0, 1, 0, 1], ["A"] * 4)
    with pytest.raises(ValueError, match="Received: 3"):
        split_patients(["P1", "P2", "P3"], [0, 1, 0], ["A"] * 3)


def test_class_weights_balance_the_loss():
    w = class_weights([0, 0, 0, 1])
    assert w == {0: pytest.approx(4 / 6), 1: pytest.approx(2.0)}
    assert 3 * w[0] == pytest.approx(1 * w[1])
    with pytest.raises(ValueError, match="both classes"):
        class_weights([1, 1])


def test_augmentation_same_geometry_for_all_phases_and_slice_order_kept():
    size = 32
    base = np.zeros((size, size, 3), np.float32)
    base[4:10, 20:28, 0] = 1.0  # a marker in slice 0 only
    base[4:10, 20:28, 2] = 0.5  # and a dimmer one in slice 2
    example = {"arterial": tf.constant(base), "portal": tf.constant(base), "label": tf.constant([1.0])}
    aug = Augmentation(["arterial", "portal"], rotation_deg=10, shift_fraction=0.1, intensity_jitter=0.0)
    seen = set()
    for s in range(8):
        out = aug(example, tf.constant([s, 11], tf.int64))
        a, p = out["arterial"].numpy(), out["portal"].numpy()
        np.testing.assert_array_equal(a, p)  # identical transform across phases
        assert a[..., 0].sum() > a[..., 2].sum() > 0  # the slices keep their identity and order
        assert a[..., 1].max() == 0.0
        seen.add(a.tobytes())
        again = aug(example, tf.constant([s, 11], tf.int64))["arterial"].numpy()
        np.testing.assert_array_equal(a, again)  # stateless: same seed, same result
    assert len(seen) > 4  # different seeds, different transforms
    jitter = Augmentation(["arterial", "portal"], flip=False, rotation_deg=0, shift_fraction=0,
                          intensity_jitter=0.2)(example, tf.constant([1, 2], tf.int64))
    assert not np.array_equal(jitter["arterial"].numpy(), jitter["portal"].numpy())  # intensity per phase
    with pytest.raises(ValueError, match="rotation_deg=90"):
        Augmentation(["arterial"], rotation_deg=90)


def test_quarter_turns_and_flips_reach_all_eight_symmetries_of_the_square():
    size = 16
    base = np.zeros((size, size, 3), np.float32)
    base[1:4, 9:14, :] = 1.0  # an asymmetric peritumoral "sign" near the top-right edge
    base[2, 12, 1] = 0.5
    example = {"t2": tf.constant(base), "hepatobiliary": tf.constant(base)}
    aug = Augmentation(["t2", "hepatobiliary"], flip=True, rot90=True, rotation_deg=0, shift_fraction=0,
                       intensity_jitter=0)
    symmetries = {np.rot90(f, k).tobytes() for f in (base, base[:, ::-1]) for k in range(4)}
    assert len(symmetries) == 8
    seen = set()
    for s in range(64):
        out = aug(example, tf.constant([s, 3], tf.int64))
        t2, hbp = out["t2"].numpy(), out["hepatobiliary"].numpy()
        np.testing.assert_array_equal(t2, hbp)  # one geometry for every phase
        assert t2.tobytes() in symmetries  # exact: no interpolation
        seen.add(t2.tobytes())
    assert seen == symmetries
    # Off by default in the class; the training config switches it on.
    plain = Augmentation(["t2"], flip=False, rotation_deg=0, shift_fraction=0, intensity_jitter=0)
    assert np.array_equal(plain(example, tf.constant([5, 3], tf.int64))["t2"].numpy(), base)


def test_unwrapped_stacks_are_turned_and_mirrored_about_the_tumour_only():
    """Rows are rays around the tumour, columns distances from its boundary: the augmentation may only shift the rays
    circularly and reverse their order (turning and mirroring the patient), never move a column."""
    rays, size = 12, 8
    rng = np.random.default_rng(0)
    base = rng.random((rays, size, 3)).astype(np.float32)
    example = {"t2": tf.constant(base), "hepatobiliary": tf.constant(base[..., ::-1].copy()), "label": 1}
    aug = UnwrappedAugmentation(["t2", "hepatobiliary"], intensity_jitter=0.0)
    turns = {np.roll(base, k, axis=0).tobytes(): ("turn", k) for k in range(rays)}
    mirrored = np.roll(base[::-1], 1, axis=0)  # ray i -> ray -i (mod S): ray 0 stays
    turns.update({np.roll(mirrored, k, axis=0).tobytes(): ("mirror", k) for k in range(rays)})
    seen = set()
    for s in range(96):
        out = aug(example, tf.constant([s, 7], tf.int64))
        t2, hbp = out["t2"].numpy(), out["hepatobiliary"].numpy()
        assert t2.tobytes() in turns  # exact: whole rays moved, columns and slices untouched
        np.testing.assert_array_equal(hbp, t2[..., ::-1])  # one geometry for every phase
        assert out["label"] == 1
        seen.add(turns[t2.tobytes()])
    assert len(seen) == 2 * rays  # every turn, mirrored or not
    again = aug(example, tf.constant([5, 7], tf.int64))["t2"].numpy()
    np.testing.assert_array_equal(again, aug(example, tf.constant([5, 7], tf.int64))["t2"].numpy())
    jittered = UnwrappedAugmentation(["t2"], intensity_jitter=0.2)(example, tf.constant([1, 2], tf.int64))["t2"]
    assert 0.0 <= float(tf.reduce_min(jittered)) and float(tf.reduce_max(jittered)) <= 1.0
    with pytest.raises(ValueError, match="intensity_jitter must be in"):
        UnwrappedAugmentation(["t2"], intensity_jitter=0.9)


def test_training_picks_the_augmentation_of_the_records_sampling():
    from mvi_tf.config import DataConfig
    from mvi_tf.training.train import _augmentation

    square = _augmentation(DataConfig(), ["t2"], {"prepare_config": {"sampling": "square"}})
    assert isinstance(square, Augmentation) and square.rot90 and square.flip
    assert isinstance(_augmentation(DataConfig(), ["t2"], {}), Augmentation)  # records written before sampling
    unwrapped = _augmentation(DataConfig(), ["t2"], {"prepare_config": {"sampling": "unwrapped"}})
    assert isinstance(unwrapped, UnwrappedAugmentation)
    assert unwrapped.intensity_jitter == DataConfig().intensity_jitter


def test_pipeline_from_tfrecords(tmp_path):
    from mvi_tf.data import read_examples

    records = write_tiny_records(tmp_path / "records", n_train=12, n_prospective=4)
    keep = ["TINY000", "TINY001", "TINY002", "TINY005", "TINY006"]
    source = read_examples(records, "ct", cohorts=["train"], shuffle_files=True, seed=1)
    examples = select_inputs(source, ["arterial", "portal"], [0, 3], image_size=48, patient_ids=keep)
    aug = Augmentation(["arterial", "portal"])
    ds = make_dataset(examples, ["arterial", "portal", "tabular"], batch_size=2, training=True, seed=3,
                      augmentation=aug, weights={0: 0.5, 1: 2.0})
    batches = list(ds)
    assert [len(b[1]) for b in batches] == [2, 2, 1]
    inputs, label, weight = batches[0]
    assert set(inputs) == {"arterial", "portal", "tabular"}
    assert inputs["arterial"].shape == (2, 48, 48, 3) and inputs["tabular"].shape == (2, 2)
    assert label.shape == (2, 1)
    np.testing.assert_allclose(weight.numpy(), np.where(label.numpy()[:, 0] == 1, 2.0, 0.5))
    # Same seed -> same epoch; the next epoch reshuffles and redraws augmentation.
    again = list(make_dataset(examples, ["arterial"], batch_size=2, training=True, seed=3, augmentation=aug))
    first = list(make_dataset(examples, ["arterial"], batch_size=2, training=True, seed=3, augmentation=aug))
    np.testing.assert_array_equal(again[0][0]["arterial"].numpy(), first[0][0]["arterial"].numpy())
    val = make_dataset(examples, ["portal"], batch_size=8, training=False)
    (vin, _vlabel), = list(val)
    assert vin["portal"].shape[0] == len(keep) and set(vin) == {"portal"}
    # The unwrapped ROI's augmentation runs in the same graph-mode pipeline; it only moves whole rows.
    turned = list(make_dataset(examples, ["arterial"], batch_size=8, training=True, seed=3,
                               augmentation=UnwrappedAugmentation(["arterial"], intensity_jitter=0.0)))
    (tin, _), = turned
    (pin, _), = list(make_dataset(examples, ["arterial"], batch_size=8, training=False))

    def rows(image):
        return sorted(row.tobytes() for row in image)

    assert tin["arterial"].shape == (len(keep), 48, 48, 3)
    assert sorted(map(rows, tin["arterial"].numpy())) == sorted(map(rows, pin["arterial"].numpy()))
