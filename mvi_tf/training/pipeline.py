"""tf.data input pipeline for training: patient split, selection, cache, shuffle, augmentation, batching.

The source is the parsed-example dataset of :func:`mvi_tf.data.read_examples` (TFRecords, file order shuffled
by the seed) or, for benchmarks and tests, any dataset of the same dicts. Order of operations::

    source -> keep split's patients -> select phases / tabular / resize -> cache -> shuffle(seed)
           -> zip per-example seeds -> augment (stateless ops) -> (inputs, label, class weight) -> batch -> prefetch

The patient-level internal validation split is stratified by label and centre and fixed by the seed
(:func:`split_patients`); the ``prospective`` cohort is never read here for training or validation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from mvi_tf.training.augment import Augmentation


def split_patients(
    patient_ids: Sequence[str],
    labels: Sequence[int],
    centres: Sequence[str],
    val_fraction: float = 0.2,
    seed: int = 0,
) -> dict[str, str]:
    """Assign each patient to ``train`` or ``val``, stratified by (label, centre), reproducibly.

    In every (label, centre) stratum ``round(val_fraction * n)`` patients, chosen by a seeded permutation of
    the sorted IDs, go to ``val``. If that leaves a class absent from either side, one patient of that class is
    moved so both splits contain both classes (when the data allows it).

    Parameters
    ----------
    patient_ids, labels, centres : sequence
        One entry per patient of the training cohort (never the prospective one).
    val_fraction : float
        Target fraction of patients in ``val``, in (0, 1).
    seed : int
        Seed of the permutation.

    Returns
    -------
    dict
        ``patient_id -> "train" | "val"``.
    """
    ids = [str(p) for p in patient_ids]
    labels_ = [int(v) for v in labels]
    centres_ = [str(c) for c in centres]
    if not (len(ids) == len(labels_) == len(centres_)):
        raise ValueError(
            f"patient_ids, labels and centres must have equal length. Received: {len(ids)}, {len(labels_)}, "
            f"{len(centres_)}"
        )
    if len(set(ids)) != len(ids):
        dupes = sorted({p for p in ids if ids.count(p) > 1})
        raise ValueError(f"Duplicate patient IDs in the training cohort: {dupes[:5]}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1). Received: val_fraction={val_fraction}")
    if len(ids) < 4:
        raise ValueError(f"At least 4 training patients are needed for a validation split. Received: {len(ids)}")
    rng = np.random.default_rng(seed)
    split = {p: "train" for p in ids}
    strata: dict[tuple[int, str], list[str]] = {}
    for p, y, c in zip(ids, labels_, centres_, strict=True):
        strata.setdefault((y, c), []).append(p)
    for key in sorted(strata):
        members = sorted(strata[key])
        n_val = int(np.floor(val_fraction * len(members) + 0.5))
        for index in rng.permutation(len(members))[:n_val]:
            split[members[index]] = "val"
    label_of = dict(zip(ids, labels_, strict=True))
    for y in (0, 1):
        in_class = sorted(p for p in ids if label_of[p] == y)
        if len(in_class) < 2:
            continue
        tr = [p for p in in_class if split[p] == "train"]
        va = [p for p in in_class if split[p] == "val"]
        if not va:
            split[tr[int(rng.integers(len(tr)))]] = "val"
        elif not tr:
            split[va[int(rng.integers(len(va)))]] = "train"
    return split


def class_weights(labels: Sequence[int]) -> dict[int, float]:
    """Balanced class weights ``n / (2 n_c)`` (each class contributes half of the loss)."""
    y = np.asarray(labels, dtype=np.int64)
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"Class weights need both classes. Received: {n_neg} negatives, {n_pos} positives")
    return {0: y.size / (2.0 * n_neg), 1: y.size / (2.0 * n_pos)}


def select_inputs(
    source: tf.data.Dataset,
    phases: Sequence[str],
    tabular_index: Sequence[int] | None,
    image_size: int | None = None,
    patient_ids: Sequence[str] | None = None,
) -> tf.data.Dataset:
    """Keep ``patient_ids`` (all if None) and map each example to ``{phases..., [tabular], label, patient_id}``.

    Images are resized (bilinear) to ``image_size`` when it differs from the stored size; ``tabular`` is the
    ``tabular_index`` columns of the full encoded vector (omitted when ``tabular_index`` is None).
    """
    phases = list(phases)
    if patient_ids is not None:
        keep = tf.constant(sorted({str(p) for p in patient_ids}), dtype=tf.string)

        def _keep(example: dict[str, tf.Tensor]) -> tf.Tensor:
            return tf.reduce_any(tf.equal(example["patient_id"], keep))

        source = source.filter(_keep)
    index = None if tabular_index is None else tf.constant(list(tabular_index), dtype=tf.int32)

    def _select(example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        out = {}
        for phase in phases:
            image = tf.cast(example[phase], tf.float32)
            if image_size is not None:
                image = tf.image.resize(image, [image_size, image_size], method="bilinear")
                image = tf.ensure_shape(image, [image_size, image_size, 3])
            out[phase] = image
        if index is not None:
            out["tabular"] = tf.gather(tf.cast(example["tabular"], tf.float32), index, axis=-1)
        out["label"] = tf.reshape(tf.cast(example["label"], tf.float32), [1])
        out["patient_id"] = example["patient_id"]
        return out

    return source.map(_select, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def make_dataset(
    examples: tf.data.Dataset,
    input_keys: Sequence[str],
    batch_size: int,
    training: bool,
    seed: int = 0,
    augmentation: Augmentation | None = None,
    weights: dict[int, float] | None = None,
    cache: bool = True,
    shuffle_buffer: int = 1024,
    deterministic: bool = True,
) -> tf.data.Dataset:
    """Batches of ``(inputs, label[, sample_weight])`` for ``keras.Model.fit``.

    Parameters
    ----------
    examples : tf.data.Dataset
        Output of :func:`select_inputs`.
    input_keys : sequence of str
        Model input names kept in ``inputs`` (phases and/or ``tabular``).
    batch_size : int
        Global batch size.
    training : bool
        Shuffle, augment and weight; otherwise examples stay in order, unweighted.
    seed : int
        Seeds the shuffle and the per-example augmentation seeds (new draws every epoch, same sequence for
        the same seed).
    augmentation : Augmentation or None
        Applied when ``training``.
    weights : dict or None
        Class weights; yields ``sample_weight`` when given and ``training``.
    cache : bool
        Cache the selected examples in memory.
    shuffle_buffer : int
        Shuffle buffer size.
    deterministic : bool
        Keep element order in parallel maps (needed for bit-identical reruns).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1. Received: batch_size={batch_size}")
    keys = list(input_keys)
    ds = examples.cache() if cache else examples
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        if augmentation is not None:
            seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
            ds = tf.data.Dataset.zip((ds, seeds)).map(
                lambda example, s: augmentation(example, s),
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=deterministic,
            )
    table = None
    if training and weights is not None:
        table = tf.constant([weights[0], weights[1]], dtype=tf.float32)

    def _to_keras(example: dict[str, tf.Tensor]) -> tuple:
        inputs = {k: example[k] for k in keys}
        label = example["label"]
        if table is None:
            return inputs, label
        weight = tf.gather(table, tf.cast(label[0], tf.int32))
        return inputs, label, weight

    ds = ds.map(_to_keras, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    ds = ds.batch(batch_size, drop_remainder=False)
    options = tf.data.Options()
    options.deterministic = deterministic
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)
