"""Kaplan–Meier, log-rank and Cox proportional-hazards estimators pinned to R `survival`.

Every function validates its input up front and raises a `ValueError` naming the offending value for
degenerate input (no events, a single group, NaN, length mismatch); none returns a silent number.
Conventions follow R `survival` 3.x so that results can be checked against published R output:

- Kaplan–Meier confidence intervals use Greenwood's variance on the log scale (`conf.type = "log"`, R's
  default), the upper limit clipped at 1.
- Medians follow `quantile.survfit`: the first time the curve is at or below 0.5; when the curve is exactly
  0.5 over an interval, the midpoint of that interval.
- Cox regression uses Efron's method for ties (R's default), through `lifelines.CoxPHFitter`.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter
from lifelines.exceptions import ConvergenceError, ConvergenceWarning
from lifelines.statistics import multivariate_logrank_test, proportional_hazard_test
from scipy import stats

# R's `quantile.survfit(tolerance = sqrt(.Machine$double.eps))`: survival values this close to 0.5 count
# as exactly 0.5 (a flat stretch of the curve at the median).
_R_TOLERANCE = float(np.sqrt(np.finfo(float).eps))


# ---------------------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------------------


def _as_float_array(values: Sequence[float] | np.ndarray | pd.Series, name: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"`{name}` must be numeric. Received: {name}={values!r}") from err
    if array.ndim != 1:
        raise ValueError(f"`{name}` must be one-dimensional. Received shape {array.shape} for {name}.")
    return array


def _check_survival_data(
    durations: Sequence[float] | np.ndarray | pd.Series,
    events: Sequence[float] | np.ndarray | pd.Series,
    require_events: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (durations, events) pair and return float durations and boolean events."""
    time = _as_float_array(durations, "durations")
    status = _as_float_array(events, "events")
    if time.shape != status.shape:
        raise ValueError(
            "`durations` and `events` must have the same length. "
            f"Received: len(durations)={time.size}, len(events)={status.size}"
        )
    if time.size == 0:
        raise ValueError("`durations` is empty: at least one observation is needed.")
    for name, array in (("durations", time), ("events", status)):
        bad = np.flatnonzero(~np.isfinite(array))
        if bad.size:
            raise ValueError(
                f"`{name}` holds NaN or infinite values at positions {bad[:10].tolist()}. "
                f"Received: {name}[{bad[0]}]={array[bad[0]]}"
            )
    negative = np.flatnonzero(time < 0)
    if negative.size:
        raise ValueError(f"`durations` must be >= 0. Received: durations[{negative[0]}]={time[negative[0]]}")
    not_binary = np.flatnonzero((status != 0) & (status != 1))
    if not_binary.size:
        raise ValueError(
            "`events` must be 1 (event) or 0 (censored); recode R's `status` 2 = dead as 1 first. "
            f"Received: events[{not_binary[0]}]={status[not_binary[0]]}"
        )
    if require_events and not status.any():
        raise ValueError(
            f"No events among the {time.size} observations (all censored): the estimate is undefined."
        )
    return time, status.astype(bool)


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"`alpha` must lie in (0, 1). Received: alpha={alpha}")


# ---------------------------------------------------------------------------------------------------------
# Kaplan–Meier
# ---------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class KaplanMeierResult:
    """A Kaplan–Meier curve and its median, as R's `survfit(Surv(time, status) ~ 1)` prints them.

    Attributes
    ----------
    timeline : np.ndarray
        Distinct observed times (events and censorings), ascending.
    survival : np.ndarray
        Survival probability just after each time.
    ci_lower, ci_upper : np.ndarray
        Pointwise confidence limits (log transform, Greenwood variance); NaN where the survival is 0.
    at_risk, n_events, n_censored : np.ndarray
        Numbers at risk just before, events and censorings at each time.
    n : int
        Number of observations.
    total_events : int
        Number of events.
    median : float
        Median survival time; NaN when the curve does not reach 0.5.
    median_ci_lower, median_ci_upper : float
        Confidence limits of the median (R's `0.95LCL`, `0.95UCL`); NaN when not reached.
    alpha : float
        1 - confidence level.
    """

    timeline: np.ndarray
    survival: np.ndarray
    ci_lower: np.ndarray
    ci_upper: np.ndarray
    at_risk: np.ndarray
    n_events: np.ndarray
    n_censored: np.ndarray
    n: int
    total_events: int
    median: float
    median_ci_lower: float
    median_ci_upper: float
    alpha: float


