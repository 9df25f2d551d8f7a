"""Diagnostic-accuracy statistics: ROC/AUC with DeLong CIs, paired DeLong test, Youden threshold,
sensitivity/specificity with exact CIs, McNemar's test and decision-curve net benefit.

Pure numpy/scipy functions returning small frozen result objects. Each function names the R call it
reproduces (pROC, stats, dcurves); the tests pin the values to those references.

Conventions shared by every function:

- ``y_true`` holds the reference standard (1/True = MVI present): 0/1 integers or floats, or booleans.
- Scores are oriented so that a HIGHER score means MVI (pROC ``direction = "<"``: controls < cases). The
  direction is never flipped automatically, so an inverted model shows an AUC below 0.5 instead of hiding it.
- Degenerate input (a single class, NaN or infinite scores, length mismatch) raises ``ValueError`` quoting the
  offending value.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats as sp_stats


def flat_dict(result) -> dict:
    """A result dataclass as a flat ``dict`` for tables and JSON: each ``(low, high)`` interval field ``x_ci``
    becomes ``x_ci_low`` and ``x_ci_high``."""
    out: dict = {}
    for key, value in dataclasses.asdict(result).items():
        if isinstance(value, tuple):
            out[f"{key}_low"], out[f"{key}_high"] = value
        else:
            out[key] = value
    return out

__all__ = [
    "AucResult",
    "ClassificationMetrics",
    "DeLongTestResult",
    "IndependentAucTestResult",
    "McNemarResult",
    "NetBenefitResult",
    "RocCurve",
    "YoudenResult",
    "classification_metrics",
    "clopper_pearson_ci",
    "delong_test",
    "independent_auc_test",
    "mcnemar_test",
    "net_benefit",
    "roc_auc_ci",
    "roc_curve",
    "youden_threshold",
]


# ---------------------------------------------------------------------------------------------------------
# Result objects
# ---------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class AucResult:
    """AUC with its DeLong variance and a Wald confidence interval.

    Attributes
    ----------
    auc : float
        Area under the empirical ROC curve (ties count one half).
    variance : float
        DeLong variance of the AUC.
    ci_low, ci_high : float
        ``auc -/+ z_{1-alpha/2} * sqrt(variance)``, clipped to [0, 1] as pROC does.
    n_positive, n_negative : int
        Number of cases (MVI) and controls.
    alpha : float
        1 - confidence level.
    """

    auc: float
    variance: float
    ci_low: float
    ci_high: float
    n_positive: int
    n_negative: int
    alpha: float


@dataclasses.dataclass(frozen=True)
class DeLongTestResult:
    """Paired DeLong test of two correlated AUCs.

    Attributes
    ----------
    auc_a, auc_b : float
        AUC of each score on the same patients.
    z : float
        ``(auc_a - auc_b) / sqrt(var(auc_a - auc_b))``.
    p_value : float
        Two-sided p-value from the standard normal.
    variance : float
        DeLong variance of the difference ``auc_a - auc_b``.
    covariance : float
        DeLong covariance of the two AUCs.
    """

    auc_a: float
    auc_b: float
    z: float
    p_value: float
    variance: float
    covariance: float


@dataclasses.dataclass(frozen=True)
class IndependentAucTestResult:
    """Test of equal AUCs across independent groups of patients (e.g. subgroup strata).

    Attributes
    ----------
    statistic : float
        Chi-square statistic with ``df`` degrees of freedom (``z ** 2`` for two groups).
    df : int
        Number of groups minus one.
    p_value : float
        Upper-tail chi-square p-value (two-sided for two groups).
    z : float
        ``(auc_0 - auc_1) / sqrt(var_0 + var_1)`` for two groups, NaN otherwise.
    """

    statistic: float
    df: int
    p_value: float
    z: float


@dataclasses.dataclass(frozen=True)
class YoudenResult:
    """Threshold maximising Youden's J = sensitivity + specificity - 1.

    Attributes
    ----------
    threshold : float
        pROC-style threshold: the midpoint between two adjacent distinct observed scores. A patient is
        predicted positive when ``score >= threshold``.
    sensitivity, specificity : float
        At that threshold on the data it was chosen on.
    youden_index : float
        ``sensitivity + specificity - 1``.
    """

    threshold: float
    sensitivity: float
    specificity: float
    youden_index: float


@dataclasses.dataclass(frozen=True)
class RocCurve:
    """Empirical ROC curve at every pROC threshold (``-inf``, midpoints, ``+inf``), ascending thresholds.

    Attributes
    ----------
    thresholds, sensitivity, specificity : numpy.ndarray
        Same length; predicted positive when ``score >= threshold``.
    """

    thresholds: np.ndarray
    sensitivity: np.ndarray
    specificity: np.ndarray

    @property
    def fpr(self) -> np.ndarray:
        """False positive rate, ``1 - specificity``."""
        return 1.0 - self.specificity


@dataclasses.dataclass(frozen=True)
class ClassificationMetrics:
    """Sensitivity, specificity, accuracy, PPV and NPV at a fixed threshold, each with an exact CI.

    Every ``*_ci`` is a ``(low, high)`` Clopper-Pearson interval. A proportion whose denominator is zero
    (e.g. PPV when nobody is predicted positive) is NaN with NaN bounds.
    """

    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int
    sensitivity: float
    sensitivity_ci: tuple[float, float]
    specificity: float
    specificity_ci: tuple[float, float]
    accuracy: float
    accuracy_ci: tuple[float, float]
    ppv: float
    ppv_ci: tuple[float, float]
    npv: float
    npv_ci: tuple[float, float]
    alpha: float


@dataclasses.dataclass(frozen=True)
class McNemarResult:
    """McNemar's test of marginal homogeneity of a paired 2x2 table.

    Attributes
    ----------
    statistic : float
        Chi-square statistic (1 df), or ``min(b, c)`` for the exact test.
    p_value : float
        Two-sided p-value.
    b, c : int
        The discordant cells ``table[0][1]`` and ``table[1][0]``.
    exact, correction : bool
        Which variant produced the result.
    """

    statistic: float
    p_value: float
    b: int
    c: int
    exact: bool
    correction: bool


@dataclasses.dataclass(frozen=True)
class NetBenefitResult:
    """Decision-curve net benefit per threshold probability.

    Attributes
    ----------
    thresholds : numpy.ndarray
        Threshold probabilities ``pt``.
    model : numpy.ndarray
        Net benefit of treating patients whose risk is ``>= pt``.
    treat_all : numpy.ndarray
        Net benefit of treating everybody.
    treat_none : numpy.ndarray
        Zeros: treating nobody.
    prevalence : float
        Proportion of cases.
    """

    thresholds: np.ndarray
    model: np.ndarray
    treat_all: np.ndarray
    treat_none: np.ndarray
    prevalence: float

    @property
    def net_benefit(self) -> np.ndarray:
        """Alias of ``model``: the model's net benefit per threshold."""
        return self.model


