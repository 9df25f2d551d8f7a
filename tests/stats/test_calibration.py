"""`mvi_tf.calibration` against independent computations, hand-worked cases and simulated predictors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import optimize, special
from statsmodels.nonparametric.smoothers_lowess import lowess
from statsmodels.stats.proportion import proportion_confint

from mvi_tf import calibration as cal


@pytest.fixture()
def df_binary(data_files) -> pd.DataFrame:
    return pd.read_csv(data_files.reference("dcurves_df_binary.csv"))


def _simulated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A perfectly calibrated predictor: y ~ Bernoulli(p)."""
    rng = np.random.default_rng(seed)
    p = special.expit(rng.normal(-0.5, 1.2, n))
    return (rng.random(n) < p).astype(int), p


def test_intercept_and_slope_solve_their_score_equations(df_binary):
    """dcurves df_binary, cancer ~ cancerpredmarker. Calibration-in-the-large a solves
    sum(y - expit(a + logit p)) = 0 (scipy root, independent of the GLM); the slope fit maximises the
    binomial log-likelihood of a' + b logit(p) (scipy minimize)."""
    y = df_binary["cancer"].to_numpy()
    p = df_binary["cancerpredmarker"].to_numpy()
    lp = special.logit(p)
    res = cal.calibration(y, p)
    a = optimize.brentq(lambda a: np.sum(y - special.expit(a + lp)), -5, 5, xtol=1e-14)
    assert res.intercept == pytest.approx(a, abs=1e-8)

    def nll(theta):
        eta = theta[0] + theta[1] * lp
        return -np.sum(y * eta - np.logaddexp(0.0, eta))

    fit = optimize.minimize(nll, [0.0, 1.0], method="BFGS", options={"gtol": 1e-10})
    assert res.recalibration_intercept == pytest.approx(fit.x[0], abs=1e-5)
    assert res.slope == pytest.approx(fit.x[1], abs=1e-5)
    # The Wald CI of the offset model is the one R's confint.default(glm(..., offset = qlogis(p))) gives.
    glm = sm.GLM(y, np.ones((y.size, 1)), family=sm.families.Binomial(), offset=lp).fit()
    assert res.intercept_ci == pytest.approx(tuple(glm.conf_int()[0]), abs=1e-10)
    assert res.n == 750 and res.n_events == int(y.sum()) and res.n_excluded == 0


def test_constant_prediction_by_hand():
    """p = 0.2 for all 10 patients, 4 events: intercept logit(0.4) - logit(0.2) = log(8/3), O/E 0.4/0.2 = 2,
    Brier 0.4 * 0.8^2 + 0.6 * 0.2^2 = 0.28, scaled 1 - 0.28 / 0.24 = -1/6, E_avg |0.4 - 0.2| = 0.2."""
    y = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    with pytest.warns(RuntimeWarning, match="slope undefined"):
        res = cal.calibration(y, [0.2] * 10)
    assert res.intercept == pytest.approx(np.log(8 / 3), abs=1e-10)
    assert np.isnan(res.slope)  # logit(p) is constant: the slope is not identifiable
    assert res.oe_ratio == pytest.approx(2.0)
    z = 1.959963984540054
    assert res.oe_ratio_ci == pytest.approx((2.0 * np.exp(-z / 2), 2.0 * np.exp(z / 2)))
    assert res.brier == pytest.approx(0.28) and res.brier_scaled == pytest.approx(-1 / 6)
    assert (res.observed, res.expected) == pytest.approx((0.4, 0.2))
    assert res.e_avg == pytest.approx(0.2) and res.e_max == pytest.approx(0.2)


def test_perfectly_calibrated_predictor_has_slope_one_intercept_zero():
    y, p = _simulated(20000, seed=11)
    res = cal.calibration(y, p)
    assert abs(res.intercept) < 0.05 and res.intercept_ci[0] < 0 < res.intercept_ci[1]
    assert abs(res.slope - 1.0) < 0.05 and res.slope_ci[0] < 1 < res.slope_ci[1]
    assert res.oe_ratio == pytest.approx(1.0, abs=0.03)
    assert res.e_avg < 0.01 and res.brier_scaled > 0


