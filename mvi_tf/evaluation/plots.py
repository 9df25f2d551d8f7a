"""ROC, decision-curve and calibration figures (PNG), drawn with matplotlib's Agg canvas (no pyplot state)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mvi_tf import calibration, stats

SYNTHETIC_BANNER = "SYNTHETIC DATA"


def _new_figure(title: str, synthetic: bool) -> tuple[Figure, object]:
    fig = Figure(figsize=(6.4, 5.6), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_title(title, fontsize=10)
    if synthetic:
        fig.suptitle(SYNTHETIC_BANNER, color="crimson", fontweight="bold", fontsize=12)
        ax.text(
            0.5,
            0.5,
            SYNTHETIC_BANNER,
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=28,
            color="crimson",
            alpha=0.12,
            rotation=30,
            zorder=0,
        )
    return fig, ax


def plot_roc(
    curves: dict[str, tuple[stats.RocCurve, stats.AucResult]],
    title: str,
    path: str | Path,
    synthetic: bool = False,
) -> Path:
    """All models' ROC curves on one figure, AUC (95% CI) in the legend.

    Parameters
    ----------
    curves : dict
        Legend label -> (ROC curve, AUC result).
    title : str
        Axes title (modality and cohort).
    path : str or Path
        Output PNG.
    synthetic : bool
        Add the "SYNTHETIC DATA" banner.
    """
    fig, ax = _new_figure(title, synthetic)
    for label, (curve, auc) in curves.items():
        ax.step(
            curve.fpr,
            curve.sensitivity,
            where="post",
            lw=1.6,
            label=f"{label}: AUC {auc.auc:.3f} ({auc.ci_low:.3f}-{auc.ci_high:.3f})",
        )
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("Sensitivity")
    ax.set_aspect("equal")
    ax.legend(loc="lower right", fontsize=7)
    path = Path(path)
    fig.savefig(path)
    return path


def plot_decision_curves(
    curves: dict[str, stats.NetBenefitResult],
    title: str,
    path: str | Path,
    synthetic: bool = False,
) -> Path:
    """Net benefit of each model with treat-all and treat-none references.

    The y axis spans from a little below zero to a little above the prevalence (the maximal net benefit),
    as dcurves plots do, so the steeply negative tail of treat-all does not flatten the figure.
    """
    fig, ax = _new_figure(title, synthetic)
    first = next(iter(curves.values()))
    ax.plot(first.thresholds, first.treat_all, color="grey", lw=1.2, label="Treat all")
    ax.plot(first.thresholds, first.treat_none, color="black", lw=1.2, label="Treat none")
    for label, nb in curves.items():
        ax.plot(nb.thresholds, nb.model, lw=1.6, label=label)
    top = max(first.prevalence, float(np.nanmax([np.nanmax(c.model) for c in curves.values()])))
    ax.set_ylim(-0.05 - 0.05 * top, top * 1.1 + 0.01)
    ax.set_xlim(float(first.thresholds.min()), float(first.thresholds.max()))
    ax.set_xlabel("Threshold probability")
    ax.set_ylabel("Net benefit")
    ax.legend(loc="upper right", fontsize=7)
    path = Path(path)
    fig.savefig(path)
    return path


def plot_calibration(
    curves: dict[str, calibration.CalibrationCurve],
    highlight: str,
    title: str,
    path: str | Path,
    synthetic: bool = False,
) -> Path:
    """Calibration plot: the lowess curve of every model, the grouped observed proportions (95% CI) of the
    ``highlight`` model, the diagonal of perfect calibration, and the distribution of that model's
    predictions underneath.
    """
    fig = Figure(figsize=(6.4, 7.0), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.12, 0.30, 0.83, 0.62))
    hist = fig.add_axes((0.12, 0.07, 0.83, 0.15), sharex=ax)
    ax.set_title(title, fontsize=10)
    if synthetic:
        fig.suptitle(SYNTHETIC_BANNER, color="crimson", fontweight="bold", fontsize=12)
        ax.text(0.5, 0.5, SYNTHETIC_BANNER, transform=ax.transAxes, ha="center", va="center", fontsize=28,
                color="crimson", alpha=0.12, rotation=30, zorder=0)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":", label="Perfect calibration")
    for label, curve in curves.items():
        ax.plot(curve.smooth_predicted, curve.smooth_observed, lw=2.0 if label == highlight else 1.0,
                label=f"{label} (lowess)")
    focus = curves.get(highlight) or next(iter(curves.values()))
    errors = np.vstack([focus.group_observed - focus.group_ci_low, focus.group_ci_high - focus.group_observed])
    ax.errorbar(focus.group_predicted, focus.group_observed, yerr=errors, fmt="o", color="black", ms=4,
                capsize=2, lw=0.8, label=f"{highlight if highlight in curves else 'first model'}: risk groups, 95% CI")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_ylabel("Observed proportion with MVI")
    ax.legend(loc="upper left", fontsize=7)
    hist.hist(focus.predicted, bins=np.linspace(0, 1, 41), color="grey")
    hist.set_xlabel("Predicted probability of MVI")
    hist.set_ylabel("Patients", fontsize=8)
    hist.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=3))
    path = Path(path)
    fig.savefig(path)
    return path
