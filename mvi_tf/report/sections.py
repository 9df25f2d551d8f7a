"""One function per report section: read a stage's outputs, return the section and its lines for the summary.

Every function takes a `Context` and returns ``(section, summary_items)``. A stage that has not run gives a
section that says so; an undefined number is shown as 'n/a' with its reason where the outputs carry one.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path
from typing import Any

import pandas as pd

from mvi_tf.contract import RunFiles, StudyLayout, read_json_or_none
from mvi_tf.report import blocks as B
from mvi_tf.report.cohort_table import cohort_characteristics
from mvi_tf.report.formatting import fmt_ci, fmt_num, fmt_p, fmt_pct, missing, p_equals

log = logging.getLogger(__name__)

MODALITY_NAMES = {"ct": "CE-CT", "mri": "EOB-MRI"}
COHORT_WORDS = {"training": "training cohort", "train": "training split", "internal_validation":
                "internal validation split", "prospective": "prospective validation cohort", "all": "all patients"}
PHASE_NAMES = {"plain": "plain", "arterial": "arterial", "portal": "portal venous", "t2": "T2-weighted",
               "transitional": "transitional", "hepatobiliary": "hepatobiliary", "equilibrium": "equilibrium"}


@dataclasses.dataclass
class Context:
    """Where the study's files are and where the report goes."""

    study: Path
    cohort: Path
    report_dir: Path
    synthetic: bool

    def link(self, path: Path) -> str:
        return B.relative(path, self.report_dir)

    @property
    def layout(self) -> StudyLayout:
        """The study's folders (the one definition `mvi-tf demo` / `study` write by)."""
        return StudyLayout(self.study)

    @property
    def tables_dir(self) -> Path:
        return self.study / "report_tables"


def modality_name(modality: str) -> str:
    return MODALITY_NAMES.get(str(modality).lower(), str(modality).upper())


def item(text: str, href: str = "", link_text: str = "details") -> dict[str, str]:
    """One line of the summary, linking to its section."""
    return {"text": text, "href": href, "link_text": link_text}


def _reason(row: Any) -> str:
    """Why a number is missing: the row's ``reason`` (or ``note``), '' when it gives none."""
    for key in ("reason", "note"):
        value = row.get(key) if hasattr(row, "get") else None
        if not missing(value):
            return str(value)
    return ""


# --- cohorts (Table 2) -----------------------------------------------------------------------------------
def cohort_section(ctx: Context) -> tuple[dict, list[dict]]:
    title = "Cohorts and baseline characteristics (Table 2)"
    if not (ctx.cohort / "clinical.csv").exists() or not (ctx.cohort / "manifest.csv").exists():
        return B.section("cohorts", title, [B.missing("cohort clinical table")]), []
    tables = cohort_characteristics(ctx.cohort)
    ctx.tables_dir.mkdir(parents=True, exist_ok=True)
    csv_path = ctx.tables_dir / "table2_characteristics.csv"
    pd.concat([f.assign(table=t) for t, f in tables.items()], ignore_index=True).to_csv(csv_path, index=False)
    blocks, sizes = [], []
    for name, frame in tables.items():
        n_pos, n_neg = frame.iloc[0]["mvi_present"], frame.iloc[0]["mvi_absent"]
        sizes.append(f"{name.split(' (')[0].replace(' / ', ' ').lower().replace('ct ', 'CT ').replace('mri ', 'MRI ')} "
                     f"{int(n_pos) + int(n_neg)} ({n_pos} with MVI)")
        rows = []
        for r in frame.iloc[1:].itertuples():
            first = B.cell(r.level, "level") if r.level else B.cell(r.characteristic, "char")
            p = "" if missing(r.p_value) else fmt_p(r.p_value)
            rows.append([first, r.mvi_present, r.mvi_absent, p, B.cell(r.test, "test")])
        columns = ["Characteristic", f"MVI present (n = {n_pos})", f"MVI absent (n = {n_neg})", "p-value", "Test"]
        blocks.append(B.table(f"Table 2. Baseline characteristics, {name}", columns, rows,
                              csv=ctx.link(csv_path)))
    blocks.insert(0, B.text("Continuous characteristics as mean ± SD (Welch's t-test) or median [IQR] "
                            "(Kruskal-Wallis test); categorical ones as n (%) with the chi-square test, or Fisher's "
                            "exact test for 2 × 2 tables with an expected count below 5 (tableone)."))
    return B.section("cohorts", title, blocks), [item("Cohorts: " + "; ".join(sizes) + ".", "#cohorts", "Table 2")]


