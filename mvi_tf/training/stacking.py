"""Leak-free stacking heads: the fusion model and the CDLM as penalised logistic layers on signature logits.

A head that learns from the signatures of the patients their networks trained on sees near-perfect scores and
learns to trust them; on new patients those scores are noise that dilutes everything else the head holds (the
stacking leak of Wolpert 1992 and Breiman 1996). The heads here learn only from **out-of-fold** signature logits
(each patient scored by a network that never trained on them) and are built so that useless signatures cost
nothing:

    logit P(MVI) = intercept + offset_coef * offset + sum_p signature_coef[p] * signature_logit[p]

``offset`` is the linear predictor of a logistic model of the selected tabular factors (the CDLM) or absent (the
fusion model); its coefficient is free. On standardised logits ``z_p`` the signature part is
``c * mean_p(z_p) + sum_p d_p * z_p`` with ``c, d_p >= 0`` (a rising signature never lowers the risk, so each
phase's attention map keeps the meaning "evidence for MVI"): ``c`` is a common weight, free, and the phase-specific
``d_p`` carry an L2 penalty that shrinks them towards that common weight, so that a phase earns a weight of its own
only when it adds out of fold. The candidates, simplest first: the signatures dropped (CDLM only: the logistic
model of its own factors), one common weight (``penalty = inf``), then ever smaller penalties. The chosen one is the
simplest whose cross-validated deviance is within one standard error of the best (glmnet's ``lambda.1se`` rule):
unless the signatures add clearly on patients their networks did not see, the CDLM falls back to its factors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

#: Finite penalties tried (per patient, on the standardised phase-specific coefficients), after the signatures
#: dropped (CDLM) and the common weight alone (``inf``).
DEFAULT_PENALTIES: tuple[float, ...] = (3.0, 1.0, 0.3, 0.1, 0.03, 0.01, 0.0)
DROP = "drop"


@dataclasses.dataclass(frozen=True)
class StackingHead:
    """A fitted stacking head (coefficients on the raw, unstandardised inputs).

    Attributes
    ----------
    intercept : float
    offset_coef : float
        Coefficient of the offset column (0 when the head has none).
    signature_coef : tuple of float
        One non-negative coefficient per signature logit, in input order.
    penalty : float
        The chosen L2 penalty on the phase-specific weights (``inf``: one common weight; NaN: signatures dropped).
    cv_deviance : dict
        Penalty (as text) -> mean held-out deviance per patient over the cross-validation folds.
    cv_se : dict
        Penalty (as text) -> standard error of that mean over the folds.
    n_patients : int
        Patients the head was fitted on.
    """

    intercept: float
    offset_coef: float
    signature_coef: tuple[float, ...]
    penalty: float
    cv_deviance: dict[str, float]
    cv_se: dict[str, float]
    n_patients: int

    def logit(self, signature_logits: np.ndarray, offset: np.ndarray | None = None) -> np.ndarray:
        """The head's MVI logit for rows of ``signature_logits`` ``(n, P)`` and ``offset`` ``(n,)``."""
        z = self.intercept + np.asarray(signature_logits, dtype=np.float64) @ np.asarray(self.signature_coef)
        if offset is not None:
            z = z + self.offset_coef * np.asarray(offset, dtype=np.float64)
        return z

    def to_dict(self) -> dict:
        """JSON form (an infinite penalty is written as the string ``"inf"``)."""
        doc = dataclasses.asdict(self)
        doc["signature_coef"] = list(self.signature_coef)
        doc["penalty"] = DROP if np.isnan(self.penalty) else ("inf" if np.isinf(self.penalty) else self.penalty)
        return doc


