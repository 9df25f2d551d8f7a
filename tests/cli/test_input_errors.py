"""User errors given to `mvi-tf train` end in one line naming the shard or value, never in a traceback."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from training_records_fixture import write_tiny_records  # noqa: E402


def _train(data: Path, out: Path, *extra: str):
    from mvi_tf.cli import main

    return CliRunner().invoke(main, ["train", "--data", str(data), "--modality", "ct", "--out", str(out),
                                     "--epochs", "1", *extra])


def _one_line_error(result) -> str:
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, result.output
    return lines[0]


def _list_shards_in_schema(records: Path) -> None:
    schema_path = records / "ct" / "schema.json"
    schema = json.loads(schema_path.read_text())
    schema["shards"] = {p.name: p.stat().st_size for p in sorted((records / "ct").glob("*.tfrecord"))}
    schema_path.write_text(json.dumps(schema))


@pytest.fixture()
def records(tmp_path) -> Path:
    return write_tiny_records(tmp_path / "records", n_train=12, n_prospective=4, image_size=32, shard_size=4)


def test_truncated_shard_is_named(records, tmp_path):
    _list_shards_in_schema(records)
    shard = records / "ct" / "train-00001-of-00003.tfrecord"
    shard.write_bytes(shard.read_bytes()[:-100])
    line = _one_line_error(_train(records, tmp_path / "run"))
    assert "ct/train-00001-of-00003.tfrecord" in line and "truncated" in line


def test_truncated_shard_of_older_records_is_named_after_the_read_fails(records, tmp_path):
    shard = records / "ct" / "train-00002-of-00003.tfrecord"  # no shard list in this schema: found by reading
    shard.write_bytes(shard.read_bytes()[:-100])
    line = _one_line_error(_train(records, tmp_path / "run"))
    assert "train-00002-of-00003.tfrecord is corrupt" in line


def test_corrupt_bytes_inside_a_listed_shard_are_named(records, tmp_path):
    _list_shards_in_schema(records)
    shard = records / "ct" / "train-00000-of-00003.tfrecord"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = bytes(64)  # same size, wrong CRC
    shard.write_bytes(bytes(data))
    line = _one_line_error(_train(records, tmp_path / "run"))
    assert "train-00000-of-00003.tfrecord is corrupt" in line


def test_missing_schema_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    line = _one_line_error(_train(tmp_path / "empty", tmp_path / "run"))
    assert "schema.json" in line and "mvi-tf prepare" in line


def test_image_size_is_bounded(records, tmp_path):
    result = _train(records, tmp_path / "run", "--image-size", "4096")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "4096" in result.output and "32<=x<=512" in result.output
