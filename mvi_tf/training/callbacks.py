"""Keras callbacks of one training stage: early stopping, checkpoints, backup/restore, history and TensorBoard.

Run-directory layout written per stage (docs/architecture.md "Run directory")::

    history/<stage>.csv                  per-epoch loss/AUC (appended to when a killed run resumes)
    logs/<stage>/                        TensorBoard event files
    checkpoints/<stage>.best.weights.h5  weights of the best validation-AUC epoch so far
    checkpoints/backup_<stage>/          BackupAndRestore state (deleted when the stage finishes)
"""

from __future__ import annotations

from pathlib import Path

import keras

MONITOR = "val_auc"


def backup_dir(run_dir: str | Path, stage: str) -> Path:
    """Directory where BackupAndRestore keeps the in-progress state of ``stage``."""
    return Path(run_dir) / "checkpoints" / f"backup_{stage}"


def stage_callbacks(
    run_dir: str | Path,
    stage: str,
    patience: int,
    tensorboard: bool = True,
) -> list[keras.callbacks.Callback]:
    """Callbacks for ``fit`` of one stage.

    Parameters
    ----------
    run_dir : path-like
        Run directory (for a non-chief worker, a private scratch directory).
    stage : str
        Stage name: ``signature_<phase>``, ``fusion`` or ``cdlm``.
    patience : int
        Epochs without validation-AUC improvement before stopping, the best weights then restored; 0 disables
        early stopping (the stage runs all its epochs and keeps the last weights).
    tensorboard : bool
        Write TensorBoard logs.

    Returns
    -------
    list of keras.callbacks.Callback
        BackupAndRestore last: a killed run resumes after the last epoch whose history row and checkpoint
        were written.
    """
    run_dir = Path(run_dir)
    for sub in ("history", "checkpoints", "logs"):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    callbacks: list[keras.callbacks.Callback] = []
    if patience > 0:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=MONITOR, mode="max", patience=patience, restore_best_weights=True, verbose=0
        ))
    callbacks += [
        keras.callbacks.ModelCheckpoint(
            str(run_dir / "checkpoints" / f"{stage}.best.weights.h5"),
            monitor=MONITOR,
            mode="max",
            save_best_only=True,
            save_weights_only=True,
        ),
        keras.callbacks.CSVLogger(str(run_dir / "history" / f"{stage}.csv"), append=True),
    ]
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / "logs" / stage), write_graph=False))
    # Last, so an epoch is backed up only after its history row and best checkpoint are written.
    callbacks.append(keras.callbacks.BackupAndRestore(str(backup_dir(run_dir, stage)), save_freq="epoch"))
    return callbacks