def _time_at_survival(timeline: np.ndarray, curve: np.ndarray, level: float = 0.5) -> float:
    """Time at which a right-continuous step curve (1 at time 0) first reaches `level`.

    Mirrors R's `quantile.survfit`: the first time with `curve <= level`; when the curve equals `level`
    (within R's tolerance) over an interval, the midpoint of that interval, the end of follow-up closing an
    interval that runs to the end of the curve. Points where the curve is NaN (undefined confidence limits)
    are skipped. Returns NaN when the level is never reached.
    """
    last_time = float(timeline[-1])
    defined = ~np.isnan(curve)
    times = np.concatenate([[0.0], timeline[defined]])
    values = np.concatenate([[1.0], curve[defined]])
    # Keep the first time of each step: censored times repeat the previous value.
    step_start = np.concatenate([[True], values[1:] != values[:-1]])
    times, values = times[step_start], values[step_start]
    reached = np.flatnonzero(values <= level + _R_TOLERANCE)
    if reached.size == 0:
        return float("nan")
    first = reached[0]
    if values[first] < level - _R_TOLERANCE:
        return float(times[first])
    below = np.flatnonzero(values < level - _R_TOLERANCE)
    end = times[below[0]] if below.size else last_time
    return float((times[first] + end) / 2.0)


def kaplan_meier(
    durations: Sequence[float] | np.ndarray | pd.Series,
    events: Sequence[float] | np.ndarray | pd.Series,
    alpha: float = 0.05,
) -> KaplanMeierResult:
    """Kaplan–Meier estimate with log-transformed Greenwood confidence limits.

    R equivalent: `survfit(Surv(durations, events) ~ 1, conf.type = "log")` (R's defaults).

    Parameters
    ----------
    durations : array-like of float
        Follow-up times, >= 0.
    events : array-like of {0, 1}
        1 when the event was observed, 0 when censored. A sample without events is accepted (the curve
        stays at 1, the median is NaN) and a warning is issued.
    alpha : float, default 0.05
        1 - confidence level of the pointwise and median confidence intervals.

    Returns
    -------
    KaplanMeierResult

    Raises
    ------
    ValueError
        On length mismatch, empty input, NaN, negative durations or events other than 0/1.
    """
    _check_alpha(alpha)
    time, status = _check_survival_data(durations, events, require_events=False)
    if not status.any():
        warnings.warn(
            f"No events among the {time.size} observations: the Kaplan-Meier curve stays at 1 and the "
            "median is not reached.",
            RuntimeWarning,
            stacklevel=2,
        )
    timeline = np.unique(time)
    position = np.searchsorted(timeline, time)
    n_events = np.bincount(position[status], minlength=timeline.size)
    n_censored = np.bincount(position[~status], minlength=timeline.size)
    at_risk = time.size - np.concatenate([[0], np.cumsum(n_events + n_censored)[:-1]])
    survival = np.cumprod(1.0 - n_events / at_risk)
    with np.errstate(divide="ignore", invalid="ignore"):
        greenwood = np.cumsum(n_events / (at_risk * (at_risk - n_events)))
        log_se = np.sqrt(greenwood)
        z = stats.norm.ppf(1.0 - alpha / 2.0)
        positive = survival > 0
        log_survival = np.where(positive, np.log(np.where(positive, survival, 1.0)), np.nan)
        ci_lower = np.where(positive, np.exp(log_survival - z * log_se), np.nan)
        ci_upper = np.where(positive, np.minimum(np.exp(log_survival + z * log_se), 1.0), np.nan)
    return KaplanMeierResult(
        timeline=timeline,
        survival=survival,
        ci_lower=ci_lower,
        ci_upper=ci_upper,
        at_risk=at_risk,
        n_events=n_events,
        n_censored=n_censored,
        n=int(time.size),
        total_events=int(status.sum()),
        median=_time_at_survival(timeline, survival),
        median_ci_lower=_time_at_survival(timeline, ci_lower),
        median_ci_upper=_time_at_survival(timeline, ci_upper),
        alpha=alpha,
    )