def prepare_section(ctx: Context) -> tuple[dict, list[dict]]:
    title = "Data preparation"
    records = ctx.layout.records
    report_csv = records / "prepare_report.csv"
    if not report_csv.exists():
        return B.section("preparation", title, [B.missing("prepare report")]), []
    frame = pd.read_csv(report_csv, dtype={"patient_id": str})
    written = frame[frame["status"] == "written"]
    skipped = frame[frame["status"] != "written"]
    counts = written.groupby("modality").size().to_dict()
    blocks = [B.text(f"{len(written)} patient-modality records written ("
                     + ", ".join(f"{modality_name(m)} {n}" for m, n in counts.items())
                     + f"), {len(skipped)} skipped.")]
    if len(skipped):
        blocks.append(B.table("Skipped patients and why", ["Patient", "Modality", "Reason"],
                              [[r.patient_id, modality_name(r.modality), B.cell(r.reason, "text")]
                               for r in skipped.itertuples()], csv=ctx.link(report_csv)))
    else:
        blocks.append(B.links("Per-patient ROI report:", [(ctx.link(report_csv), report_csv.name)]))
    return B.section("preparation", title, blocks), []


# --- performance (Table 3), ROC and decision curves --------------------------------------------------------
TABLE3_COHORTS = ("training", "prospective")


def _perf_cells(row: pd.Series | None, reasons: list[str], where: str) -> list[str]:
    if row is None:
        return ["n/a"] * 4
    reason = _reason(row)
    if missing(row.get("auc")) and reason and reason not in reasons:
        reasons.append(f"{where}: {reason}")
    return [fmt_ci(row.get("auc"), row.get("auc_ci_low"), row.get("auc_ci_high")),
            fmt_pct(row.get("sensitivity")), fmt_pct(row.get("specificity")), fmt_pct(row.get("accuracy"))]


def _table3(perf: pd.DataFrame, csv: str) -> dict:
    head = [[B.head_cell("Model", rowspan=2)] + [B.head_cell(COHORT_WORDS[c].capitalize(), colspan=4)
                                                 for c in TABLE3_COHORTS],
            [B.head_cell(h, num=True) for _ in TABLE3_COHORTS for h in ("AUC (95% CI)", "SEN %", "SPE %", "ACC %")]]
    rows: list[Any] = []
    reasons: list[str] = []
    for modality, part in perf.groupby("modality", sort=False):
        sizes = ", ".join(f"{COHORT_WORDS[c]} n = {int(part.loc[part['cohort'] == c, 'n'].max())}"
                          for c in TABLE3_COHORTS if (part["cohort"] == c).any())
        rows.append({"group": f"{modality_name(modality)} ({sizes})"})
        for model, model_rows in part.groupby("model", sort=False):
            by_cohort = {r["cohort"]: r for _, r in model_rows.iterrows()}
            cells = [B.cell(model_rows["model_label"].iloc[0], "model")]
            for c in TABLE3_COHORTS:
                cells += _perf_cells(by_cohort.get(c), reasons, f"{modality_name(modality)} {model}, {c}")
            rows.append(cells)
    note = ("SEN, SPE and ACC at each model's Youden threshold chosen on the training split; AUC 95% CI by "
            "DeLong. " + ("n/a: " + "; ".join(reasons[:6]) + ". " if reasons else ""))
    return B.table("Table 3. Predictive performance: AUC (95% CI) · sensitivity · specificity · accuracy",
                   [], rows, head=head, csv=csv, note=note, table_id="table3")


def _auc_text(perf: pd.DataFrame, modality: str, model: str, cohort: str) -> str:
    row = perf[(perf["modality"] == modality) & (perf["model"] == model) & (perf["cohort"] == cohort)]
    if row.empty:
        return "n/a"
    r = row.iloc[0]
    return fmt_ci(r["auc"], r.get("auc_ci_low"), r.get("auc_ci_high"), reason=_reason(r))


def _performance_summary(perf: pd.DataFrame, bayes: dict | None) -> list[dict]:
    items = []
    for modality in perf["modality"].unique():
        parts = []
        for cohort in TABLE3_COHORTS:
            rows = perf[(perf["modality"] == modality) & (perf["cohort"] == cohort)]
            if rows.empty:
                continue
            text = (f"{COHORT_WORDS[cohort]} (n = {int(rows['n'].max())}): CDLM AUC "
                    f"{_auc_text(perf, modality, 'cdlm', cohort)} vs radiological model "
                    f"{_auc_text(perf, modality, 'radiological', cohort)}")
            optimum = ((bayes or {}).get(modality) or {}).get("train" if cohort == "training" else cohort)
            if not missing(optimum):
                text += f"; Bayes-optimal {fmt_num(optimum)}"
            parts.append(text)
        if parts:
            items.append(item(f"{modality_name(modality)}, " + "; ".join(parts) + ".", "#performance", "Table 3"))
    return items


