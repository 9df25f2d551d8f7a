"""Calibration of predicted MVI probabilities: does a predicted 62 % mean 62 %?

Pure functions returning frozen result objects, next to :mod:`mvi_tf.stats` (which holds discrimination).
The definitions follow R ``rms::val.prob`` and the terminology of Van Calster et al. ("Calibration: the
Achilles heel of predictive analytics", BMC Medicine 2019), as TRIPOD+AI (Collins et al., BMJ 2024) asks:

- **Calibration-in-the-large** (``intercept``): the intercept ``a`` of ``logit P(y = 1) = a + logit(p)``,
  i.e. a logistic model with ``logit(p)`` as offset (slope fixed at 1). 0 when the mean predicted risk is
  right; > 0 when the model under-predicts. R: ``glm(y ~ 1, offset = qlogis(p), family = binomial)``.
- **Calibration slope** (``slope``): ``b`` of the logistic recalibration ``logit P(y = 1) = a' + b logit(p)``.
  1 ideal; < 1 predictions too extreme (overfitting), > 1 too moderate. R: ``glm(y ~ qlogis(p), binomial)``,
  which is ``rms::val.prob``'s ``Slope``; its ``Intercept`` is ``a'`` of the same fit (here
  ``recalibration_intercept``), which is *not* calibration-in-the-large.
- **Brier score** ``mean((p - y)^2)`` (``val.prob``'s ``Brier``) and the **scaled Brier**
  ``1 - Brier / (ybar (1 - ybar))``: 1 perfect, 0 no better than predicting the prevalence for everyone.
- **O/E ratio** ``sum(y) / sum(p)``, with the CI ``exp(log(O/E) -/+ z / sqrt(O))`` (Poisson variance of the
  observed count, Debray et al., BMJ 2017).
- **E_avg, E_90, E_max**: mean, 90th percentile and maximum of ``|lowess(p) - p|`` with ``lowess(p, y,
  iter = 0)``, as ``val.prob``; E_avg is Austin & Steyerberg's integrated calibration index (ICI). The
  smoother is :func:`lowess_r`, R's ``lowess`` (span 2/3, ``delta`` 1 % of the range) without robustness
  iterations.

Predictions of exactly 0 or 1 have an infinite logit; like ``val.prob`` they are left out of the two
logistic fits (counted in ``n_excluded``, with a ``RuntimeWarning``) and kept for everything else.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence

import numpy as np
import statsmodels.api as sm
from scipy import special
from scipy import stats as sp_stats
from statsmodels.tools.sm_exceptions import PerfectSeparationError, PerfectSeparationWarning

from mvi_tf.stats import _as_labels, _as_scores, _check_alpha, clopper_pearson_ci, flat_dict

__all__ = [
    "CalibrationCurve",
    "CalibrationResult",
    "RecalibrationFit",
    "calibration",
    "calibration_curve",
    "logistic_recalibration",
    "lowess_r",
    "recalibrate",
]


@dataclasses.dataclass(frozen=True)
class RecalibrationFit:
    """Logistic recalibration ``logit P(y = 1) = intercept + slope * logit(p)`` fitted by maximum likelihood.

    Attributes
    ----------
    intercept, slope : float
        Coefficients; with ``fit_slope=False`` the slope is fixed at 1 and ``intercept`` is
        calibration-in-the-large.
    intercept_ci, slope_ci : tuple of float
        Wald ``(low, high)`` intervals; ``slope_ci`` is ``(1.0, 1.0)`` when the slope was fixed.
    fit_slope : bool
        Whether the slope was estimated.
    n : int
        Patients used (predictions of exactly 0 or 1 left out).
    """

    intercept: float
    intercept_ci: tuple[float, float]
    slope: float
    slope_ci: tuple[float, float]
    fit_slope: bool
    n: int


@dataclasses.dataclass(frozen=True)
class CalibrationResult:
    """Calibration of predicted probabilities on one cohort (definitions in the module docstring).

    Attributes
    ----------
    n, n_events : int
        Patients and MVI-positive patients.
    n_excluded : int
        Predictions of exactly 0 or 1, left out of the intercept and slope fits only.
    observed, expected : float
        Observed proportion ``mean(y)`` and mean predicted probability ``mean(p)``.
    intercept, intercept_ci : float, tuple
        Calibration-in-the-large with its Wald CI.
    slope, slope_ci : float, tuple
        Calibration slope with its Wald CI.
    recalibration_intercept : float
        Intercept of the slope fit (``rms::val.prob``'s ``Intercept``).
    brier, brier_scaled : float
        Brier score and scaled Brier score (NaN with a single class).
    oe_ratio, oe_ratio_ci : float, tuple
        Observed / expected events with its CI (NaN bounds with no events).
    e_avg, e_90, e_max : float
        Absolute differences between the lowess-smoothed observed risk and ``p``.
    alpha : float
        1 - confidence level.
    """

    n: int
    n_events: int
    n_excluded: int
    observed: float
    expected: float
    intercept: float
    intercept_ci: tuple[float, float]
    slope: float
    slope_ci: tuple[float, float]
    recalibration_intercept: float
    brier: float
    brier_scaled: float
    oe_ratio: float
    oe_ratio_ci: tuple[float, float]
    e_avg: float
    e_90: float
    e_max: float
    alpha: float

    def as_dict(self) -> dict:
        """Flat ``dict`` (each CI as ``*_ci_low`` / ``*_ci_high``) for tables and JSON."""
        return flat_dict(self)


@dataclasses.dataclass(frozen=True)
class CalibrationCurve:
    """Points of a calibration plot.

    Attributes
    ----------
    group_predicted, group_observed : numpy.ndarray
        Mean predicted probability and observed proportion per risk group (quantile groups of ``p``).
    group_n : numpy.ndarray
        Patients per group.
    group_ci_low, group_ci_high : numpy.ndarray
        Clopper-Pearson CI of each observed proportion.
    smooth_predicted, smooth_observed : numpy.ndarray
        The lowess curve (:func:`lowess_r`), sorted by predicted probability.
    predicted : numpy.ndarray
        Every prediction, for the histogram under the plot.
    """

    group_predicted: np.ndarray
    group_observed: np.ndarray
    group_n: np.ndarray
    group_ci_low: np.ndarray
    group_ci_high: np.ndarray
    smooth_predicted: np.ndarray
    smooth_observed: np.ndarray
    predicted: np.ndarray


# ---------------------------------------------------------------------------------------------------------
# Input checking
# ---------------------------------------------------------------------------------------------------------
def _as_probabilities(y_prob: Sequence | np.ndarray, n: int, name: str = "y_prob") -> np.ndarray:
    p = _as_scores(y_prob, n, name)
    bad = (p < 0.0) | (p > 1.0)
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name} must be a probability in [0, 1]. Received: {name}[{index}]={p[index]}")
    return p


def _finite_logit(labels: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """``(y, logit(p))`` without the predictions of exactly 0 or 1, and how many were left out."""
    keep = (p > 0.0) & (p < 1.0)
    excluded = int((~keep).sum())
    if excluded:
        warnings.warn(
            f"{excluded} predictions of exactly 0 or 1 left out of the logistic calibration "
            "(infinite logit), as rms::val.prob does.",
            RuntimeWarning,
            stacklevel=3,
        )
    return labels[keep].astype(np.float64), special.logit(p[keep]), excluded


# ---------------------------------------------------------------------------------------------------------
# Logistic recalibration
# ---------------------------------------------------------------------------------------------------------
def logistic_recalibration(
    y_true: Sequence | np.ndarray,
    y_prob: Sequence | np.ndarray,
    fit_slope: bool = True,
    alpha: float = 0.05,
) -> RecalibrationFit:
    """Fit ``logit P(y = 1) = a + b logit(p)`` (or ``a + logit(p)`` with ``fit_slope=False``).

    R equivalent::

        glm(y ~ qlogis(p), family = binomial)               # fit_slope = TRUE: calibration slope
        glm(y ~ 1, offset = qlogis(p), family = binomial)   # fit_slope = FALSE: calibration-in-the-large

    Fitted with ``statsmodels`` GLM (binomial, logit link, IRLS); Wald CIs.

    Parameters
    ----------
    y_true : array-like of shape (N,)
        1/True for MVI; both classes required.
    y_prob : array-like of shape (N,)
        Predicted probabilities in [0, 1]; exactly 0 or 1 are left out (``RuntimeWarning``).
    fit_slope : bool, default True
        Estimate the slope; otherwise fix it at 1 (``logit(p)`` as offset).
    alpha : float, default 0.05
        1 - confidence level.

    Returns
    -------
    RecalibrationFit

    Raises
    ------
    ValueError
        On invalid input, a single class among the usable patients, or perfect separation.
    """
    _check_alpha(alpha)
    labels = _as_labels(y_true)
    p = _as_probabilities(y_prob, labels.size)
    y, lp, _ = _finite_logit(labels, p)
    if y.size == 0 or y.min() == y.max():
        raise ValueError(
            "Logistic recalibration needs both classes among predictions strictly inside (0, 1). "
            f"Received: n={y.size}, events={int(y.sum())}"
        )
    if fit_slope and np.ptp(lp) == 0.0:
        raise ValueError(f"The calibration slope is not identifiable: every prediction equals {p[0]}.")
    exog = sm.add_constant(lp, has_constant="add") if fit_slope else np.ones((y.size, 1))
    offset = None if fit_slope else lp
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):  # df_resid 0 in tiny cohorts
        warnings.simplefilter("error", PerfectSeparationWarning)
        try:
            result = sm.GLM(y, exog, family=sm.families.Binomial(), offset=offset).fit()
        except (PerfectSeparationError, PerfectSeparationWarning) as err:
            raise ValueError(
                f"Logistic recalibration is not estimable: the predictions separate the outcomes perfectly "
                f"(n={y.size}, events={int(y.sum())})."
            ) from err
    ci = np.asarray(result.conf_int(alpha=alpha))
    return RecalibrationFit(
        intercept=float(result.params[0]),
        intercept_ci=(float(ci[0, 0]), float(ci[0, 1])),
        slope=float(result.params[1]) if fit_slope else 1.0,
        slope_ci=(float(ci[1, 0]), float(ci[1, 1])) if fit_slope else (1.0, 1.0),
        fit_slope=fit_slope,
        n=int(y.size),
    )


def recalibrate(y_prob: Sequence | np.ndarray, fit: RecalibrationFit) -> np.ndarray:
    """Apply a recalibration: ``expit(intercept + slope * logit(p))`` (0 and 1 stay 0 and 1)."""
    p = np.asarray(y_prob, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return special.expit(fit.intercept + fit.slope * special.logit(p))


# ---------------------------------------------------------------------------------------------------------
# Summary measures and the calibration plot
# ---------------------------------------------------------------------------------------------------------
def _local_fit(x: np.ndarray, y: np.ndarray, rw: np.ndarray, i: int, left: int, right: int) -> float:
    """R ``clowess``'s ``lowest``: tricube-weighted (times robustness weights ``rw``) local line at ``x[i]``
    over ``x[left:right + 1]``, taking in ties on the right; the observed ``y[i]`` when every weight is zero."""
    h = max(x[i] - x[left], x[right] - x[i])
    r = np.abs(x[left:] - x[i])
    inside = r <= 0.999 * h
    beyond = np.flatnonzero(~inside & (x[left:] > x[i]))
    stop = beyond[0] if beyond.size else r.size
    r, inside = r[:stop], inside[:stop]
    w = np.where(inside, np.where(r <= 0.001 * h, 1.0, (1.0 - (r / h) ** 3) ** 3 if h > 0 else 1.0), 0.0)
    w = w * rw[left : left + stop]
    if w.sum() <= 0.0:
        return float(y[i])
    w = w / w.sum()
    xs = x[left : left + stop]
    if h > 0.0:
        centre = float(np.sum(w * xs))
        spread = float(np.sum(w * (xs - centre) ** 2))
        if np.sqrt(spread) > 0.001 * (x[-1] - x[0]):
            w = w * ((x[i] - centre) / spread * (xs - centre) + 1.0)
    return float(np.sum(w * y[left : left + stop]))


def _lowess_pass(xs: np.ndarray, ys: np.ndarray, rw: np.ndarray, ns: int, delta: float) -> np.ndarray:
    """One smoothing pass over sorted ``xs``: local fits at points ``delta`` apart, linear interpolation
    between them, tied ``x`` sharing one fit."""
    n = xs.size
    fitted = np.empty(n)
    left, right, last, i = 0, ns - 1, -1, 0
    while True:
        while right < n - 1 and xs[i] - xs[left] > xs[right + 1] - xs[i]:
            left, right = left + 1, right + 1
        fitted[i] = _local_fit(xs, ys, rw, i, left, right)
        if last < i - 1:
            share = (xs[last + 1 : i] - xs[last]) / (xs[i] - xs[last])
            fitted[last + 1 : i] = share * fitted[i] + (1.0 - share) * fitted[last]
        last = i
        cut = xs[last] + delta
        i = last + 1
        while i < n and xs[i] <= cut:
            if xs[i] == xs[last]:
                fitted[i], last = fitted[last], i
            i += 1
        i = max(last + 1, i - 1)
        if last >= n - 1:
            return fitted


def lowess_r(
    x: Sequence | np.ndarray,
    y: Sequence | np.ndarray,
    f: float = 2.0 / 3.0,
    iterations: int = 0,
    delta: float | None = None,
) -> np.ndarray:
    """R ``lowess(x, y, f, iter = iterations, delta)``, fitted values in the order of ``x``.

    ``delta=None`` is R's default ``0.01 * diff(range(x))``: points closer than ``delta`` to the last fitted
    one are interpolated linearly instead of fitted. ``rms::val.prob`` smooths with ``iter = 0`` (the
    default here); R's own default is ``iter = 3`` robustness iterations (bisquare weights of the residuals
    scaled by 6 x their median absolute value).

    Follows the algorithm of R's ``clowess`` (Cleveland 1979). statsmodels' lowess is not used because it
    returns 0 for a neighbourhood of tied ``x`` (zero width) where R averages the ties, and the predicted
    risks of simple clinical models are often tied.
    """
    order = np.argsort(np.asarray(x, dtype=np.float64), kind="stable")
    xs, ys = np.asarray(x, dtype=np.float64)[order], np.asarray(y, dtype=np.float64)[order]
    n = xs.size
    if n < 2:
        return ys.copy()
    ns = max(2, min(n, int(f * n + 1e-7)))
    delta = 0.01 * (xs[-1] - xs[0]) if delta is None else float(delta)
    rw = np.ones(n)
    for step in range(iterations + 1):
        fitted = _lowess_pass(xs, ys, rw, ns, delta)
        if step == iterations:
            break
        residual = np.abs(ys - fitted)
        cmad = 6.0 * float(np.median(residual))
        if cmad < 1e-7 * float(residual.mean()):
            break
        rw = np.where(residual <= 0.001 * cmad, 1.0,
                      np.where(residual > 0.999 * cmad, 0.0, (1.0 - (residual / cmad) ** 2) ** 2))
    out = np.empty(n)
    out[order] = fitted
    return out


def _smoothed(labels: np.ndarray, p: np.ndarray) -> np.ndarray:
    """R ``lowess(p, y, iter = 0)`` evaluated at every ``p``, as ``rms::val.prob``."""
    return lowess_r(p, labels.astype(np.float64))


def _oe_ratio(observed: int, expected: float, alpha: float) -> tuple[float, tuple[float, float]]:
    ratio = observed / expected
    if observed == 0:
        return ratio, (float("nan"), float("nan"))
    half = float(sp_stats.norm.ppf(1.0 - alpha / 2.0)) / np.sqrt(observed)
    return ratio, (float(ratio * np.exp(-half)), float(ratio * np.exp(half)))


def _try_fit(
    labels: np.ndarray, p: np.ndarray, fit_slope: bool, alpha: float
) -> tuple[RecalibrationFit | None, str]:
    """A logistic fit on predictions strictly inside (0, 1), or ``(None, reason)`` when undefined."""
    inside = (p > 0.0) & (p < 1.0)
    try:
        return logistic_recalibration(labels[inside], p[inside], fit_slope=fit_slope, alpha=alpha), ""
    except ValueError as err:
        return None, str(err)


def calibration(
    y_true: Sequence | np.ndarray, y_prob: Sequence | np.ndarray, alpha: float = 0.05
) -> CalibrationResult:
    """Calibration-in-the-large, slope, Brier, scaled Brier, O/E and E_avg/E_90/E_max of predictions.

    R equivalent (``rms::val.prob(p, y)`` for ``Slope``, ``Intercept`` of the slope fit, ``Brier``,
    ``Eavg``, ``E90``, ``Emax``) plus ``glm(y ~ 1, offset = qlogis(p), family = binomial)`` for
    calibration-in-the-large. Definitions in the module docstring.

    Parameters
    ----------
    y_true : array-like of shape (N,)
        1/True for MVI. Both classes are needed for the intercept, slope and scaled Brier; with a single
        class those are NaN (``RuntimeWarning``) and the rest is still reported.
    y_prob : array-like of shape (N,)
        Predicted probabilities in [0, 1].
    alpha : float, default 0.05
        1 - confidence level.

    Returns
    -------
    CalibrationResult
    """
    _check_alpha(alpha)
    labels = _as_labels(y_true, require_both=False)
    p = _as_probabilities(y_prob, labels.size)
    nan, nan2 = float("nan"), (float("nan"), float("nan"))
    _, _, n_excluded = _finite_logit(labels, p)
    citl, why = _try_fit(labels, p, fit_slope=False, alpha=alpha)
    slope, why_slope = _try_fit(labels, p, fit_slope=True, alpha=alpha)
    for name, fit, reason in (("intercept", citl, why), ("slope", slope, why_slope)):
        if fit is None:
            warnings.warn(f"Calibration {name} undefined: {reason}", RuntimeWarning, stacklevel=2)
    prevalence = float(labels.mean())
    brier = float(np.mean((p - labels) ** 2))
    spread = prevalence * (1.0 - prevalence)
    oe, oe_ratio_ci = _oe_ratio(int(labels.sum()), float(p.sum()), alpha) if p.sum() > 0 else (nan, nan2)
    error = np.abs(_smoothed(labels, p) - p) if np.ptp(p) > 0 else np.abs(prevalence - p)
    return CalibrationResult(
        n=int(labels.size),
        n_events=int(labels.sum()),
        n_excluded=n_excluded,
        observed=prevalence,
        expected=float(p.mean()),
        intercept=citl.intercept if citl else nan,
        intercept_ci=citl.intercept_ci if citl else nan2,
        slope=slope.slope if slope else nan,
        slope_ci=slope.slope_ci if slope else nan2,
        recalibration_intercept=slope.intercept if slope else nan,
        brier=brier,
        brier_scaled=float(1.0 - brier / spread) if spread > 0 else nan,
        oe_ratio=float(oe),
        oe_ratio_ci=oe_ratio_ci,
        e_avg=float(error.mean()),
        e_90=float(np.quantile(error, 0.9)),
        e_max=float(error.max()),
        alpha=alpha,
    )


def calibration_curve(
    y_true: Sequence | np.ndarray, y_prob: Sequence | np.ndarray, n_groups: int = 10, alpha: float = 0.05
) -> CalibrationCurve:
    """Grouped observed proportions (with exact CIs) and a lowess curve for a calibration plot.

    Patients are grouped by quantiles of ``p`` (``n_groups`` groups of near-equal size, ties kept together,
    fewer groups when there are fewer distinct predictions), like ``rms::val.prob(g = n_groups)``.

    Parameters
    ----------
    y_true : array-like of shape (N,)
        1/True for MVI (a single class is allowed).
    y_prob : array-like of shape (N,)
        Predicted probabilities in [0, 1].
    n_groups : int, default 10
        Number of risk groups (>= 1).
    alpha : float, default 0.05
        1 - confidence level of the per-group Clopper-Pearson intervals.

    Returns
    -------
    CalibrationCurve
    """
    _check_alpha(alpha)
    if not isinstance(n_groups, int | np.integer) or n_groups < 1:
        raise ValueError(f"n_groups must be a positive integer. Received: n_groups={n_groups!r}")
    labels = _as_labels(y_true, require_both=False)
    p = _as_probabilities(y_prob, labels.size)
    edges = np.unique(np.quantile(p, np.linspace(0.0, 1.0, n_groups + 1)[1:-1]))
    group = np.searchsorted(edges, p, side="right")
    rows = []
    for g in np.unique(group):
        member = group == g
        events, total = int(labels[member].sum()), int(member.sum())
        low, high = clopper_pearson_ci(events, total, alpha)
        rows.append((p[member].mean(), events / total, total, low, high))
    table = np.asarray(rows, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    smooth = _smoothed(labels, p)[order] if np.ptp(p) > 0 else np.full(p.size, labels.mean())
    return CalibrationCurve(
        group_predicted=table[:, 0],
        group_observed=table[:, 1],
        group_n=table[:, 2].astype(int),
        group_ci_low=table[:, 3],
        group_ci_high=table[:, 4],
        smooth_predicted=p[order],
        smooth_observed=smooth,
        predicted=p,
    )
