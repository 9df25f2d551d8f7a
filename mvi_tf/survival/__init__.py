"""Prognostic analysis: Kaplan–Meier, log-rank and Cox regression on CDLM-predicted risk groups.

Implements sections 2.8 and 3.5 of Wei et al. (Cancers 2021): progression-free and overall survival of the
prospective cohort stratified by the combined deep-learning model (CDLM) at its training Youden threshold,
side by side with the histopathological MVI label.
"""

from mvi_tf.survival.analysis import survival_analysis
from mvi_tf.survival.estimators import (
    CoxResult,
    FollowUpResult,
    KaplanMeierResult,
    LogrankResult,
    cox_regression,
    kaplan_meier,
    km_median,
    logrank_test,
    median_follow_up,
)

__all__ = [
    "CoxResult",
    "FollowUpResult",
    "KaplanMeierResult",
    "LogrankResult",
    "cox_regression",
    "kaplan_meier",
    "km_median",
    "logrank_test",
    "median_follow_up",
    "survival_analysis",
]