def _figure_caption(name: str) -> str | None:
    match = re.fullmatch(r"(roc|decision_curves|calibration)_(ct|mri)_([a-z_]+)\.png", name)
    if not match:
        return None
    kind, modality, cohort = match.groups()
    where = f"{modality_name(modality)}, {COHORT_WORDS.get(cohort, cohort.replace('_', ' '))}"
    return {"roc": f"ROC curves of every model on the {where}; the legend gives each model's AUC.",
            "decision_curves": f"Decision curves on the {where}: net benefit of each model against the threshold "
                               "probability, with treat-all and treat-none.",
            "calibration": f"Calibration of the CDLM on the {where}: observed MVI rate against predicted "
                           "probability (lowess curve per model, CDLM risk groups with 95% CI), and how the "
                           "predictions are spread."}[kind]


def _evaluation_figures(evaluation: Path, kind: str) -> list[tuple[Path, str]]:
    """The figures of one kind, per modality in cohort order (training, internal validation, prospective)."""
    order = list(COHORT_WORDS)

    def key(path: Path) -> tuple:
        cohort = path.stem.split("_", 2)[-1] if kind != "decision_curves" else path.stem.split("_", 3)[-1]
        return (path.stem.replace(cohort, ""), order.index(cohort) if cohort in order else len(order))

    found = [(p, _figure_caption(p.name)) for p in sorted(evaluation.glob(f"{kind}_*.png"), key=key)]
    return [(p, c) for p, c in found if c]


def _decision_panels(ctx: Context) -> list[tuple[Path, str]]:
    """Decision curves drawn for the report from each run's predictions (two panels per modality and cohort)."""
    from mvi_tf.report.figures import decision_curve_panels

    made = []
    for run in sorted(ctx.layout.runs.glob("*")):
        if not RunFiles(run).predictions_path.is_file():
            continue
        for cohort in TABLE3_COHORTS:
            out = ctx.study / "report_figures" / f"decision_curves_{run.name}_{cohort}.png"
            try:
                path = decision_curve_panels(run, cohort, out, ctx.synthetic)
            except (OSError, ValueError, KeyError) as err:
                log.warning("decision curves of %s, %s not drawn: %s", run.name, cohort, err)
                continue
            if path is not None:
                made.append((path, f"Decision curves on the {modality_name(run.name)}, {COHORT_WORDS[cohort]}: left, "
                                   "net benefit of the CDLM, radiological and clinical models; right, the single-phase "
                                   "signatures and the fusion model; both against treat-all and treat-none."))
    return made


def performance_section(ctx: Context) -> tuple[dict, list[dict]]:
    title = "Model performance (Table 3), ROC and decision curves"
    evaluation = ctx.layout.evaluation
    perf_csv = evaluation / "performance.csv"
    if not perf_csv.exists():
        return B.section("performance", title, [B.missing("evaluation (mvi-tf evaluate)")]), []
    perf = pd.read_csv(perf_csv)
    blocks = [_table3(perf, ctx.link(perf_csv))]
    found = _evaluation_figures(evaluation, "roc")
    if found:
        blocks += [B.heading("ROC curves"), B.figures(found)]
    panels = _decision_panels(ctx)
    if panels:
        blocks += [B.heading("Decision curves"), B.figures(panels, figure_cls="wide")]
    else:
        found = _evaluation_figures(evaluation, "decision_curves")
        if found:
            blocks += [B.heading("Decision curves"), B.figures(found)]
    bayes = read_json_or_none(ctx.cohort / "truth" / "bayes_auc.json") if ctx.synthetic else None
    return B.section("performance", title, blocks), _performance_summary(perf, bayes)


# --- calibration, CDLM versus radiological, subgroups ------------------------------------------------------
def _get(row: Any, key: str) -> Any:
    return row.get(key) if hasattr(row, "get") else getattr(row, key, None)


def _ci_of(row: Any, key: str, digits: int = 2) -> str:
    return fmt_ci(_get(row, key), _get(row, f"{key}_ci_low"), _get(row, f"{key}_ci_high"), digits)


