"""Assemble a study directory's outputs into one self-contained HTML report (figures embedded as base64).

The report mirrors the paper: cohort characteristics (Table 2), model performance (Table 3), ROC and decision
curves, the CT-versus-MRI head-to-head tests, subgroups, the attention-map gallery with localisation scores,
Kaplan-Meier curves, and the deployed models. A banner says so when the data are synthetic.
"""

from __future__ import annotations

import base64
import html
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from mvi_tf import na
from mvi_tf.report.cohort_table import cohort_characteristics

log = logging.getLogger(__name__)

_CSS = """
body{font-family:system-ui,Segoe UI,Helvetica,Arial,sans-serif;margin:2rem auto;max-width:1180px;color:#222}
h1{font-size:1.6rem} h2{border-bottom:2px solid #ddd;padding-bottom:.2rem;margin-top:2.2rem}
table{border-collapse:collapse;margin:.6rem 0 1.2rem;font-size:.86rem}
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f3f3} .banner{background:#fff3cd;border:1px solid #e0b100;padding:.8rem 1rem;font-weight:600}
figure{display:inline-block;margin:.4rem;vertical-align:top;max-width:560px}
figure img{max-width:100%;border:1px solid #ddd} figcaption{font-size:.8rem;color:#555}
.missing{color:#a00} pre{background:#f7f7f7;padding:.6rem;overflow-x:auto;font-size:.8rem}
"""


def _esc(text: Any) -> str:
    return html.escape(str(text))


