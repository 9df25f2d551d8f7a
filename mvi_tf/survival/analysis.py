"""Survival analysis of training runs: the paper's prognostic evaluation (sections 2.8 and 3.5).

For every run directory (docs/architecture.md, "Run directory") and every modality in its
`predictions.csv`, the patients of the requested cohort are split at the CDLM's training Youden threshold
(`thresholds.json`, key `cdlm`; predicted MVI present when `cdlm >= threshold`) and, side by side, by the
histopathological label. Progression-free (PFS) and overall survival (OS) are described with Kaplan–Meier
curves, medians with 95% CIs and the log-rank test, and modelled with Cox regression on the predicted group,
the true label and the continuous CDLM score. Patients without follow-up for an endpoint (drop-outs) are left
out of that endpoint's analysis and counted; median follow-up is estimated by reverse Kaplan–Meier.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from mvi_tf import na
from mvi_tf.contract import RunFiles, read_json, write_json
from mvi_tf.survival.estimators import (
    cox_regression,
    kaplan_meier,
    logrank_test,
    median_follow_up,
)

COHORTS = ("prospective", "train", "all")
ENDPOINTS = {
    "pfs": ("pfs_months", "pfs_event", "Progression-free survival"),
    "os": ("os_months", "os_event", "Overall survival"),
}
MODALITY_NAMES = {"ct": "CE-CT", "mri": "EOB-MRI"}
SCORE_COLUMN = "cdlm"
# Hazard ratios of the continuous CDLM probability are reported per 0.1 increase, a readable unit.
SCORE_STEP = 0.1
REQUIRED_COLUMNS = (
    "patient_id",
    "modality",
    "label",
    SCORE_COLUMN,
    "pfs_months",
    "pfs_event",
    "os_months",
    "os_event",
)
SYNTHETIC_BANNER = "SYNTHETIC DATA"
SURVIVAL_JSON = "survival.json"
GROUPINGS = {
    "predicted": ("CDLM-predicted MVI", "MVI present (CDLM)", "MVI absent (CDLM)"),
    "histopathology": ("Histopathological MVI", "MVI present (pathology)", "MVI absent (pathology)"),
}
TABLE_COLUMNS = [
    "synthetic",
    "cohort",
    "modality",
    "endpoint",
    "analysis",
    "n",
    "events",
    "dropped_out",
    "follow_up_median",
    "follow_up_min",
    "follow_up_max",
    "overall_median",
    "overall_median_lower",
    "overall_median_upper",
    "n_present",
    "events_present",
    "median_present",
    "median_present_lower",
    "median_present_upper",
    "n_absent",
    "events_absent",
    "median_absent",
    "median_absent_lower",
    "median_absent_upper",
    "logrank_chi2",
    "logrank_df",
    "logrank_p",
    "hazard_ratio",
    "hr_lower",
    "hr_upper",
    "hr_p",
    "ph_test_p",
    "c_index",
    "note",
]
INTEGER_COLUMNS = (
    "n",
    "events",
    "dropped_out",
    "n_present",
    "events_present",
    "n_absent",
    "events_absent",
    "logrank_df",
)


@dataclasses.dataclass(frozen=True)
class _Run:
    path: Path
    predictions: pd.DataFrame
    thresholds: dict[str, float]
    synthetic: bool


# ---------------------------------------------------------------------------------------------------------
# Reading run directories
# ---------------------------------------------------------------------------------------------------------


def _is_synthetic(run_dir: Path) -> bool:
    """True when `metrics.json` or the copied `schema.json` says `synthetic: true`, or `config.yaml` has
    `data: {synthetic: true}`."""
    files = RunFiles(run_dir)
    for path in (files.metrics_path, files.schema_path):
        if path.is_file() and read_json(path).get("synthetic") is True:
            return True
    if files.config_path.is_file():
        data = files.config().get("data", {})
        if isinstance(data, dict) and data.get("synthetic") is True:
            return True
    return False


def _read_thresholds(run_dir: Path, modalities: Sequence[str]) -> dict[str, float]:
    path = RunFiles(run_dir).thresholds_path
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the CDLM's Youden threshold is needed to form groups.")
    thresholds = read_json(path)
    if SCORE_COLUMN not in thresholds:
        raise ValueError(f"{path} has no key {SCORE_COLUMN!r}. Received keys: {list(thresholds)}")
    value = thresholds[SCORE_COLUMN]
    # A single threshold, or one per modality when a run holds several.
    per_modality = value if isinstance(value, dict) else {modality: value for modality in modalities}
    result = {}
    for modality in modalities:
        if modality not in per_modality:
            raise ValueError(f"{path}: no {SCORE_COLUMN!r} threshold for modality {modality!r}.")
        threshold = per_modality[modality]
        if not isinstance(threshold, (int, float)) or not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(
                f"{path}: the {SCORE_COLUMN!r} threshold must be a probability in [0, 1]. "
                f"Received: {SCORE_COLUMN}={threshold!r}"
            )
        result[modality] = float(threshold)
    return result


def _check_predictions(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    missing = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
    if "cohort" not in frame.columns and "split" not in frame.columns:
        missing.append("cohort or split")
    if missing:
        raise ValueError(f"{path} lacks columns {missing}. Received columns: {list(frame.columns)}")
    frame = frame.copy()
    frame["patient_id"] = frame["patient_id"].astype(str)
    duplicated = frame.duplicated(subset=["patient_id", "modality"])
    if duplicated.any():
        row = frame[duplicated].iloc[0]
        raise ValueError(
            f"{path}: patient {row['patient_id']} appears twice for modality {row['modality']!r}."
        )
    if "cohort" not in frame.columns:
        frame["cohort"] = np.where(frame["split"] == "prospective", "prospective", "train")

    def fail(row: pd.Series, column: str, why: str) -> None:
        raise ValueError(
            f"{path}: patient {row['patient_id']} ({row['modality']}) has {why}. "
            f"Received: {column}={row[column]!r}"
        )

    for column in (SCORE_COLUMN, "label", "pfs_months", "pfs_event", "os_months", "os_event"):
        numeric = pd.to_numeric(frame[column], errors="coerce")
        bad = numeric.isna() & frame[column].notna()
        if bad.any():
            fail(frame[bad].iloc[0], column, f"a non-numeric {column}")
        frame[column] = numeric
    for _, row in frame.iterrows():
        score = row[SCORE_COLUMN]
        if not (np.isfinite(score) and 0.0 <= score <= 1.0):
            fail(row, SCORE_COLUMN, "a CDLM score that is not a probability in [0, 1]")
        if row["label"] not in (0, 1):
            fail(row, "label", "a histopathological MVI label other than 0 or 1")
        for duration_col, event_col, _ in ENDPOINTS.values():
            duration, event = row[duration_col], row[event_col]
            if np.isnan(duration) != np.isnan(event):
                fail(
                    row,
                    event_col,
                    f"{duration_col}={duration!r} but {event_col} does not match (one is missing)",
                )
            if not np.isnan(duration) and (duration < 0 or event not in (0, 1)):
                fail(row, duration_col, f"invalid follow-up ({duration_col}={duration}, {event_col}={event})")
    longer = frame["pfs_months"] > frame["os_months"] + 1e-6
    if longer.any():
        row = frame[longer].iloc[0]
        warnings.warn(
            f"{path}: {int(longer.sum())} patient(s) have PFS longer than OS (progression-free survival ends "
            f"at death at the latest), e.g. patient {row['patient_id']}: pfs_months={row['pfs_months']}, "
            f"os_months={row['os_months']}. Check the outcome columns.",
            UserWarning,
            stacklevel=3,
        )
    return frame


def _read_run(run_dir: str | Path) -> _Run:
    path = Path(run_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"Run directory {path} does not exist.")
    files = RunFiles(path)
    predictions_path = files.predictions_path
    if not predictions_path.is_file():
        raise FileNotFoundError(f"{predictions_path} is missing; train the model first (`mvi-tf train`).")
    predictions = _check_predictions(files.predictions(), predictions_path)
    if predictions.empty:
        raise ValueError(f"{predictions_path} holds no patients.")
    modalities = sorted(predictions["modality"].astype(str).unique())
    return _Run(
        path=path,
        predictions=predictions,
        thresholds=_read_thresholds(path, modalities),
        synthetic=_is_synthetic(path),
    )


# ---------------------------------------------------------------------------------------------------------
# Analyses
# ---------------------------------------------------------------------------------------------------------


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _attempt(function: Any, *args: Any, **kwargs: Any) -> tuple[Any, str | None]:
    """Run a statistical estimate; a degenerate sample gives (None, reason) instead of stopping the run."""
    try:
        return function(*args, **kwargs), None
    except ValueError as err:
        return None, str(err)


def _not_estimable(reason: str, *keys: str) -> dict[str, Any]:
    """An estimate that the sample cannot define: ``error`` plus each key None with the reason (mvi_tf.na)."""
    result: dict[str, Any] = {"error": reason}
    for key in keys:
        na.mark(result, key, reason)
    return result


def _km_summary(durations: np.ndarray, events: np.ndarray) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        curve = kaplan_meier(durations, events)
    summary = {
        "n": curve.n,
        "events": curve.total_events,
        "median": _finite(curve.median),
        "median_ci": [_finite(curve.median_ci_lower), _finite(curve.median_ci_upper)],
    }
    return na.explain(summary, median="not reached: the Kaplan-Meier curve stays above 50%")


def _cox_summary(frame: pd.DataFrame, duration_col: str, event_col: str, covariate: str) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result, error = _attempt(cox_regression, frame, duration_col, event_col, [covariate])
    if result is None:
        return _not_estimable(f"HR not estimable: {error}", "hazard_ratio", "p_value")
    if result.convergence_warnings:
        # lifelines warns on (quasi-)complete separation or a fit that did not settle; the coefficient then
        # drifts towards +-infinity (R: "coefficient may be infinite") and its HR must not be reported.
        text = " ".join(result.convergence_warnings)
        reason = (
            "complete separation (the covariate determines who has an event)"
            if "separation" in text
            else "the Newton-Raphson fit did not converge"
        )
        return _not_estimable(f"HR not estimable: {reason}", "hazard_ratio", "p_value")
    row = result.summary.loc[covariate]
    return {
        "coef": _finite(row["coef"]),
        "se": _finite(row["se"]),
        "hazard_ratio": _finite(row["hazard_ratio"]),
        "hr_ci": [_finite(row["hr_lower"]), _finite(row["hr_upper"])],
        "p_value": _finite(row["p_value"]),
        "concordance": _finite(result.concordance),
        "ph_test_p": _finite(result.proportional_hazards.loc[covariate, "p_value"]),
    }


def _grouping_analysis(
    frame: pd.DataFrame, duration_col: str, event_col: str, present: pd.Series, names: tuple[str, str, str]
) -> dict[str, Any]:
    title, present_name, absent_name = names
    durations = frame[duration_col].to_numpy(float)
    events = frame[event_col].to_numpy(float)
    mask = present.to_numpy(bool)
    groups = {}
    for name, member in ((present_name, mask), (absent_name, ~mask)):
        groups[name] = (
            _km_summary(durations[member], events[member])
            if member.any()
            else na.mark({"n": 0}, "median", "no patients in this group")
        )
    logrank, logrank_error = _attempt(logrank_test, durations, events, np.where(mask, 1, 0))
    cox_frame = frame[[duration_col, event_col]].assign(mvi_present=mask.astype(float))
    no_events = [name for name, group in groups.items() if group["n"] and not group["events"]]
    cox = (
        _not_estimable(f"HR not estimable: no events among {' and '.join(no_events)}", "hazard_ratio", "p_value")
        if no_events
        else _cox_summary(cox_frame, duration_col, event_col, "mvi_present")
    )
    return {
        "title": title,
        "present": present_name,
        "absent": absent_name,
        "groups": groups,
        "logrank": (
            {
                "chi2": float(logrank.statistic),
                "df": logrank.degrees_of_freedom,
                "p_value": float(logrank.p_value),
            }
            if logrank is not None
            else _not_estimable(f"log-rank test not possible: {logrank_error}", "p_value")
        ),
        "cox": cox,
    }


def _endpoint_analysis(
    subset: pd.DataFrame, endpoint: str, threshold: float
) -> tuple[dict[str, Any], pd.DataFrame]:
    duration_col, event_col, title = ENDPOINTS[endpoint]
    complete = subset.dropna(subset=[duration_col, event_col]).set_index("patient_id")
    result: dict[str, Any] = {
        "endpoint": endpoint,
        "title": title,
        "n_total": len(subset),
        "n": len(complete),
        "dropped_out": int(len(subset) - len(complete)),
    }
    if complete.empty:
        result["error"] = f"no patient has complete {endpoint.upper()} data"
        return result, complete
    durations = complete[duration_col].to_numpy(float)
    events = complete[event_col].to_numpy(float)
    result["events"] = int(events.sum())
    follow_up, follow_up_error = _attempt(median_follow_up, durations, events)
    result["follow_up"] = (
        {
            "median": _finite(follow_up.median),
            "median_ci": [_finite(follow_up.ci_lower), _finite(follow_up.ci_upper)],
        }
        if follow_up is not None
        else _not_estimable(f"median follow-up not estimable: {follow_up_error}", "median")
    )
    na.explain(result["follow_up"], median="not reached: the reverse Kaplan-Meier curve stays above 50%")
    result["follow_up"]["range"] = [float(durations.min()), float(durations.max())]
    result["overall"] = _km_summary(durations, events)
    result["predicted"] = _grouping_analysis(
        complete, duration_col, event_col, complete[SCORE_COLUMN] >= threshold, GROUPINGS["predicted"]
    )
    result["histopathology"] = _grouping_analysis(
        complete, duration_col, event_col, complete["label"] == 1, GROUPINGS["histopathology"]
    )
    score_frame = complete[[duration_col, event_col]].assign(
        cdlm_per_step=complete[SCORE_COLUMN] / SCORE_STEP
    )
    result["continuous"] = _cox_summary(score_frame, duration_col, event_col, "cdlm_per_step")
    return result, complete


# ---------------------------------------------------------------------------------------------------------
# Output: plots, tables, JSON
# ---------------------------------------------------------------------------------------------------------


def _format_number(value: float | None, digits: int = 1) -> str:
    return "NR" if value is None else f"{value:.{digits}f}"


def _format_p(value: float | None) -> str:
    if value is None:
        return ""
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _format_ci(bounds: Sequence[float | None] | None, digits: int = 1) -> str:
    if not bounds:
        return ""
    return f"{_format_number(bounds[0], digits)}–{_format_number(bounds[1], digits)}"


def plot_kaplan_meier(
    frame: pd.DataFrame,
    duration_col: str,
    event_col: str,
    present: pd.Series,
    names: tuple[str, str, str],
    path: Path,
    title: str,
    annotation: str,
    synthetic: bool,
) -> Path:
    """Kaplan–Meier curves of two groups with numbers at risk under the plot, saved as PNG (Agg).

    Parameters
    ----------
    frame : pd.DataFrame
        Patients with complete follow-up for the endpoint.
    duration_col, event_col : str
        Follow-up time (months) and event indicator columns.
    present : pd.Series of bool
        Group membership (MVI present), aligned with `frame`.
    names : tuple of str
        (panel title, present-group name, absent-group name).
    path : Path
        Output PNG.
    title : str
        Figure title.
    annotation : str
        Text placed in the plot (log-rank p, hazard ratio).
    synthetic : bool
        Stamp the figure "SYNTHETIC DATA".

    Returns
    -------
    Path
        The written file.
    """
    from lifelines import KaplanMeierFitter
    from lifelines.plotting import add_at_risk_counts
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.0, 5.6), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    fitters = []
    for name, member, colour in (
        (names[1], present.to_numpy(bool), "tab:red"),
        (names[2], ~present.to_numpy(bool), "tab:blue"),
    ):
        if not member.any():
            continue
        fitter = KaplanMeierFitter(label=f"{name} (n={int(member.sum())})")
        fitter.fit(frame.loc[member, duration_col], frame.loc[member, event_col])
        fitter.plot_survival_function(ax=axes, ci_show=False, show_censors=True, color=colour)
        fitters.append(fitter)
    axes.set_ylim(0.0, 1.05)
    axes.set_xlim(left=0.0)
    axes.set_xlabel("Months after surgery")
    axes.set_ylabel("Survival probability")
    axes.set_title(f"{SYNTHETIC_BANNER}: {title}" if synthetic else title, fontsize=10)
    axes.legend(loc="upper right", fontsize=8)
    axes.text(0.97, 0.78, annotation, transform=axes.transAxes, fontsize=8, ha="right", va="top")
    add_at_risk_counts(
        *fitters,
        ax=axes,
        fig=figure,
        rows_to_show=["At risk"],
        labels=[fitter.label.split(" (n=")[0] for fitter in fitters],
    )
    if synthetic:
        figure.text(
            0.5,
            0.55,
            SYNTHETIC_BANNER,
            fontsize=40,
            color="grey",
            alpha=0.2,
            rotation=25,
            ha="center",
            va="center",
        )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def _cox_columns(cox: dict[str, Any]) -> dict[str, Any]:
    if "error" in cox:
        return {}
    return {
        "hazard_ratio": cox["hazard_ratio"],
        "hr_lower": cox["hr_ci"][0],
        "hr_upper": cox["hr_ci"][1],
        "hr_p": cox["p_value"],
        "ph_test_p": cox["ph_test_p"],
        "c_index": cox["concordance"],
    }


def _group_columns(group: dict[str, Any], suffix: str) -> dict[str, Any]:
    columns = {f"n_{suffix}": group["n"], f"events_{suffix}": group.get("events", 0)}
    if group["n"]:
        columns[f"median_{suffix}"] = group["median"]
        columns[f"median_{suffix}_lower"], columns[f"median_{suffix}_upper"] = group["median_ci"]
    return columns


def _table_rows(analysis: dict[str, Any]) -> list[dict[str, Any]]:
    """One table row per grouping (predicted, histopathological) and one for the continuous score."""
    base = {
        "synthetic": analysis["synthetic"],
        "cohort": analysis["cohort"],
        "modality": analysis["modality_name"],
        "endpoint": analysis["endpoint"].upper(),
        "n": analysis["n"],
        "events": analysis.get("events", 0),
        "dropped_out": analysis["dropped_out"],
    }
    follow_up = analysis.get("follow_up", {})
    if "range" in follow_up:
        base["follow_up_median"] = follow_up["median"]
        base["follow_up_min"], base["follow_up_max"] = follow_up["range"]
    overall = analysis.get("overall", {})
    if overall:
        base["overall_median"] = overall["median"]
        base["overall_median_lower"], base["overall_median_upper"] = overall["median_ci"]
    if "error" in analysis:
        return [{**base, "note": analysis["error"]}]
    rows = []
    for key in ("predicted", "histopathology"):
        grouping = analysis[key]
        cox, logrank = grouping["cox"], grouping["logrank"]
        notes = [message for message in (logrank.get("error"), cox.get("error")) if message]
        rows.append(
            {
                **base,
                "analysis": grouping["title"],
                **_group_columns(grouping["groups"][grouping["present"]], "present"),
                **_group_columns(grouping["groups"][grouping["absent"]], "absent"),
                "logrank_chi2": logrank.get("chi2"),
                "logrank_df": logrank.get("df"),
                "logrank_p": logrank.get("p_value"),
                **_cox_columns(cox),
                "note": "; ".join(notes),
            }
        )
    continuous = analysis["continuous"]
    notes = [continuous["error"]] if "error" in continuous else []
    rows.append(
        {
            **base,
            "analysis": f"CDLM score (continuous, HR per {SCORE_STEP})",
            **_cox_columns(continuous),
            "note": "; ".join(notes),
        }
    )
    return rows


SUMMARY_HEADERS = [
    "Cohort",
    "Modality",
    "Endpoint",
    "n",
    "Events (%)",
    "Drop-outs",
    "Median (95% CI)",
    "Median follow-up (range)",
]
"""Columns of the Markdown summary per cohort, modality and endpoint."""
COMPARISON_HEADERS = [
    "Cohort",
    "Modality",
    "Endpoint",
    "Grouping",
    "MVI+ n (events)",
    "MVI+ median (95% CI)",
    "MVI− n (events)",
    "MVI− median (95% CI)",
    "Log-rank χ²",
    "Log-rank p",
    "HR (95% CI)",
    "Cox p",
    "PH test p",
    "C-index",
    "Note",
]
"""Columns of the Markdown group comparisons (one row per analysis)."""


def _markdown_table(table: pd.DataFrame, synthetic: bool, threshold_note: str) -> str:
    """The table as Markdown: a summary per cohort, modality and endpoint, then the group comparisons."""
    lines = []
    if synthetic:
        lines += [f"**{SYNTHETIC_BANNER}**: every number below comes from a synthetic cohort.", ""]
    lines += [
        "# Prognostic analysis (Kaplan–Meier, log-rank, Cox)",
        "",
        "Times in months; NR = not reached. Patients without follow-up for an endpoint (drop-outs) are left "
        "out of it. Median follow-up by reverse Kaplan–Meier. " + threshold_note,
        "",
        "## Cohorts",
        "",
    ]
    lines += [_md_line(SUMMARY_HEADERS), "|" + "---|" * len(SUMMARY_HEADERS)]
    for _, row in table.drop_duplicates(subset=["cohort", "modality", "endpoint"]).iterrows():
        lines.append(_md_line(_summary_cells(row)))
    lines += [
        "",
        "## CDLM-predicted vs histopathological MVI",
        "",
        f"HR: MVI present vs absent (Cox, Efron ties); continuous CDLM per {SCORE_STEP} probability. "
        + "PH test: scaled Schoenfeld residuals against Kaplan–Meier time.",
        "",
        _md_line(COMPARISON_HEADERS),
        "|" + "---|" * len(COMPARISON_HEADERS),
    ]
    for _, row in table[table["analysis"].notna()].iterrows():
        lines.append(_md_line(_comparison_cells(row)))
    return "\n".join(lines) + "\n"


def _summary_cells(row: pd.Series) -> list[str]:
    """One row of the Markdown summary: counts, overall median and follow-up of a cohort, modality and endpoint."""
    share = f" ({100.0 * row['events'] / row['n']:.1f}%)" if row["n"] else ""
    follow_up = (
        ""
        if _missing(row["follow_up_max"])
        else f"{_format_number(_none(row['follow_up_median']))} "
        f"({_cell(row['follow_up_min'], 1)}–{_cell(row['follow_up_max'], 1)})"
    )
    return [
        _cell(row["cohort"]),
        _cell(row["modality"]),
        _cell(row["endpoint"]),
        _cell(row["n"]),
        f"{_cell(row['events'])}{share}",
        _cell(row["dropped_out"]),
        _median_cell(row, "overall_median") if row["n"] else "",
        follow_up,
    ]


def _comparison_cells(row: pd.Series) -> list[str]:
    """One row of the Markdown group comparisons: groups, log-rank, Cox and concordance of one analysis."""
    hazard = (
        ""
        if _missing(row["hazard_ratio"])
        else f"{row['hazard_ratio']:.2f} ({_cell(row['hr_lower'], 2)}–{_cell(row['hr_upper'], 2)})"
    )
    counts = {
        group: "" if _missing(row[f"n_{group}"]) else f"{row[f'n_{group}']} ({row[f'events_{group}']})"
        for group in ("present", "absent")
    }
    return [
        _cell(row["cohort"]),
        _cell(row["modality"]),
        _cell(row["endpoint"]),
        _cell(row["analysis"]),
        counts["present"],
        _group_median(row, "present"),
        counts["absent"],
        _group_median(row, "absent"),
        _cell(row["logrank_chi2"], 2),
        _format_p(_none(row["logrank_p"])),
        hazard,
        _format_p(_none(row["hr_p"])),
        _format_p(_none(row["ph_test_p"])),
        _cell(row["c_index"], 3),
        _cell(row["note"]),
    ]


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _cell(value: Any, digits: int | None = None) -> str:
    """A table cell as text: '' when missing, else ``digits`` decimals (or ``str``)."""
    if _missing(value):
        return ""
    return f"{value:.{digits}f}" if digits is not None else str(value)


def _median_cell(row: pd.Series, prefix: str) -> str:
    bounds = (_none(row[f"{prefix}_lower"]), _none(row[f"{prefix}_upper"]))
    return f"{_format_number(_none(row[prefix]))} ({_format_ci(bounds)})"


def _group_median(row: pd.Series, group: str) -> str:
    if _missing(row[f"n_{group}"]) or not row[f"n_{group}"]:
        return ""
    return _median_cell(row, f"median_{group}")


def _md_line(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "/").replace("\n", " ") for cell in cells) + " |"


def _none(value: Any) -> float | None:
    """NaN / NA from a table cell as None (the formatting helpers' 'not reached')."""
    if value is None or value is pd.NA:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _annotation(grouping: dict[str, Any]) -> str:
    parts = []
    logrank, cox = grouping["logrank"], grouping["cox"]
    if "error" not in logrank:
        parts.append(f"Log-rank p = {_format_p(logrank['p_value'])}")
    if "error" not in cox:
        parts.append(f"HR {_format_number(cox['hazard_ratio'], 2)} ({_format_ci(cox['hr_ci'], 2)})")
    return "\n".join(parts) if parts else "Log-rank test not estimable"


def survival_analysis(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path,
    cohorts: Sequence[str] = ("prospective",),
) -> dict[str, Any]:
    """Kaplan–Meier, log-rank and Cox analysis of PFS and OS by CDLM-predicted and histopathological MVI.

    Parameters
    ----------
    run_dirs : sequence of path
        Training run directories holding `predictions.csv`, `thresholds.json` (key `cdlm`: the Youden
        threshold chosen on training data) and optionally `metrics.json` / `config.yaml` (synthetic flag).
    out_dir : path
        Output directory; receives `survival.json`, `survival_table.csv`, `survival_table.md` and
        `plots/km_<cohort>_<modality>_<endpoint>_<grouping>.png`.
    cohorts : sequence of {"prospective", "train", "all"}, default ("prospective",)
        Cohorts analysed separately; `all` pools every patient of the run.

    Returns
    -------
    dict
        `synthetic`, `cohorts`, `analyses` (one entry per cohort, modality and endpoint with follow-up,
        medians, log-rank and Cox results for both groupings and the continuous score) and `files`.

    Raises
    ------
    ValueError
        On an unknown cohort, a malformed run directory (the message names the file, patient and value), or
        when no selected cohort has any patient.
    FileNotFoundError
        When a run directory or one of its required files is missing.
    """
    cohorts = _check_arguments(run_dirs, cohorts)
    runs = [_read_run(run_dir) for run_dir in run_dirs]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    synthetic = any(run.synthetic for run in runs)

    analyses: list[dict[str, Any]] = []
    plots: list[str] = []
    for job in tqdm(_plan_jobs(runs, cohorts), desc="survival analyses", unit="model"):
        frame = job.run.predictions[job.run.predictions["modality"].astype(str) == job.modality]
        if job.cohort != "all":
            frame = frame[frame["cohort"] == job.cohort]
        if frame.empty:
            continue
        for endpoint in ENDPOINTS:
            result, new_plots = _analyse_endpoint(job, frame, endpoint, out)
            analyses.append(result)
            plots += new_plots
    if not analyses:
        raise ValueError(
            f"No patients of cohorts {cohorts} in runs {[str(run.path) for run in runs]}: nothing to analyse."
        )

    table_csv, table_md = _write_tables(analyses, out, synthetic)
    result = {
        "synthetic": synthetic,
        "note": SYNTHETIC_BANNER if synthetic else "",
        "cohorts": list(cohorts),
        "score": SCORE_COLUMN,
        "score_step_for_hazard_ratio": SCORE_STEP,
        "analyses": analyses,
        "files": {
            "json": str(out / SURVIVAL_JSON),
            "table_csv": str(table_csv),
            "table_markdown": str(table_md),
            "plots": plots,
        },
    }
    write_json(out / SURVIVAL_JSON, result)
    return result


def _check_arguments(run_dirs: Sequence[str | Path], cohorts: Sequence[str]) -> tuple[str, ...]:
    """The cohorts as a tuple, after checking them and the run directories (a non-empty list)."""
    cohorts = tuple(cohorts)
    unknown = [cohort for cohort in cohorts if cohort not in COHORTS]
    if not cohorts or unknown:
        raise ValueError(f"`cohorts` must be a non-empty subset of {COHORTS}. Received: cohorts={cohorts}")
    if isinstance(run_dirs, (str, Path)) or not len(run_dirs):
        raise ValueError(f"`run_dirs` must be a non-empty list of run directories. Received: {run_dirs!r}")
    return cohorts


@dataclasses.dataclass(frozen=True)
class _Job:
    """One cohort of one modality of one run, with the labels its outputs carry."""

    cohort: str
    run: _Run
    modality: str
    key: str
    modality_name: str


def _plan_jobs(runs: list[_Run], cohorts: tuple[str, ...]) -> list[_Job]:
    """Every (cohort, run, modality) to analyse. Analyses are labelled by modality; when two runs share a
    modality, the run's folder name is added."""
    pairs = [
        (run, modality)
        for run in runs
        for modality in sorted(run.predictions["modality"].astype(str).unique())
    ]
    modality_counts = pd.Series([modality for _, modality in pairs]).value_counts()
    jobs = []
    for cohort in cohorts:
        for run, modality in pairs:
            key = modality if modality_counts[modality] == 1 else f"{run.path.name}-{modality}"
            modality_name = MODALITY_NAMES.get(modality, modality)
            if key != modality:
                modality_name = f"{modality_name} ({run.path.name})"
            jobs.append(_Job(cohort, run, modality, key, modality_name))
    return jobs


def _analyse_endpoint(job: _Job, frame: pd.DataFrame, endpoint: str, out: Path) -> tuple[dict[str, Any], list[str]]:
    """One endpoint of one job: the analysis (labelled) and its Kaplan–Meier plots, one per grouping."""
    duration_col, event_col, endpoint_title = ENDPOINTS[endpoint]
    threshold = job.run.thresholds[job.modality]
    result, complete = _endpoint_analysis(frame, endpoint, threshold)
    result.update(
        cohort=job.cohort,
        modality=job.key,
        modality_name=job.modality_name,
        run_dir=str(job.run.path),
        threshold=threshold,
        synthetic=job.run.synthetic,
    )
    plots: list[str] = []
    if "error" in result:
        return result, plots
    masks = {
        "predicted": complete[SCORE_COLUMN] >= threshold,
        "histopathology": complete["label"] == 1,
    }
    for grouping, present in masks.items():
        plot_path = out / "plots" / f"km_{job.cohort}_{job.key}_{endpoint}_{grouping}.png"
        plot_kaplan_meier(
            complete,
            duration_col,
            event_col,
            present,
            GROUPINGS[grouping],
            plot_path,
            title=f"{endpoint_title} by {GROUPINGS[grouping][0]}\n"
            f"CDLM {job.modality_name}, {job.cohort} cohort",
            annotation=_annotation(result[grouping]),
            synthetic=job.run.synthetic,
        )
        result[grouping]["plot"] = str(plot_path.relative_to(out))
        plots.append(str(plot_path))
    return result, plots


def _write_tables(analyses: list[dict[str, Any]], out: Path, synthetic: bool) -> tuple[Path, Path]:
    """``survival_table.csv`` and ``survival_table.md``; returns both paths."""
    rows = [row for analysis in analyses for row in _table_rows(analysis)]
    table = pd.DataFrame(rows).reindex(columns=TABLE_COLUMNS)
    table = table.astype({column: "Int64" for column in INTEGER_COLUMNS})
    table_csv = out / "survival_table.csv"
    table.to_csv(table_csv, index=False)
    thresholds = sorted({(a["modality_name"], a["threshold"]) for a in analyses})
    threshold_note = (
        "CDLM Youden thresholds (training data): "
        + ", ".join(f"{name} {value:.3f}" for name, value in thresholds)
        + "."
    )
    table_md = out / "survival_table.md"
    table_md.write_text(_markdown_table(table, synthetic, threshold_note))
    return table_csv, table_md
