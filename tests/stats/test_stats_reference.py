"""`mvi_tf.stats` pinned to R (pROC, stats, dcurves) reference values and to hand-worked cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sp_stats
from sklearn.metrics import roc_auc_score
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.proportion import proportion_confint

from mvi_tf import stats


@pytest.fixture(scope="module")
def asah(data_files) -> pd.DataFrame:
    """pROC's `aSAH` (tests/data/reference/asah.csv)."""
    return pd.read_csv(data_files.reference("asah.csv"))


@pytest.fixture(scope="module")
def df_binary(data_files) -> pd.DataFrame:
    """dcurves' `df_binary` (tests/data/reference/dcurves_df_binary.csv)."""
    return pd.read_csv(data_files.reference("dcurves_df_binary.csv"))


# ---------------------------------------------------------------------------------------------------------
# pROC
# ---------------------------------------------------------------------------------------------------------
def test_auc_variance_ci_match_proc(asah):
    """R: r <- pROC::roc(aSAH$outcome, aSAH$s100b); auc(r); var(r); ci.auc(r)
    -> AUC 0.73136856368563685, variance 0.00266868245717244, CI 0.6301-0.8326."""
    y = (asah["outcome"] == "Poor").to_numpy()
    res = stats.roc_auc_ci(y, asah["s100b"])
    assert res.auc == pytest.approx(0.73136856368563685, abs=1e-15)
    assert res.variance == pytest.approx(0.00266868245717244, abs=1e-16)
    assert round(res.ci_low, 4) == 0.6301
    assert round(res.ci_high, 4) == 0.8326
    assert (res.n_positive, res.n_negative) == (41, 72)
    assert res.auc == pytest.approx(roc_auc_score(y, asah["s100b"]), abs=1e-14)


def test_paired_delong_matches_proc_roc_test(asah):
    """R: pROC::roc.test(roc(aSAH$outcome, aSAH$wfns), roc(aSAH$outcome, aSAH$s100b))
    -> Z = 2.20898359144091, p-value = 0.0271757822291882."""
    y = (asah["outcome"] == "Poor").astype(int).to_numpy()
    res = stats.delong_test(y, asah["wfns"], asah["s100b"])
    assert res.z == pytest.approx(2.20898359144091, abs=1e-13)
    assert res.p_value == pytest.approx(0.0271757822291882, abs=1e-15)
    assert res.auc_b == pytest.approx(0.73136856368563685, abs=1e-15)
    swapped = stats.delong_test(y, asah["s100b"], asah["wfns"])
    assert swapped.z == pytest.approx(-res.z) and swapped.p_value == pytest.approx(res.p_value)


def test_youden_matches_proc_coords_best(asah):
    """R: pROC::coords(roc(aSAH$outcome, aSAH$s100b), "best", best.method = "youden")
    -> threshold 0.205, sensitivity 26/41, specificity 58/72."""
    y = (asah["outcome"] == "Poor").to_numpy()
    res = stats.youden_threshold(y, asah["s100b"])
    assert res.threshold == pytest.approx(0.205, abs=1e-12)
    assert res.sensitivity == pytest.approx(26 / 41, abs=1e-15)
    assert res.specificity == pytest.approx(58 / 72, abs=1e-15)
    # The reported threshold reproduces the same counts when applied with score >= threshold.
    cm = stats.classification_metrics(y, asah["s100b"], res.threshold)
    assert (cm.tp, cm.fn, cm.tn, cm.fp) == (26, 15, 58, 14)


def test_fast_delong_equals_pairwise_definition():
    """Sun & Xu midrank components equal the O(m n) placement values, ties included."""
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 60).astype(bool)
    a = np.round(rng.normal(y * 0.8, 1.0), 1)  # rounding creates ties
    b = np.round(rng.normal(y * 0.4, 1.0), 1)

    def components(s):
        psi = (s[y][:, None] > s[~y][None, :]) + 0.5 * (s[y][:, None] == s[~y][None, :])
        return psi.mean(axis=1), psi.mean(axis=0)

    (xa, ya), (xb, yb) = components(a), components(b)
    m, n = y.sum(), (~y).sum()
    var_a = xa.var(ddof=1) / m + ya.var(ddof=1) / n
    cov = np.cov(xa, xb)[0, 1] / m + np.cov(ya, yb)[0, 1] / n
    var_b = xb.var(ddof=1) / m + yb.var(ddof=1) / n
    assert stats.roc_auc_ci(y, a).variance == pytest.approx(var_a, rel=1e-12)
    res = stats.delong_test(y, a, b)
    assert res.covariance == pytest.approx(cov, rel=1e-12)
    assert res.z == pytest.approx((xa.mean() - xb.mean()) / np.sqrt(var_a + var_b - 2 * cov), rel=1e-12)


