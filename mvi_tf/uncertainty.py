"""Uncertainty of model comparisons: bootstrap CIs of an AUC difference and of net benefit, and the net
reclassification and integrated discrimination improvements (NRI, IDI) of a new model over an old one.

Pure functions returning frozen result objects, in the conventions of :mod:`mvi_tf.stats` (1 = MVI, higher
score = MVI, both classes required).

- The bootstrap resamples patients with replacement, cases and controls separately (stratified, pROC's
  default ``boot.stratified = TRUE``), so every resample keeps the cohort's numbers of cases and controls and
  the AUC is always defined. A ``seed`` makes it reproducible; the CI is the percentile interval with R's
  default quantile (type 7, numpy's ``linear``), as ``pROC::ci(..., method = "bootstrap")``.
- NRI is the **continuous** (category-free) NRI of Pencina et al. (Stat Med 2011) and IDI the integrated
  discrimination improvement of Pencina et al. (Stat Med 2008), with the standard errors and Wald CIs of
  R ``Hmisc::improveProb(x1 = old, x2 = new, y)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from scipy import stats as sp_stats

from mvi_tf.stats import _as_labels, _as_scores, _check_alpha, _delong_components, flat_dict

__all__ = [
    "AucDifferenceBootstrap",
    "NetBenefitBootstrap",
    "ReclassificationResult",
    "bootstrap_auc_difference",
    "bootstrap_net_benefit",
    "reclassification",
]


@dataclasses.dataclass(frozen=True)
class AucDifferenceBootstrap:
    """``AUC(a) - AUC(b)`` on the same patients with a stratified percentile bootstrap CI.

    Attributes
    ----------
    auc_a, auc_b, difference : float
        On the full sample.
    ci_low, ci_high : float
        Percentile interval of the resampled differences.
    n_boot, seed : int
        Resamples and the seed of ``numpy.random.default_rng``.
    alpha : float
        1 - confidence level.
    """

    auc_a: float
    auc_b: float
    difference: float
    ci_low: float
    ci_high: float
    n_boot: int
    seed: int
    alpha: float


@dataclasses.dataclass(frozen=True)
class NetBenefitBootstrap:
    """Net benefit per threshold probability with stratified percentile bootstrap CIs.

    Attributes
    ----------
    thresholds : numpy.ndarray
        Threshold probabilities.
    net_benefit, ci_low, ci_high : numpy.ndarray
        Net benefit of the model (as :func:`mvi_tf.stats.net_benefit`) and its CI.
    difference, difference_ci_low, difference_ci_high : numpy.ndarray or None
        Net benefit of the model minus that of the reference model on the same resamples, with its CI;
        None without a reference.
    n_boot, seed : int
    alpha : float
    """

    thresholds: np.ndarray
    net_benefit: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    difference: np.ndarray | None
    difference_ci_low: np.ndarray | None
    difference_ci_high: np.ndarray | None
    n_boot: int
    seed: int
    alpha: float


@dataclasses.dataclass(frozen=True)
class ReclassificationResult:
    """Continuous NRI and IDI of a new model over an old one, as ``Hmisc::improveProb``.

    Attributes
    ----------
    nri, nri_se, nri_ci, nri_p : float, float, tuple, float
        Continuous NRI ``(P(up | event) - P(down | event)) + (P(down | non-event) - P(up | non-event))``,
        where up/down means the new probability is higher/lower than the old one (ties count neither).
    nri_events, nri_nonevents : float
        The two components.
    idi, idi_se, idi_ci, idi_p : float, float, tuple, float
        ``mean(new - old | event) - mean(new - old | non-event)``.
    n_events, n_nonevents : int
    alpha : float
    """

    nri: float
    nri_se: float
    nri_ci: tuple[float, float]
    nri_p: float
    nri_events: float
    nri_nonevents: float
    idi: float
    idi_se: float
    idi_ci: tuple[float, float]
    idi_p: float
    n_events: int
    n_nonevents: int
    alpha: float

    def as_dict(self) -> dict:
        """Flat ``dict`` (CIs as ``*_ci_low`` / ``*_ci_high``) for tables and JSON."""
        return flat_dict(self)


# ---------------------------------------------------------------------------------------------------------
# Bootstrap
# ---------------------------------------------------------------------------------------------------------
def _check_boot(n_boot: int, seed: int) -> None:
    if not isinstance(n_boot, int | np.integer) or n_boot < 2:
        raise ValueError(f"n_boot must be an integer >= 2. Received: n_boot={n_boot!r}")
    if not isinstance(seed, int | np.integer):
        raise ValueError(f"seed must be an integer. Received: seed={seed!r}")


def _stratified_indices(labels: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """``(n_boot, N)`` row indices: cases drawn from the cases, controls from the controls."""
    rng = np.random.default_rng(seed)
    cases, controls = np.flatnonzero(labels), np.flatnonzero(~labels)
    draw_cases = cases[rng.integers(0, cases.size, (n_boot, cases.size))]
    draw_controls = controls[rng.integers(0, controls.size, (n_boot, controls.size))]
    return np.hstack([draw_cases, draw_controls])


def _percentile(values: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    low, high = np.quantile(values, [alpha / 2.0, 1.0 - alpha / 2.0], axis=0, method="linear")
    return low, high


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    return float(_delong_components(labels, scores)[0].mean())


def bootstrap_auc_difference(
    y_true: Sequence | np.ndarray,
    score_a: Sequence | np.ndarray,
    score_b: Sequence | np.ndarray,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> AucDifferenceBootstrap:
    """Stratified patient-level bootstrap CI of ``AUC(a) - AUC(b)`` measured on the same patients.

    R equivalent (same resampling scheme, other random numbers)::

        pROC::ci(pROC::roc.test(roc_a, roc_b, method = "bootstrap", boot.n = n_boot))  # difference
        # or: quantile(replicate(n_boot, {i <- c(sample(cases, replace = TRUE),
        #     sample(controls, replace = TRUE)); auc(y[i], a[i]) - auc(y[i], b[i])}), c(.025, .975))

    Parameters
    ----------
    y_true : array-like of shape (N,)
        1/True for MVI; both classes required.
    score_a, score_b : array-like of shape (N,)
        Scores of the two models for the same patients.
    n_boot : int, default 2000
        Number of resamples.
    seed : int, default 0
        Seed of the resampling.
    alpha : float, default 0.05
        1 - confidence level.

    Returns
    -------
    AucDifferenceBootstrap
    """
    _check_alpha(alpha)
    _check_boot(n_boot, seed)
    labels = _as_labels(y_true)
    a = _as_scores(score_a, labels.size, "score_a")
    b = _as_scores(score_b, labels.size, "score_b")
    index = _stratified_indices(labels, n_boot, seed)
    diffs = np.array([_auc(labels[i], a[i]) - _auc(labels[i], b[i]) for i in index])
    low, high = _percentile(diffs, alpha)
    auc_a, auc_b = _auc(labels, a), _auc(labels, b)
    return AucDifferenceBootstrap(
        auc_a=auc_a,
        auc_b=auc_b,
        difference=auc_a - auc_b,
        ci_low=float(low),
        ci_high=float(high),
        n_boot=int(n_boot),
        seed=int(seed),
        alpha=alpha,
    )


def _net_benefit(labels: np.ndarray, risk: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Net benefit per resample row and threshold (dcurves' rule: risk 0 is never treated)."""
    treated = (risk[..., None] >= thresholds) & (risk[..., None] > 0.0)
    events = labels[..., None]
    n = labels.shape[-1]
    tp = np.sum(treated & events, axis=-2)
    fp = np.sum(treated & ~events, axis=-2)
    return tp / n - fp / n * thresholds / (1.0 - thresholds)