def km_median(
    durations: Sequence[float] | np.ndarray | pd.Series,
    events: Sequence[float] | np.ndarray | pd.Series,
) -> float:
    """Kaplan–Meier median survival time.

    R equivalent: `median` column of `print(survfit(Surv(durations, events) ~ 1))`; the first time the
    curve is at or below 0.5, the midpoint when it is exactly 0.5 over an interval.

    Parameters
    ----------
    durations : array-like of float
        Follow-up times, >= 0.
    events : array-like of {0, 1}
        1 when the event was observed, 0 when censored.

    Returns
    -------
    float
        The median survival time; NaN when the curve does not reach 0.5 ("not reached"), which includes a
        sample without any event (every patient censored): R prints `median NA` there, not an error.

    Raises
    ------
    ValueError
        On length mismatch, empty input, NaN, negative durations or events other than 0/1.
    """
    time, status = _check_survival_data(durations, events, require_events=False)
    if not status.any():
        return float("nan")
    return kaplan_meier(time, status).median


@dataclasses.dataclass(frozen=True)
class FollowUpResult:
    """Median follow-up by the reverse Kaplan–Meier method (censoring treated as the event).

    Attributes
    ----------
    median, ci_lower, ci_upper : float
        Median potential follow-up and its confidence limits (NaN when not reached).
    minimum, maximum : float
        Range of the observed follow-up times.
    n : int
        Number of patients.
    """

    median: float
    ci_lower: float
    ci_upper: float
    minimum: float
    maximum: float
    n: int


def median_follow_up(
    durations: Sequence[float] | np.ndarray | pd.Series,
    events: Sequence[float] | np.ndarray | pd.Series,
    alpha: float = 0.05,
) -> FollowUpResult:
    """Median follow-up time by reverse Kaplan–Meier (Schemper & Smith, 1996).

    Patients who had the event stop contributing follow-up information, so the roles of event and
    censoring are swapped. R equivalent: `survfit(Surv(durations, 1 - events) ~ 1)`.

    Parameters
    ----------
    durations : array-like of float
        Follow-up times, >= 0.
    events : array-like of {0, 1}
        1 when the event was observed, 0 when censored.
    alpha : float, default 0.05
        1 - confidence level.

    Returns
    -------
    FollowUpResult

    Raises
    ------
    ValueError
        On invalid input, or when every patient had the event (no censoring: the follow-up distribution is
        undefined).
    """
    time, status = _check_survival_data(durations, events, require_events=False)
    if status.all():
        raise ValueError(
            f"All {time.size} patients had the event (none censored): reverse Kaplan-Meier follow-up is "
            "undefined."
        )
    reverse = kaplan_meier(time, ~status, alpha=alpha)
    return FollowUpResult(
        median=reverse.median,
        ci_lower=reverse.median_ci_lower,
        ci_upper=reverse.median_ci_upper,
        minimum=float(time.min()),
        maximum=float(time.max()),
        n=int(time.size),
    )


# ---------------------------------------------------------------------------------------------------------
# Log-rank test
# ---------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LogrankResult:
    """Result of a k-group log-rank test, laid out as R's `survdiff` prints it.

    Attributes
    ----------
    statistic : float
        Chi-square statistic, (O - E)' V^- (O - E).
    p_value : float
        Upper-tail chi-square probability on `degrees_of_freedom` degrees of freedom.
    degrees_of_freedom : int
        Number of groups - 1.
    groups : tuple
        Group labels, sorted.
    n, observed, expected : tuple
        Per group: size, observed events and expected events under H0.
    median : tuple of float
        Per group: Kaplan–Meier median survival time, NaN when not reached (R's `median NA` of
        `survfit(Surv(durations, events) ~ groups)`), e.g. for a group in which every patient is censored.
    """

    statistic: float
    p_value: float
    degrees_of_freedom: int
    groups: tuple
    n: tuple[int, ...]
    observed: tuple[float, ...]
    expected: tuple[float, ...]
    median: tuple[float, ...] = ()