@pytest.mark.parametrize(("shift", "scale"), [(0.7, 1.0), (-0.5, 1.0), (0.0, 2.0), (0.0, 0.5)])
def test_known_miscalibration_is_recovered(shift, scale):
    """Predictions expit((logit(p) - shift) / scale) of a true risk p: the recalibration that undoes it
    has slope `scale` and intercept `shift`; calibration-in-the-large has the sign of `shift`."""
    y, p = _simulated(20000, seed=5)
    distorted = special.expit((special.logit(p) - shift) / scale)
    res = cal.calibration(y, distorted)
    assert res.slope == pytest.approx(scale, rel=0.06)
    assert res.recalibration_intercept == pytest.approx(shift, abs=0.06)
    if shift:
        assert np.sign(res.intercept) == np.sign(shift) and abs(res.intercept) > 0.3
        assert res.e_avg > 0.05
    fit = cal.logistic_recalibration(y, distorted)
    again = cal.calibration(y, cal.recalibrate(distorted, fit))
    # Maximum likelihood with an intercept reproduces the event count and the slope exactly in-sample.
    assert again.intercept == pytest.approx(0.0, abs=1e-7)
    assert again.slope == pytest.approx(1.0, abs=1e-7)


def test_zero_and_one_predictions_left_out_of_the_fits_only():
    y, p = _simulated(400, seed=2)
    p = p.copy()
    p[:3] = [0.0, 1.0, 0.0]
    with pytest.warns(RuntimeWarning, match="3 predictions of exactly 0 or 1"):
        res = cal.calibration(y, p)
    keep = slice(3, None)
    inner = cal.calibration(y[keep], p[keep])
    assert res.n_excluded == 3 and res.n == 400
    assert res.intercept == pytest.approx(inner.intercept, abs=1e-10)
    assert res.brier == pytest.approx(np.mean((p - y) ** 2))


def test_single_class_keeps_brier_and_oe():
    with pytest.warns(RuntimeWarning, match="undefined"):
        res = cal.calibration([0, 0, 0, 0], [0.1, 0.2, 0.3, 0.4])
    assert np.isnan(res.intercept) and np.isnan(res.brier_scaled)
    assert res.brier == pytest.approx((0.01 + 0.04 + 0.09 + 0.16) / 4)
    assert res.oe_ratio == 0.0 and all(np.isnan(res.oe_ratio_ci))


def test_calibration_curve_groups_by_hand():
    """20 patients, p = 0.05, 0.10, ..., 1.00 in 4 quantile groups of 5; events 0, 1, 3, 5 per group."""
    p = np.arange(1, 21) / 20.0
    y = np.array([0] * 5 + [1, 0, 0, 0, 0] + [1, 1, 0, 1, 0] + [1] * 5)
    curve = cal.calibration_curve(y, p, n_groups=4)
    assert curve.group_n.tolist() == [5, 5, 5, 5]
    assert curve.group_observed == pytest.approx([0.0, 0.2, 0.6, 1.0])
    assert curve.group_predicted == pytest.approx([0.15, 0.40, 0.65, 0.90])
    low, high = proportion_confint(np.array([0, 1, 3, 5]), 5, alpha=0.05, method="beta")
    assert curve.group_ci_low == pytest.approx(np.nan_to_num(low), abs=1e-10)
    assert curve.group_ci_high == pytest.approx(np.nan_to_num(high, nan=1.0), abs=1e-10)
    assert np.all(np.diff(curve.smooth_predicted) >= 0) and curve.smooth_observed.size == 20


