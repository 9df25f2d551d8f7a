"""``mvi-tf compare``: CDLM-CT vs CDLM-MRI on the prospective patients who had both examinations.

- AUC: paired DeLong test (pROC ``roc.test(..., paired = TRUE)``).
- Sensitivity: McNemar's test on the MVI+ patients, each model's call correct (``score >= threshold``) or not.
- Specificity: McNemar's test on the MVI- patients, correct meaning ``score < threshold``.
  Thresholds are each run's training Youden thresholds. The chi-square test with continuity correction
  (R ``mcnemar.test`` default) is the headline; the exact binomial version is reported next to it.
- Decision curves of both models with treat-all/none over thresholds 0.01..0.99 and the threshold ranges where
  each model has the higher net benefit, and where each beats both treat-all and treat-none.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from mvi_tf import na, stats, uncertainty
from mvi_tf.evaluation import decision_curves as dca
from mvi_tf.evaluation.plots import plot_decision_curves, plot_roc
from mvi_tf.evaluation.rundir import SYNTHETIC_LABEL, load_run, to_jsonable, write_json


def _paired_cohort(ct, mri, model: str, cohort: str) -> pd.DataFrame:
    """Inner join of the two runs' cohort rows on ``patient_id``; labels must agree."""
    cols = ["patient_id", "label", model]
    a = ct.cohort(cohort)[cols].rename(columns={"label": "label_ct", model: "score_ct"})
    b = mri.cohort(cohort)[cols].rename(columns={"label": "label_mri", model: "score_mri"})
    joined = a.merge(b, on="patient_id", how="inner").sort_values("patient_id").reset_index(drop=True)
    clash = joined[joined["label_ct"] != joined["label_mri"]]
    if not clash.empty:
        row = clash.iloc[0]
        raise ValueError(
            f"Patient {row['patient_id']!r} has label {row['label_ct']} in {ct.run_dir / 'predictions.csv'} "
            f"but {row['label_mri']} in {mri.run_dir / 'predictions.csv'}."
        )
    return joined.rename(columns={"label_ct": "label"}).drop(columns="label_mri")


NO_DISCORDANT = "no discordant pairs (both models right or wrong on the same patients): the chi-square is undefined"


