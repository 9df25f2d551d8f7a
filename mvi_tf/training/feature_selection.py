"""Clinical and radiological factor selection by uni- then multivariable logistic regression.

As in Wei et al. (2021, section 2.5), every candidate factor is first tested alone (univariable logistic
regression of MVI on the factor); the factors with p < ``p_threshold`` enter one multivariable logistic
regression, and those still significant there are selected. Odds ratios are ``exp(beta)`` with Wald 95%
confidence intervals ``exp(beta +/- 1.96 se)``; p-values are Wald tests of ``beta = 0`` (statsmodels ``Logit``).
Selection is fitted on the training split only.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_Z95 = 1.959963984540054


@dataclasses.dataclass(frozen=True)
class FactorResult:
    """One factor's logistic-regression estimate."""

    feature: str
    odds_ratio: float
    ci_low: float
    ci_high: float
    p_value: float
    coef: float


@dataclasses.dataclass(frozen=True)
class FeatureSelection:
    """Outcome of uni- then multivariable selection.

    Attributes
    ----------
    candidates : list of str
        Factors considered, in input order.
    univariable : list of FactorResult
        One estimate per candidate (NaN where the factor is constant).
    multivariable : list of FactorResult
        Joint estimates of the univariably significant factors (empty when fewer than one passed).
    selected : list of str
        Selected factors in candidate order.
    fallback : bool
        True when no factor reached significance and the single lowest-p univariable factor was kept.
    p_threshold : float
        Significance level used.
    n_patients, n_events : int
        Size of the fitting data and number of positives.
    """

    candidates: list[str]
    univariable: list[FactorResult]
    multivariable: list[FactorResult]
    selected: list[str]
    fallback: bool
    p_threshold: float
    n_patients: int
    n_events: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (NaN becomes None)."""
        return _clean(dataclasses.asdict(self))

    def table(self) -> list[dict[str, Any]]:
        """Rows ``stage, feature, odds_ratio, ci_low, ci_high, p_value, selected`` for a CSV."""
        rows = []
        for stage, results in (("univariable", self.univariable), ("multivariable", self.multivariable)):
            for r in results:
                row = {"stage": stage, **dataclasses.asdict(r), "selected": r.feature in self.selected}
                rows.append(row)
        return rows


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _check_xy(x: np.ndarray, y: np.ndarray, features: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[1] != len(features):
        raise ValueError(
            "Expected x of shape (n_patients, n_features) matching y and features. Received: "
            f"x.shape={x.shape}, y.shape={y.shape}, n_features={len(features)}"
        )
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError(f"Labels must be 0/1. Received: {sorted(set(y.tolist()))[:5]}")
    if y.min() == y.max():
        raise ValueError(f"Feature selection needs both classes; all labels are {int(y[0])}.")
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(f"Non-finite value in feature {features[col]!r} (row {row}): {x[row, col]}")
    return x, y


def _logit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Fit ``Logit(y, [1, x])``; return (coef, se, p) without the intercept, or None if not estimable."""
    import statsmodels.api as sm

    design = sm.add_constant(x, has_constant="add")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fit = sm.Logit(y, design).fit(disp=0, method="newton", maxiter=100)
        except (np.linalg.LinAlgError, ValueError) as err:
            log.warning("Logistic regression not estimable (%s); factors: %d", err, x.shape[1])
            return None
    params = np.asarray(fit.params)[1:]
    bse = np.asarray(fit.bse)[1:]
    pvalues = np.asarray(fit.pvalues)[1:]
    return params, bse, pvalues


def _results(features: Sequence[str], coef: np.ndarray, se: np.ndarray, p: np.ndarray) -> list[FactorResult]:
    with np.errstate(over="ignore", invalid="ignore"):
        return [
            FactorResult(
                feature=f,
                odds_ratio=float(np.exp(b)),
                ci_low=float(np.exp(b - _Z95 * s)),
                ci_high=float(np.exp(b + _Z95 * s)),
                p_value=float(pv) if np.isfinite(pv) else float("nan"),
                coef=float(b),
            )
            for f, b, s, pv in zip(features, coef, se, p, strict=True)
        ]


def select_features(
    x: np.ndarray,
    y: np.ndarray,
    features: Sequence[str],
    p_threshold: float = 0.05,
) -> FeatureSelection:
    """Select factors by univariable then multivariable logistic regression.

    Parameters
    ----------
    x : np.ndarray
        ``(n_patients, n_features)`` encoded factors of the training split.
    y : np.ndarray
        ``(n_patients,)`` MVI labels (0/1).
    features : sequence of str
        Factor names, one per column of ``x``.
    p_threshold : float
        Significance level for both steps.

    Returns
    -------
    FeatureSelection
        If no factor is significant in the multivariable step (or none univariably), the factor with the lowest
        univariable p-value is kept alone (``fallback=True``) and a warning is logged.
    """
    features = list(features)
    if not features:
        raise ValueError("Feature selection needs at least one candidate feature. Received: features=[]")
    if len(set(features)) != len(features):
        raise ValueError(f"Feature names must be unique. Received: features={features}")
    if not 0.0 < p_threshold < 1.0:
        raise ValueError(f"p_threshold must be in (0, 1). Received: p_threshold={p_threshold}")
    x, y = _check_xy(x, y, features)

    univariable = []
    for j, name in enumerate(features):
        column = x[:, j : j + 1]
        fitted = None if np.ptp(column) == 0 else _logit(column, y)
        if fitted is None:
            nan = np.array([np.nan])
            univariable += _results([name], nan, nan, nan)
        else:
            univariable += _results([name], *fitted)
    passed = [r.feature for r in univariable if np.isfinite(r.p_value) and r.p_value < p_threshold]

    multivariable: list[FactorResult] = []
    selected: list[str] = []
    if passed:
        # Drop the weakest factor until the joint model is estimable (collinear one-hot columns, separation).
        trial = sorted(passed, key=lambda f: next(r.p_value for r in univariable if r.feature == f))
        while trial:
            cols = [features.index(f) for f in features if f in trial]
            names = [features[c] for c in cols]
            fitted = _logit(x[:, cols], y)
            if fitted is not None and np.isfinite(fitted[2]).all():
                multivariable = _results(names, *fitted)
                break
            log.warning("Multivariable model with %s not estimable; dropping %s", names, trial[-1])
            trial = trial[:-1]
        selected = [r.feature for r in multivariable if r.p_value < p_threshold]

    fallback = False
    if not selected:
        finite = [r for r in univariable if np.isfinite(r.p_value)]
        if not finite:
            raise ValueError(f"No estimable factor among {features}: every column is constant or separated.")
        best = min(finite, key=lambda r: r.p_value)
        selected = [best.feature]
        fallback = True
        log.warning(
            "No factor reached p < %s in the multivariable model; keeping the lowest-p univariable factor %r "
            "(p = %.3g).",
            p_threshold,
            best.feature,
            best.p_value,
        )
    return FeatureSelection(
        candidates=features,
        univariable=univariable,
        multivariable=multivariable,
        selected=selected,
        fallback=fallback,
        p_threshold=float(p_threshold),
        n_patients=int(x.shape[0]),
        n_events=int(y.sum()),
    )
