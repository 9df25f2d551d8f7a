"""The stacking stage of :func:`mvi_tf.training.train`: out-of-fold signatures -> heads -> fusion and CDLM models."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from mvi_tf.config import Config
from mvi_tf.training.crossfit import (
    StackedHeads,
    fit_heads,
    fold_assignment,
    out_of_fold_logits,
    predict_logits,
    write_stacking,
)

log = logging.getLogger(__name__)


def fit_stacked_models(
    cfg: Config,
    run_dir: Path,
    chief: bool,
    train_cohort: dict[str, np.ndarray],
    ids: Sequence[str],
    split: dict[str, str],
    phases: Sequence[str],
    image_size: int,
    tabular_index: list[int],
    signatures: dict,
    train_fold: Callable[[int, list[str]], dict],
) -> StackedHeads:
    """Plan the rows the heads learn from, compute their leak-free signature logits, fit, build and save.

    Parameters
    ----------
    cfg : Config
        ``train.cross_fit_folds`` (K >= 2: out-of-fold logits of the training split; 0: the validation split's
        logits from the deployed signatures) and ``train.seed``.
    run_dir : Path
        Where ``fusion.keras``, ``cdlm.keras``, ``stacking.json`` and ``oof_signatures.csv`` go (chief only).
    train_cohort : dict
        The training cohort's arrays (:func:`mvi_tf.data.to_numpy`), rows in the order of ``ids``.
    split : dict
        ``patient_id -> "train" | "val"``.
    signatures : dict
        The deployed signature models by phase.
    train_fold : callable
        ``train_fold(k, training_ids) -> {phase: model}`` (see :func:`mvi_tf.training.crossfit.out_of_fold_logits`).
    """
    from mvi_tf.training.baselines import fit_logistic
    from mvi_tf.training.train import _model_inputs

    n_folds, seed = cfg.train.cross_fit_folds, cfg.train.seed
    labels = np.asarray(train_cohort["label"]).astype(int).ravel()
    centres = [str(c) for c in np.asarray(train_cohort["centre"]).ravel()]
    in_train = np.array([split[p] == "train" for p in ids])
    inputs = _model_inputs(train_cohort, phases, image_size, tabular_index)

    n_minor = int(np.bincount(labels[in_train], minlength=2).min())
    if n_folds > n_minor:
        log.warning("cross_fit_folds=%d but the training split has only %d patients of one class: the heads learn "
                    "from the validation split instead (cross_fit_folds=0).", n_folds, n_minor)
        n_folds = 0
    rows = in_train if n_folds >= 2 else ~in_train
    row_ids = [p for p, keep in zip(ids, rows, strict=True) if keep]
    row_inputs = {k: v[rows] for k, v in inputs.items()}
    if n_folds >= 2:
        fold_of = fold_assignment(row_ids, labels[rows], [c for c, k in zip(centres, rows, strict=True) if k],
                                  n_folds, seed)
        logits = out_of_fold_logits(row_ids, fold_of, row_inputs, phases, train_fold)
        folds, source = [fold_of[p] for p in row_ids], f"out-of-fold logits of the training split ({n_folds} folds)"
    else:
        logits = predict_logits(signatures, row_inputs, phases)
        folds, source = [None] * len(row_ids), "the validation split's logits from the deployed signatures"

    beta0, beta, _ = fit_logistic(inputs["tabular"][in_train], labels[in_train])
    heads = fit_heads(logits, labels[rows], row_inputs["tabular"], (beta0, beta), source, n_folds, seed)
    log.info("Stacking heads fitted on %s: fusion coef %s (penalty %s), CDLM signature coef %s (penalty %s)",
             source, np.round(heads.fusion.signature_coef, 3), heads.fusion.penalty,
             np.round(heads.cdlm.signature_coef, 3), heads.cdlm.penalty)
    if chief:
        _save_models(run_dir, heads, phases, image_size, len(tabular_index), cfg.model.dropout, signatures)
        write_stacking(run_dir, heads, row_ids, folds, logits, phases)
    return heads


def _save_models(run_dir: Path, heads: StackedHeads, phases, image_size: int, n_tabular: int, dropout: float,
                 signatures: dict) -> None:
    """Build ``fusion`` and ``cdlm`` in stacking form around the deployed branches and save them."""
    from mvi_tf.models.cdlm import build_stacked_model, set_stacking_weights, transfer_weights

    for name, n_tab in (("fusion", None), ("cdlm", n_tabular)):
        model = build_stacked_model(phases, image_size, n_tab, dropout)
        for signature in signatures.values():
            transfer_weights(signature, model)
        if n_tab is None:
            set_stacking_weights(model, heads.fusion.signature_coef, heads.fusion.intercept)
        else:
            set_stacking_weights(model, heads.cdlm.signature_coef, heads.cdlm_intercept, heads.cdlm_tabular_coef)
        tmp = run_dir / f".{name}.tmp.keras"
        model.save(tmp)
        os.replace(tmp, run_dir / f"{name}.keras")
