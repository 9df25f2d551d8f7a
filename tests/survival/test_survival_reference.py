"""Kaplan–Meier, log-rank and Cox estimators pinned to published R `survival` output and hand calculations.

Reference data: `tests/data/reference/` (R survival `aml`, `lung`, `ovarian`; lifelines `rossi`). Each
test's docstring carries the R call whose printed output it reproduces, to the precision R prints.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mvi_tf.survival import (
    cox_regression,
    kaplan_meier,
    km_median,
    logrank_test,
    median_follow_up,
)


@pytest.fixture(scope="module")
def aml(data_files) -> pd.DataFrame:
    return pd.read_csv(data_files.reference("aml.csv"))


@pytest.fixture(scope="module")
def ovarian(data_files) -> pd.DataFrame:
    return pd.read_csv(data_files.reference("ovarian.csv"))


@pytest.fixture(scope="module")
def rossi(data_files) -> pd.DataFrame:
    return pd.read_csv(data_files.reference("rossi.csv"))


@pytest.fixture(scope="module")
def lung(data_files) -> pd.DataFrame:
    frame = pd.read_csv(data_files.reference("lung.csv"))
    return frame.assign(dead=(frame["status"] == 2).astype(int))  # R's lung: status 2 = dead, 1 = censored


# ---------------------------------------------------------------------------------------------------------
# Log-rank
# ---------------------------------------------------------------------------------------------------------


def test_logrank_aml(aml: pd.DataFrame) -> None:
    """R: `survdiff(Surv(time, status) ~ x, data = aml)`: Chisq 3.3963886989776, p 0.0653393220405051;
    Observed 7 / 11, Expected 10.69 / 7.31."""
    result = logrank_test(aml["time"], aml["status"], aml["x"])
    assert result.statistic == pytest.approx(3.3963886989776, rel=1e-10)
    assert result.p_value == pytest.approx(0.0653393220405051, rel=1e-9)
    assert result.degrees_of_freedom == 1
    assert result.groups == ("Maintained", "Nonmaintained")
    assert result.n == (11, 12)
    assert result.observed == (7.0, 11.0)
    assert np.round(result.expected, 2).tolist() == [10.69, 7.31]


def test_logrank_lung_sex(lung: pd.DataFrame) -> None:
    """R: `survdiff(Surv(time, status) ~ sex, data = lung)`: Chisq= 10.3 on 1 degrees of freedom, p= 0.001;
    Observed 112 / 53, Expected 91.6 / 73.4."""
    result = logrank_test(lung["time"], lung["dead"], lung["sex"])
    assert round(result.statistic, 1) == 10.3
    assert round(result.p_value, 3) == 0.001
    assert result.observed == (112.0, 53.0)
    assert np.round(result.expected, 1).tolist() == [91.6, 73.4]


def test_logrank_lung_four_groups(lung: pd.DataFrame) -> None:
    """R: `survdiff(Surv(time, status) ~ ph.ecog, data = lung)` (1 observation deleted due to missingness):
    Chisq= 22 on 3 degrees of freedom, p= 7e-05; Expected 54.153, 83.528, 26.147, 0.172."""
    complete = lung.dropna(subset=["ph.ecog"])
    result = logrank_test(complete["time"], complete["dead"], complete["ph.ecog"])
    assert result.degrees_of_freedom == 3
    assert round(result.statistic) == 22
    assert f"{result.p_value:.0e}" == "7e-05"
    assert np.round(result.expected, 3).tolist() == [54.153, 83.528, 26.147, 0.172]


def test_logrank_ovarian(ovarian: pd.DataFrame) -> None:
    """R: `survdiff(Surv(futime, fustat) ~ rx, data = ovarian)`: Chisq= 1.1 on 1 degrees of freedom, p= 0.3;
    Observed 7 / 5, Expected 5.23 / 6.77."""
    result = logrank_test(ovarian["futime"], ovarian["fustat"], ovarian["rx"])
    assert round(result.statistic, 1) == 1.1
    assert round(result.p_value, 1) == 0.3
    assert np.round(result.expected, 2).tolist() == [5.23, 6.77]


def test_logrank_by_hand() -> None:
    """Two groups, A = {1, 2}, B = {3, 4}, all events. At t = 1: E_A = 2/4, V = 2*2*1*3/(16*3) = 1/4; at
    t = 2: E_A = 1/3, V = 1*2*1*2/(9*2) = 2/9; later A is empty. O_A - E_A = 7/6, V = 17/36, chi2 = 49/17."""
    result = logrank_test([1, 2, 3, 4], [1, 1, 1, 1], ["A", "A", "B", "B"])
    assert result.statistic == pytest.approx(49 / 17, rel=1e-12)
    assert result.expected[0] == pytest.approx(5 / 6, rel=1e-12)


# ---------------------------------------------------------------------------------------------------------
# Kaplan–Meier medians and follow-up
# ---------------------------------------------------------------------------------------------------------


def test_km_median_aml(aml: pd.DataFrame) -> None:
    """R: `survfit(Surv(time, status) ~ x, data = aml)`: median 31 (0.95LCL 18, UCL NA) Maintained,
    23 (8, NA) Nonmaintained."""
    expected = {"Maintained": (31.0, 18.0), "Nonmaintained": (23.0, 8.0)}
    for group, (median, lower) in expected.items():
        rows = aml[aml["x"] == group]
        assert km_median(rows["time"], rows["status"]) == median
        curve = kaplan_meier(rows["time"], rows["status"])
        assert (curve.median, curve.median_ci_lower) == (median, lower)
        assert math.isnan(curve.median_ci_upper)


def test_km_median_lung(lung: pd.DataFrame) -> None:
    """R: `survfit(Surv(time, status) ~ 1, data = lung)`: n 228, events 165, median 310 (285, 363);
    `survfit(Surv(time, status) ~ sex, data = lung)`: sex=1 270 (212, 310), sex=2 426 (348, 550)."""
    overall = kaplan_meier(lung["time"], lung["dead"])
    assert (overall.n, overall.total_events) == (228, 165)
    assert (overall.median, overall.median_ci_lower, overall.median_ci_upper) == (310.0, 285.0, 363.0)
    for sex, limits in {1: (270.0, 212.0, 310.0), 2: (426.0, 348.0, 550.0)}.items():
        rows = lung[lung["sex"] == sex]
        curve = kaplan_meier(rows["time"], rows["dead"])
        assert (curve.median, curve.median_ci_lower, curve.median_ci_upper) == limits


@pytest.mark.parametrize(
    ("durations", "events", "expected"),
    [
        ([2, 4, 6], [1, 1, 1], 4.0),  # S = 2/3, 1/3, 0: first time at or below 0.5
        ([1, 2, 3, 4], [1, 1, 1, 1], 2.5),  # S = 0.5 exactly on [2, 3): R's midpoint rule
        ([1, 2, 3, 4], [1, 1, 0, 0], 3.0),  # flat at 0.5 to the end: midpoint with the last time (4)
        ([1, 5, 6, 7], [1, 0, 0, 0], math.nan),  # S = 0.75 at the end: not reached
    ],
)
def test_km_median_by_hand(durations: list[float], events: list[int], expected: float) -> None:
    """R: `survfit(Surv(durations, events) ~ 1)` prints these medians (`quantile.survfit` midpoint rule)."""
    result = km_median(durations, events)
    assert result == expected or (math.isnan(expected) and math.isnan(result))


def test_kaplan_meier_log_confidence_limits_by_hand() -> None:
    """Greenwood on the log scale (R `conf.type = "log"`): at t = 1 of four deaths S = 3/4,
    Var(log S) = 1 / (4 * 3), limits S * exp(-/+ 1.959964 * sqrt(1/12)), upper clipped at 1."""
    curve = kaplan_meier([1, 2, 3, 4], [1, 1, 1, 1])
    spread = 1.959963984540054 * math.sqrt(1 / 12)
    assert curve.survival.tolist() == [0.75, 0.5, 0.25, 0.0]
    assert curve.ci_lower[0] == pytest.approx(0.75 * math.exp(-spread), rel=1e-12)
    assert curve.ci_upper[0] == 1.0
    assert math.isnan(curve.ci_lower[-1])  # survival 0: log limits undefined, as in R
    assert curve.at_risk.tolist() == [4, 3, 2, 1]


def test_median_follow_up_reverse_km_by_hand() -> None:
    """Reverse Kaplan–Meier, R: `survfit(Surv(time, 1 - status) ~ 1)`: times 1..4 with events 1, 0, 1, 0
    reverse to censoring 'events' at 2 (3 at risk) and 4 (1 at risk): S = 2/3 then 0, median 4."""
    result = median_follow_up([1, 2, 3, 4], [1, 0, 1, 0])
    assert result.median == 4.0
    assert (result.minimum, result.maximum, result.n) == (1.0, 4.0, 4)


# ---------------------------------------------------------------------------------------------------------
# Cox regression
# ---------------------------------------------------------------------------------------------------------


def test_cox_lung_sex(lung: pd.DataFrame) -> None:
    """R: `summary(coxph(Surv(time, status) ~ sex, data = lung))`: coef -0.5310, exp(coef) 0.5880,
    se(coef) 0.1672, z -3.176, p 0.00149; lower .95 0.4237, upper .95 0.816; Concordance= 0.579;
    Likelihood ratio test= 10.63 on 1 df, p=0.001111."""
    result = cox_regression(lung, "time", "dead", ["sex"])
    row = result.summary.loc["sex"]
    assert round(row["coef"], 4) == -0.5310
    assert round(row["hazard_ratio"], 4) == 0.5880
    assert round(row["se"], 4) == 0.1672
    assert round(row["z"], 3) == -3.176
    assert round(row["p_value"], 5) == 0.00149
    assert (round(row["hr_lower"], 4), round(row["hr_upper"], 3)) == (0.4237, 0.816)
    assert round(result.concordance, 3) == 0.579
    assert round(result.likelihood_ratio, 2) == 10.63
    assert round(result.likelihood_ratio_p, 6) == 0.001111
    assert (result.n, result.n_events, result.ties) == (228, 165, "efron")
    assert list(result.proportional_hazards.index) == ["sex"]


def test_cox_aml(aml: pd.DataFrame) -> None:
    """R: `coxph(Surv(time, status) ~ x, data = aml)`: xNonmaintained coef 0.9155, exp(coef) 2.4981,
    se(coef) 0.5119, z 1.788, p 0.0737; Likelihood ratio test=3.38 on 1 df, p=0.06581."""
    frame = aml.assign(nonmaintained=(aml["x"] == "Nonmaintained").astype(int))
    result = cox_regression(frame, "time", "status", ["nonmaintained"])
    row = result.summary.loc["nonmaintained"]
    assert (round(row["coef"], 4), round(row["hazard_ratio"], 4), round(row["se"], 4)) == (
        0.9155,
        2.4981,
        0.5119,
    )
    assert (round(row["z"], 3), round(row["p_value"], 4)) == (1.788, 0.0737)
    assert (round(result.likelihood_ratio, 2), round(result.likelihood_ratio_p, 5)) == (3.38, 0.06581)


def test_cox_ovarian_rx(ovarian: pd.DataFrame) -> None:
    """R: `coxph(Surv(futime, fustat) ~ rx, data = ovarian)`: coef -0.5964, exp(coef) 0.5508, se 0.5870,
    z -1.016, p 0.31."""
    row = cox_regression(ovarian, "futime", "fustat", ["rx"]).summary.loc["rx"]
    assert (round(row["coef"], 4), round(row["hazard_ratio"], 4), round(row["se"], 4)) == (
        -0.5964,
        0.5508,
        0.5870,
    )
    assert (round(row["z"], 3), round(row["p_value"], 2)) == (-1.016, 0.31)


def test_cox_rossi(rossi: pd.DataFrame) -> None:
    """R: `coxph(Surv(week, arrest) ~ fin + age + race + wexp + mar + paro + prio, data = Rossi)` (Fox &
    Weisberg, Cox appendix; lifelines docs): coef / se(coef) / p as printed below; Likelihood ratio
    test=33.27 on 7 df; Concordance 0.640."""
    published = {
        "fin": (-0.37942, 0.19138, 0.04742),
        "age": (-0.05744, 0.02200, 0.00903),
        "race": (0.31390, 0.30799, 0.30812),
        "wexp": (-0.14980, 0.21222, 0.48029),
        "mar": (-0.43370, 0.38187, 0.25606),
        "paro": (-0.08487, 0.19576, 0.66461),
        "prio": (0.09150, 0.02865, 0.00140),
    }
    result = cox_regression(rossi, "week", "arrest", list(published))
    for name, (coef, se, p_value) in published.items():
        row = result.summary.loc[name]
        assert (round(row["coef"], 5), round(row["se"], 5), round(row["p_value"], 5)) == (coef, se, p_value)
    assert round(result.likelihood_ratio, 2) == 33.27
    assert result.likelihood_ratio_df == 7
    assert round(result.concordance, 3) == 0.640


def test_proportional_hazards_check_flags_crossing_hazards() -> None:
    """A group whose hazard is high early and low late (crossing survival curves) violates proportional
    hazards; the Schoenfeld-residual test (R `cox.zph`) flags it, and does not flag a proportional effect."""
    rng = np.random.default_rng(7)
    n = 300
    group = np.repeat([0, 1], n // 2)
    proportional = rng.exponential(np.where(group == 1, 5.0, 10.0))
    early = rng.exponential(2.0, n)
    crossing = np.where(
        group == 1, np.where(early < 3.0, early, 3.0 + rng.exponential(40.0, n)), rng.exponential(10.0, n)
    )
    frames = {
        "proportional": pd.DataFrame({"t": proportional, "e": 1, "g": group}),
        "crossing": pd.DataFrame({"t": crossing, "e": 1, "g": group}),
    }
    p_values = {
        key: cox_regression(frame, "t", "e", ["g"]).proportional_hazards.loc["g", "p_value"]
        for key, frame in frames.items()
    }
    assert p_values["crossing"] < 1e-4
    assert p_values["proportional"] > 0.05


# ---------------------------------------------------------------------------------------------------------
# Degenerate input
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("durations", "events", "groups", "message"),
    [
        ([1, 2, 3], [0, 0, 0], ["a", "b", "a"], "No events"),
        ([1, 2, 3], [1, 0, 1], ["a", "a", "a"], "single group"),
        ([1, np.nan, 3], [1, 0, 1], ["a", "b", "a"], "NaN"),
        ([1, 2, 3], [1, 0], ["a", "b", "a"], "same length"),
        ([1, 2, 3], [1, 0, 1], ["a", "b"], "same length as `durations`"),
        ([1, 2, 3], [1, 0, 1], ["a", None, "b"], "missing labels"),
        ([1, 2, 3], [2, 0, 1], ["a", "b", "a"], "events\\[0\\]=2.0"),
        ([1, -2, 3], [1, 0, 1], ["a", "b", "a"], "durations\\[1\\]=-2.0"),
    ],
)
def test_logrank_rejects_degenerate_input(
    durations: list[float], events: list[float], groups: list[str | None], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        logrank_test(durations, events, groups)


@pytest.mark.parametrize(
    ("durations", "events", "message"),
    [
        ([1, 2, np.inf], [1, 0, 1], "infinite"),
        ([1, 2], [1, 0, 1], "same length"),
        ([], [], "empty"),
    ],
)
def test_km_median_rejects_degenerate_input(
    durations: list[float], events: list[float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        km_median(durations, events)


def test_km_median_without_events_is_not_reached() -> None:
    """R: `survfit(Surv(c(1, 2, 3), c(0, 0, 0)) ~ 1)` prints `n 3, events 0, median NA`: not reached,
    not an error."""
    assert math.isnan(km_median([1, 2, 3], [0, 0, 0]))


def test_logrank_group_without_events() -> None:
    """Group a: deaths at 1, 2, 3; group b: censored at 4, 5, 6 (no event). By hand, as R
    `survdiff(Surv(t, e) ~ g)`: expected b = 3/6 + 3/5 + 3/4 = 1.85, observed 0,
    V = 9/36 + 6/25 + 3/16 = 0.6775, chi-square 1.85^2 / 0.6775; `survfit(Surv(t, e) ~ g)` medians 2 and NA."""
    result = logrank_test([1, 2, 3, 4, 5, 6], [1, 1, 1, 0, 0, 0], ["a"] * 3 + ["b"] * 3)
    assert result.observed == (3.0, 0.0)
    assert result.expected == pytest.approx((1.15, 1.85), rel=1e-12)
    assert result.statistic == pytest.approx(1.85**2 / 0.6775, rel=1e-10)
    assert result.median[0] == 2.0 and math.isnan(result.median[1])


def test_median_follow_up_needs_censoring() -> None:
    with pytest.raises(ValueError, match="none censored"):
        median_follow_up([1, 2, 3], [1, 1, 1])


def test_cox_rejects_degenerate_input() -> None:
    frame = pd.DataFrame(
        {"t": [1.0, 2.0, 3.0, 4.0], "e": [1, 0, 1, 1], "x": [0.0, 1.0, 0.0, 1.0], "c": 1.0},
        index=pd.Index(["P01", "P02", "P03", "P04"], name="patient_id"),
    )
    with pytest.raises(ValueError, match="'c' is constant"):
        cox_regression(frame, "t", "e", ["c"])
    with pytest.raises(ValueError, match="No events"):
        cox_regression(frame.assign(e=0), "t", "e", ["x"])
    with pytest.raises(ValueError, match="rows \\['P03'\\]"):
        cox_regression(frame.assign(x=[0.0, 1.0, np.nan, 1.0]), "t", "e", ["x"])
    with pytest.raises(ValueError, match="missing"):
        cox_regression(frame, "t", "e", ["absent"])
    with pytest.raises(ValueError, match="ties='breslow'"):
        cox_regression(frame, "t", "e", ["x"], ties="breslow")
    with pytest.raises(TypeError, match="DataFrame"):
        cox_regression(frame.to_numpy(), "t", "e", ["x"])
