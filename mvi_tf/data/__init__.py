"""TFRecords written by `mvi-tf prepare` -> `tf.data.Dataset` (the feature spec is shared with the writer)."""

from mvi_tf.data.dataset import (
    ShardError,
    list_shards,
    load_schema,
    parse_fn,
    read_examples,
    to_numpy,
    unreadable_shard,
)

__all__ = ["ShardError", "list_shards", "load_schema", "parse_fn", "read_examples", "to_numpy", "unreadable_shard"]