def logrank_test(
    durations: Sequence[float] | np.ndarray | pd.Series,
    events: Sequence[float] | np.ndarray | pd.Series,
    groups: Sequence | np.ndarray | pd.Series,
) -> LogrankResult:
    """Log-rank test of equal survival across k >= 2 groups.

    H0: the hazard functions of all groups are equal at every time. HA: at least one group's hazard
    differs. The statistic is asymptotically chi-square with k - 1 degrees of freedom under H0; censoring
    is assumed independent of survival within each group. R equivalent:
    `survdiff(Surv(durations, events) ~ groups)` (rho = 0).

    Parameters
    ----------
    durations : array-like of float
        Follow-up times, >= 0.
    events : array-like of {0, 1}
        1 when the event was observed, 0 when censored.
    groups : array-like
        Group label per observation (any hashable values, no missing values).

    Returns
    -------
    LogrankResult
        With `.statistic` and `.p_value`.

    Raises
    ------
    ValueError
        On length mismatch, NaN, negative durations, events other than 0/1, no events, missing group
        labels or fewer than two groups.
    """
    time, status = _check_survival_data(durations, events, require_events=True)
    try:
        labels = pd.Series(list(groups), dtype=object)
    except TypeError as err:
        raise ValueError(f"`groups` must be a sequence of labels. Received: groups={groups!r}") from err
    if labels.size != time.size:
        raise ValueError(
            "`groups` must have the same length as `durations`. "
            f"Received: len(groups)={labels.size}, len(durations)={time.size}"
        )
    missing = np.flatnonzero(labels.isna().to_numpy())
    if missing.size:
        raise ValueError(f"`groups` holds missing labels at positions {missing[:10].tolist()}.")
    try:
        levels = sorted(labels.unique())
    except TypeError:
        levels = sorted(labels.unique(), key=str)
    if len(levels) < 2:
        raise ValueError(
            f"The log-rank test needs at least two groups. Received a single group: groups={levels}"
        )
    result = multivariate_logrank_test(time, labels.to_numpy(), status)

    # Observed and expected events per group (R's `survdiff` columns `Observed`, `Expected`).
    event_times = np.unique(time[status])
    deaths = np.array([np.sum(status & (time == t)) for t in event_times], dtype=float)
    at_risk_all = np.array([np.sum(time >= t) for t in event_times], dtype=float)
    sizes, observed, expected, medians = [], [], [], []
    for level in levels:
        member = (labels == level).to_numpy()
        at_risk = np.array([np.sum(member & (time >= t)) for t in event_times], dtype=float)
        sizes.append(int(member.sum()))
        observed.append(float(np.sum(status & member)))
        expected.append(float(np.sum(deaths * at_risk / at_risk_all)))
        medians.append(km_median(time[member], status[member]))
    return LogrankResult(
        statistic=float(result.test_statistic),
        p_value=float(result.p_value),
        degrees_of_freedom=len(levels) - 1,
        groups=tuple(levels),
        n=tuple(sizes),
        observed=tuple(observed),
        expected=tuple(expected),
        median=tuple(medians),
    )


