"""``mvi-tf evaluate``: Table 3, ROC and decision curves and the stratified analysis for one or more runs."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from mvi_tf import na, stats
from mvi_tf.contract import THRESHOLDS_FILE
from mvi_tf.evaluation import decision_curves as dca
from mvi_tf.evaluation.calibration_report import (
    calibration_markdown,
    calibration_rows,
    write_calibration_figures,
)
from mvi_tf.evaluation.improvement import improvement_markdown, improvement_rows
from mvi_tf.evaluation.plots import plot_decision_curves, plot_roc
from mvi_tf.evaluation.rundir import (
    COHORT_LABELS,
    COHORTS,
    SYNTHETIC_LABEL,
    THRESHOLD_FROM_FILE,
    RunData,
    load_run,
    model_label,
    to_jsonable,
    write_json,
)
from mvi_tf.evaluation.subgroups import subgroup_analysis, subgroups_markdown
from mvi_tf.evaluation.table3 import (
    MODALITY_LABELS,
    performance_rows,
    table3_frame,
    table3_markdown,
)

logger = logging.getLogger(__name__)

ALL_COHORTS = ("training", "train", "internal_validation", "prospective")
FIGURE_COHORTS = ("training", "internal_validation", "prospective")
TABLE3_COHORTS = ("training", "prospective")


def _figures(run: RunData, out_dir: Path, synthetic: bool, alpha: float) -> tuple[dict, list[str]]:
    """ROC and decision-curve PNGs per cohort for one run; returns the DCA summaries and the file names."""
    summaries: dict[str, dict] = {}
    files: list[str] = []
    modality = MODALITY_LABELS.get(run.modality, run.modality)
    for cohort in FIGURE_COHORTS:
        data = run.cohort(cohort)
        y = data["label"].to_numpy()
        if y.size == 0:
            continue
        if y.sum() >= 2 and (1 - y).sum() >= 2:
            curves = {
                model_label(m): (
                    stats.roc_curve(y, data[m].to_numpy()),
                    stats.roc_auc_ci(y, data[m].to_numpy(), alpha=alpha),
                )
                for m in run.models
            }
            name = f"roc_{run.modality}_{cohort}.png"
            plot_roc(
                curves, f"ROC, {modality}, {COHORT_LABELS[cohort]} (n = {y.size})", out_dir / name, synthetic
            )
            files.append(name)
        nbs = {m: stats.net_benefit(y, data[m].to_numpy(), dca.DEFAULT_THRESHOLDS) for m in run.models}
        summaries[cohort] = {m: dca.net_benefit_summary(nb) for m, nb in nbs.items()}
        name = f"decision_curves_{run.modality}_{cohort}.png"
        plot_decision_curves(
            {model_label(m): nb for m, nb in nbs.items()},
            f"Decision curves, {modality}, {COHORT_LABELS[cohort]} (n = {y.size})",
            out_dir / name,
            synthetic,
        )
        files.append(name)
    return summaries, files


def _write_table(out: Path, stem: str, rows: list[dict], data_label: str, markdown: str) -> list[str]:
    """``<stem>.csv`` (every number, labelled) and ``<stem>.md``; returns the two file names."""
    frame = pd.DataFrame(rows)
    frame.insert(0, "data_label", data_label)
    frame.to_csv(out / f"{stem}.csv", index=False)
    (out / f"{stem}.md").write_text(markdown, encoding="utf-8")
    return [f"{stem}.csv", f"{stem}.md"]


def evaluate_runs(
    run_dirs: list[str | Path],
    out_dir: str | Path,
    synthetic: bool | None = None,
    alpha: float = 0.05,
    subgroup_model: str = "cdlm",
    age_cutoff: float = 60.0,
    progress: bool = True,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict:
    """Evaluate training runs as in Wei et al. 2021 (Table 3, Figure 2, Table S1).

    Cohorts: ``training`` pools the ``train`` and ``val`` splits (the paper's retrospective training cohort);
    ``train`` and ``internal_validation`` (``val``) are also reported separately; ``prospective`` is the
    external validation cohort. SEN/SPE/ACC use each model's Youden threshold from the run's
    ``thresholds.json`` (chosen on the train split) unchanged on every cohort; AUC CIs are DeLong, proportion
    CIs Clopper-Pearson (exact). Calibration (:mod:`mvi_tf.calibration`) is reported for every model, cohort and
    centre; the CDLM is compared with the radiological model (:mod:`mvi_tf.evaluation.improvement`).

    Files written to ``out_dir``: ``table3.csv`` / ``table3.md`` (training and prospective columns, plus the
    internal validation table in the Markdown), ``performance.csv`` (every model x cohort number),
    ``roc_<modality>_<cohort>.png``, ``decision_curves_<modality>_<cohort>.png``, ``calibration.csv`` /
    ``calibration.md`` and ``calibration_<modality>_<cohort>.png``, ``improvement.csv`` / ``improvement.md``
    (CDLM vs radiological: ΔAUC, NRI, IDI, net benefit, with CIs), ``subgroups.csv`` / ``subgroups.md`` and
    ``evaluation.json`` with every number. All carry "SYNTHETIC DATA" when the cohort is synthetic.

    Parameters
    ----------
    run_dirs : list of path
        Run directories, at most one per modality.
    out_dir : path
        Output directory (created).
    synthetic : bool or None
        Label outputs as synthetic; ``None`` reads the runs' ``metrics.json`` / ``config.yaml`` flags.
    alpha : float
        1 - confidence level.
    subgroup_model : str
        Score column used for the stratified analysis.
    age_cutoff : float
        Age split (years) for the stratified analysis.
    progress : bool
        Show a progress bar over runs.
    n_boot : int
        Bootstrap resamples for the CIs of the CDLM - radiological comparison.
    seed : int
        Seed of those resamples.

    Returns
    -------
    dict
        The content of ``evaluation.json`` plus ``out_dir``.
    """
    runs = _load_runs(run_dirs, alpha)
    is_synthetic = any(r.synthetic for r in runs) if synthetic is None else bool(synthetic)
    data_label = SYNTHETIC_LABEL if is_synthetic else ""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    rows = performance_rows(runs, ALL_COHORTS, alpha=alpha)
    wide, internal = _write_performance(out, rows, data_label)
    files = ["table3.csv", "table3.md", "performance.csv"]
    decision, subgroup_rows, figure_files = _per_run_outputs(
        runs, out, is_synthetic, alpha, subgroup_model, age_cutoff, progress
    )
    files += figure_files
    notes = _notes(runs)
    _write_table3_markdown(out, wide, internal, notes, is_synthetic)

    calibration = calibration_rows(runs, ALL_COHORTS, alpha=alpha)
    files += _write_table(out, "calibration", calibration, data_label,
                          calibration_markdown(calibration, ALL_COHORTS, is_synthetic))
    files += write_calibration_figures(runs, FIGURE_COHORTS, out, is_synthetic)
    improvement = improvement_rows(runs, FIGURE_COHORTS, n_boot=n_boot, seed=seed, alpha=alpha)
    if improvement:
        files += _write_table(out, "improvement", improvement, data_label,
                              improvement_markdown(improvement, is_synthetic))
    if subgroup_rows:
        files += _write_subgroups(out, subgroup_rows, data_label, is_synthetic)

    result = {
        "synthetic": is_synthetic,
        "data_label": data_label,
        "alpha": alpha,
        "cohort_definitions": {c: list(s) for c, s in COHORTS.items()},
        "runs": [_run_summary(r) for r in runs],
        "notes": notes,
        "performance": rows,
        "decision_curves": decision,
        "calibration": calibration,
        "improvement": improvement,
        "subgroups": subgroup_rows,
        "files": files + ["evaluation.json"],
    }
    write_json(out / "evaluation.json", result)
    return {**to_jsonable(result), "out_dir": str(out)}


def _load_runs(run_dirs: list[str | Path], alpha: float) -> list[RunData]:
    """The runs to evaluate, after checking the arguments (at least one run, one per modality)."""
    if not run_dirs:
        raise ValueError(f"Give at least one run directory. Received: run_dirs={run_dirs}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1). Received: alpha={alpha}")
    runs = [load_run(d) for d in run_dirs]
    modalities = [r.modality for r in runs]
    if len(set(modalities)) != len(modalities):
        raise ValueError(
            f"Give one run per modality. Received: modalities={modalities} for run_dirs={run_dirs}"
        )
    return runs


def _write_performance(out: Path, rows: list[dict], data_label: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write ``performance.csv`` and ``table3.csv``; return the Table 3 frame and the internal validation one."""
    long = pd.DataFrame(rows).drop(columns=[na.KEY], errors="ignore")  # the `note` column carries the reasons
    long.insert(0, "data_label", data_label)
    long.to_csv(out / "performance.csv", index=False)
    wide = table3_frame(rows, TABLE3_COHORTS)
    wide.insert(0, "data_label", data_label)
    wide.to_csv(out / "table3.csv", index=False)
    return wide, table3_frame(rows, ("internal_validation",))


def _per_run_outputs(
    runs: list[RunData], out: Path, is_synthetic: bool, alpha: float, subgroup_model: str, age_cutoff: float,
    progress: bool,
) -> tuple[dict[str, dict], list[dict], list[str]]:
    """Figures and stratified analysis of every run: DCA summaries per modality, subgroup rows, file names."""
    decision: dict[str, dict] = {}
    subgroup_rows: list[dict] = []
    files: list[str] = []
    for run in tqdm(runs, desc="evaluate", unit="run", disable=not progress):
        decision[run.modality], figure_files = _figures(run, out, is_synthetic, alpha)
        files += figure_files
        if subgroup_model in run.models:
            subgroup_rows += subgroup_analysis(run, subgroup_model, TABLE3_COHORTS, age_cutoff, alpha)
        else:
            logger.warning("Run %s has no %r scores; no stratified analysis.", run.run_dir, subgroup_model)
    return decision, subgroup_rows, files


def _notes(runs: list[RunData]) -> list[str]:
    """Footnotes of Table 3: the threshold rule, and the models whose threshold had to be recomputed."""
    notes = [
        (
            "SEN, SPE and ACC at each model's Youden threshold chosen on the training split and applied "
            "unchanged to every cohort, with exact (Clopper-Pearson) 95% CIs; AUC 95% CI by DeLong (pROC); "
            "training cohort = train + internal validation splits."
        ),
    ]
    recomputed = [
        f"{r.modality}:{m}" for r in runs for m, s in r.threshold_source.items() if s != THRESHOLD_FROM_FILE
    ]
    if recomputed:
        notes.append(f"Thresholds missing from {THRESHOLDS_FILE}, recomputed on the train split: {recomputed}.")
    return notes


def _write_table3_markdown(
    out: Path, wide: pd.DataFrame, internal: pd.DataFrame, notes: list[str], is_synthetic: bool
) -> None:
    """``table3.md``: Table 3, the internal validation table and the footnotes."""
    md = [
        table3_markdown(
            wide, TABLE3_COHORTS, "Table 3. Predictive performance of the developed models", is_synthetic
        )
    ]
    md.append(table3_markdown(internal, ("internal_validation",), "Internal validation split", False))
    md += [f"*{n}*" for n in notes]
    (out / "table3.md").write_text("\n".join(md) + "\n", encoding="utf-8")


def _write_subgroups(out: Path, subgroup_rows: list[dict], data_label: str, is_synthetic: bool) -> list[str]:
    """``subgroups.csv`` and ``subgroups.md``; returns the two file names."""
    sub = pd.DataFrame(subgroup_rows).drop(columns=[na.KEY], errors="ignore")
    sub.insert(0, "data_label", data_label)
    sub.to_csv(out / "subgroups.csv", index=False)
    (out / "subgroups.md").write_text(subgroups_markdown(subgroup_rows, is_synthetic), encoding="utf-8")
    return ["subgroups.csv", "subgroups.md"]


def _run_summary(run: RunData) -> dict:
    """One run's entry of ``evaluation.json``."""
    return {
        "run_dir": str(run.run_dir),
        "modality": run.modality,
        "models": run.models,
        "thresholds": run.thresholds,
        "threshold_source": run.threshold_source,
        "n_by_split": run.predictions["split"].value_counts().to_dict(),
        "synthetic_flag": run.synthetic,
    }
