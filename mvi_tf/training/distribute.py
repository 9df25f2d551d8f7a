"""``tf.distribute`` strategy selection and chief/worker roles.

- ``default``: one device (CPU or one GPU).
- ``mirrored``: synchronous data parallelism over the local GPUs (``MirroredStrategy``).
- ``multiworker``: synchronous data parallelism across processes/machines (``MultiWorkerMirroredStrategy``).
  Every worker runs the same ``mvi-tf train`` command with its own ``TF_CONFIG``, e.g. for two machines::

      TF_CONFIG='{"cluster": {"worker": ["host0:12345", "host1:12345"]}, "task": {"type": "worker", "index": 0}}'

  (``index`` 1 on the second machine). Worker 0 is the chief: it writes the run directory; the other workers
  write their checkpoints to a private scratch directory that is removed at the end. The records directory
  must be readable by every worker (shared file system or a copy at the same path).

The strategy must be created before any other TensorFlow op runs in the process.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from mvi_tf.config import STRATEGIES


def get_strategy(name: str = "default") -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy called ``name`` (see module docstring)."""
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy; expected one of {STRATEGIES}. Received: strategy={name!r}")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("strategy='multiworker' needs the TF_CONFIG environment variable (cluster and task).")
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING
        )
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    return tf.distribute.get_strategy()


def task_info() -> tuple[str, int]:
    """``(task_type, task_index)`` from ``TF_CONFIG``; ``("worker", 0)`` when unset."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return "worker", 0
    try:
        task = json.loads(raw).get("task", {})
    except json.JSONDecodeError as err:
        raise ValueError(f"TF_CONFIG is not valid JSON: {raw[:200]!r}") from err
    return str(task.get("type", "worker")), int(task.get("index", 0))


def is_chief(strategy_name: str) -> bool:
    """Whether this process writes the run directory (always, unless multi-worker and not worker 0/chief)."""
    if strategy_name != "multiworker":
        return True
    task_type, index = task_info()
    return task_type == "chief" or (task_type == "worker" and index == 0 and not _has_chief())


def _has_chief() -> bool:
    raw = os.environ.get("TF_CONFIG", "{}")
    return bool(json.loads(raw).get("cluster", {}).get("chief"))


def barrier(strategy: tf.distribute.Strategy) -> None:
    """Block until every worker reaches this point (a one-value all-reduce); no-op outside multi-worker.

    Called at the end of training, after the chief has evaluated, so all workers shut down together instead of
    the others waiting out the coordination service's heartbeat timeout once the chief has gone.
    """
    if not strategy.extended._in_multi_worker_mode():
        return
    value = strategy.run(tf.function(lambda: tf.constant(1.0)))
    strategy.reduce("SUM", value, axis=None)