# ---------------------------------------------------------------------------------------------------------
# Cox proportional-hazards regression
# ---------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CoxResult:
    """A fitted Cox proportional-hazards model, as R's `summary(coxph(...))` reports it.

    Attributes
    ----------
    summary : pd.DataFrame
        One row per covariate (index), columns `coef`, `se`, `hazard_ratio`, `hr_lower`, `hr_upper`
        (confidence limits of the hazard ratio), `z`, `p_value`.
    concordance : float
        Harrell's C-index of the linear predictor (R's `Concordance`).
    likelihood_ratio : float
        Likelihood-ratio chi-square statistic against the null model.
    likelihood_ratio_df : int
        Its degrees of freedom.
    likelihood_ratio_p : float
        Its p-value.
    proportional_hazards : pd.DataFrame or None
        Test of the proportional-hazards assumption per covariate (scaled Schoenfeld residuals against
        Kaplan–Meier-transformed time, the approximation of R `cox.zph` before survival 3.0): columns
        `test_statistic`, `p_value`. None when not requested.
    n, n_events : int
        Observations and events used.
    ties : str
        Method for tied event times.
    alpha : float
        1 - confidence level.
    convergence_warnings : tuple of str
        Warnings raised while fitting (e.g. a coefficient drifting to infinity under separation).
    """

    summary: pd.DataFrame
    concordance: float
    likelihood_ratio: float
    likelihood_ratio_df: int
    likelihood_ratio_p: float
    proportional_hazards: pd.DataFrame | None
    n: int
    n_events: int
    ties: str
    alpha: float
    convergence_warnings: tuple[str, ...]


def _pick_column(summary: pd.DataFrame, prefix: str) -> pd.Series:
    matches = [column for column in summary.columns if str(column).startswith(prefix)]
    if len(matches) != 1:
        raise RuntimeError(f"lifelines summary has no unique column starting with {prefix!r}: {matches}")
    return summary[matches[0]]


def cox_regression(
    df: pd.DataFrame,
    duration_col: str,
    event_col: str,
    covariates: Sequence[str],
    ties: str = "efron",
    alpha: float = 0.05,
    check_proportional_hazards: bool = True,
) -> CoxResult:
    """Cox proportional-hazards regression with hazard ratios, confidence intervals and C-index.

    H0 per covariate: its coefficient is 0 (hazard ratio 1), Wald test. Assumes proportional hazards
    (checked with scaled Schoenfeld residuals when `check_proportional_hazards`) and independent censoring.
    R equivalent: `summary(coxph(Surv(duration_col, event_col) ~ covariates, data = df, ties = "efron"))`
    and `cox.zph(fit, transform = "km")` for the proportional-hazards check.

    Parameters
    ----------
    df : pd.DataFrame
        One row per patient. Error messages name rows by the frame's index (use the pseudonym as index).
    duration_col : str
        Column of follow-up times (>= 0).
    event_col : str
        Column of event indicators (1 event, 0 censored).
    covariates : sequence of str
        Numeric covariate columns (binary groups coded 0/1).
    ties : {"efron"}, default "efron"
        Method for tied event times. Only Efron's (R's default) is implemented by lifelines.
    alpha : float, default 0.05
        1 - confidence level of the hazard-ratio intervals.
    check_proportional_hazards : bool, default True
        Run the proportional-hazards test.

    Returns
    -------
    CoxResult

    Raises
    ------
    ValueError
        On missing columns, NaN or non-numeric values, constant covariates, invalid durations or events,
        no events, or when the model does not converge.
    TypeError
        When `df` is not a DataFrame.
    """
    covariates = _check_cox_arguments(df, duration_col, event_col, covariates, ties, alpha)
    data = _cox_data(df, duration_col, event_col, covariates)
    fitter, messages = _fit_cox(data, duration_col, event_col, covariates, alpha)
    for message in messages:
        warnings.warn(f"Cox regression on {covariates}: {message}", ConvergenceWarning, stacklevel=2)

    summary = _cox_coefficients(fitter, covariates)
    proportional_hazards = None
    if check_proportional_hazards:
        test = proportional_hazard_test(fitter, data, time_transform="km")
        table = test.summary.reindex(covariates)
        proportional_hazards = pd.DataFrame(
            {"test_statistic": table["test_statistic"], "p_value": table["p"]}
        )
        proportional_hazards.index.name = "covariate"

    ratio = fitter.log_likelihood_ratio_test()
    return CoxResult(
        summary=summary,
        concordance=float(fitter.concordance_index_),
        likelihood_ratio=float(ratio.test_statistic),
        likelihood_ratio_df=int(ratio.degrees_freedom),
        likelihood_ratio_p=float(ratio.p_value),
        proportional_hazards=proportional_hazards,
        n=len(data),
        n_events=int(data[event_col].sum()),
        ties=ties,
        alpha=alpha,
        convergence_warnings=messages,
    )