def calibration_section(ctx: Context) -> tuple[dict, list[dict]]:
    title = "Calibration"
    path = ctx.layout.evaluation / "calibration.csv"
    if not path.is_file():
        return B.section("calibration", title, [B.missing("calibration (mvi-tf evaluate)")]), []
    frame = pd.read_csv(path)
    if "model" in frame:
        frame = frame[frame["model"].isin(["cdlm", "radiological"])]
    if "cohort" in frame and frame["cohort"].isin(TABLE3_COHORTS).any():
        frame = frame[frame["cohort"].isin(TABLE3_COHORTS)]
    columns = ["Model", "Cohort", "Centre", "n (events)", "O/E (95% CI)", "Intercept (95% CI)", "Slope (95% CI)",
               "Brier"]
    rows: list[Any] = []
    notes: list[str] = []
    for modality, part in frame.groupby("modality", sort=False):
        rows.append({"group": modality_name(modality)})
        for _, r in part.iterrows():
            events = "" if missing(r.get("n_events")) else f" ({int(r['n_events'])})"
            n = "n/a" if missing(r.get("n")) else f"{int(r['n'])}{events}"
            rows.append([B.cell(r.get("model_label", ""), "model"), COHORT_WORDS.get(r.get("cohort"), r.get("cohort")),
                         r.get("centre", ""), n, _ci_of(r, "oe_ratio"), _ci_of(r, "intercept"), _ci_of(r, "slope"),
                         fmt_num(r.get("brier"))])
            reason = "" if missing(r.get("note")) else str(r["note"]).split(" (")[0].split(": the")[0]
            if reason and reason not in notes:
                notes.append(reason)
    note = ("Calibration-in-the-large (intercept; 0 is ideal), calibration slope (1 is ideal) and observed/"
            "expected ratio as in rms::val.prob; training and prospective cohorts, all centres and each centre. "
            + ("n/a: " + "; ".join(notes[:4]) + ". " if notes else ""))
    blocks = [B.table("Calibration of the CDLM and the radiological model per cohort and centre", columns, rows,
                      csv=ctx.link(path), note=note)]
    found = _evaluation_figures(ctx.layout.evaluation, "calibration")
    if found:
        blocks.append(B.figures(found))
    return B.section("calibration", title, blocks), []


def improvement_section(ctx: Context) -> tuple[dict, list[dict]]:
    title = "CDLM versus radiological model"
    path = ctx.layout.evaluation / "improvement.csv"
    if not path.is_file():
        return B.section("improvement", title, [B.missing("comparison (mvi-tf evaluate)")]), []
    frame = pd.read_csv(path)
    columns = ["Modality", "Cohort", "n", "AUC CDLM", "AUC radiological", "ΔAUC (95% CI)", "p (DeLong)",
               "NRI (95% CI)", "p", "IDI (95% CI)", "p"]
    rows = [[modality_name(r.get("modality")), COHORT_WORDS.get(r.get("cohort"), r.get("cohort")),
             fmt_num(r.get("n"), 0), fmt_num(r.get("auc_new")), fmt_num(r.get("auc_old")),
             fmt_ci(r.get("auc_difference"), r.get("auc_difference_ci_low"), r.get("auc_difference_ci_high")),
             fmt_p(r.get("delong_p")), _ci_of(r, "nri", 3), fmt_p(r.get("nri_p")), _ci_of(r, "idi", 3),
             fmt_p(r.get("idi_p"))] for _, r in frame.iterrows()]
    notes = sorted({str(n) for n in frame.get("note", pd.Series(dtype=str)) if not missing(n)})
    note = ("ΔAUC with a bootstrap 95% CI; continuous net reclassification improvement (NRI) and integrated "
            "discrimination improvement (IDI) of the CDLM over the radiological model. "
            + ("Notes: " + "; ".join(notes[:5]) + "." if notes else ""))
    return B.section("improvement", title, [B.table(
        "Does the CDLM add to the radiological model? AUC difference, NRI and IDI", columns, rows,
        csv=ctx.link(path), note=note)]), []


FACTOR_NAMES = {"age": "Age", "sex": "Sex", "afp": "AFP", "tumour_size": "Tumour size"}


