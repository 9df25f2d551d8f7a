"""The one TFRecord feature spec shared by the writer (`prepare`) and the reader (`mvi_tf.data`).

`feature_layout` declares every key of a `tf.train.Example` (dtype, shape, encoding); it is stored in
``schema.json`` and both `encode_example` (writer) and `parse_spec`/`decode_example` (reader) are built from
that stored layout, so the two sides cannot drift apart. Arrays (ROI stacks, tabular vector) are stored as raw
little-endian float32 bytes and round-trip bit for bit.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from mvi_tf.contract import SCHEMA_FILE, write_json  # noqa: F401  (SCHEMA_FILE: re-exported for readers)

SCHEMA_VERSION = 1
SCALAR_FLOATS = ("pfs_months", "os_months", "age", "afp_ng_ml", "tumour_size_cm")
SCALAR_INTS = ("label", "pfs_event", "os_event", "sex_male")
STRINGS = ("patient_id", "centre", "cohort")


def bytes_feature(value: bytes | str) -> tf.train.Feature:
    """A one-element BytesList feature."""
    if isinstance(value, str):
        value = value.encode("utf-8")
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def float_feature(values: float | Sequence[float] | np.ndarray) -> tf.train.Feature:
    """A FloatList feature."""
    return tf.train.Feature(float_list=tf.train.FloatList(value=np.atleast_1d(values).astype(np.float32)))


def int64_feature(values: int | Sequence[int] | np.ndarray) -> tf.train.Feature:
    """An Int64List feature."""
    return tf.train.Feature(int64_list=tf.train.Int64List(value=np.atleast_1d(values).astype(np.int64)))


def feature_layout(phases: Sequence[str], image_size: int, n_tabular: int) -> dict[str, dict]:
    """Every key of one example: ``{key: {"dtype", "shape", "encoding"}}`` (JSON-ready, stored in schema.json)."""
    layout: dict[str, dict] = {}
    for phase in phases:
        layout[phase] = {"dtype": "float32", "shape": [image_size, image_size, 3], "encoding": "raw"}
    layout["tabular"] = {"dtype": "float32", "shape": [n_tabular], "encoding": "raw"}
    for key in SCALAR_INTS:
        layout[key] = {"dtype": "int64", "shape": [], "encoding": "value"}
    for key in SCALAR_FLOATS:
        layout[key] = {"dtype": "float32", "shape": [], "encoding": "value"}
    for key in STRINGS:
        layout[key] = {"dtype": "string", "shape": [], "encoding": "value"}
    return layout


def make_schema(modality: str, phases: Sequence[str], image_size: int, tabular_schema: Mapping,
                prepare_config: Mapping | None = None) -> dict:
    """The schema.json content of one modality's records."""
    return {
        "schema_version": SCHEMA_VERSION,
        "modality": modality,
        "phases": list(phases),
        "image_size": int(image_size),
        "image_channels": "three contiguous axial slices, ascending patient z; float32 in [0, 1]",
        "features": feature_layout(phases, image_size, len(tabular_schema["feature_names"])),
        "tabular": dict(tabular_schema),
        "prepare_config": dict(prepare_config or {}),
    }


def encode_example(values: Mapping[str, object], schema: Mapping) -> bytes:
    """Serialise one patient's values into a `tf.train.Example`, checking every key against the schema.

    Raises
    ------
    ValueError
        Naming the key on a missing key, wrong shape or non-finite array.
    """
    features = {}
    for key, spec in schema["features"].items():
        if key not in values:
            raise ValueError(f"Example misses key {key!r}. Received keys: {sorted(values)}")
        value = values[key]
        if spec["encoding"] == "raw":
            array = np.asarray(value, dtype=np.float32)
            if list(array.shape) != list(spec["shape"]) or not np.all(np.isfinite(array)):
                raise ValueError(f"Example key {key!r} must be finite float32 of shape {spec['shape']}. "
                                 f"Received: shape={list(array.shape)}")
            features[key] = bytes_feature(array.astype("<f4").tobytes())
        elif spec["dtype"] == "string":
            features[key] = bytes_feature(str(value))
        elif spec["dtype"] == "int64":
            features[key] = int64_feature(int(value))
        else:
            features[key] = float_feature(float(value))
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def parse_spec(schema: Mapping) -> dict[str, tf.io.FixedLenFeature]:
    """`tf.io.parse_*` feature spec built from the stored layout."""
    dtypes = {"float32": tf.float32, "int64": tf.int64, "string": tf.string}
    spec = {}
    for key, entry in schema["features"].items():
        if entry["encoding"] == "raw":
            spec[key] = tf.io.FixedLenFeature([], tf.string)
        else:
            spec[key] = tf.io.FixedLenFeature(entry["shape"], dtypes[entry["dtype"]])
    return spec


def decode_example(parsed: Mapping[str, tf.Tensor], schema: Mapping) -> dict[str, tf.Tensor]:
    """Decode raw-bytes arrays of one parsed example to float32 tensors of their declared shape."""
    decoded = {}
    for key, entry in schema["features"].items():
        if entry["encoding"] == "raw":
            array = tf.io.decode_raw(parsed[key], tf.float32, little_endian=True)
            decoded[key] = tf.reshape(array, entry["shape"])
        else:
            decoded[key] = parsed[key]
    return decoded


def parse_example(serialized: tf.Tensor, schema: Mapping) -> dict[str, tf.Tensor]:
    """Parse and decode one serialised example."""
    return decode_example(tf.io.parse_single_example(serialized, parse_spec(schema)), schema)


def write_json_atomic(path: str | os.PathLike, content: object) -> Path:
    """Write strict JSON (NaN or infinity raise `ValueError`) under a temporary name, then rename it into place."""
    return write_json(path, content, strict=True)


class ShardedWriter:
    """Write serialised examples of one cohort into shards ``<cohort>-<i:05d>-of-<n:05d>.tfrecord``.

    Shards are written under temporary names and renamed only in `close`, once the shard count is known; the
    previous run's shards of the same cohort are removed at that moment, so a reader never sees a mix.
    """

    def __init__(self, directory: str | os.PathLike, cohort: str, shard_size: int = 256) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_]+", cohort):
            raise ValueError(f"cohort must be alphanumeric/underscore. Received: cohort={cohort!r}")
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1. Received: shard_size={shard_size}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.cohort = cohort
        self.shard_size = shard_size
        self.count = 0
        self._temps: list[Path] = []
        self._writer: tf.io.TFRecordWriter | None = None

    def write(self, serialized: bytes) -> None:
        """Append one serialised example."""
        if self.count % self.shard_size == 0:
            if self._writer is not None:
                self._writer.close()
            tmp = self.directory / f".{self.cohort}-{len(self._temps):05d}.tfrecord.tmp"
            self._temps.append(tmp)
            self._writer = tf.io.TFRecordWriter(str(tmp))
        self._writer.write(serialized)
        self.count += 1

    def close(self) -> list[Path]:
        """Finish the shards and rename them into place; returns the final paths."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        for old in self.directory.glob(f"{self.cohort}-*-of-*.tfrecord"):
            old.unlink()
        n = len(self._temps)
        final = []
        for i, tmp in enumerate(self._temps):
            target = self.directory / f"{self.cohort}-{i:05d}-of-{n:05d}.tfrecord"
            os.replace(tmp, target)
            final.append(target)
        self._temps = []
        return final