# ---------------------------------------------------------------------------------------------------------
# Input checking
# ---------------------------------------------------------------------------------------------------------
def _as_labels(y_true: Sequence | np.ndarray, require_both: bool = True) -> np.ndarray:
    """Return ``y_true`` as a boolean array, rejecting anything but 0/1/True/False."""
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(f"y_true must be one-dimensional. Received: shape={y.shape}")
    if y.size == 0:
        raise ValueError("y_true is empty. Received: y_true=[]")
    if y.dtype == bool:
        labels = y
    elif np.issubdtype(y.dtype, np.number):
        bad = ~np.isin(y, (0, 1))
        if bad.any():
            index = int(np.flatnonzero(bad)[0])
            raise ValueError(f"y_true must hold 0/1 or booleans. Received: y_true[{index}]={y[index]!r}")
        labels = y.astype(bool)
    else:
        raise ValueError(f"y_true must hold 0/1 or booleans. Received: dtype={y.dtype}, y_true[0]={y[0]!r}")
    if require_both and (labels.all() or not labels.any()):
        only = int(labels[0])
        raise ValueError(
            f"y_true holds a single class (every value is {only}, n={labels.size}); "
            "both cases and controls are needed."
        )
    return labels


def _as_scores(y_score: Sequence | np.ndarray, n: int, name: str = "y_score") -> np.ndarray:
    """Return ``y_score`` as a finite float64 array of length ``n``."""
    s = np.asarray(y_score, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional. Received: shape={s.shape}")
    if s.size != n:
        raise ValueError(
            f"{name} and y_true differ in length. Received: len({name})={s.size}, len(y_true)={n}"
        )
    bad = ~np.isfinite(s)
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name} must be finite. Received: {name}[{index}]={s[index]}")
    return s


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1). Received: alpha={alpha}")