def subgroup_section(ctx: Context) -> tuple[dict, list[dict]]:
    title = "Subgroup analysis"
    path = ctx.layout.evaluation / "subgroups.csv"
    if not path.is_file():
        return B.section("subgroups", title, [B.missing("subgroups (mvi-tf evaluate)")]), []
    frame = pd.read_csv(path)
    columns = ["Factor", "Stratum", "n", "AUC (95% CI)", "SEN %", "SPE %", "p (AUC differs)"]
    rows: list[Any] = []
    reasons: set[str] = set()
    for (modality, cohort), part in frame.groupby(["modality", "cohort"], sort=False):
        model = part["model_label"].iloc[0] if "model_label" in part else "CDLM"
        rows.append({"group": f"{model}, {modality_name(modality)}, {COHORT_WORDS.get(cohort, cohort)}"})
        for factor, strata in part.groupby("factor", sort=False):
            test = strata[strata["kind"] == "test"]
            p = fmt_p(test.iloc[0].get("auc_p_value")) if len(test) else "n/a"
            for i, (_, r) in enumerate(strata[strata["kind"] == "stratum"].iterrows()):
                factor_name = FACTOR_NAMES.get(str(factor), str(factor).replace("_", " ").capitalize())
                stratum = str(r["stratum"]).replace("<=", "≤").replace(">=", "≥")
                if missing(r.get("auc")) and not missing(r.get("note")):
                    reasons.add(str(r["note"]))
                rows.append([B.cell(factor_name if i == 0 else "", "char"), B.cell(stratum, "level"),
                             fmt_num(r.get("n"), 0), fmt_ci(r.get("auc"), r.get("auc_ci_low"), r.get("auc_ci_high")),
                             fmt_pct(r.get("sensitivity")), fmt_pct(r.get("specificity")), p if i == 0 else ""])
    note = ("p: DeLong test that the AUC is the same in every stratum (independent samples); n/a where fewer than "
            "two strata have an AUC. " + ("AUC n/a: " + "; ".join(sorted(reasons)[:4]) + "." if reasons else ""))
    return B.section("subgroups", title, [B.table("CDLM performance by age, sex, AFP and tumour size", columns,
                                                  rows, csv=ctx.link(path), note=note)]), []


# --- CT versus MRI ---------------------------------------------------------------------------------------------
def headtohead_section(ctx: Context) -> tuple[dict, list[dict]]:
    title = "Head-to-head: CDLM-CT versus CDLM-MRI"
    path = ctx.layout.compare / "head_to_head.json"
    result = read_json_or_none(path)
    if result is None:
        return B.section("head-to-head", title, [B.missing("compare (mvi-tf compare)")]), []
    auc, sen, spe = result.get("auc", {}), result.get("sensitivity", {}), result.get("specificity", {})
    nri = result.get("reclassification_mri_over_ct", {})
    def ci(key: str) -> list:
        return auc.get(f"{key}_ci") or [None, None]

    rows = [
        ["AUC (95% CI)", fmt_ci(auc.get("ct"), *ci("ct")), fmt_ci(auc.get("mri"), *ci("mri")),
         fmt_p(auc.get("delong_p_value"), _reason(auc)), B.cell("paired DeLong", "test")],
        ["Sensitivity %", fmt_pct(sen.get("ct")), fmt_pct(sen.get("mri")), fmt_p(sen.get("mcnemar_p_value")),
         B.cell("McNemar", "test")],
        ["Specificity %", fmt_pct(spe.get("ct")), fmt_pct(spe.get("mri")), fmt_p(spe.get("mcnemar_p_value")),
         B.cell("McNemar", "test")],
        ["NRI of MRI over CT (95% CI)", "", _ci_of(nri, "nri", 3), fmt_p(nri.get("nri_p"), _reason(nri)), ""],
        ["IDI of MRI over CT (95% CI)", "", _ci_of(nri, "idi", 3), fmt_p(nri.get("idi_p")), ""],
    ]
    n, cohort = result.get("n_paired"), COHORT_WORDS.get(result.get("cohort"), result.get("cohort"))
    table = B.table(f"CDLM-CT versus CDLM-MRI on the {n} patients of the {cohort} with both examinations",
                    ["Measure", "CDLM-CT", "CDLM-MRI", "p-value", "Test"], rows)
    blocks = [table, B.links("Every number at full precision:", [(ctx.link(path), path.name)])]
    figs = [(ctx.layout.compare / "head_to_head_roc.png",
             f"ROC curves of CDLM-CT and CDLM-MRI on the same {n} patients."),
            (ctx.layout.compare / "head_to_head_decision_curves.png",
             f"Decision curves of CDLM-CT and CDLM-MRI on the same {n} patients, with treat-all and treat-none.")]
    figs = [(p, c) for p, c in figs if p.exists()]
    if figs:
        blocks.append(B.figures(figs))
    better = "MRI" if (auc.get("mri") or 0) > (auc.get("ct") or 0) else "CT"
    summary = (f"CT versus MRI on {n} paired patients: AUC {fmt_num(auc.get('ct'))} vs {fmt_num(auc.get('mri'))} "
               f"(higher with {better}; paired DeLong {p_equals(auc.get('delong_p_value'))}).")
    return B.section("head-to-head", title, blocks), [item(summary, "#head-to-head")]


