"""Uni- then multivariable logistic selection on simulated tables whose informative columns are known."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mvi_tf.training.baselines import LogisticModel, fit_baseline
from mvi_tf.training.feature_selection import select_features


def _table(seed: int, n: int = 400):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6))
    logit = -0.3 + 1.2 * x[:, 1] - 1.0 * x[:, 4]  # informative: f1 (risk), f4 (protective)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return x, y, [f"f{i}" for i in range(6)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_selects_exactly_the_informative_columns(seed):
    x, y, names = _table(seed)
    assert {"f1", "f4"} <= set(select_features(x, y, names).selected)
    result = select_features(x, y, names, p_threshold=0.001)  # noise columns pass with probability ~0.001
    assert result.selected == ["f1", "f4"]
    assert not result.fallback
    uni = {r.feature: r for r in result.univariable}
    assert uni["f1"].odds_ratio > 1 and uni["f4"].odds_ratio < 1
    multi = {r.feature: r for r in result.multivariable}
    # Odds ratio per SD near exp(beta), with a CI that contains it.
    assert multi["f1"].ci_low < np.exp(1.2) < multi["f1"].ci_high
    assert multi["f4"].ci_low < np.exp(-1.0) < multi["f4"].ci_high
    assert all(r.ci_low < r.odds_ratio < r.ci_high for r in result.univariable)
    json.dumps(result.to_dict())  # serialisable


def test_univariable_p_value_matches_statsmodels_wald():
    import statsmodels.api as sm

    x, y, names = _table(5)
    result = select_features(x, y, names)
    fit = sm.Logit(y, sm.add_constant(x[:, 1])).fit(disp=0)
    assert result.univariable[1].p_value == pytest.approx(fit.pvalues[1], rel=1e-6)
    assert result.univariable[1].odds_ratio == pytest.approx(np.exp(fit.params[1]), rel=1e-6)


def test_no_significant_factor_keeps_lowest_p_and_warns(caplog):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    y = np.r_[np.zeros(30), np.ones(30)].astype(int)
    result = select_features(x, y, ["a", "b", "c"], p_threshold=0.001)
    best = min(result.univariable, key=lambda r: r.p_value).feature
    assert result.fallback and result.selected == [best]
    assert "keeping the lowest-p univariable factor" in caplog.text


def test_constant_column_is_not_selected_and_bad_input_is_named():
    x, y, names = _table(0)
    x[:, 0] = 1.0
    result = select_features(x, y, names)
    assert np.isnan(result.univariable[0].p_value) and "f0" not in result.selected
    x[3, 2] = np.nan
    with pytest.raises(ValueError, match="'f2'"):
        select_features(x, y, names)
    with pytest.raises(ValueError, match="both classes"):
        select_features(x[:, :1] * 0 + 1, np.zeros(len(y)), ["f0"])


def test_baseline_uses_only_its_candidates_and_round_trips(tmp_path):
    x, y, names = _table(3)
    model, selection = fit_baseline("clinical", x, y, names, ["f0", "f1", "f2"], p_threshold=0.001)
    assert selection.selected == ["f1"] and model.features == ["f1"]
    saved = LogisticModel.load(model.save(tmp_path / "clinical_model.json"))
    p = saved.predict_proba(x, names)
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-(model.intercept + model.coef[0] * x[:, 1]))))
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y, p) > 0.7
