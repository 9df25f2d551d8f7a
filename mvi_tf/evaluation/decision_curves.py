"""Decision-curve analysis helpers: the threshold grid and the ranges where one strategy beats another."""

from __future__ import annotations

import numpy as np

from mvi_tf import stats

DEFAULT_THRESHOLDS = np.round(np.arange(1, 100) / 100.0, 2)
"""Threshold probabilities 0.01, 0.02, ..., 0.99."""


def threshold_ranges(thresholds: np.ndarray, mask: np.ndarray) -> list[list[float]]:
    """Contiguous runs of grid thresholds where ``mask`` holds, as ``[first, last]`` pairs (inclusive).

    >>> threshold_ranges(np.array([0.1, 0.2, 0.3, 0.4]), np.array([True, True, False, True]))
    [[0.1, 0.2], [0.4, 0.4]]
    """
    t = np.asarray(thresholds, dtype=float)
    m = np.asarray(mask, dtype=bool)
    if t.shape != m.shape:
        raise ValueError(f"thresholds and mask differ in shape. Received: {t.shape} vs {m.shape}")
    ranges: list[list[float]] = []
    start = None
    for i, flag in enumerate(m):
        if flag and start is None:
            start = i
        if start is not None and (not flag or i == m.size - 1):
            end = i if flag else i - 1
            ranges.append([float(t[start]), float(t[end])])
            start = None
    return ranges


def useful_ranges(nb: stats.NetBenefitResult, tolerance: float = 1e-12) -> list[list[float]]:
    """Threshold ranges where the model's net benefit exceeds both treat-all and treat-none."""
    best_default = np.maximum(nb.treat_all, nb.treat_none)
    return threshold_ranges(nb.thresholds, nb.model > best_default + tolerance)


def net_benefit_summary(nb: stats.NetBenefitResult) -> dict:
    """Everything about one decision curve for JSON: the curve, its useful ranges, and its largest gain over
    the better of treat-all and treat-none (with the threshold where it occurs)."""
    gain = nb.model - np.maximum(nb.treat_all, nb.treat_none)
    best = int(np.argmax(gain))
    return {
        "thresholds": nb.thresholds,
        "net_benefit": nb.model,
        "treat_all": nb.treat_all,
        "treat_none": nb.treat_none,
        "prevalence": nb.prevalence,
        "above_treat_all_and_none": useful_ranges(nb),
        "max_gain_over_defaults": float(gain[best]),
        "max_gain_threshold": float(nb.thresholds[best]),
        "net_benefit_at_max_gain": float(nb.model[best]),
    }