# --- attention maps ------------------------------------------------------------------------------------------
GALLERY_LIMIT = 8


def _phase(phase: str) -> str:
    return PHASE_NAMES.get(phase, phase.replace("_", " "))


def _localisation_table(modality: str, summary: dict, link: str) -> dict:
    loc = summary["localisation"]
    localising = set(loc.get("localising_phases") or [])
    columns = ["Phase", "n", "Hit rate", "Randomised weights", "Centre baseline", "Chance", "p vs chance",
               "p vs randomised", "p vs centre", "Localises"]
    rows = []
    for phase in summary.get("phases") or list(loc["per_phase"]):
        r = loc["per_phase"].get(phase, {})
        if not r.get("n"):
            rows.append([_phase(phase), "0"] + ["n/a"] * 7 + [B.cell("n/a", "na")])
            continue
        yes = phase in localising
        rows.append([_phase(phase), str(r["n"]), fmt_num(r.get("hit_rate"), 2),
                     fmt_num((r.get("randomised_weights") or {}).get("hit_rate"), 2),
                     fmt_num((r.get("centre_baseline") or {}).get("hit_rate"), 2), fmt_num(r.get("chance"), 2),
                     fmt_p(r.get("p_vs_chance")), fmt_p(r.get("p_vs_random")), fmt_p(r.get("p_vs_centre")),
                     B.cell("yes" if yes else "no", "yes" if yes else "no")])
    note = (f"Hit: the map's peak falls in the known invasion sector (or within {summary.get('tolerance_mm', 5)} mm "
            "of it) on MVI-positive patients. A phase localises when its hit rate beats chance, the randomised-"
            f"weights model and the centre baseline, each at p < {loc.get('alpha', 0.05)}.")
    return B.table(f"Where the {modality_name(modality)} CDLM looks: pointing-game hit rate per phase", columns,
                   rows, note=note, csv=link)


def _gallery(ctx: Context, modality: str, folder: Path) -> dict | None:
    overlays = sorted((folder / "overlays").glob("*.png"))[:GALLERY_LIMIT]
    if not overlays:
        return None
    predictions = ctx.layout.run_files(modality).predictions_path
    scores = pd.read_csv(predictions, dtype={"patient_id": str}) if predictions.exists() else pd.DataFrame()
    hits = pd.read_csv(folder / "localisation.csv", dtype={"patient_id": str}) \
        if (folder / "localisation.csv").exists() else pd.DataFrame(columns=["patient_id", "phase", "hit"])
    items = []
    for path in overlays:
        pid = path.stem
        row = scores[scores["patient_id"] == pid] if "patient_id" in scores else scores
        prob = fmt_num(row["cdlm"].iloc[0], 2) if len(row) and "cdlm" in row else "n/a"
        truth = ("present" if int(row["label"].iloc[0]) == 1 else "absent") if len(row) and "label" in row else "unknown"
        mine = hits[hits["patient_id"] == pid]
        hit = [_phase(p) for p, h in zip(mine["phase"], mine["hit"], strict=True) if str(h).lower() in ("true", "1")]
        miss = [_phase(p) for p, h in zip(mine["phase"], mine["hit"], strict=True) if str(h).lower() not in ("true", "1")]
        if len(mine):
            where = (f"the map hits the invasion site in the {', '.join(hit)} phase" if hit else "no phase's map hits "
                     "the invasion site") + (f" and misses it in the {', '.join(miss)} phase" if hit and miss else "")
        else:
            where = "no invasion site to score (MVI absent or no truth on this slice)"
        items.append((path, f"Patient {pid}, {modality_name(modality)}, every phase: predicted MVI probability "
                            f"{prob}, true MVI {truth}; {where}."))
    return B.figures(items, cls="gallery")