def _design(signature_logits, offset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = np.asarray(signature_logits, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"`signature_logits` must be 2-D (patients, phases). Received: shape={s.shape}")
    centre = s.mean(axis=0)
    scale = s.std(axis=0)
    scale = np.where(scale > 1e-8, scale, 1.0)
    z = (s - centre) / scale
    off = np.zeros((s.shape[0], 0)) if offset is None else np.asarray(offset, dtype=np.float64).reshape(-1, 1)
    return z, off, np.stack([centre, scale])


def _columns(z, off, candidate) -> tuple[np.ndarray, np.ndarray, list]:
    """Design matrix, per-column penalty and bounds of one candidate: [1, offset, mean z, z_1..z_P] or a subset."""
    n, p = z.shape
    k = off.shape[1]
    parts, reg = [np.ones((n, 1)), off], [0.0] + [1e-6] * k  # a tiny ridge keeps the offset coefficient finite
    if candidate != DROP:
        parts.append(z.mean(axis=1, keepdims=True))
        reg.append(0.0)
        if np.isfinite(candidate):
            parts.append(z)
            reg += [float(candidate)] * p
    x = np.hstack(parts)
    bounds = [(None, None)] * (1 + k) + [(0.0, None)] * (x.shape[1] - 1 - k)
    return x, np.asarray(reg), bounds


def _fit(x, y, reg, bounds, nonneg) -> np.ndarray:
    """Minimise mean log-loss + sum(reg * theta^2) / 2; returns theta."""
    from scipy.optimize import minimize

    def objective(theta):
        eta = x @ theta
        loss = np.mean(np.logaddexp(0.0, eta) - y * eta) + 0.5 * np.sum(reg * theta * theta)
        grad = x.T @ (1.0 / (1.0 + np.exp(-eta)) - y) / len(y) + reg * theta
        return loss, grad

    start = np.zeros(x.shape[1])
    start[0] = np.log((y.mean() + 1e-6) / (1 - y.mean() + 1e-6))
    if not nonneg:
        bounds = [(None, None)] * len(bounds)
    return minimize(objective, start, jac=True, method="L-BFGS-B", bounds=bounds).x


def _deviance(theta, x, y) -> float:
    eta = x @ theta
    return float(2.0 * np.mean(np.logaddexp(0.0, eta) - y * eta))


def _folds(y: np.ndarray, n_folds: int, seed: int) -> list[np.ndarray]:
    from sklearn.model_selection import StratifiedKFold

    n_folds = int(min(n_folds, np.bincount(y.astype(int), minlength=2).min()))
    if n_folds < 2:
        return []
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return [test for _, test in splitter.split(np.zeros(len(y)), y)]


def _key(candidate) -> str:
    return DROP if candidate == DROP else repr(float(candidate))


def fit_stacking_head(
    signature_logits: np.ndarray,
    y: Sequence[int],
    offset: np.ndarray | None = None,
    penalties: Sequence[float] = DEFAULT_PENALTIES,
    n_folds: int = 5,
    seed: int = 0,
    nonneg: bool = True,
) -> StackingHead:
    """Fit a stacking head on out-of-fold signature logits, choosing its form by cross-validation.

    Parameters
    ----------
    signature_logits : np.ndarray
        ``(n, P)`` out-of-fold signature logits (log-odds) of the patients in ``y``.
    y : sequence of int
        0/1 labels.
    offset : np.ndarray, optional
        ``(n,)`` linear predictor of the tabular factors' logistic model; its coefficient is unpenalised, and with
        an offset the head may drop the signatures altogether.
    penalties : sequence of float
        Finite L2 penalties on the standardised phase-specific weights, tried after the common weight alone.
    n_folds : int
        Folds of the stratified cross-validation that chooses the candidate (fewer when a class is smaller).
    seed : int
        Seed of the fold assignment.
    nonneg : bool
        Constrain the signature weights to be >= 0.

    Returns
    -------
    StackingHead
    """
    y = np.asarray(y, dtype=np.float64).ravel()
    if y.size == 0 or not np.isin(y, (0.0, 1.0)).all() or y.min() == y.max():
        raise ValueError(f"`y` must hold 0/1 labels of both classes. Received: {np.unique(y).tolist()}")
    z, off, (centre, scale) = _design(signature_logits, offset)
    if z.shape[0] != y.size or off.shape[0] != y.size:
        raise ValueError(f"Inputs must have one row per label. Received: {z.shape[0]}, {off.shape[0]}, {y.size}")
    candidates = ([DROP] if offset is not None else []) + [float("inf")]
    candidates += sorted((float(p) for p in penalties if np.isfinite(p)), reverse=True)
    folds = _folds(y, n_folds, seed)
    cv_mean, cv_se = {}, {}
    for candidate in candidates:
        x, reg, bounds = _columns(z, off, candidate)
        losses = []
        for test in folds:
            train = np.setdiff1d(np.arange(y.size), test)
            losses.append(_deviance(_fit(x[train], y[train], reg, bounds, nonneg), x[test], y[test]))
        if losses:
            cv_mean[_key(candidate)] = float(np.mean(losses))
            cv_se[_key(candidate)] = float(np.std(losses, ddof=1) / np.sqrt(len(losses)))
    chosen = _one_se_choice(candidates, cv_mean, cv_se)
    x, reg, bounds = _columns(z, off, chosen)
    theta = _fit(x, y, reg, bounds, nonneg)
    return _to_head(theta, chosen, off.shape[1], centre, scale, cv_mean, cv_se, y.size)


def _one_se_choice(candidates, cv_mean, cv_se):
    """The first (simplest) candidate whose mean deviance is within one standard error of the smallest mean."""
    if not cv_mean:
        return candidates[0]
    best = min(cv_mean, key=cv_mean.get)
    bound = cv_mean[best] + cv_se[best]
    return next(c for c in candidates if cv_mean.get(_key(c), np.inf) <= bound)


def _to_head(theta, chosen, k, centre, scale, cv_mean, cv_se, n) -> StackingHead:
    """Coefficients on the raw logits: b_p = (c / P + d_p) / scale_p, intercept adjusted for the centring."""
    p = len(centre)
    weights = np.zeros(p)
    if chosen != DROP:
        weights += theta[1 + k] / p
        if np.isfinite(chosen):
            weights += theta[2 + k:]
    coef = weights / scale
    return StackingHead(
        intercept=float(theta[0] - np.sum(coef * centre)),
        offset_coef=float(theta[1]) if k else 0.0,
        signature_coef=tuple(float(c) for c in coef),
        penalty=float("nan") if chosen == DROP else float(chosen),
        cv_deviance=cv_mean,
        cv_se=cv_se,
        n_patients=int(n),
    )