def bootstrap_net_benefit(
    y_true: Sequence | np.ndarray,
    risk: Sequence | np.ndarray,
    thresholds: Sequence[float] | np.ndarray,
    reference: Sequence | np.ndarray | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> NetBenefitBootstrap:
    """Net benefit at each threshold probability with a stratified patient-level bootstrap CI, and the
    difference to a reference model on the same resamples.

    The point estimates equal :func:`mvi_tf.stats.net_benefit` (R ``dcurves::dca``), including its
    treatment of risks equal to 0 or 1.

    Parameters
    ----------
    y_true : array-like of shape (N,)
        1/True for MVI; both classes required (for the stratified resampling).
    risk : array-like of shape (N,)
        Predicted probabilities in [0, 1].
    thresholds : array-like
        Threshold probabilities in [0, 1).
    reference : array-like of shape (N,), optional
        Probabilities of the model to compare with (e.g. the radiological model).
    n_boot, seed, alpha
        As :func:`bootstrap_auc_difference`.

    Returns
    -------
    NetBenefitBootstrap
    """
    _check_alpha(alpha)
    _check_boot(n_boot, seed)
    labels = _as_labels(y_true)
    p = _as_scores(risk, labels.size, "risk")
    ref = None if reference is None else _as_scores(reference, labels.size, "reference")
    for name, values in (("risk", p), ("reference", ref)):
        if values is not None and (values.min() < 0.0 or values.max() > 1.0):
            index = int(np.flatnonzero((values < 0.0) | (values > 1.0))[0])
            raise ValueError(f"{name} must be a probability in [0, 1]. Received: {name}[{index}]={values[index]}")
    pt = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    if pt.ndim != 1 or pt.size == 0 or not np.all(np.isfinite(pt)) or pt.min() < 0.0 or pt.max() >= 1.0:
        raise ValueError(f"thresholds must be a non-empty list in [0, 1). Received: thresholds={pt.tolist()}")
    index = _stratified_indices(labels, n_boot, seed)
    boot = _net_benefit(labels[index], p[index], pt)
    low, high = _percentile(boot, alpha)
    diff = diff_low = diff_high = None
    if ref is not None:
        boot_diff = boot - _net_benefit(labels[index], ref[index], pt)
        diff = _net_benefit(labels, p, pt) - _net_benefit(labels, ref, pt)
        diff_low, diff_high = _percentile(boot_diff, alpha)
    return NetBenefitBootstrap(
        thresholds=pt,
        net_benefit=_net_benefit(labels, p, pt),
        ci_low=low,
        ci_high=high,
        difference=diff,
        difference_ci_low=diff_low,
        difference_ci_high=diff_high,
        n_boot=int(n_boot),
        seed=int(seed),
        alpha=alpha,
    )


# ---------------------------------------------------------------------------------------------------------
# NRI and IDI
# ---------------------------------------------------------------------------------------------------------
def _wald(estimate: float, se: float, alpha: float) -> tuple[tuple[float, float], float]:
    if not se > 0.0:
        return (float(estimate), float(estimate)), (1.0 if estimate == 0.0 else 0.0)
    half = float(sp_stats.norm.ppf(1.0 - alpha / 2.0)) * se
    return (estimate - half, estimate + half), float(2.0 * sp_stats.norm.sf(abs(estimate / se)))


def reclassification(
    y_true: Sequence | np.ndarray,
    prob_new: Sequence | np.ndarray,
    prob_old: Sequence | np.ndarray,
    alpha: float = 0.05,
) -> ReclassificationResult:
    """Continuous NRI and IDI of ``prob_new`` over ``prob_old``, with Wald CIs and two-sided p-values.

    H0: the new model does not move predicted risks of events up and of non-events down more often (NRI) or
    further (IDI) than the old one. R equivalent: ``Hmisc::improveProb(x1 = prob_old, x2 = prob_new, y)``;
    with ``d = new - old``, ``m`` events and ``n`` non-events:

    - ``NRI = (u_e - d_e) / m + (d_n - u_n) / n`` (``u``/``d`` counts of ``d > 0`` / ``d < 0``), variance
      ``(u_e + d_e) / m^2 - (u_e - d_e)^2 / m^3 + (u_n + d_n) / n^2 - (u_n - d_n)^2 / n^3``;
    - ``IDI = mean(d | event) - mean(d | non-event)``, variance ``var(d | event) / m + var(d | non-event) / n``.

    Parameters
    ----------
    y_true : array-like of shape (N,)
        1/True for MVI; at least two events and two non-events.
    prob_new, prob_old : array-like of shape (N,)
        Predicted probabilities in [0, 1] of the new and the old model for the same patients.
    alpha : float, default 0.05
        1 - confidence level.

    Returns
    -------
    ReclassificationResult
    """
    _check_alpha(alpha)
    labels = _as_labels(y_true)
    new = _as_scores(prob_new, labels.size, "prob_new")
    old = _as_scores(prob_old, labels.size, "prob_old")
    for name, values in (("prob_new", new), ("prob_old", old)):
        if values.min() < 0.0 or values.max() > 1.0:
            index = int(np.flatnonzero((values < 0.0) | (values > 1.0))[0])
            raise ValueError(f"{name} must be a probability in [0, 1]. Received: {name}[{index}]={values[index]}")
    m, n = int(labels.sum()), int((~labels).sum())
    if m < 2 or n < 2:
        raise ValueError(f"NRI/IDI need at least two events and two non-events. Received: events={m}, non-events={n}")
    d = new - old
    up_e, down_e = int(np.sum(d[labels] > 0)), int(np.sum(d[labels] < 0))
    up_n, down_n = int(np.sum(d[~labels] > 0)), int(np.sum(d[~labels] < 0))
    nri_e, nri_n = (up_e - down_e) / m, (down_n - up_n) / n
    var_nri = (up_e + down_e) / m**2 - (up_e - down_e) ** 2 / m**3 + (up_n + down_n) / n**2 - (
        up_n - down_n
    ) ** 2 / n**3
    idi = float(d[labels].mean() - d[~labels].mean())
    idi_se = float(np.sqrt(np.var(d[labels], ddof=1) / m + np.var(d[~labels], ddof=1) / n))
    nri, nri_se = nri_e + nri_n, float(np.sqrt(var_nri))
    nri_ci, nri_p = _wald(nri, nri_se, alpha)
    idi_ci, idi_p = _wald(idi, idi_se, alpha)
    return ReclassificationResult(
        nri=float(nri),
        nri_se=nri_se,
        nri_ci=nri_ci,
        nri_p=nri_p,
        nri_events=float(nri_e),
        nri_nonevents=float(nri_n),
        idi=idi,
        idi_se=idi_se,
        idi_ci=idi_ci,
        idi_p=idi_p,
        n_events=m,
        n_nonevents=n,
        alpha=alpha,
    )
