"""Youden thresholds stored in thresholds.json are probabilities with the same classification as pROC's."""

from __future__ import annotations

import numpy as np

from mvi_tf.training.train import _youden


def test_informative_score_gets_the_midpoint_threshold():
    # Perfect separation between 0.2 and 0.8: pROC's best threshold is the midpoint 0.5.
    assert _youden(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])) == 0.5


def test_constant_score_threshold_is_zero_not_minus_infinity():
    # pROC puts a constant score's best threshold at -inf (everyone positive); as a probability that is 0.0.
    threshold = _youden(np.array([0, 1, 0, 1]), np.full(4, 0.5))
    assert threshold == 0.0 and np.all(np.full(4, 0.5) >= threshold)
