"""Cross-fitted signatures and the stacking heads fitted on them (``model.head: logistic``).

The deployed signature networks train on the whole training split. To give the fusion and CDLM heads signature
scores that no network has trained on, the training split is also cut into ``train.cross_fit_folds`` folds,
stratified by label and centre; for every fold a copy of each phase's signature network trains on the other folds
and scores the fold's patients. The heads (:mod:`mvi_tf.training.stacking`) learn from these out-of-fold logits
and are then written into models that carry the deployed branches. With ``cross_fit_folds: 0`` the heads learn
from the validation split's signatures instead (no extra training, but only the validation patients to learn
from). The internal validation split and the prospective cohort never reach a fold model or a head.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from mvi_tf.training.stacking import StackingHead, fit_stacking_head

log = logging.getLogger(__name__)

OOF_FILE = "oof_signatures.csv"
STACKING_FILE = "stacking.json"


def fold_assignment(
    patient_ids: Sequence[str], labels: Sequence[int], centres: Sequence[str], n_folds: int, seed: int
) -> dict[str, int]:
    """Assign each patient a fold ``0..n_folds-1``, stratified by (label, centre), reproducibly.

    Within each (label, centre) stratum the sorted IDs are permuted by ``seed`` and dealt round-robin, starting
    where the previous stratum stopped, so every fold gets a share of every label and centre.
    """
    if isinstance(n_folds, bool) or not isinstance(n_folds, int) or n_folds < 2:
        raise ValueError(f"`n_folds` must be an integer >= 2. Received: n_folds={n_folds!r}")
    if len(patient_ids) < n_folds:
        raise ValueError(f"Need at least one patient per fold. Received: {len(patient_ids)} patients, "
                         f"n_folds={n_folds}")
    rng = np.random.default_rng(seed)
    strata: dict[tuple[int, str], list[str]] = {}
    for p, y, c in zip(patient_ids, labels, centres, strict=True):
        strata.setdefault((int(y), str(c)), []).append(str(p))
    fold_of, next_fold = {}, 0
    for key in sorted(strata):
        members = sorted(strata[key])
        for index in rng.permutation(len(members)):
            fold_of[members[index]] = next_fold
            next_fold = (next_fold + 1) % n_folds
    return fold_of


def predict_logits(models: dict, inputs: dict[str, np.ndarray], phases: Sequence[str]) -> np.ndarray:
    """``(n, P)`` signature logits of ``inputs`` (images keyed by phase) from one model per phase."""
    from mvi_tf.models.cdlm import signature_logit_model

    columns = []
    for phase in phases:
        view = signature_logit_model(models[phase], phase)
        columns.append(np.asarray(view.predict({phase: inputs[phase]}, batch_size=32, verbose=0)).ravel())
    return np.stack(columns, axis=1).astype(np.float64)


def out_of_fold_logits(
    ids: Sequence[str],
    fold_of: dict[str, int],
    inputs: dict[str, np.ndarray],
    phases: Sequence[str],
    train_fold: Callable[[int, list[str]], dict],
) -> np.ndarray:
    """Signature logits of every patient in ``ids`` from the fold models that did not train on them.

    Parameters
    ----------
    ids : sequence of str
        The training split's patients, in the row order of ``inputs``.
    fold_of : dict
        ``patient_id -> fold``.
    inputs : dict
        Images of those patients keyed by phase.
    phases : sequence of str
        Phase order of the returned columns.
    train_fold : callable
        ``train_fold(k, training_ids) -> {phase: signature model}`` trains (or loads) fold ``k``'s networks on
        ``training_ids``.
    """
    ids = [str(p) for p in ids]
    folds = np.array([fold_of[p] for p in ids])
    logits = np.full((len(ids), len(phases)), np.nan)
    for k in sorted(set(folds.tolist())):
        held = folds == k
        models = train_fold(k, [p for p, f in zip(ids, folds, strict=True) if f != k])
        logits[held] = predict_logits(models, {ph: inputs[ph][held] for ph in phases}, phases)
    return logits


@dataclasses.dataclass(frozen=True)
class StackedHeads:
    """The fitted fusion and CDLM heads and the rows they learned from.

    ``cdlm_tabular_coef`` and ``cdlm_intercept`` are the CDLM's coefficients on its ``tabular`` input and its
    intercept, with the tabular factors' logistic model folded in (``offset_coef`` times its coefficients).
    """

    fusion: StackingHead
    cdlm: StackingHead
    cdlm_tabular_coef: tuple[float, ...]
    cdlm_intercept: float
    source: str
    n_folds: int

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "cross_fit_folds": self.n_folds,
            "fusion": self.fusion.to_dict(),
            "cdlm": self.cdlm.to_dict(),
            "cdlm_tabular_coef": list(self.cdlm_tabular_coef),
            "cdlm_intercept": self.cdlm_intercept,
        }


def fit_heads(
    logits: np.ndarray,
    labels: np.ndarray,
    tabular: np.ndarray,
    tabular_model: tuple[float, np.ndarray],
    source: str,
    n_folds: int,
    seed: int,
) -> StackedHeads:
    """Fit the fusion head on the signature logits and the CDLM head on them plus the tabular linear predictor.

    ``tabular_model`` is ``(intercept, coef)`` of the logistic model of the selected factors (fitted on the
    training split); ``tabular`` the same rows' selected factors.
    """
    beta0, beta = tabular_model
    offset = beta0 + np.asarray(tabular, dtype=np.float64) @ np.asarray(beta, dtype=np.float64)
    labels = np.asarray(labels).astype(int).ravel()
    if labels.size == 0 or labels.min() == labels.max():
        log.warning("The stacking rows (%s) hold a single class: the heads ignore the signatures.", source)
        fusion = _without_signatures(logits.shape[1], labels)
        cdlm = dataclasses.replace(fusion, intercept=0.0, offset_coef=1.0)
    else:
        fusion = fit_stacking_head(logits, labels, seed=seed)
        cdlm = fit_stacking_head(logits, labels, offset=offset, seed=seed)
    return StackedHeads(
        fusion=fusion,
        cdlm=cdlm,
        cdlm_tabular_coef=tuple(float(cdlm.offset_coef * b) for b in beta),
        cdlm_intercept=float(cdlm.intercept + cdlm.offset_coef * beta0),
        source=source,
        n_folds=n_folds,
    )


def _without_signatures(n_phases: int, labels: np.ndarray) -> StackingHead:
    """A head that predicts the rows' prevalence (clipped away from 0 and 1) and ignores every signature."""
    prevalence = float(np.clip(labels.mean() if labels.size else 0.5, 0.01, 0.99))
    return StackingHead(intercept=float(np.log(prevalence / (1 - prevalence))), offset_coef=0.0,
                        signature_coef=(0.0,) * n_phases, penalty=float("nan"), cv_deviance={}, cv_se={},
                        n_patients=int(labels.size))


def write_stacking(run_dir: Path, heads: StackedHeads, ids: Sequence[str], folds: Sequence[int | None],
                   logits: np.ndarray, phases: Sequence[str]) -> None:
    """``stacking.json`` (both heads) and ``oof_signatures.csv`` (the logits they learned from)."""
    import pandas as pd

    (run_dir / STACKING_FILE).write_text(json.dumps(heads.to_dict(), indent=2))
    frame = pd.DataFrame({"patient_id": list(ids), "fold": list(folds)})
    for j, phase in enumerate(phases):
        frame[f"signature_{phase}_logit"] = logits[:, j]
    frame.to_csv(run_dir / OOF_FILE, index=False)