def _check_cox_arguments(
    df: pd.DataFrame, duration_col: str, event_col: str, covariates: Sequence[str], ties: str, alpha: float
) -> list[str]:
    """The covariates as a list, after checking the frame, the column names, ``ties`` and ``alpha``."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"`df` must be a pandas DataFrame. Received: {type(df).__name__}")
    if isinstance(covariates, str) or not len(covariates):
        raise ValueError(f"`covariates` must be a non-empty list of column names. Received: {covariates!r}")
    covariates = list(covariates)
    if len(set(covariates)) != len(covariates) or {duration_col, event_col} & set(covariates):
        raise ValueError(
            "`covariates` must be distinct and differ from the duration and event columns. "
            f"Received: covariates={covariates}, duration_col={duration_col!r}, event_col={event_col!r}"
        )
    if ties != "efron":
        raise ValueError(f"Only Efron's method for ties is available (R's default). Received: ties={ties!r}")
    _check_alpha(alpha)
    return covariates


def _cox_data(df: pd.DataFrame, duration_col: str, event_col: str, covariates: list[str]) -> pd.DataFrame:
    """The model's columns as floats, checked: present, numeric, valid survival data, no constant covariate."""
    columns = [duration_col, event_col, *covariates]
    missing = [column for column in columns if column not in df.columns]
    if missing:
        raise ValueError(f"Columns {missing} are missing. Received columns: {list(df.columns)}")

    data = df[columns].copy()
    for column in columns:
        values = pd.to_numeric(data[column], errors="coerce")
        bad = data.index[values.isna()]
        if len(bad):
            raise ValueError(
                f"Column {column!r} holds missing or non-numeric values for rows {list(bad[:10])}. "
                f"Received: {column}={data.loc[bad[0], column]!r} for row {bad[0]!r}"
            )
        data[column] = values.astype(float)
    _check_survival_data(data[duration_col].to_numpy(), data[event_col].to_numpy(), require_events=True)
    for column in covariates:
        if data[column].nunique() < 2:
            raise ValueError(
                f"Covariate {column!r} is constant ({data[column].iloc[0]}) over all {len(data)} rows: "
                "its hazard ratio is not estimable."
            )
    return data


def _fit_cox(
    data: pd.DataFrame, duration_col: str, event_col: str, covariates: list[str], alpha: float
) -> tuple[CoxPHFitter, tuple[str, ...]]:
    """The fitted lifelines model and the convergence warnings it raised (a failed fit raises ValueError)."""
    fitter = CoxPHFitter(alpha=alpha)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        try:
            fitter.fit(data, duration_col=duration_col, event_col=event_col)
        except ConvergenceError as err:
            raise ValueError(
                f"Cox regression of {duration_col!r} on {covariates} did not converge: {err}"
            ) from err
    messages = tuple(
        str(item.message).strip() for item in caught if issubclass(item.category, ConvergenceWarning)
    )
    return fitter, messages


def _cox_coefficients(fitter: CoxPHFitter, covariates: list[str]) -> pd.DataFrame:
    """Coefficient, SE, hazard ratio with CI, z and Wald p per covariate (index ``covariate``)."""
    raw = fitter.summary.reindex(covariates)
    summary = pd.DataFrame(
        {
            "coef": raw["coef"],
            "se": raw["se(coef)"],
            "hazard_ratio": raw["exp(coef)"],
            "hr_lower": _pick_column(raw, "exp(coef) lower"),
            "hr_upper": _pick_column(raw, "exp(coef) upper"),
            "z": raw["z"],
            "p_value": raw["p"],
        }
    )
    summary.index.name = "covariate"
    return summary
