"""Leak-free stacking heads: the fusion model and the CDLM as penalised logistic layers on signature logits.

A head that learns from the signatures of the patients their networks trained on sees near-perfect scores and
learns to trust them; on new patients those scores are noise that dilutes everything else the head holds (the
stacking leak of Wolpert 1992 and Breiman 1996). The heads here learn only from **out-of-fold** signature logits
(each patient scored by a network that never trained on them) and are built so that useless signatures cost
nothing:

    logit P(MVI) = intercept + offset_coef * offset + sum_p signature_coef[p] * signature_logit[p]

``offset`` is the linear predictor of a logistic model of the selected tabular factors (the CDLM) or absent (the
fusion model); its coefficient is free. The signature coefficients carry an L2 penalty on standardised logits and
are non-negative (a rising signature never lowers the risk, so each phase's attention map keeps the meaning
"evidence for MVI"). The penalty is chosen by stratified cross-validation of the held-out deviance with the
one-standard-error rule (the largest penalty whose mean deviance is within one standard error of the smallest,
as glmnet's ``lambda.1se``), and the grid ends with an infinite penalty, which removes the signatures: unless they
add clearly out of fold, the CDLM falls back to the logistic model of its own factors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

#: Penalties tried (per patient, on standardised signature logits); ``inf`` drops the signatures.
DEFAULT_PENALTIES: tuple[float, ...] = (0.0, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, float("inf"))


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
        The chosen L2 penalty (``inf``: signatures dropped).
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
        doc["penalty"] = "inf" if np.isinf(self.penalty) else self.penalty
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


def _fit_penalised(z, off, y, penalty, nonneg) -> np.ndarray:
    """Minimise mean log-loss + penalty/2 * |b|^2 over (intercept, offset coef, b); returns the parameters."""
    from scipy.optimize import minimize

    n, p = z.shape
    k = off.shape[1]
    x = np.hstack([np.ones((n, 1)), off, z])
    use = np.ones(1 + k + p, dtype=bool)
    if np.isinf(penalty):
        use[1 + k:] = False
    xs = x[:, use]
    reg = np.zeros(xs.shape[1])
    if not np.isinf(penalty):
        reg[1 + k:] = penalty
    reg[1:1 + k] = 1e-6  # keeps the offset coefficient finite when the offset separates the classes

    def objective(theta):
        eta = xs @ theta
        loss = np.mean(np.logaddexp(0.0, eta) - y * eta) + 0.5 * np.sum(reg * theta * theta)
        grad = xs.T @ (1.0 / (1.0 + np.exp(-eta)) - y) / n + reg * theta
        return loss, grad

    bounds = [(None, None)] * (1 + k) + [(0.0, None) if nonneg else (None, None)] * int(use[1 + k:].sum())
    start = np.zeros(xs.shape[1])
    start[0] = np.log((y.mean() + 1e-6) / (1 - y.mean() + 1e-6))
    if k:
        start[1] = 1.0
    result = minimize(objective, start, jac=True, method="L-BFGS-B", bounds=bounds)
    theta = np.zeros(1 + k + p)
    theta[use] = result.x
    return theta


def _deviance(theta, z, off, y) -> float:
    eta = np.hstack([np.ones((z.shape[0], 1)), off, z]) @ theta
    return float(2.0 * np.mean(np.logaddexp(0.0, eta) - y * eta))


def _folds(y: np.ndarray, n_folds: int, seed: int) -> list[np.ndarray]:
    from sklearn.model_selection import StratifiedKFold

    n_folds = int(min(n_folds, np.bincount(y.astype(int), minlength=2).min()))
    if n_folds < 2:
        return []
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return [test for _, test in splitter.split(np.zeros(len(y)), y)]


def fit_stacking_head(
    signature_logits: np.ndarray,
    y: Sequence[int],
    offset: np.ndarray | None = None,
    penalties: Sequence[float] = DEFAULT_PENALTIES,
    n_folds: int = 5,
    seed: int = 0,
    nonneg: bool = True,
) -> StackingHead:
    """Fit a stacking head on out-of-fold signature logits, choosing the penalty by cross-validation.

    Parameters
    ----------
    signature_logits : np.ndarray
        ``(n, P)`` out-of-fold signature logits (log-odds) of the patients in ``y``.
    y : sequence of int
        0/1 labels.
    offset : np.ndarray, optional
        ``(n,)`` linear predictor of the tabular factors' logistic model; its coefficient is unpenalised.
    penalties : sequence of float
        Candidate L2 penalties on the standardised signature coefficients; ``inf`` drops the signatures.
    n_folds : int
        Folds of the stratified cross-validation that chooses the penalty (fewer when a class is smaller).
    seed : int
        Seed of the fold assignment.
    nonneg : bool
        Constrain the signature coefficients to be >= 0.

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
    if not penalties:
        raise ValueError(f"`penalties` must not be empty. Received: penalties={penalties}")
    folds = _folds(y, n_folds, seed)
    cv_mean, cv_se = {}, {}
    for penalty in penalties:
        losses = []
        for test in folds:
            train = np.setdiff1d(np.arange(y.size), test)
            theta = _fit_penalised(z[train], off[train], y[train], penalty, nonneg)
            losses.append(_deviance(theta, z[test], off[test], y[test]))
        if losses:
            cv_mean[repr(float(penalty))] = float(np.mean(losses))
            cv_se[repr(float(penalty))] = float(np.std(losses, ddof=1) / np.sqrt(len(losses)))
    chosen = _one_se_penalty(penalties, cv_mean, cv_se)
    theta = _fit_penalised(z, off, y, chosen, nonneg)
    k = off.shape[1]
    coef = theta[1 + k:] / scale
    intercept = float(theta[0] - np.sum(coef * centre))
    return StackingHead(
        intercept=intercept,
        offset_coef=float(theta[1]) if k else 0.0,
        signature_coef=tuple(float(c) for c in coef),
        penalty=float(chosen),
        cv_deviance=cv_mean,
        cv_se=cv_se,
        n_patients=int(y.size),
    )


def _one_se_penalty(penalties, cv_mean, cv_se) -> float:
    """The largest penalty whose mean held-out deviance is within one standard error of the smallest mean."""
    if not cv_mean:
        return float("inf")
    best = min(cv_mean, key=cv_mean.get)
    bound = cv_mean[best] + cv_se[best]
    return max(float(p) for p in penalties if cv_mean.get(repr(float(p)), np.inf) <= bound)
