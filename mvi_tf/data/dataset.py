"""Read `mvi-tf prepare` TFRecords into `tf.data` pipelines and numpy arrays.

The parse spec comes from the records' own ``schema.json`` through `data_prep.records` -- the code that wrote
them -- so writer and reader share one feature spec. Pipeline order (STYLE.md): list shards -> shuffle files
-> interleaved reads (``num_parallel_reads``) -> map(parse). Caching, shuffling examples, batching and
prefetching are left to the training / evaluation code.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from data_prep.records import parse_example
from mvi_tf.contract import SCHEMA_FILE

MODALITIES = ("ct", "mri")


def _modality_dir(records_dir: str | os.PathLike, modality: str) -> Path:
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}. Received: modality={modality!r}")
    directory = Path(records_dir) / modality
    if not (directory / SCHEMA_FILE).is_file():
        raise FileNotFoundError(f"No {SCHEMA_FILE} in {directory}; run `mvi-tf prepare` first. "
                                f"Received: records_dir={records_dir}, modality={modality!r}")
    return directory


def load_schema(records_dir: str | os.PathLike, modality: str) -> dict:
    """The schema.json of one modality's records (feature layout, phases, image size, tabular encoding)."""
    path = _modality_dir(records_dir, modality) / SCHEMA_FILE
    return json.loads(path.read_text(encoding="utf-8"))


class ShardError(ValueError):
    """A shard that schema.json lists is missing or has another size than when it was written."""


def list_shards(records_dir: str | os.PathLike, modality: str,
                cohorts: Sequence[str] | str | None = None) -> list[str]:
    """Sorted shard paths of one modality, optionally only some cohorts (``train``, ``prospective``).

    Records written by a current `prepare` list their shards and byte sizes in schema.json: only those are
    read (a stray shard left in the folder is ignored), and a missing or truncated one raises `ShardError`
    naming it. Older records without that list fall back to the file name pattern.
    """
    directory = _modality_dir(records_dir, modality)
    if isinstance(cohorts, str):
        cohorts = [cohorts]
    if cohorts is not None:
        bad = [c for c in cohorts if c not in ("train", "prospective")]
        if bad:
            raise ValueError(f"cohorts must be 'train' and/or 'prospective'. Received: cohorts={list(cohorts)}")
    patterns = [f"{c}-*-of-*.tfrecord" for c in cohorts] if cohorts is not None else ["*-*-of-*.tfrecord"]
    listed = json.loads((directory / SCHEMA_FILE).read_text(encoding="utf-8")).get("shards")
    if listed is None:
        return sorted({str(p) for pattern in patterns for p in directory.glob(pattern)})
    chosen = sorted(name for name in listed if any(fnmatch.fnmatch(name, pattern) for pattern in patterns))
    for name in chosen:
        path = directory / name
        if not path.is_file():
            raise ShardError(f"TFRecord shard {modality}/{name} listed in schema.json is missing; rerun `mvi-tf "
                             f"prepare`. Received: records_dir={records_dir}")
        if path.stat().st_size != int(listed[name]):
            raise ShardError(f"TFRecord shard {modality}/{name} is {path.stat().st_size} bytes, schema.json "
                             f"records {listed[name]}: truncated or replaced; rerun `mvi-tf prepare`")
    return [str(directory / name) for name in chosen]


def unreadable_shard(records_dir: str | os.PathLike, modality: str) -> tuple[str, str] | None:
    """The first shard whose records fail TFRecord's length/CRC checks, as ``(path, reason)``; None if all read.

    Reads every shard once: for naming the culprit after a `tf.errors.DataLossError`, not for every run.
    """
    for shard in list_shards(records_dir, modality):
        try:
            for _ in tf.data.TFRecordDataset(shard):
                pass
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as err:
            return shard, str(err.message).splitlines()[0][:200]
    return None


def parse_fn(schema: Mapping) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
    """``serialized -> dict of tensors`` for one example, built from the stored schema."""

    def parse(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        return parse_example(serialized, schema)

    return parse


def read_examples(records_dir: str | os.PathLike, modality: str, cohorts: Sequence[str] | str | None = None,
                  shuffle_files: bool = False, seed: int | None = None) -> tf.data.Dataset:
    """A dataset of parsed examples: phase stacks ``(S, S, 3)`` float32, ``tabular``, ``label``, ids, outcomes.

    Parameters
    ----------
    records_dir : path
        The ``--out`` directory of `mvi-tf prepare`.
    modality : {"ct", "mri"}
    cohorts : str or list of str, optional
        Restrict to ``train`` and/or ``prospective``.
    shuffle_files : bool
        Shuffle the shard order and interleave reads from several shards (training); the order is then
        non-deterministic unless ``seed`` is set. Without it, examples come in shard order.
    seed : int, optional
        Seed of the file shuffle.

    Raises
    ------
    FileNotFoundError
        If no schema or no shard matches.
    """
    schema = load_schema(records_dir, modality)
    shards = list_shards(records_dir, modality, cohorts)
    if not shards:
        raise FileNotFoundError(f"No TFRecord shards for modality={modality!r}, cohorts={cohorts} in "
                                f"{records_dir}")
    files = tf.data.Dataset.from_tensor_slices(shards)
    if shuffle_files:
        files = files.shuffle(len(shards), seed=seed, reshuffle_each_iteration=True)
    deterministic = not shuffle_files or seed is not None
    # Unshuffled reads keep shard order (evaluation); shuffled reads interleave up to 8 shards (training).
    cycle_length = min(len(shards), 8) if shuffle_files else 1
    dataset = files.interleave(tf.data.TFRecordDataset, cycle_length=cycle_length,
                               num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    return dataset.map(parse_fn(schema), num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)


def to_numpy(records_dir: str | os.PathLike, modality: str,
             cohorts: Sequence[str] | str | None = None) -> dict[str, np.ndarray]:
    """Every example of one modality as stacked numpy arrays (strings decoded to ``str``), in shard order."""
    schema = load_schema(records_dir, modality)
    columns: dict[str, list] = {key: [] for key in schema["features"]}
    for example in read_examples(records_dir, modality, cohorts).as_numpy_iterator():
        for key, value in example.items():
            columns[key].append(value.decode("utf-8") if isinstance(value, bytes) else value)
    arrays = {}
    for key, values in columns.items():
        entry = schema["features"][key]
        if values:
            arrays[key] = np.stack(values) if entry["dtype"] != "string" else np.asarray(values, dtype=object)
        elif entry["dtype"] == "string":
            arrays[key] = np.asarray([], dtype=object)
        else:
            arrays[key] = np.zeros([0, *entry["shape"]], dtype=entry["dtype"])
    return arrays