def test_auc_hand_worked_with_tie():
    """Cases {0.5, 0.9}, controls {0.5, 0.1}: placements V10 = (0.75, 1), V01 = (0.75, 1);
    AUC 0.875, variance 2 * var([0.75, 1]) / 2 = 0.03125."""
    res = stats.roc_auc_ci([1, 1, 0, 0], [0.5, 0.9, 0.5, 0.1])
    assert res.auc == pytest.approx(0.875)
    assert res.variance == pytest.approx(0.03125)
    half = sp_stats.norm.ppf(0.975) * np.sqrt(0.03125)
    assert res.ci_low == pytest.approx(0.875 - half)
    assert res.ci_high == 1.0  # 0.875 + 0.346 clipped like pROC


def test_perfect_separation():
    y = [0, 0, 0, 1, 1, 1]
    s = [0.1, 0.2, 0.3, 0.7, 0.8, 0.9]
    res = stats.roc_auc_ci(y, s)
    assert (res.auc, res.variance, res.ci_low, res.ci_high) == (1.0, 0.0, 1.0, 1.0)
    youden = stats.youden_threshold(y, s)
    assert youden.threshold == pytest.approx(0.5)  # midpoint of 0.3 and 0.7
    assert (youden.sensitivity, youden.specificity, youden.youden_index) == (1.0, 1.0, 1.0)
    same = stats.delong_test(y, s, s)
    assert (same.z, same.p_value) == (0.0, 1.0)


def test_identical_curves_give_z0_p1_like_proc(asah):
    """R: r <- roc(aSAH$outcome, aSAH$s100b); roc.test(r, r) -> Z = 0, p-value = 1 (pROC's
    delong.paired.test turns the 0 / 0 of two identical curves into Z = 0), not NaN."""
    y = (asah["outcome"] == "Poor").to_numpy()
    s = asah["s100b"].to_numpy()
    same = stats.delong_test(y, s, s)
    assert (same.z, same.p_value, same.variance) == (0.0, 1.0, 0.0)
    assert same.auc_a == same.auc_b == pytest.approx(0.73136856368563685, abs=1e-15)
    # A strictly increasing transform orders every case-control pair the same way: the same ROC curve.
    transformed = stats.delong_test(y, s, np.log1p(s))
    assert (transformed.z, transformed.p_value) == (0.0, 1.0)


def test_zero_variance_unequal_aucs_is_infinite_like_r():
    """Perfect separation (AUC 1) against a constant score (AUC 0.5): every placement differs by the same
    0.5, so var(difference) = 0 and R's (1 - 0.5) / 0 gives Z = Inf, p = 0."""
    y = [0, 0, 1, 1]
    with pytest.warns(RuntimeWarning, match="infinite"):
        res = stats.delong_test(y, [0.1, 0.2, 0.8, 0.9], [0.5, 0.5, 0.5, 0.5])
    assert (res.auc_a, res.auc_b) == (1.0, 0.5)
    assert res.z == np.inf and res.p_value == 0.0


def test_roc_curve_thresholds_and_area():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 40)
    s = np.round(rng.random(40), 2)
    y[:2] = (0, 1)
    curve = stats.roc_curve(y, s)
    assert curve.thresholds[0] == -np.inf and curve.thresholds[-1] == np.inf
    assert curve.sensitivity[0] == 1.0 and curve.specificity[-1] == 1.0
    area = -np.trapezoid(curve.sensitivity, curve.fpr)
    assert area == pytest.approx(stats.roc_auc_ci(y, s).auc, abs=1e-12)


# ---------------------------------------------------------------------------------------------------------
# Proportions
# ---------------------------------------------------------------------------------------------------------
def test_classification_metrics_by_hand():
    """Threshold 0.5, score >= 0.5 positive: TP 3, FN 1, TN 4, FP 2 -> SEN 3/4, SPE 4/6, ACC 7/10,
    PPV 3/5, NPV 4/5; CIs exact (Clopper-Pearson)."""
    y = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    s = [0.9, 0.5, 0.7, 0.2, 0.5, 0.6, 0.1, 0.3, 0.4, 0.0]
    cm = stats.classification_metrics(y, s, 0.5)
    assert (cm.tp, cm.fn, cm.tn, cm.fp) == (3, 1, 4, 2)
    assert (cm.sensitivity, cm.specificity, cm.accuracy, cm.ppv, cm.npv) == pytest.approx(
        (0.75, 4 / 6, 0.7, 0.6, 0.8)
    )
    for (x, n), ci in zip(
        [(3, 4), (4, 6), (7, 10), (3, 5), (4, 5)],
        [cm.sensitivity_ci, cm.specificity_ci, cm.accuracy_ci, cm.ppv_ci, cm.npv_ci],
        strict=True,
    ):
        assert ci == pytest.approx(proportion_confint(x, n, alpha=0.05, method="beta"), abs=1e-10)
    # R: binom.test(3, 4)$conf.int -> 0.1941204 0.9936905
    assert cm.sensitivity_ci == pytest.approx((0.1941204, 0.9936905), abs=5e-8)


