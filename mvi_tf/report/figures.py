"""Figures drawn for the report, each saying one thing: decision curves of the models a surgeon weighs
(CDLM, radiological, clinical) apart from the single-phase signatures, each panel with treat-all and treat-none."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MAIN_MODELS = ("cdlm", "radiological", "clinical")
COLOURS = {"cdlm": "#c0392b", "radiological": "#1f77b4", "clinical": "#2ca02c"}
OTHER_COLOURS = ("#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")


def _panel(ax, y: np.ndarray, scores: dict[str, np.ndarray], title: str) -> None:
    from mvi_tf import stats
    from mvi_tf.evaluation import decision_curves as dca
    from mvi_tf.evaluation.rundir import model_label

    curves = {m: stats.net_benefit(y, s, dca.DEFAULT_THRESHOLDS) for m, s in scores.items()}
    first = next(iter(curves.values()))
    ax.plot(first.thresholds, first.treat_all, color="grey", lw=1.2, ls="--", label="Treat all")
    ax.plot(first.thresholds, first.treat_none, color="black", lw=1.0, label="Treat none")
    others = iter(OTHER_COLOURS)
    for model, nb in curves.items():
        colour = COLOURS.get(model) or next(others, None)
        ax.plot(nb.thresholds, nb.model, lw=1.8 if model == "cdlm" else 1.3, color=colour, label=model_label(model))
    top = max(first.prevalence, float(np.nanmax([np.nanmax(c.model) for c in curves.values()])))
    ax.set_ylim(-0.05 - 0.05 * top, top * 1.1 + 0.01)
    ax.set_xlim(float(first.thresholds.min()), float(first.thresholds.max()))
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("Threshold probability")
    ax.legend(loc="upper right", fontsize=7.5, frameon=False)


def decision_curve_panels(run_dir: Path, cohort: str, out_path: Path, synthetic: bool) -> Path | None:
    """Two panels of decision curves for one run and cohort; None when the cohort has a single class.

    Left: CDLM, radiological and clinical models; right: the single-phase signatures and the fusion model.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from mvi_tf.evaluation.rundir import load_run

    run = load_run(run_dir)
    data = run.cohort(cohort)
    y = data["label"].to_numpy().astype(int)
    if y.size == 0 or y.min() == y.max():
        return None
    main = [m for m in MAIN_MODELS if m in run.models]
    others = [m for m in run.models if m not in main]
    fig = Figure(figsize=(10.5, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if others else 1, sharey=True, squeeze=False)[0]
    _panel(axes[0], y, {m: data[m].to_numpy(float) for m in main or run.models}, "CDLM, radiological and clinical models")
    if others:
        _panel(axes[1], y, {m: data[m].to_numpy(float) for m in others}, "Single-phase signatures and fusion")
    axes[0].set_ylabel("Net benefit")
    if synthetic:
        fig.suptitle("SYNTHETIC DATA", color="crimson", fontweight="bold", fontsize=11)
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path)
    return out_path
