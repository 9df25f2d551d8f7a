"""`mvi_tf.uncertainty`: NRI/IDI by hand (Hmisc::improveProb definitions), bootstrap CIs against DeLong and
against `mvi_tf.stats.net_benefit` (dcurves)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sp_stats

from mvi_tf import stats, uncertainty


def test_reclassification_by_hand():
    """old = 0.5 for all; d = new - old = (.1, .2, -.1 | -.2, 0, .1) for 3 events | 3 non-events.
    Events: 2 up, 1 down -> 1/3; non-events: 1 down, 1 up, 1 tie -> 0; NRI = 1/3 with
    var = 3/9 - 1/27 + 2/9 - 0 = 14/27 (Hmisc::improveProb). IDI = 0.2/3 - (-0.1/3) = 0.1,
    var = var(.1, .2, -.1)/3 + var(-.2, 0, .1)/3."""
    y = [1, 1, 1, 0, 0, 0]
    old = [0.5] * 6
    new = [0.6, 0.7, 0.4, 0.3, 0.5, 0.6]
    res = uncertainty.reclassification(y, new, old)
    assert (res.nri_events, res.nri_nonevents) == pytest.approx((1 / 3, 0.0))
    assert res.nri == pytest.approx(1 / 3) and res.nri_se == pytest.approx(np.sqrt(14 / 27))
    assert res.idi == pytest.approx(0.1)
    se = np.sqrt(np.var([0.1, 0.2, -0.1], ddof=1) / 3 + np.var([-0.2, 0.0, 0.1], ddof=1) / 3)
    assert res.idi_se == pytest.approx(se)
    z = sp_stats.norm.ppf(0.975)
    assert res.idi_ci == pytest.approx((0.1 - z * se, 0.1 + z * se))
    assert res.idi_p == pytest.approx(2 * sp_stats.norm.sf(0.1 / se))
    assert (res.n_events, res.n_nonevents) == (3, 3)


def test_reclassification_is_antisymmetric_and_zero_for_the_same_model():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 80)
    y[:2] = (0, 1)
    a, b = rng.random(80), rng.random(80)
    forward, backward = uncertainty.reclassification(y, a, b), uncertainty.reclassification(y, b, a)
    assert forward.nri == pytest.approx(-backward.nri) and forward.idi == pytest.approx(-backward.idi)
    same = uncertainty.reclassification(y, a, a)
    assert (same.nri, same.idi, same.nri_p, same.idi_p) == (0.0, 0.0, 1.0, 1.0)


def test_bootstrap_auc_difference_agrees_with_delong(data_files):
    """aSAH wfns vs s100b (pROC roc.test: Z = 2.209): the bootstrap CI of the difference is centred on
    the observed difference and its width matches the DeLong standard error (asymptotically equal)."""
    asah = pd.read_csv(data_files.reference("asah.csv"))
    y = (asah["outcome"] == "Poor").to_numpy()
    res = uncertainty.bootstrap_auc_difference(y, asah["wfns"], asah["s100b"], n_boot=2000, seed=3)
    delong = stats.delong_test(y, asah["wfns"], asah["s100b"])
    assert res.difference == pytest.approx(delong.auc_a - delong.auc_b, abs=1e-14)
    assert res.ci_low < res.difference < res.ci_high
    width = (res.ci_high - res.ci_low) / (2 * sp_stats.norm.ppf(0.975))
    assert width == pytest.approx(np.sqrt(delong.variance), rel=0.15)
    again = uncertainty.bootstrap_auc_difference(y, asah["wfns"], asah["s100b"], n_boot=2000, seed=3)
    assert again == res  # seeded
    same = uncertainty.bootstrap_auc_difference(y, asah["s100b"], asah["s100b"], n_boot=50)
    assert (same.difference, same.ci_low, same.ci_high) == (0.0, 0.0, 0.0)


def test_bootstrap_net_benefit_point_estimates_are_dcurves(data_files):
    df = pd.read_csv(data_files.reference("dcurves_df_binary.csv"))
    y, risk = df["cancer"].to_numpy(), df["cancerpredmarker"].to_numpy()
    thresholds = [0.1, 0.25, 0.4]
    res = uncertainty.bootstrap_net_benefit(y, risk, thresholds, reference=np.full(y.size, 0.5), n_boot=300)
    assert res.net_benefit == pytest.approx(stats.net_benefit(y, risk, thresholds).model, abs=1e-15)
    assert round(float(res.net_benefit[1]), 7) == 0.0640000  # dcurves at 0.25
    assert np.all(res.ci_low <= res.net_benefit) and np.all(res.net_benefit <= res.ci_high)
    assert np.all(res.ci_high - res.ci_low > 0)
    # The constant 0.5 reference treats everyone below 0.5: the difference is NB(model) - NB(treat all).
    treat_all = stats.net_benefit(y, risk, thresholds).treat_all
    assert res.difference == pytest.approx(res.net_benefit - treat_all, abs=1e-15)
    assert np.all(res.difference_ci_low <= res.difference) and np.all(res.difference <= res.difference_ci_high)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: uncertainty.bootstrap_auc_difference([0, 1, 0, 1], [1, 2, 3, 4], [1, 2, 3], n_boot=5), "len"),
        (lambda: uncertainty.bootstrap_auc_difference([0, 1, 0, 1], [1, 2, 3, 4], [1, 2, 3, 4], n_boot=1), "n_boot"),
        (lambda: uncertainty.bootstrap_net_benefit([0, 1], [0.2, 1.3], [0.5], n_boot=5), r"risk\[1\]=1.3"),
        (lambda: uncertainty.reclassification([0, 1, 0], [0.1, 0.2, 0.3], [0.1, 0.2, 0.3]), "two events"),
    ],
)
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()