def _figure(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{_esc(path.stem)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_esc(path.name)}</figcaption></figure>")


def _figures(paths: Iterable[Path], limit: int | None = None) -> str:
    paths = sorted(paths)[:limit] if limit else sorted(paths)
    return "".join(_figure(p) for p in paths)


def _frame(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, na_rep="n/a", float_format=lambda v: f"{v:.4g}", border=0, escape=True)


def _csv(path: Path) -> str:
    return f"<h4>{_esc(path.stem.replace('_', ' '))}</h4>" + _frame(pd.read_csv(path))


def _csv_columns(path: Path, columns: Iterable[str], title: str) -> str:
    """The named columns of a CSV (those present), under ``title``."""
    frame = pd.read_csv(path)
    return f"<h4>{_esc(title)}</h4>" + _frame(frame[[c for c in columns if c in frame.columns]])


CALIBRATION_COLUMNS = (
    "data_label", "modality", "model_label", "cohort", "centre", "n", "n_events", "observed", "expected",
    "oe_ratio", "oe_ratio_ci_low", "oe_ratio_ci_high", "intercept", "intercept_ci_low", "intercept_ci_high",
    "slope", "slope_ci_low", "slope_ci_high", "brier", "brier_scaled", "e_avg", "note",
)
IMPROVEMENT_COLUMNS = (
    "data_label", "modality", "cohort", "n", "auc_new", "auc_old", "auc_difference", "auc_difference_ci_low",
    "auc_difference_ci_high", "delong_p", "nri", "nri_ci_low", "nri_ci_high", "nri_p", "idi", "idi_ci_low",
    "idi_ci_high", "idi_p", "note",
)


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            if key == na.KEY:
                continue  # each reason is shown in place of its figure
            missing = na.get(obj, key)
            if value is None and isinstance(missing, na.NotAvailable):
                out[f"{prefix}.{key}" if prefix else str(key)] = str(missing)
                continue
            out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(obj, list) and len(obj) > 12:
        return {prefix: f"[{len(obj)} values]"}
    return {prefix: obj}


def _json_table(path: Path) -> str:
    flat = _flat(json.loads(path.read_text()))
    frame = pd.DataFrame({"quantity": list(flat), "value": [str(v) for v in flat.values()]})
    return f"<h4>{_esc(path.name)}</h4>" + _frame(frame)


def _row_label(row: dict) -> str:
    parts = [str(row.get(k)) for k in ("modality", "model_label", "cohort", "factor", "stratum") if row.get(k)]
    return " ".join(parts)


def _evaluation_reasons(path: Path) -> str:
    """The figures of evaluation.json that the cohort cannot define, one line per reason (mvi_tf.na)."""
    if not path.exists():
        return ""
    result = json.loads(path.read_text())
    grouped: dict[str, dict[str, None]] = {}
    for row in [*result.get("performance", []), *result.get("subgroups", [])]:
        for key, reason in (row.get(na.KEY) or {}).items():
            if not key.endswith(("_ci_low", "_ci_high", "_variance")):
                grouped.setdefault(f"{key}: {reason}", {})[_row_label(row)] = None
    if not grouped:
        return ""
    items = "".join(f"<li>{_esc(reason)} ({_esc(', '.join(rows))})</li>" for reason, rows in grouped.items())
    return f'<h4>Not available on this cohort</h4><ul class="missing">{items}</ul>'


def _missing(what: str) -> str:
    return f'<p class="missing">Not available: {_esc(what)} (stage not run or failed).</p>'


def _section(title: str, body: str) -> str:
    return f"<h2>{_esc(title)}</h2>\n{body}\n"


def _study_info(study: Path) -> dict[str, Any]:
    info_path = study / "study.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    cohort = Path(info.get("cohort_dir", study / "cohort"))
    info.setdefault("cohort_dir", str(cohort))
    info.setdefault("synthetic", (cohort / "truth").is_dir())
    return info


def build_report(study_dir: str | Path, out_path: str | Path | None = None) -> Path:
    """Write ``report.html`` for a study directory laid out by `mvi_tf.demo.run_study`.

    Parameters
    ----------
    study_dir : path
        The study directory (cohort, tfrecords, runs, evaluation, compare, explain, survival, saved_models, predict).
    out_path : path, optional
        Where to write the HTML; default ``<study_dir>/report.html``.

    Returns
    -------
    Path
        The written report. Sections whose stage has not run say so instead of failing.
    """
    study = Path(study_dir)
    if not study.is_dir():
        raise FileNotFoundError(f"Study directory not found. Received: study_dir={study_dir}")
    info = _study_info(study)
    cohort = Path(info["cohort_dir"])
    parts = ["<h1>mvi-tf study report: microvascular invasion prediction (CT and EOB-MRI)</h1>"]
    if info["synthetic"]:
        parts.append('<div class="banner" id="synthetic-banner">SYNTHETIC DATA: every number and figure in this '
                     "report comes from the generated synthetic multi-centre cohort (known ground truth), not from "
                     "patients. It demonstrates the method; it is not clinical evidence.</div>")
    parts.append(f"<p>Study directory: <code>{_esc(study.name)}</code>.</p>")

    body = ""
    if (cohort / "clinical.csv").exists():
        for title, frame in cohort_characteristics(cohort).items():
            body += f"<h4>{_esc(title)}</h4>" + _frame(frame)
        bayes = cohort / "truth" / "bayes_auc.json"
        if bayes.exists():
            body += _json_table(bayes)
    parts.append(_section("Cohorts (Table 2)", body or _missing("cohort clinical table")))

    prep = study / "tfrecords" / "summary.csv"
    body = _csv(prep) if prep.exists() else _missing("prepare summary")
    report_csv = study / "tfrecords" / "prepare_report.csv"
    if report_csv.exists():
        frame = pd.read_csv(report_csv)
        skipped = frame[frame["status"] != "written"]
        body += f"<p>{(frame['status'] == 'written').sum()} patient-modality records written, {len(skipped)} skipped.</p>"
        if len(skipped):
            body += _frame(skipped[["patient_id", "modality", "reason"]])
    parts.append(_section("Data preparation", body))

    evaluation = study / "evaluation"
    body = ""
    if evaluation.is_dir():
        table3 = sorted(evaluation.glob("table3*.csv"))
        body += "".join(_csv(p) for p in table3)
        body += _figures(p for p in evaluation.glob("*.png") if "roc" in p.name.lower())
        body += _figures(p for p in evaluation.glob("*.png") if "decision" in p.name.lower())
        body += _evaluation_reasons(evaluation / "evaluation.json")
    parts.append(_section("Model performance (Table 3), ROC and decision curves", body or _missing("evaluation")))

    body = ""
    if (evaluation / "calibration.csv").is_file():
        body += _csv_columns(evaluation / "calibration.csv", CALIBRATION_COLUMNS,
                             "Calibration per model, cohort and centre (rms::val.prob definitions)")
        body += _figures(evaluation.glob("calibration_*.png"))
    parts.append(_section("Calibration", body or _missing("calibration (mvi-tf evaluate)")))

    body = ""
    if (evaluation / "improvement.csv").is_file():
        body += _csv_columns(evaluation / "improvement.csv", IMPROVEMENT_COLUMNS,
                             "CDLM versus radiological model: AUC difference (bootstrap CI), continuous NRI, IDI")
    parts.append(_section("CDLM versus radiological model", body or _missing("comparison (mvi-tf evaluate)")))

    body = ""
    if evaluation.is_dir():
        body += "".join(_csv(p) for p in sorted(evaluation.glob("*subgroup*.csv")))
    parts.append(_section("Subgroup analysis", body or _missing("subgroups")))

    compare = study / "compare"
    body = ""
    if compare.is_dir():
        body += "".join(_json_table(p) for p in sorted(compare.glob("*.json")))
        body += _figures(compare.glob("*.png"))
    parts.append(_section("Head-to-head: CDLM-CT versus CDLM-MRI", body or _missing("compare")))

    body = ""
    for modality_dir in sorted((study / "explain").glob("*")):
        summary = modality_dir / "explain_summary.json"
        if summary.exists():
            body += f"<h3>{_esc(modality_dir.name.upper())}</h3>" + _json_table(summary)
            body += _figures((p for p in modality_dir.rglob("*.png")), limit=8)
    parts.append(_section("Attention maps and localisation scores", body or _missing("explain")))

    survival = study / "survival"
    body = ""
    if survival.is_dir():
        body += "".join(_csv(p) for p in sorted(survival.glob("*.csv")))
        body += _figures(survival.rglob("*.png"))
    parts.append(_section("Survival: Kaplan-Meier, log-rank and Cox", body or _missing("survival")))

    body = ""
    for card in sorted((study / "saved_models").rglob("model_card.md")):
        body += f"<h4>{_esc(card.parent.parent.name)} / version {_esc(card.parent.name)}</h4>"
        body += f"<pre>{_esc(card.read_text())}</pre>"
    holdout = study / "predict" / "holdout_prediction.json"
    if holdout.exists():
        body += _json_table(holdout)
    parts.append(_section("Deployment: exported models and a held-out prediction", body or _missing("export")))

    timings = study / "timings.json"
    if timings.exists():
        parts.append(_section("Wall time per stage (s)", _json_table(timings)))

    out = Path(out_path) if out_path else study / "report.html"
    out.write_text("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>mvi-tf study report"
                   f"</title><style>{_CSS}</style></head><body>{''.join(parts)}</body></html>", encoding="utf-8")
    log.info("report written to %s", out)
    return out
