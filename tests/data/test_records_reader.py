"""Writer (data_prep.records) -> reader (mvi_tf.data) round trip on the one shared feature spec."""

from __future__ import annotations

import numpy as np
import pytest

from data_prep.records import (
    SCHEMA_FILE,
    ShardedWriter,
    encode_example,
    make_schema,
    write_json_atomic,
)
from mvi_tf.data import list_shards, load_schema, read_examples, to_numpy

PHASES = ["arterial", "portal"]
TABULAR = {"feature_names": ["age", "afp_gt_400", "capsule_complete"], "columns": []}


def _example(n: int, cohort: str, rng: np.random.Generator) -> dict:
    return {"arterial": rng.random((8, 8, 3), dtype=np.float32), "portal": rng.random((8, 8, 3), dtype=np.float32),
            "tabular": rng.normal(size=3).astype(np.float32), "label": n % 2, "patient_id": f"S{n:03d}",
            "centre": "C1", "cohort": cohort, "pfs_months": 3.5 + n, "pfs_event": 1, "os_months": 10.25,
            "os_event": 0, "age": 40.0 + n, "sex_male": 1, "afp_ng_ml": 12.5, "tumour_size_cm": 2.0}


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    out = tmp_path_factory.mktemp("records")
    schema = make_schema("ct", PHASES, 8, TABULAR)
    rng = np.random.default_rng(3)
    examples = {"train": [_example(n, "train", rng) for n in range(7)],
                "prospective": [_example(n, "prospective", rng) for n in range(7, 10)]}
    stale = out / "ct" / "train-00000-of-00009.tfrecord"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"stale shard of an earlier run")
    for cohort, items in examples.items():
        writer = ShardedWriter(out / "ct", cohort, shard_size=3)
        for item in items:
            writer.write(encode_example(item, schema))
        writer.close()
    write_json_atomic(out / "ct" / SCHEMA_FILE, schema)
    return out, examples


def test_shards_are_named_and_stale_ones_removed(records):
    out, _ = records
    names = [p.rsplit("/", 1)[1] for p in list_shards(out, "ct")]
    assert names == ["prospective-00000-of-00001.tfrecord", "train-00000-of-00003.tfrecord",
                     "train-00001-of-00003.tfrecord", "train-00002-of-00003.tfrecord"]
    assert not list((out / "ct").glob(".*tmp"))


def test_written_arrays_equal_read_arrays(records):
    out, examples = records
    data = to_numpy(out, "ct", cohorts="train")
    assert list(data["patient_id"]) == [f"S{n:03d}" for n in range(7)]
    for n, item in enumerate(examples["train"]):
        for key in ("arterial", "portal", "tabular"):
            np.testing.assert_array_equal(data[key][n], item[key])
        assert data["label"][n] == item["label"] and data["pfs_months"][n] == pytest.approx(item["pfs_months"])
    assert data["arterial"].dtype == np.float32 and data["arterial"].shape == (7, 8, 8, 3)
    assert set(load_schema(out, "ct")["features"]) == set(data)


def test_read_examples_keys_and_seeded_file_shuffle(records):
    out, _ = records
    element = next(iter(read_examples(out, "ct", cohorts=["prospective"])))
    assert element["portal"].shape == (8, 8, 3) and element["tabular"].shape == (3,)
    assert element["cohort"].numpy() == b"prospective"
    first = [e["patient_id"].numpy() for e in read_examples(out, "ct", shuffle_files=True, seed=5)]
    again = [e["patient_id"].numpy() for e in read_examples(out, "ct", shuffle_files=True, seed=5)]
    assert first == again and sorted(first) == sorted(f"S{n:03d}".encode() for n in range(10))


def test_bad_inputs_are_named(records, tmp_path):
    out, examples = records
    schema = load_schema(out, "ct")
    bad = dict(examples["train"][0])
    del bad["portal"]
    with pytest.raises(ValueError, match="misses key 'portal'"):
        encode_example(bad, schema)
    bad = {**examples["train"][0], "tabular": np.array([np.nan, 0, 0], dtype=np.float32)}
    with pytest.raises(ValueError, match="'tabular'"):
        encode_example(bad, schema)
    with pytest.raises(FileNotFoundError, match="mvi-tf prepare"):
        load_schema(tmp_path, "mri")
    with pytest.raises(ValueError, match="cohorts="):
        list_shards(out, "ct", cohorts=["val"])