def attention_section(ctx: Context) -> tuple[dict, list[dict]]:
    title = "Attention maps and localisation"
    blocks, said = [], []
    for folder in sorted(ctx.layout.explanations.glob("*")):
        path = folder / "explain_summary.json"
        summary = read_json_or_none(path)
        if summary is None:
            continue
        modality = summary.get("modality", folder.name)
        method = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++"}.get(summary.get("method"), summary.get("method"))
        blocks.append(B.heading(f"{modality_name(modality)}: {summary.get('n_patients', 0)} patients explained "
                                f"({method or 'Grad-CAM'})"))
        if summary.get("explained_model_note"):
            blocks.append(B.text(f"Maps of the {summary.get('explained_model')} model: "
                                 f"{summary['explained_model_note']}."))
        if summary.get("localisation"):
            blocks.append(_localisation_table(modality, summary, ctx.link(path)))
            phases = summary["localisation"].get("localising_phases") or []
            said.append(f"{modality_name(modality)}: " + (", ".join(_phase(p) for p in phases) if phases else "none"))
        else:
            blocks.append(B.text(f"Localisation not scored: {summary.get('localisation_note', 'no reason given')}."))
            blocks.append(B.links("Raw summary:", [(ctx.link(path), path.name)]))
            said.append(f"{modality_name(modality)}: not scored")
        gallery = _gallery(ctx, modality, folder)
        if gallery:
            blocks.append(gallery)
    if not blocks:
        return B.section("attention", title, [B.missing("explain (mvi-tf explain)")]), []
    text = "Phases whose attention maps localise the invasion site: " + "; ".join(said) + "."
    return B.section("attention", title, blocks), [item(text, "#attention")]


# --- survival --------------------------------------------------------------------------------------------------
ENDPOINTS = {"PFS": "progression-free survival", "OS": "overall survival"}


def _km_caption(name: str) -> str | None:
    match = re.fullmatch(r"km_([a-z]+)_(ct|mri)_(pfs|os)_(\w+)\.png", name)
    if not match:
        return None
    cohort, modality, endpoint, grouping = match.groups()
    by = {"predicted": "CDLM-predicted MVI", "histopathology": "histopathological MVI"}.get(grouping, grouping)
    return (f"Kaplan-Meier curves of {ENDPOINTS[endpoint.upper()]} by {by}, {modality_name(modality)}, "
            f"{COHORT_WORDS.get(cohort, cohort)}.")


def _median(r: pd.Series, suffix: str) -> str:
    return fmt_ci(r.get(f"median_{suffix}"), r.get(f"median_{suffix}_lower"), r.get(f"median_{suffix}_upper"), 1,
                  reason="not reached" if not missing(r.get(f"n_{suffix}")) else None)


def survival_section(ctx: Context) -> tuple[dict, list[dict]]:
    title = "Survival: Kaplan-Meier, log-rank and Cox"
    folder = ctx.layout.survival
    path = folder / "survival_table.csv"
    if not path.is_file():
        return B.section("survival", title, [B.missing("survival (mvi-tf survival)")]), []
    frame = pd.read_csv(path)
    columns = ["Grouping", "n (events)", "Median, MVI present (months)", "Median, MVI absent (months)",
               "HR (95% CI)", "p (log-rank)"]
    rows: list[Any] = []
    said: list[str] = []
    reasons: dict[str, int] = {}
    for (modality, endpoint), part in frame.groupby(["modality", "endpoint"], sort=False):
        cohort = COHORT_WORDS.get(part["cohort"].iloc[0], part["cohort"].iloc[0])
        rows.append({"group": f"{modality}, {ENDPOINTS.get(endpoint, endpoint)}, {cohort}"})
        for _, r in part.iterrows():
            events = f"{fmt_num(r.get('n'), 0)} ({fmt_num(r.get('events'), 0)})"
            hr = fmt_ci(r.get("hazard_ratio"), r.get("hr_lower"), r.get("hr_upper"), 2)
            if missing(r.get("hazard_ratio")) and _reason(r):
                reasons.setdefault(_reason(r), len(reasons) + 1)
                hr = f"n/a ({reasons[_reason(r)]})"
            continuous = "continuous" in str(r.get("analysis", ""))
            rows.append([B.cell(r.get("analysis", "") if not missing(r.get("analysis")) else str(r.get("note")),
                                "model"), events, "" if continuous else _median(r, "present"),
                         "" if continuous else _median(r, "absent"), hr,
                         fmt_p(r.get("logrank_p")) if not continuous else fmt_p(r.get("hr_p"))])
            if str(r.get("analysis", "")).startswith("CDLM-predicted"):
                what = f"{ENDPOINTS.get(endpoint, endpoint)} ({modality})"
                if missing(r.get("hazard_ratio")) and missing(r.get("logrank_p")):
                    said.append(f"{what}: not estimable")
                else:
                    said.append(f"{what}: HR {fmt_ci(r.get('hazard_ratio'), r.get('hr_lower'), r.get('hr_upper'), 2)}, "
                                f"log-rank {p_equals(r.get('logrank_p'))}")
    note = ("HR: Cox hazard ratio of MVI present against absent (continuous score: per step of the score, "
            "p from the Wald test). Medians with 95% CI; n/a where the median is not reached. "
            + " ".join(f"n/a ({i}): {text}" for text, i in reasons.items()))
    blocks = [B.table("Survival by CDLM-predicted and histopathological MVI", columns, rows, csv=ctx.link(path),
                      note=note)]
    found = [(p, _km_caption(p.name)) for p in sorted(folder.rglob("km_*.png"))]
    found = [(p, c) for p, c in found if c]
    if found:
        blocks += [B.heading("Kaplan-Meier curves"), B.figures(found)]
    if said and all(text.endswith("not estimable") for text in said):
        said = ["not estimable in this cohort (the section gives the reasons)"]
    summary = [item("Survival separation by CDLM-predicted MVI: " + "; ".join(said) + ".", "#survival")] if said else []
    return B.section("survival", title, blocks), summary


