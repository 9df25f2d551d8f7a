"""Clinical and radiological logistic-regression models: the non-deep-learning baselines of Table 3.

Each baseline is a logistic regression of MVI on the factors its own uni-/multivariable selection kept
(clinical columns for the clinical model, radiological columns for the radiological model), fitted by maximum
likelihood on the training split and stored as JSON (intercept and one coefficient per named feature) so it can
be applied to any patient with the schema's encoded tabular features.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mvi_tf.training.feature_selection import FeatureSelection, select_features

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LogisticModel:
    """A fitted logistic regression ``P(MVI) = sigmoid(intercept + x @ coef)``.

    Attributes
    ----------
    name : str
        ``clinical`` or ``radiological``.
    features : list of str
        Encoded tabular feature names, in the order of ``coef``.
    intercept : float
    coef : list of float
    selection : dict
        The feature selection that chose ``features`` (JSON form).
    method : str
        ``mle`` (statsmodels) or ``ridge`` (L2-penalised fallback when the MLE does not exist).
    """

    name: str
    features: list[str]
    intercept: float
    coef: list[float]
    selection: dict[str, Any]
    method: str = "mle"

    def predict_proba(self, x: np.ndarray, feature_names: Sequence[str]) -> np.ndarray:
        """MVI probability for rows of ``x`` whose columns are ``feature_names`` (a superset of ``features``)."""
        feature_names = list(feature_names)
        missing = [f for f in self.features if f not in feature_names]
        if missing:
            raise ValueError(f"{self.name} model needs features {missing} absent from {feature_names}")
        cols = [feature_names.index(f) for f in self.features]
        z = self.intercept + np.asarray(x, dtype=np.float64)[:, cols] @ np.asarray(self.coef, dtype=np.float64)
        return 1.0 / (1.0 + np.exp(-z))

    def save(self, path: str | Path) -> Path:
        """Write as JSON."""
        path = Path(path)
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> LogisticModel:
        """Read a model written by :meth:`save`."""
        return cls(**json.loads(Path(path).read_text()))


def fit_logistic(x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray, str]:
    """Maximum-likelihood logistic regression; ridge fallback (C=100) when the MLE does not exist."""
    import statsmodels.api as sm

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).ravel()
    design = sm.add_constant(x, has_constant="add")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fit = sm.Logit(y, design).fit(disp=0, method="newton", maxiter=100)
            params = np.asarray(fit.params)
            if np.isfinite(params).all() and np.abs(params).max() < 50:
                return float(params[0]), params[1:], "mle"
        except (np.linalg.LinAlgError, ValueError) as err:
            log.warning("Logistic MLE failed (%s); using ridge fallback", err)
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=100.0, max_iter=1000).fit(x, y)
    return float(model.intercept_[0]), model.coef_[0].astype(np.float64), "ridge"


def fit_baseline(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    features: Sequence[str],
    candidates: Sequence[str],
    p_threshold: float = 0.05,
) -> tuple[LogisticModel, FeatureSelection]:
    """Select among ``candidates`` (a subset of ``features``) and fit the baseline on the selected factors.

    Parameters
    ----------
    name : str
        Model name (``clinical`` / ``radiological``).
    x, y : np.ndarray
        Training-split encoded tabular features ``(n, len(features))`` and labels.
    features : sequence of str
        Names of the columns of ``x``.
    candidates : sequence of str
        The columns this model may use.
    p_threshold : float
        Selection significance level.
    """
    features = list(features)
    candidates = list(candidates)
    unknown = [c for c in candidates if c not in features]
    if not candidates or unknown:
        raise ValueError(f"{name} model candidates must be non-empty schema features. Received: {candidates}")
    cols = [features.index(c) for c in candidates]
    selection = select_features(x[:, cols], y, candidates, p_threshold)
    sel_cols = [features.index(f) for f in selection.selected]
    intercept, coef, method = fit_logistic(x[:, sel_cols], y)
    model = LogisticModel(
        name=name,
        features=list(selection.selected),
        intercept=intercept,
        coef=[float(c) for c in coef],
        selection=selection.to_dict(),
        method=method,
    )
    return model, selection