def test_lowess_matches_statsmodels_without_ties():
    """Untied x: R's lowess(x, y, iter = 0) and statsmodels' lowess(it=0) run the same local fits
    (Cleveland 1979) and agree when every point is fitted (delta = 0); with R's default delta both
    interpolate between fitted points, picking them slightly differently."""
    rng = np.random.default_rng(4)
    x = rng.random(300)
    y = (rng.random(300) < x).astype(float)
    exact = lowess(y, x, frac=2 / 3, it=0, delta=0.0, return_sorted=False)
    assert cal.lowess_r(x, y, delta=0.0) == pytest.approx(exact, abs=1e-9)
    ref = lowess(y, x, frac=2 / 3, it=0, delta=0.01 * np.ptp(x), return_sorted=False)
    assert cal.lowess_r(x, y) == pytest.approx(ref, abs=1e-5)


CARS_SPEED = [4, 4, 7, 7, 8, 9, 10, 10, 10, 11, 11, 12, 12, 12, 12, 13, 13, 13, 13, 14, 14, 14, 14, 15, 15, 15, 16,
              16, 17, 17, 17, 18, 18, 18, 18, 19, 19, 19, 20, 20, 20, 20, 20, 22, 23, 24, 24, 24, 24, 25]
CARS_DIST = [2, 10, 4, 22, 16, 10, 18, 26, 34, 17, 28, 14, 20, 24, 28, 26, 34, 34, 46, 26, 36, 60, 80, 20, 26, 54,
             32, 40, 32, 40, 50, 42, 56, 76, 84, 36, 46, 68, 32, 48, 52, 56, 64, 66, 54, 70, 92, 93, 120, 85]


def test_lowess_matches_r_on_cars():
    """R: lowess(cars) (datasets::cars, f = 2/3, iter = 3, heavily tied x) prints
    4.965459 4.965459 13.124495 13.124495 15.858633 18.579691 21.280313 ... 78.643164 84.328698."""
    expected = [4.965459, 4.965459, 13.124495, 13.124495, 15.858633, 18.579691] + [21.280313] * 3 + [24.129277] * 2
    expected += [27.119549] * 4 + [30.027276] * 4 + [32.962506] * 4 + [36.757728] * 3 + [40.435075] * 2
    expected += [43.463492] * 3 + [46.885479] * 4 + [50.793152] * 3 + [56.491224] * 5
    expected += [67.585824, 73.079695] + [78.643164] * 4 + [84.328698]
    assert cal.lowess_r(CARS_SPEED, CARS_DIST, iterations=3) == pytest.approx(expected, abs=5e-7)


def test_lowess_averages_ties_like_r():
    """x = 0.3 (4 times), 0.8 (twice), f = 2/3: R's clowess gives every tied point the mean of its ties'
    y (window of zero width -> weight 1): 1/4 at 0.3 and 1 at 0.8. statsmodels returns 0 there."""
    x = [0.3, 0.3, 0.8, 0.3, 0.3, 0.8]
    y = [0, 1, 1, 0, 0, 1]
    assert cal.lowess_r(x, y) == pytest.approx([0.25, 0.25, 1.0, 0.25, 0.25, 1.0])


def test_calibration_curve_ties_stay_together():
    curve = cal.calibration_curve([0, 1, 0, 1, 1, 0], [0.3, 0.3, 0.3, 0.3, 0.8, 0.8], n_groups=3)
    assert curve.group_n.tolist() == [4, 2]


@pytest.mark.parametrize(
    ("y", "p", "match"),
    [
        ([0, 1], [0.2, 1.2], r"y_prob\[1\]=1.2"),
        ([0, 1], [0.2, float("nan")], r"y_prob\[1\]=nan"),
        ([0, 1, 1], [0.2, 0.3], "len"),
    ],
)
def test_bad_input_raises(y, p, match):
    with pytest.raises(ValueError, match=match):
        cal.calibration(y, p)
    with pytest.raises(ValueError, match=match):
        cal.calibration_curve(y, p)


def test_separation_is_a_clear_error():
    with pytest.raises(ValueError, match="separate"):
        cal.logistic_recalibration([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    with pytest.raises(ValueError, match="n_groups"):
        cal.calibration_curve([0, 1], [0.2, 0.8], n_groups=0)