def test_clopper_pearson_edges():
    assert stats.clopper_pearson_ci(0, 10)[0] == 0.0
    assert stats.clopper_pearson_ci(10, 10)[1] == 1.0
    assert stats.clopper_pearson_ci(0, 10)[1] == pytest.approx(1 - 0.025 ** (1 / 10))
    assert all(np.isnan(stats.clopper_pearson_ci(0, 0)))
    with pytest.warns(RuntimeWarning, match="PPV"):
        cm = stats.classification_metrics([1, 0, 0], [0.1, 0.2, 0.3], threshold=0.9)
    assert np.isnan(cm.ppv) and cm.npv == pytest.approx(2 / 3)


# ---------------------------------------------------------------------------------------------------------
# McNemar
# ---------------------------------------------------------------------------------------------------------
def test_mcnemar_r_documentation_example():
    """R: mcnemar.test(matrix(c(794, 86, 150, 570), nrow = 2))
    -> McNemar's chi-squared = 16.818, df = 1, p-value = 4.115e-05."""
    res = stats.mcnemar_test([[794, 150], [86, 570]])
    assert round(res.statistic, 3) == 16.818
    assert float(f"{res.p_value:.4g}") == 4.115e-05
    assert (res.b, res.c) == (150, 86)


@pytest.mark.parametrize("correction", [True, False])
def test_mcnemar_formula_and_statsmodels(correction):
    """Table [[101, 59], [121, 33]]: (|59 - 121| - 1)^2 / 180 = 20.672222 with correction (MATLAB mcnemar
    example); 62^2 / 180 = 21.355556 without (R: mcnemar.test(x, correct = FALSE))."""
    table = [[101, 59], [121, 33]]
    res = stats.mcnemar_test(table, correction=correction)
    expected = (61**2 if correction else 62**2) / 180
    assert res.statistic == pytest.approx(expected, abs=1e-12)
    assert res.p_value == pytest.approx(sp_stats.chi2.sf(expected, 1), rel=1e-12)
    ref = sm_mcnemar(np.array(table), exact=False, correction=correction)
    assert res.statistic == pytest.approx(ref.statistic) and res.p_value == pytest.approx(ref.pvalue)


def test_mcnemar_exact():
    """b = 2, c = 9: two-sided binomial p = 2 * P(X <= 2 | 11, 1/2) = 2 * 67 / 2048 (R: binom.test(2, 11))."""
    res = stats.mcnemar_test([[20, 2], [9, 5]], exact=True)
    assert res.statistic == 2.0
    assert res.p_value == pytest.approx(2 * 67 / 2048, abs=1e-15)
    assert res.p_value == pytest.approx(sm_mcnemar(np.array([[20, 2], [9, 5]]), exact=True).pvalue)
    assert stats.mcnemar_test([[5, 0], [0, 5]], exact=True).p_value == 1.0
    with pytest.warns(RuntimeWarning, match="discordant"):
        assert np.isnan(stats.mcnemar_test([[5, 0], [0, 5]]).statistic)


@pytest.mark.parametrize(
    "table", [[[1, 2], [3]], [[1, -2], [3, 4]], [[1, 2.5], [3, 4]], [[1, 2, 3], [4, 5, 6]]]
)
def test_mcnemar_rejects_bad_tables(table):
    with pytest.raises(ValueError, match="table"):
        stats.mcnemar_test(table)


# ---------------------------------------------------------------------------------------------------------
# Decision curves
# ---------------------------------------------------------------------------------------------------------
def test_net_benefit_matches_dcurves(df_binary):
    """R: dcurves::dca(cancer ~ cancerpredmarker, df_binary) at threshold 0.25
    -> net benefit 0.0640000, treat all -0.1466667."""
    res = stats.net_benefit(df_binary["cancer"].to_numpy(), df_binary["cancerpredmarker"].to_numpy(), [0.25])
    assert round(float(res.model[0]), 7) == 0.0640000
    assert round(float(res.treat_all[0]), 7) == -0.1466667
    assert res.treat_none[0] == 0.0