# ---------------------------------------------------------------------------------------------------------
# DeLong (Sun & Xu 2014 fast algorithm)
# ---------------------------------------------------------------------------------------------------------
def _delong_components(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Structural components ``V10`` (one per case) and ``V01`` (one per control) of the AUC.

    With midranks (ties share the mean rank) of the cases within the cases (``tx``), the controls within the
    controls (``ty``) and everyone together (``tz``), Sun & Xu (2014) give
    ``V10_i = (tz_i - tx_i) / n`` and ``V01_j = 1 - (tz_j - ty_j) / m`` for ``m`` cases and ``n`` controls,
    which equal DeLong's placement values ``mean_j psi(X_i, Y_j)`` with ``psi = 1, 1/2, 0`` for ``>, =, <``.
    """
    cases, controls = scores[labels], scores[~labels]
    m, n = cases.size, controls.size
    tz = sp_stats.rankdata(np.concatenate([cases, controls]), method="average")
    tx = sp_stats.rankdata(cases, method="average")
    ty = sp_stats.rankdata(controls, method="average")
    v10 = (tz[:m] - tx) / n
    v01 = 1.0 - (tz[m:] - ty) / m
    return v10, v01


def roc_auc_ci(
    y_true: Sequence | np.ndarray, y_score: Sequence | np.ndarray, alpha: float = 0.05
) -> AucResult:
    """AUC with DeLong variance and confidence interval, as R pROC.

    R equivalent::

        r <- pROC::roc(response, predictor, levels = c(0, 1), direction = "<")
        pROC::auc(r); pROC::var(r, method = "delong"); pROC::ci.auc(r, method = "delong")

    The variance is ``var(V10) / m + var(V01) / n`` (sample variances, ``ddof=1``) from the DeLong structural
    components, computed with the Sun & Xu midrank algorithm in O(N log N). The CI is the Wald interval
    ``auc -/+ qnorm(1 - alpha/2) * sqrt(variance)`` without transformation, clipped to [0, 1].

    Parameters
    ----------
    y_true : array-like of shape (N,)
        1/True for MVI, 0/False otherwise; both classes required, at least two of each for a variance.
    y_score : array-like of shape (N,)
        Finite scores, higher meaning MVI.
    alpha : float, default 0.05
        1 - confidence level.

    Returns
    -------
    AucResult
    """
    _check_alpha(alpha)
    labels = _as_labels(y_true)
    scores = _as_scores(y_score, labels.size)
    m, n = int(labels.sum()), int((~labels).sum())
    if m < 2 or n < 2:
        raise ValueError(
            f"DeLong variance needs at least two cases and two controls. Received: cases={m}, controls={n}"
        )
    v10, v01 = _delong_components(labels, scores)
    auc = float(v10.mean())
    variance = float(np.var(v10, ddof=1) / m + np.var(v01, ddof=1) / n)
    half = float(sp_stats.norm.ppf(1.0 - alpha / 2.0)) * np.sqrt(variance)
    return AucResult(
        auc=auc,
        variance=variance,
        ci_low=float(max(0.0, auc - half)),
        ci_high=float(min(1.0, auc + half)),
        n_positive=m,
        n_negative=n,
        alpha=alpha,
    )


def delong_test(
    y_true: Sequence | np.ndarray,
    score_a: Sequence | np.ndarray,
    score_b: Sequence | np.ndarray,
) -> DeLongTestResult:
    """Paired two-sided DeLong test of two AUCs measured on the same patients, as pROC ``roc.test``.

    H0: the two ROC curves have equal AUC. HA: the AUCs differ (two-sided).

    R equivalent::

        pROC::roc.test(pROC::roc(response, score_a, direction = "<"),
                       pROC::roc(response, score_b, direction = "<"), method = "delong", paired = TRUE)

    ``z = (auc_a - auc_b) / sqrt(S_aa + S_bb - 2 S_ab)`` where ``S = cov(V10) / m + cov(V01) / n`` is the
    DeLong covariance matrix of the two AUCs.

    Zero variance of the difference follows pROC's ``delong.paired.test``: when the two AUCs are equal as well
    (the same scores twice, or two scores that order every case-control pair identically) ``0 / 0`` is
    read as no difference, ``z = 0`` and ``p = 1``. Unequal AUCs with zero variance give ``z = +-inf`` and
    ``p = 0`` as in R, with a ``RuntimeWarning``.

    Parameters
    ----------
    y_true : array-like of shape (N,)
        1/True for MVI.
    score_a, score_b : array-like of shape (N,)
        Scores of the two models for the same patients, in the same order.

    Returns
    -------
    DeLongTestResult
    """
    labels = _as_labels(y_true)
    a = _as_scores(score_a, labels.size, "score_a")
    b = _as_scores(score_b, labels.size, "score_b")
    m, n = int(labels.sum()), int((~labels).sum())
    if m < 2 or n < 2:
        raise ValueError(
            f"DeLong test needs at least two cases and two controls. Received: cases={m}, controls={n}"
        )
    v10_a, v01_a = _delong_components(labels, a)
    v10_b, v01_b = _delong_components(labels, b)
    s = np.cov(np.vstack([v10_a, v10_b]), ddof=1) / m + np.cov(np.vstack([v01_a, v01_b]), ddof=1) / n
    auc_a, auc_b = float(v10_a.mean()), float(v10_b.mean())
    variance = float(s[0, 0] + s[1, 1] - 2.0 * s[0, 1])
    if variance > 0.0:
        z = (auc_a - auc_b) / np.sqrt(variance)
    elif auc_a == auc_b:
        z, variance = 0.0, 0.0  # pROC: "no difference between theta's produces a NaN" -> Z = 0
    else:
        warnings.warn(
            f"The AUC difference has zero variance but auc_a={auc_a} != auc_b={auc_b}; z is infinite.",
            RuntimeWarning,
            stacklevel=2,
        )
        z, variance = float(np.sign(auc_a - auc_b) * np.inf), 0.0
    p = float(2.0 * sp_stats.norm.sf(abs(z)))
    return DeLongTestResult(
        auc_a=auc_a, auc_b=auc_b, z=float(z), p_value=p, variance=variance, covariance=float(s[0, 1])
    )


def independent_auc_test(
    aucs: Sequence[float] | np.ndarray, variances: Sequence[float] | np.ndarray
) -> IndependentAucTestResult:
    """Test whether AUCs measured on independent groups of patients are equal.

    H0: all groups share one AUC. HA: at least one differs (two-sided for two groups).

    With AUC vector ``a`` and (diagonal, the groups being independent) DeLong covariance ``V``, the contrasts
    ``L a`` with ``L = [I_{k-1} | -1]`` give ``Q = (L a)' (L V L')^{-1} (L a) ~ chi2(k - 1)``. For two groups
    ``Q = z ** 2`` with ``z = (a_0 - a_1) / sqrt(v_0 + v_1)``, which is pROC's unpaired DeLong test::

        pROC::roc.test(roc_group0, roc_group1, method = "delong", paired = FALSE)

    Parameters
    ----------
    aucs, variances : array-like of shape (k,)
        AUC and DeLong variance per group (e.g. from :func:`roc_auc_ci`), ``k >= 2``.

    Returns
    -------
    IndependentAucTestResult
        NaN statistic and p-value (with a ``RuntimeWarning``) when ``L V L'`` is singular, e.g. two groups
        that both have zero variance.
    """
    a = np.asarray(aucs, dtype=np.float64)
    v = np.asarray(variances, dtype=np.float64)
    if a.ndim != 1 or a.size < 2 or v.shape != a.shape:
        raise ValueError(
            "Need at least two AUCs with one variance each. "
            f"Received: aucs={a.tolist()}, variances={v.tolist()}"
        )
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(v))) or np.any(v < 0):
        raise ValueError(
            "AUCs and variances must be finite, variances >= 0. "
            f"Received: aucs={a.tolist()}, variances={v.tolist()}"
        )
    k = a.size
    contrast = np.hstack([np.eye(k - 1), -np.ones((k - 1, 1))])
    diff = contrast @ a
    cov = contrast @ np.diag(v) @ contrast.T
    if np.linalg.matrix_rank(cov) < k - 1:
        warnings.warn(
            f"AUC contrasts have a singular covariance (variances={v.tolist()}); the test is undefined.",
            RuntimeWarning,
            stacklevel=2,
        )
        return IndependentAucTestResult(float("nan"), k - 1, float("nan"), float("nan"))
    statistic = float(diff @ np.linalg.solve(cov, diff))
    z = float((a[0] - a[1]) / np.sqrt(v[0] + v[1])) if k == 2 else float("nan")
    return IndependentAucTestResult(
        statistic=statistic, df=k - 1, p_value=float(sp_stats.chi2.sf(statistic, df=k - 1)), z=z
    )


# ---------------------------------------------------------------------------------------------------------
# ROC curve and Youden threshold
# ---------------------------------------------------------------------------------------------------------
def roc_curve(y_true: Sequence | np.ndarray, y_score: Sequence | np.ndarray) -> RocCurve:
    """Empirical ROC curve at pROC's thresholds.

    R equivalent: ``pROC::coords(pROC::roc(response, predictor, direction = "<"), "all")``.

    Thresholds are ``-inf``, the midpoints between adjacent distinct observed scores, and ``+inf``; a patient
    is positive when ``score >= threshold``.

    Parameters
    ----------
    y_true : array-like of shape (N,)
        1/True for MVI; both classes required.
    y_score : array-like of shape (N,)
        Finite scores, higher meaning MVI.

    Returns
    -------
    RocCurve
    """
    labels = _as_labels(y_true)
    scores = _as_scores(y_score, labels.size)
    distinct = np.unique(scores)
    thresholds = np.concatenate([[-np.inf], (distinct[:-1] + distinct[1:]) / 2.0, [np.inf]])
    cases = np.sort(scores[labels])
    controls = np.sort(scores[~labels])
    # Number of cases with score >= t, and of controls with score < t, for every threshold at once.
    tp = cases.size - np.searchsorted(cases, thresholds, side="left")
    tn = np.searchsorted(controls, thresholds, side="left")
    return RocCurve(
        thresholds=thresholds,
        sensitivity=tp / cases.size,
        specificity=tn / controls.size,
    )


def youden_threshold(y_true: Sequence | np.ndarray, y_score: Sequence | np.ndarray) -> YoudenResult:
    """Threshold of maximal Youden index, reported as pROC does.

    R equivalent::

        pROC::coords(pROC::roc(response, predictor, direction = "<"), "best", best.method = "youden",
                     ret = c("threshold", "sensitivity", "specificity"))

    The threshold is the midpoint between the two adjacent distinct observed scores that bracket the cut, so
    applying it to new data with ``score >= threshold`` is unambiguous. When several thresholds tie for the
    maximum (pROC returns all of them) the lowest one, i.e. the most sensitive, is returned.

    Parameters
    ----------
    y_true : array-like of shape (N,)
        1/True for MVI; both classes required.
    y_score : array-like of shape (N,)
        Finite scores, higher meaning MVI.

    Returns
    -------
    YoudenResult
    """
    curve = roc_curve(y_true, y_score)
    j = curve.sensitivity + curve.specificity - 1.0
    best = int(np.flatnonzero(np.isclose(j, j.max(), rtol=0.0, atol=1e-12))[0])
    return YoudenResult(
        threshold=float(curve.thresholds[best]),
        sensitivity=float(curve.sensitivity[best]),
        specificity=float(curve.specificity[best]),
        youden_index=float(j[best]),
    )


# ---------------------------------------------------------------------------------------------------------
# Proportions at a threshold
# ---------------------------------------------------------------------------------------------------------
def clopper_pearson_ci(successes: int, total: int, alpha: float = 0.05) -> tuple[float, float]:
    """Exact (Clopper-Pearson) confidence interval of a binomial proportion.

    R equivalent: ``binom.test(successes, total, conf.level = 1 - alpha)$conf.int``.

    ``low = Beta(alpha/2; x, n - x + 1)`` (0 when ``x = 0``) and ``high = Beta(1 - alpha/2; x + 1, n - x)``
    (1 when ``x = n``). Returns ``(nan, nan)`` when ``total == 0``.
    """
    _check_alpha(alpha)
    if successes < 0 or total < 0 or successes > total:
        raise ValueError(f"Need 0 <= successes <= total. Received: successes={successes}, total={total}")
    if total == 0:
        return float("nan"), float("nan")
    low = 0.0 if successes == 0 else float(sp_stats.beta.ppf(alpha / 2.0, successes, total - successes + 1))
    high = (
        1.0
        if successes == total
        else float(sp_stats.beta.ppf(1.0 - alpha / 2.0, successes + 1, total - successes))
    )
    return low, high


def _proportion(successes: int, total: int, alpha: float) -> tuple[float, tuple[float, float]]:
    if total == 0:
        return float("nan"), (float("nan"), float("nan"))
    return successes / total, clopper_pearson_ci(successes, total, alpha)


def classification_metrics(
    y_true: Sequence | np.ndarray,
    y_score: Sequence | np.ndarray,
    threshold: float,
    alpha: float = 0.05,
) -> ClassificationMetrics:
    """Sensitivity, specificity, accuracy, PPV and NPV at a fixed threshold, with exact 95% CIs.

    A patient is predicted positive when ``score >= threshold`` (the convention of :func:`youden_threshold`).
    Each proportion gets a Clopper-Pearson interval (R ``binom.test(x, n)$conf.int``), which is conservative
    and stays inside [0, 1] at 0% and 100%. PPV or NPV with an empty denominator (nobody predicted positive,
    or negative) is NaN with a ``RuntimeWarning``.

    R equivalent (epiR)::

        epiR::epi.tests(table(factor(score >= threshold, c(TRUE, FALSE)),
                              factor(response == 1, c(TRUE, FALSE))), method = "clopper-pearson")

    Parameters
    ----------
    y_true : array-like of shape (N,)
        1/True for MVI; both classes required.
    y_score : array-like of shape (N,)
        Finite scores, higher meaning MVI.
    threshold : float
        Decision threshold, typically the Youden threshold of the training data.
    alpha : float, default 0.05
        1 - confidence level.

    Returns
    -------
    ClassificationMetrics
    """
    _check_alpha(alpha)
    labels = _as_labels(y_true)
    scores = _as_scores(y_score, labels.size)
    if np.isnan(threshold):
        raise ValueError(f"threshold must be a number. Received: threshold={threshold}")
    predicted = scores >= threshold
    tp = int(np.sum(predicted & labels))
    fp = int(np.sum(predicted & ~labels))
    tn = int(np.sum(~predicted & ~labels))
    fn = int(np.sum(~predicted & labels))
    sen, sen_ci = _proportion(tp, tp + fn, alpha)
    spe, spe_ci = _proportion(tn, tn + fp, alpha)
    acc, acc_ci = _proportion(tp + tn, labels.size, alpha)
    ppv, ppv_ci = _proportion(tp, tp + fp, alpha)
    npv, npv_ci = _proportion(tn, tn + fn, alpha)
    for name, denominator in (("PPV", tp + fp), ("NPV", tn + fn)):
        if denominator == 0:
            side = "positive" if name == "PPV" else "negative"
            warnings.warn(
                f"{name} is undefined (NaN): no patient predicted {side} at threshold={threshold}.",
                RuntimeWarning,
                stacklevel=2,
            )
    return ClassificationMetrics(
        threshold=float(threshold),
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        sensitivity=sen,
        sensitivity_ci=sen_ci,
        specificity=spe,
        specificity_ci=spe_ci,
        accuracy=acc,
        accuracy_ci=acc_ci,
        ppv=ppv,
        ppv_ci=ppv_ci,
        npv=npv,
        npv_ci=npv_ci,
        alpha=alpha,
    )


# ---------------------------------------------------------------------------------------------------------
# McNemar
# ---------------------------------------------------------------------------------------------------------
def mcnemar_test(
    table: Sequence[Sequence[int]] | np.ndarray, exact: bool = False, correction: bool = True
) -> McNemarResult:
    """McNemar's test for paired binary outcomes (e.g. two models' correct/incorrect calls).

    For a 2x2 table ``[[a, b], [c, d]]`` (rows: model A correct/incorrect, columns: model B correct/incorrect)
    only the discordant cells ``b`` and ``c`` matter.

    H0: ``P(b) = P(c)`` (marginal homogeneity: both models have the same proportion correct).
    HA: ``P(b) != P(c)`` (two-sided).

    - ``exact=False``: ``(|b - c| - k)^2 / (b + c) ~ chi2(1)``, ``k = 1`` with ``correction`` else 0.
      R: ``mcnemar.test(matrix(c(a, c, b, d), nrow = 2), correct = correction)``. With ``b + c = 0`` the
      statistic is undefined: NaN with a ``RuntimeWarning`` (R also returns NaN).
    - ``exact=True``: the two-sided binomial test of ``b`` successes in ``b + c`` trials with p = 1/2;
      the statistic is ``min(b, c)``. R: ``binom.test(b, b + c, 0.5)``.

    Parameters
    ----------
    table : array-like of shape (2, 2)
        Non-negative integer counts.
    exact : bool, default False
        Use the exact binomial test.
    correction : bool, default True
        Continuity correction of the chi-square statistic (ignored when ``exact``).

    Returns
    -------
    McNemarResult
    """
    try:
        t = np.asarray(table, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"table must be a 2x2 array of counts. Received: table={table!r}") from err
    if t.shape != (2, 2):
        raise ValueError(f"table must be 2x2. Received: shape={t.shape}, table={np.asarray(table).tolist()}")
    if not np.all(np.isfinite(t)) or np.any(t < 0) or np.any(t != np.round(t)):
        raise ValueError(f"table must hold non-negative integer counts. Received: table={t.tolist()}")
    b, c = int(t[0, 1]), int(t[1, 0])
    if exact:
        n = b + c
        statistic = float(min(b, c))
        p = 1.0 if n == 0 else float(sp_stats.binomtest(b, n, 0.5, alternative="two-sided").pvalue)
        return McNemarResult(statistic=statistic, p_value=p, b=b, c=c, exact=True, correction=False)
    if b + c == 0:
        warnings.warn(
            "McNemar chi-square is undefined without discordant pairs (b + c = 0); use exact=True.",
            RuntimeWarning,
            stacklevel=2,
        )
        return McNemarResult(float("nan"), float("nan"), b=b, c=c, exact=False, correction=correction)
    k = 1.0 if correction else 0.0
    statistic = (abs(b - c) - k) ** 2 / (b + c)
    # R does not clamp |b - c| - 1 at zero, so b == c gives 1 / (b + c), as here.
    p = float(sp_stats.chi2.sf(statistic, df=1))
    return McNemarResult(statistic=float(statistic), p_value=p, b=b, c=c, exact=False, correction=correction)


# ---------------------------------------------------------------------------------------------------------
# Decision curves
# ---------------------------------------------------------------------------------------------------------
def net_benefit(
    y_true: Sequence | np.ndarray,
    risk: Sequence | np.ndarray,
    thresholds: Sequence[float] | np.ndarray,
) -> NetBenefitResult:
    """Net benefit of a risk model, of treating all and of treating none, per threshold probability.

    R equivalent: ``dcurves::dca(outcome ~ risk, data, thresholds = thresholds)``.

    ``NB(pt) = TP/n - FP/n * pt / (1 - pt)``, where a patient counts as treated when ``risk >= pt``.
    Treat-all: ``prevalence - (1 - prevalence) * pt / (1 - pt)``; treat-none: 0.

    As dcurves does before comparing, a risk of exactly 0 is moved just below every threshold and a risk of
    exactly 1 just above (``0 - eps``, ``1 + eps``): a patient with risk 0 is never treated, not even at
    ``pt = 0``, so a 0/1 predictor's net benefit at ``pt = 0`` is its true-positive count over ``n``, not
    the prevalence.

    Parameters
    ----------
    y_true : array-like of shape (N,)
        1/True for MVI. A single class is allowed here (net benefit stays defined).
    risk : array-like of shape (N,)
        Predicted probabilities in [0, 1].
    thresholds : array-like
        Threshold probabilities in [0, 1).

    Returns
    -------
    NetBenefitResult
    """
    labels = _as_labels(y_true, require_both=False)
    p = _as_scores(risk, labels.size, "risk")
    if p.min() < 0.0 or p.max() > 1.0:
        index = int(np.flatnonzero((p < 0.0) | (p > 1.0))[0])
        raise ValueError(f"risk must be a probability in [0, 1]. Received: risk[{index}]={p[index]}")
    pt = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    if pt.ndim != 1 or pt.size == 0 or not np.all(np.isfinite(pt)) or pt.min() < 0.0 or pt.max() >= 1.0:
        raise ValueError(f"thresholds must be a non-empty list in [0, 1). Received: thresholds={pt.tolist()}")
    n = labels.size
    # dcurves: risk 0 -> 0 - eps (below every threshold in [0, 1)), risk 1 -> 1 + eps (above every one).
    treated = (p[None, :] >= pt[:, None]) & (p[None, :] > 0.0)
    tp = np.sum(treated & labels[None, :], axis=1)
    fp = np.sum(treated & ~labels[None, :], axis=1)
    odds = pt / (1.0 - pt)
    prevalence = float(labels.mean())
    return NetBenefitResult(
        thresholds=pt,
        model=tp / n - fp / n * odds,
        treat_all=prevalence - (1.0 - prevalence) * odds,
        treat_none=np.zeros_like(pt),
        prevalence=prevalence,
    )