def _mcnemar_block(correct_ct: np.ndarray, correct_mri: np.ndarray, group: str) -> dict:
    """2x2 table of correct calls (rows CT, columns MRI) with the chi-square and exact McNemar tests.

    Figures the patients cannot define are None with the reason (:mod:`mvi_tf.na`).
    """
    table = [
        [int(np.sum(correct_ct & correct_mri)), int(np.sum(correct_ct & ~correct_mri))],
        [int(np.sum(~correct_ct & correct_mri)), int(np.sum(~correct_ct & ~correct_mri))],
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # b + c = 0 -> NaN chi-square, reported as null
        chi2 = stats.mcnemar_test(table, exact=False, correction=True)
    exact = stats.mcnemar_test(table, exact=True)
    n = int(correct_ct.size)
    block = {
        "n": n,
        "table": table,
        "table_layout": "[[both correct, CT only], [MRI only, neither]]",
        "ct": float(correct_ct.mean()) if n else float("nan"),
        "mri": float(correct_mri.mean()) if n else float("nan"),
        "ct_ci": list(stats.clopper_pearson_ci(int(correct_ct.sum()), n)),
        "mri_ci": list(stats.clopper_pearson_ci(int(correct_mri.sum()), n)),
        "mcnemar_statistic": chi2.statistic,
        "mcnemar_p_value": chi2.p_value,
        "mcnemar_exact_p_value": exact.p_value,
    }
    if not n:
        for key in ("ct", "mri", "mcnemar_statistic", "mcnemar_p_value", "mcnemar_exact_p_value"):
            na.mark(block, key, f"no {group} patients in both runs")
    return na.explain(block, mcnemar_statistic=NO_DISCORDANT, mcnemar_p_value=NO_DISCORDANT)


def compare_runs(
    ct_run: str | Path,
    mri_run: str | Path,
    out_dir: str | Path,
    model: str = "cdlm",
    cohort: str = "prospective",
    synthetic: bool | None = None,
    thresholds: np.ndarray | None = None,
) -> dict:
    """Head-to-head comparison of the CT and MRI models on patients present in both runs.

    Parameters
    ----------
    ct_run, mri_run : path
        Run directories of the CT and the MRI model.
    out_dir : path
        Output directory: ``head_to_head.json``, ``head_to_head.md``, ``head_to_head_roc.png``,
        ``head_to_head_decision_curves.png``.
    model : str
        Score column compared (the paper compared the CDLMs).
    cohort : str
        Evaluation cohort; the paper used the prospective cohort.
    synthetic : bool or None
        Label outputs as synthetic; ``None`` reads the runs' flags.
    thresholds : array-like or None
        Decision-curve threshold probabilities; default 0.01..0.99.

    Returns
    -------
    dict
        The content of ``head_to_head.json`` plus ``out_dir``.
    """
    ct, mri = load_run(ct_run), load_run(mri_run)
    if ct.modality != "ct" or mri.modality != "mri":
        raise ValueError(
            f"Expected a CT run and an MRI run. Received: {ct.run_dir} is {ct.modality!r}, "
            f"{mri.run_dir} is {mri.modality!r}"
        )
    for run in (ct, mri):
        if model not in run.models:
            raise ValueError(f"Run {run.run_dir} has no {model!r} scores. Available: {run.models}")
    grid = dca.DEFAULT_THRESHOLDS if thresholds is None else np.asarray(thresholds, dtype=float)
    paired = _paired_cohort(ct, mri, model, cohort)
    y = paired["label"].to_numpy().astype(int)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if not y.size:
        raise ValueError(
            f"No {cohort} patient is present in both runs. Received: {ct.run_dir} and {mri.run_dir}"
        )
    s_ct, s_mri = paired["score_ct"].to_numpy(), paired["score_mri"].to_numpy()
    thr_ct, thr_mri = ct.thresholds[model], mri.thresholds[model]
    is_synthetic = (ct.synthetic or mri.synthetic) if synthetic is None else bool(synthetic)
    auc, auc_ct, auc_mri = _auc_block(y, s_ct, s_mri, cohort)
    pos, neg = y == 1, y == 0
    sensitivity = _mcnemar_block(s_ct[pos] >= thr_ct, s_mri[pos] >= thr_mri, "MVI+")
    specificity = _mcnemar_block(s_ct[neg] < thr_ct, s_mri[neg] < thr_mri, "MVI-")

    nb_ct, nb_mri = stats.net_benefit(y, s_ct, grid), stats.net_benefit(y, s_mri, grid)
    tol = 1e-12
    curves = {
        "ct": dca.net_benefit_summary(nb_ct),
        "mri": dca.net_benefit_summary(nb_mri),
        "ct_higher": dca.threshold_ranges(grid, nb_ct.model > nb_mri.model + tol),
        "mri_higher": dca.threshold_ranges(grid, nb_mri.model > nb_ct.model + tol),
        "equal": dca.threshold_ranges(grid, np.abs(nb_ct.model - nb_mri.model) <= tol),
    }
    result = {
        "synthetic": is_synthetic,
        "data_label": SYNTHETIC_LABEL if is_synthetic else "",
        "model": model,
        "cohort": cohort,
        "ct_run": str(ct.run_dir),
        "mri_run": str(mri.run_dir),
        "n_paired": int(y.size),
        "n_positive": n_pos,
        "n_negative": n_neg,
        "n_ct_only": int(len(ct.cohort(cohort)) - y.size),
        "n_mri_only": int(len(mri.cohort(cohort)) - y.size),
        "thresholds": {"ct": thr_ct, "mri": thr_mri},
        "auc": auc,
        "sensitivity": sensitivity,
        "specificity": specificity,
        "reclassification_mri_over_ct": _reclassification(y, s_mri, s_ct),
        "decision_curves": curves,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    label = (
        f"CDLM-CT vs CDLM-MRI, {cohort} patients with both (n = {y.size})"
        if model == "cdlm"
        else f"{model}: CT vs MRI, {cohort} patients with both (n = {y.size})"
    )
    result["files"] = ["head_to_head.json", "head_to_head.md", "head_to_head_decision_curves.png"]
    if auc_ct is not None:
        plot_roc(
            {"CT": (stats.roc_curve(y, s_ct), auc_ct), "MRI": (stats.roc_curve(y, s_mri), auc_mri)},
            label,
            out / "head_to_head_roc.png",
            is_synthetic,
        )
        result["files"].append("head_to_head_roc.png")
    plot_decision_curves(
        {"CT": nb_ct, "MRI": nb_mri}, label, out / "head_to_head_decision_curves.png", is_synthetic
    )
    (out / "head_to_head.md").write_text(_markdown(result), encoding="utf-8")
    write_json(out / "head_to_head.json", result)
    return {**to_jsonable(result), "out_dir": str(out)}


def _auc_block(y: np.ndarray, s_ct: np.ndarray, s_mri: np.ndarray, cohort: str) -> tuple[dict, object, object]:
    """AUCs with DeLong CIs and the paired DeLong test; not available (with the reason) on too few of a class."""
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if n_pos < 2 or n_neg < 2:
        block: dict = {"ct_ci": [None, None], "mri_ci": [None, None]}
        reason = (f"AUC needs >= 2 MVI+ and >= 2 MVI- {cohort} patients in both runs; "
                  f"there are {n_pos} MVI+ and {n_neg} MVI-")
        for key in ("ct", "mri", "delong_z", "delong_p_value", "difference_ct_minus_mri"):
            na.mark(block, key, reason)
        return block, None, None
    auc_ct, auc_mri = stats.roc_auc_ci(y, s_ct), stats.roc_auc_ci(y, s_mri)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        delong = stats.delong_test(y, s_ct, s_mri)
    block = {
        "ct": auc_ct.auc,
        "ct_ci": [auc_ct.ci_low, auc_ct.ci_high],
        "mri": auc_mri.auc,
        "mri_ci": [auc_mri.ci_low, auc_mri.ci_high],
        "delong_z": delong.z,
        "delong_p_value": delong.p_value,
        "difference_ct_minus_mri": delong.auc_a - delong.auc_b,
    }
    same = "the two models rank the patients identically, so the DeLong test is undefined"
    return na.explain(block, delong_z=same, delong_p_value=same), auc_ct, auc_mri


def _fmt(x: float | None, pct: bool = False) -> str:
    if x is None or not np.isfinite(x):
        return "—"
    return f"{100 * x:.1f}%" if pct else f"{x:.3f}"


def _p(x: float | None) -> str:
    if x is None or not np.isfinite(x):
        return "—"
    return "< 0.001" if x < 0.001 else f"{x:.3f}"


def _ranges(ranges: list[list[float]]) -> str:
    return ", ".join(f"{a:.2f}–{b:.2f}" for a, b in ranges) or "none"


def _markdown(r: dict) -> str:
    lines = []
    if r["synthetic"]:
        lines += ["> **SYNTHETIC DATA** — every number below comes from a simulated cohort.", ""]
    a, se, sp, dc = r["auc"], r["sensitivity"], r["specificity"], r["decision_curves"]
    nri = r["reclassification_mri_over_ct"]
    lines += [
        (
            f"### Head-to-head: {r['model']} CT vs MRI ({r['cohort']}, n = {r['n_paired']}, "
            f"MVI+ {r['n_positive']}, MVI- {r['n_negative']})"
        ),
        "",
        "| Measure | CT | MRI | Test | p |",
        "|---|---|---|---|---|",
        (
            f"| AUC (95% CI) | {_fmt(a['ct'])} ({_fmt(a['ct_ci'][0])}–{_fmt(a['ct_ci'][1])}) | "
            f"{_fmt(a['mri'])} ({_fmt(a['mri_ci'][0])}–{_fmt(a['mri_ci'][1])}) | DeLong paired, z = {_fmt(a['delong_z'])} "
            f"| {_p(a['delong_p_value'])} |"
        ),
        (
            f"| Sensitivity | {_fmt(se['ct'], True)} | {_fmt(se['mri'], True)} | McNemar (exact p "
            f"{_p(se['mcnemar_exact_p_value'])}) | {_p(se['mcnemar_p_value'])} |"
        ),
        (
            f"| Specificity | {_fmt(sp['ct'], True)} | {_fmt(sp['mri'], True)} | McNemar (exact p "
            f"{_p(sp['mcnemar_exact_p_value'])}) | {_p(sp['mcnemar_p_value'])} |"
        ),
        (
            f"| Continuous NRI, MRI over CT (95% CI) | | {_fmt(nri['nri'])} ({_fmt(nri['nri_ci_low'])} to "
            f"{_fmt(nri['nri_ci_high'])}) | Hmisc::improveProb | {_p(nri['nri_p'])} |"
        ),
        (
            f"| IDI, MRI over CT (95% CI) | | {_fmt(nri['idi'])} ({_fmt(nri['idi_ci_low'])} to "
            f"{_fmt(nri['idi_ci_high'])}) | Hmisc::improveProb | {_p(nri['idi_p'])} |"
        ),
        "",
        (
            f"Thresholds (training Youden): CT {r['thresholds']['ct']:.4f}, "
            f"MRI {r['thresholds']['mri']:.4f}. "
            f"Patients in only one run: CT {r['n_ct_only']}, MRI {r['n_mri_only']}."
        ),
        "",
        "Decision curves (threshold probability ranges):",
        "",
        f"- CT higher net benefit than MRI: {_ranges(dc['ct_higher'])}",
        f"- MRI higher net benefit than CT: {_ranges(dc['mri_higher'])}",
        f"- CT above treat-all and treat-none: {_ranges(dc['ct']['above_treat_all_and_none'])}",
        f"- MRI above treat-all and treat-none: {_ranges(dc['mri']['above_treat_all_and_none'])}",
        (
            f"- Largest gain over treat-all/none: CT {_fmt(dc['ct']['max_gain_over_defaults'])} at "
            f"{dc['ct']['max_gain_threshold']:.2f} "
            f"(net benefit {_fmt(dc['ct']['net_benefit_at_max_gain'])}), MRI "
            f"{_fmt(dc['mri']['max_gain_over_defaults'])} at {dc['mri']['max_gain_threshold']:.2f} "
            f"(net benefit {_fmt(dc['mri']['net_benefit_at_max_gain'])})"
        ),
        "",
    ]
    return "\n".join(lines)


def _reclassification(y, new, old) -> dict:
    """Continuous NRI and IDI of ``new`` over ``old``, or the figures marked not available with the reason."""
    try:
        return uncertainty.reclassification(y, new, old).as_dict()
    except ValueError as err:
        row: dict = {}
        for key in ("nri", "nri_ci_low", "nri_ci_high", "nri_p", "idi", "idi_ci_low", "idi_ci_high", "idi_p"):
            na.mark(row, key, str(err))
        return row