def test_net_benefit_by_hand():
    """n = 5, pt = 0.5: treated {0.5, 0.8, 0.6} -> TP 2, FP 1: NB = 2/5 - 1/5 = 0.2; treat all: 3/5 - 2/5."""
    res = stats.net_benefit([1, 1, 0, 0, 1], [0.5, 0.8, 0.6, 0.1, 0.2], [0.0, 0.5])
    assert res.model == pytest.approx([0.6, 0.2])
    assert res.treat_all == pytest.approx([0.6, 0.2])
    assert res.prevalence == pytest.approx(0.6)
    one_class = stats.net_benefit([0, 0], [0.1, 0.9], [0.5])
    assert one_class.model == pytest.approx([-0.5])


def test_net_benefit_zero_one_risks_like_dcurves():
    """dcurves::dca() moves risks equal to 0 to 0 - eps and risks equal to 1 to 1 + eps before comparing
    with the threshold. A 0/1 predictor [1, 0, 1, 0, 1] for outcomes [1, 1, 0, 0, 1] then treats only its 1s
    at pt = 0: TP 2, FP 1, NB(0) = 2/5 = 0.4 (not the prevalence 0.6); at pt = 0.5, 2/5 - 1/5 = 0.2.
    R: dca(y ~ x, data.frame(y = c(1, 1, 0, 0, 1), x = c(1, 0, 1, 0, 1)), thresholds = c(0, 0.5))."""
    res = stats.net_benefit([1, 1, 0, 0, 1], [1.0, 0.0, 1.0, 0.0, 1.0], [0.0, 0.5])
    assert res.model == pytest.approx([0.4, 0.2], abs=1e-15)
    assert res.treat_all[0] == pytest.approx(0.6)  # "all" = 1 + eps: everybody is treated
    # A continuous risk that is exactly 0 for one patient: untreated even at pt = 0.
    assert stats.net_benefit([1, 0, 0], [0.7, 0.0, 0.3], [0.0]).model == pytest.approx([1 / 3])


# ---------------------------------------------------------------------------------------------------------
# Independent AUCs
# ---------------------------------------------------------------------------------------------------------
def test_independent_auc_test():
    two = stats.independent_auc_test([0.8, 0.7], [0.002, 0.003])
    z = 0.1 / np.sqrt(0.005)
    assert two.z == pytest.approx(z) and two.statistic == pytest.approx(z**2)
    assert two.p_value == pytest.approx(2 * sp_stats.norm.sf(z))
    aucs, var = np.array([0.9, 0.75, 0.6]), np.array([0.001, 0.002, 0.004])
    w = 1 / var
    q = np.sum(w * (aucs - np.sum(w * aucs) / w.sum()) ** 2)  # Cochran's Q, same hypothesis
    three = stats.independent_auc_test(aucs, var)
    assert three.statistic == pytest.approx(q) and three.df == 2
    with pytest.warns(RuntimeWarning, match="singular"):
        assert np.isnan(stats.independent_auc_test([1.0, 1.0], [0.0, 0.0]).p_value)


# ---------------------------------------------------------------------------------------------------------
# Input checking
# ---------------------------------------------------------------------------------------------------------
def test_boolean_and_integer_labels_agree():
    s = [0.3, 0.6, 0.2, 0.9, 0.5]
    assert stats.roc_auc_ci([True, True, False, False, True], s) == stats.roc_auc_ci([1, 1, 0, 0, 1], s)


@pytest.mark.parametrize(
    ("y", "s", "match"),
    [
        ([1, 1, 1, 1], [0.1, 0.2, 0.3, 0.4], "single class"),
        ([1, 0, 1, 0], [0.1, float("nan"), 0.3, 0.4], r"y_score\[1\]=nan"),
        ([1, 0, 1, 0], [0.1, 0.2, 0.3], "len\\(y_score\\)=3"),
        ([1, 0, 2, 0], [0.1, 0.2, 0.3, 0.4], r"y_true\[2\]=.*2"),
        (["a", "b", "a", "b"], [0.1, 0.2, 0.3, 0.4], "0/1 or booleans"),
    ],
)
def test_degenerate_input_raises(y, s, match):
    with pytest.raises(ValueError, match=match):
        stats.roc_auc_ci(y, s)
    with pytest.raises(ValueError, match=match):
        stats.youden_threshold(y, s)
    with pytest.raises(ValueError, match=match):
        stats.classification_metrics(y, s, 0.5)


def test_other_argument_checks():
    with pytest.raises(ValueError, match="length"):
        stats.delong_test([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2])
    with pytest.raises(ValueError, match="two cases and two controls"):
        stats.roc_auc_ci([0, 1, 0], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="alpha"):
        stats.roc_auc_ci([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], alpha=1.5)
    with pytest.raises(ValueError, match=r"thresholds.*1.0"):
        stats.net_benefit([0, 1], [0.2, 0.8], [0.5, 1.0])
    with pytest.raises(ValueError, match=r"risk\[1\]=1.5"):
        stats.net_benefit([0, 1], [0.2, 1.5], [0.5])
