"""Leak-free stacking: the penalised non-negative logistic heads, fold assignment and out-of-fold logits."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mvi_tf.training.crossfit import fit_heads, fold_assignment, out_of_fold_logits
from mvi_tf.training.stacking import fit_stacking_head


def _cohort(n: int, seed: int, signal: float):
    """Labels from a true tabular linear predictor plus one phase sign; logits: one informative, two noise."""
    rng = np.random.default_rng(seed)
    offset = rng.normal(0.0, 1.0, n)
    sign = rng.normal(0.0, 1.0, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(offset + signal * sign - 0.5)))).astype(int)
    logits = np.column_stack([3.0 * sign + rng.normal(0, 1, n), rng.normal(2, 4, n), rng.normal(-1, 0.5, n)])
    return y, offset, logits


def test_noise_signatures_get_no_weight_and_the_head_keeps_its_factors():
    y, offset, logits = _cohort(400, 0, signal=0.0)
    head = fit_stacking_head(logits, y, offset=offset, seed=0)
    assert head.to_dict()["penalty"] == "drop" and max(head.signature_coef) == 0.0
    assert head.offset_coef == pytest.approx(1.0, abs=0.3)
    y2, off2, log2 = _cohort(2000, 1, signal=0.0)
    assert roc_auc_score(y2, head.logit(log2, off2)) >= roc_auc_score(y2, off2) - 0.01


def test_an_informative_signature_is_used_and_adds_to_the_factors():
    y, offset, logits = _cohort(400, 2, signal=1.5)
    head = fit_stacking_head(logits, y, offset=offset, seed=0)
    assert head.signature_coef[0] > 0.1 and np.isfinite(head.penalty)
    standardised = np.array(head.signature_coef) * logits.std(axis=0)
    assert standardised[0] > 3 * max(standardised[1:])
    y2, off2, log2 = _cohort(2000, 3, signal=1.5)
    assert roc_auc_score(y2, head.logit(log2, off2)) > roc_auc_score(y2, off2) + 0.05


def test_a_signature_pointing_the_wrong_way_is_clipped_to_zero():
    y, offset, logits = _cohort(400, 4, signal=1.5)
    flipped = logits.copy()
    flipped[:, 0] *= -1
    head = fit_stacking_head(flipped, y, offset=offset, seed=0)
    assert head.signature_coef[0] == 0.0
    free = fit_stacking_head(flipped, y, offset=offset, seed=0, nonneg=False)
    assert free.signature_coef[0] < -0.1


def test_the_fusion_head_without_factors_falls_back_to_one_common_weight_not_to_a_constant():
    y, _, logits = _cohort(300, 5, signal=0.0)
    logits[:, 1] = logits[:, 0] + np.random.default_rng(0).normal(0, 1, 300)  # two weak, correlated phases
    head = fit_stacking_head(logits, y, seed=0)
    assert head.to_dict()["penalty"] != "drop" and min(head.signature_coef) >= 0.0
    if np.isinf(head.penalty):
        standardised = np.array(head.signature_coef) * logits.std(axis=0)
        np.testing.assert_allclose(standardised, standardised[0], rtol=1e-9)


def test_head_rejects_single_class_and_misaligned_rows():
    with pytest.raises(ValueError, match="both classes"):
        fit_stacking_head(np.zeros((5, 2)), [1, 1, 1, 1, 1])
    with pytest.raises(ValueError, match="one row per label"):
        fit_stacking_head(np.zeros((5, 2)), [0, 1, 0, 1])


def test_single_class_rows_fall_back_to_the_tabular_model():
    heads = fit_heads(np.zeros((4, 2)), np.ones(4, int), np.ones((4, 1)), (0.5, np.array([2.0])), "test", 0, 0)
    assert heads.cdlm.signature_coef == (0.0, 0.0) and heads.fusion.signature_coef == (0.0, 0.0)
    assert heads.cdlm_tabular_coef == (2.0,) and heads.cdlm_intercept == 0.5


def test_fold_assignment_is_stratified_reproducible_and_complete():
    ids = [f"p{i:03d}" for i in range(60)]
    labels = [i % 3 == 0 for i in range(60)]
    centres = ["A" if i < 40 else "B" for i in range(60)]
    folds = fold_assignment(ids, labels, centres, 3, seed=7)
    assert folds == fold_assignment(list(reversed(ids)), list(reversed(labels)), list(reversed(centres)), 3, 7)
    assert sorted(folds) == sorted(ids) and set(folds.values()) == {0, 1, 2}
    for k in range(3):
        members = [i for i, p in enumerate(ids) if folds[p] == k]
        assert len(members) == 20
        assert sum(labels[i] for i in members) in (6, 7, 8)
        assert sum(centres[i] == "B" for i in members) in (6, 7, 8)
    assert folds != fold_assignment(ids, labels, centres, 3, seed=8)
    with pytest.raises(ValueError, match="n_folds=1"):
        fold_assignment(ids, labels, centres, 1, seed=0)


def test_out_of_fold_logits_never_score_a_patient_with_a_model_that_trained_on_them():
    ids = [f"p{i}" for i in range(9)]
    fold_of = {p: i % 3 for i, p in enumerate(ids)}
    trained_on = {}

    class Memoriser:
        """Scores 1 for a patient it trained on, else 0 (reads the patient index from the image)."""

        def __init__(self, seen):
            self.seen = seen

    def train_fold(k, training_ids):
        trained_on[k] = set(training_ids)
        return {"arterial": Memoriser(set(training_ids))}

    import mvi_tf.training.crossfit as crossfit

    def fake_predict(models, inputs, phases):
        model = models["arterial"]
        return np.array([[float(ids[int(i)] in model.seen)] for i in inputs["arterial"][:, 0]])

    original = crossfit.predict_logits
    crossfit.predict_logits = fake_predict
    try:
        inputs = {"arterial": np.arange(9, dtype=float).reshape(9, 1)}
        logits = out_of_fold_logits(ids, fold_of, inputs, ["arterial"], train_fold)
    finally:
        crossfit.predict_logits = original
    assert logits.shape == (9, 1) and not logits.any()
    assert all(not any(fold_of[p] == k for p in seen) for k, seen in trained_on.items())
