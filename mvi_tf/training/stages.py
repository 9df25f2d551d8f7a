"""The staged training of the paper: per-phase signatures, then fusion, then the combined model (CDLM).

1. ``signature_<phase>`` for every phase: ResNet18 branch trained end to end on that phase alone.
2. ``fusion``: one branch per phase, initialised from the trained signature models (by layer name).
3. ``cdlm``: every phase's signature integrated with the selected tabular factors by dense layers, its branches
   initialised from the trained signature models. The fusion model is not part of it; it is compared beside it.

By default (``fine_tune_backbones: false``) stages 2 and 3 freeze the ResNet18 trunks (and the CDLM keeps the
signature heads), so only the dense heads train: this keeps CPU training fast and makes the later stages strict
extensions of the earlier ones. Set ``train.fine_tune_backbones: true`` to train everything end to end at
``head_learning_rate``.

A stage whose ``RUN_DIR/<stage>.keras`` exists is complete: a rerun loads it instead of training again. A stage
killed mid-way resumes from its BackupAndRestore state (last finished epoch).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from mvi_tf.models.cdlm import OUTPUT_KEY, training_view
from mvi_tf.training.callbacks import MONITOR, stage_callbacks

log = logging.getLogger(__name__)


@dataclasses.dataclass
class StageResult:
    """Outcome of one stage.

    Attributes
    ----------
    name : str
        Stage name (also the model file stem).
    model_path : Path
        ``RUN_DIR/<name>.keras``.
    history : dict
        Per-epoch metrics of this invocation (empty when the stage was already complete).
    best_val_auc : float
        Best validation AUC seen in this invocation (NaN when resumed complete).
    resumed : bool
        True when the stage was already complete and its model was loaded.
    """

    name: str
    model_path: Path
    history: dict[str, list[float]]
    best_val_auc: float
    resumed: bool


class _MultiWorkerView(keras.Model):
    """Single-output training view whose step logs carry a length-1 axis.

    Keras 3.15 reduces the step logs of a multi-worker ``fit`` with ``strategy.reduce("MEAN", v, axis=0)``,
    which fails for scalar logs ("Invalid reduction dimension 0 for input with 0 dimensions"). Returning
    ``(1,)``-shaped logs makes that reduction valid and yields the same scalars.
    """

    def train_step(self, data):
        return {k: tf.reshape(v, [1]) for k, v in super().train_step(data).items()}

    def test_step(self, data):
        return {k: tf.reshape(v, [1]) for k, v in super().test_step(data).items()}


def compile_for_training(
    model: keras.Model, learning_rate: float, jit_compile: bool, multi_worker: bool = False,
    decay_steps: int | None = None,
) -> keras.Model:
    """Single-output training view of ``model``, compiled with Adam, binary cross-entropy and AUC.

    With ``decay_steps`` the learning rate follows a cosine decay from ``learning_rate`` to zero over that many
    optimizer steps; otherwise it is constant.
    """
    if decay_steps is not None:
        if decay_steps < 1:
            raise ValueError(f"`decay_steps` must be >= 1. Received: decay_steps={decay_steps}")
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps)
    if multi_worker:
        view = _MultiWorkerView(model.input, model.output[OUTPUT_KEY], name=f"{model.name}_training")
    else:
        view = training_view(model)
    view.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[keras.metrics.AUC(name="auc")],
        jit_compile=jit_compile,
    )
    return view


def _build_before_distributed_fit(view: keras.Model, train_ds, strategy) -> None:
    """Build optimizer, loss and metric state from one local batch before a distributed ``fit``.

    Keras 3.15 builds them in ``fit`` by ``strategy.reduce``-ing the whole first distributed batch, which fails
    for a nested ``(inputs_dict, label, weight)`` batch under MultiWorkerMirroredStrategy ("Attempt to convert
    a value ({'arterial': PerReplica...})"). Building here from a non-distributed batch, inside the strategy
    scope, creates exactly the same state; the in-``fit`` build is then skipped.
    """
    batch = next(iter(train_ds))
    with strategy.scope():
        view._symbolic_build(data_batch=batch)
        view.optimizer.build(view.trainable_variables)
    view._maybe_symbolic_build = lambda iterator=None, data_batch=None: None


def run_stage(
    name: str,
    build: Callable[[], keras.Model],
    train_ds,
    val_ds,
    *,
    run_dir: str | Path,
    model_dir: str | Path,
    strategy,
    epochs: int,
    learning_rate: float,
    patience: int,
    jit_compile: bool = False,
    verbose: int | str = "auto",
    decay_steps: int | None = None,
) -> tuple[keras.Model, StageResult]:
    """Train one stage (or load it when already complete) and save ``model_dir/<name>.keras``.

    Parameters
    ----------
    name : str
        Stage name.
    build : callable
        Returns the stage's full (dict-output) model with its initial weights; called inside
        ``strategy.scope()``.
    train_ds, val_ds : tf.data.Dataset
        Batched ``(inputs, label[, weight])`` and ``(inputs, label)``.
    run_dir : path-like
        Where callbacks write history, logs and checkpoints (a scratch directory on non-chief workers).
    model_dir : path-like
        Where the final ``<name>.keras`` is written (the run directory on the chief).
    strategy : tf.distribute.Strategy
        Scope for building and compiling.
    epochs, learning_rate, patience : int, float, int
        Optimisation settings; early stopping restores the best validation-AUC weights.
    jit_compile : bool
        XLA-compile the train step.
    verbose : int or str
        Keras progress-bar verbosity.
    decay_steps : int, optional
        Optimizer steps of the cosine learning-rate decay (see :func:`compile_for_training`); None: constant.
    """
    model_path = Path(model_dir) / f"{name}.keras"
    if model_path.is_file():
        log.info("Stage %s already complete (%s); loading it.", name, model_path)
        with strategy.scope():
            model = keras.models.load_model(model_path, compile=False)
        return model, StageResult(name, model_path, {}, float("nan"), resumed=True)

    multi_worker = bool(strategy.extended._in_multi_worker_mode())
    with strategy.scope():
        model = build()
        view = compile_for_training(model, learning_rate, jit_compile, multi_worker, decay_steps)
    callbacks = stage_callbacks(run_dir, name, patience)
    backup = Path(run_dir) / "checkpoints" / f"backup_{name}"
    history_csv = Path(run_dir) / "history" / f"{name}.csv"
    if not backup.exists() and history_csv.exists():
        history_csv.unlink()  # a fresh stage: drop a stale history from an earlier, unfinished attempt
    if multi_worker:
        _build_before_distributed_fit(view, train_ds, strategy)
    log.info("Stage %s: %d trainable weights, up to %d epochs", name, len(view.trainable_weights), epochs)
    history = view.fit(
        train_ds, validation_data=val_ds, epochs=epochs, callbacks=callbacks, verbose=verbose, shuffle=False
    )
    values = {k: [float(v) for v in vs] for k, vs in history.history.items()}
    aucs = values.get(MONITOR, [])
    best = float(np.nanmax(aucs)) if aucs and np.isfinite(aucs).any() else float("nan")
    model_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = model_path.with_name(f".{name}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, model_path)
    log.info("Stage %s done: best %s = %.4f, saved %s", name, MONITOR, best, model_path)
    return model, StageResult(name, model_path, values, best, resumed=False)