# --- deployment and timings ------------------------------------------------------------------------------------
def _size(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.1f} MB"


def deployment_section(ctx: Context) -> tuple[dict, list[dict]]:
    title = "Deployment: exported models and a held-out prediction"
    base = ctx.layout.saved_models
    cards = sorted(base.glob("*/*/model_card.md")) if base.is_dir() else []
    blocks, exported = [], []
    if cards:
        rows = []
        for card in cards:
            name, version = card.parent.parent.name, card.parent.name
            tflite = sorted(base.glob(f"{name}-*.tflite"))
            kinds = ", ".join(f"{p.stem[len(name) + 1:]} ({_size(p)})" for p in tflite) or "none"
            rows.append([B.cell(name, "model"), version, ctx.link(card.parent), kinds])
            exported.append(f"{name} version {version} (SavedModel" + (f" + {len(tflite)} TFLite" if tflite else "")
                            + ")")
        blocks.append(B.table("Exported models (TensorFlow Serving SavedModel and TFLite)",
                              ["Model", "Version", "SavedModel folder", "TFLite models"], rows))
        blocks += [B.preformatted(f"Model card: {c.parent.parent.name} version {c.parent.name}", c.read_text())
                   for c in cards]
    holdout = read_json_or_none(ctx.layout.holdout_prediction)
    agreement = ""
    if holdout:
        rows = []
        for modality, result in (holdout.get("modalities") or {}).items():
            probs = result.get("probabilities", {})
            rows.append([modality_name(modality)] + [fmt_num(probs.get(k), 4) for k in ("keras", "savedmodel", "tflite")]
                        + [f"{result.get('max_abs_difference', float('nan')):.1e}"])
        blocks.append(B.table(f"Held-out patient {holdout.get('patient_id', '')}: MVI probability from each runtime",
                              ["Modality", "Keras", "SavedModel", "TFLite", "Largest difference"], rows))
        spread = max((r.get("max_abs_difference") or 0) for r in (holdout.get("modalities") or {}).values()) \
            if holdout.get("modalities") else None
        if spread is not None:
            agreement = ("; the held-out patient's probability agrees across Keras, SavedModel and TFLite "
                         + (f"within {spread:.1g}" if spread > 0 else "exactly"))
    if not blocks:
        return B.section("deployment", title, [B.missing("export (mvi-tf export)")]), []
    text = ("Exported: " + ", ".join(exported) if exported else "Nothing exported") + agreement + "."
    return B.section("deployment", title, blocks), [item(text, "#deployment")]


def timings_section(ctx: Context) -> tuple[dict, list[dict]] | None:
    timings = read_json_or_none(ctx.layout.timings)
    if not timings:
        return None
    rows = [[stage, fmt_num(seconds, 1)] for stage, seconds in timings.items()]
    rows.append([B.cell("Total", "model"), fmt_num(sum(float(s) for s in timings.values() if not missing(s)), 1)])
    return B.section("timings", "Wall time per stage", [B.table("Wall time per stage (seconds; 0 = reused)",
                                                                ["Stage", "Seconds"], rows)]), []
