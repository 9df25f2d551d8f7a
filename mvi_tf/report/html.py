"""Assemble a study directory's outputs into one self-contained HTML report (figures embedded as base64).

The report opens with a one-screen summary of the findings, each line linking to its section, and a table of
contents; then the sections in the order of the paper: cohorts (Table 2), data preparation, performance (Table 3)
with ROC and decision curves, calibration, CDLM versus the radiological model, subgroups, the CT-versus-MRI
head-to-head, attention maps, survival and deployment. The page is rendered from a Jinja2 template with one
stylesheet (screen and print); full-precision CSVs stay in the study directory and are linked. A banner says so,
once, when the data are synthetic.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import jinja2

from mvi_tf import __version__
from mvi_tf.contract import StudyLayout
from mvi_tf.report import sections as S

log = logging.getLogger(__name__)

TITLE = "mvi-tf study report: microvascular invasion prediction (CT and EOB-MRI)"
TEMPLATES = Path(__file__).resolve().parent / "templates"
SECTIONS = (S.cohort_section, S.prepare_section, S.performance_section, S.calibration_section,
            S.improvement_section, S.subgroup_section, S.headtohead_section, S.attention_section,
            S.survival_section, S.deployment_section, S.timings_section)
SUMMARY_ORDER = ("cohorts", "performance", "head-to-head", "attention", "survival", "deployment")


def _study_info(study: Path) -> dict[str, Any]:
    info_path = StudyLayout(study).study_info
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    cohort = Path(info.get("cohort_dir", study / "cohort"))
    info.setdefault("cohort_dir", str(cohort))
    info.setdefault("synthetic", (cohort / "truth").is_dir())
    return info


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _collect(ctx: S.Context) -> tuple[list[dict], list[dict]]:
    """Every section (in report order) and the summary lines (in findings order)."""
    sections, found = [], {}
    for build in SECTIONS:
        try:
            built = build(ctx)
        except (AttributeError, KeyError, IndexError, TypeError, ValueError, OSError) as err:
            # Outputs of another version or a half-written stage: say so in place, never lose the whole report.
            name = build.__name__.removesuffix("_section")
            log.warning("report section %s could not be built: %r", name, err)
            built = (S.B.section(name, name.replace("headtohead", "head-to-head").capitalize(),
                                 [S.B.missing(f"{name}: its outputs could not be read ({type(err).__name__}: {err})")]),
                     [])
        if built is None:
            continue
        section, items = built
        sections.append(section)
        found[section["id"]] = items
    summary = [i for key in SUMMARY_ORDER for i in found.get(key, [])]
    if not summary:
        summary = [S.item("No stage of the study has written results yet.")]
    return sections, summary


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
        The written report. Sections whose stage has not run say so instead of failing. Table 2's full-precision
        CSV is written to ``<study_dir>/report_tables/``.
    """
    study = Path(study_dir)
    if not study.is_dir():
        raise FileNotFoundError(f"Study directory not found. Received: study_dir={study_dir}")
    info = _study_info(study)
    out = Path(out_path) if out_path else study / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    ctx = S.Context(study=study, cohort=Path(info["cohort_dir"]), report_dir=out.parent,
                    synthetic=bool(info["synthetic"]))
    sections, summary = _collect(ctx)
    page = _environment().get_template("report.html.j2").render(
        title=TITLE, css=(TEMPLATES / "report.css").read_text(encoding="utf-8"), synthetic=ctx.synthetic,
        summary=summary, sections=sections, study_name=study.resolve().name, version=__version__)
    out.write_text(page, encoding="utf-8")
    log.info("report written to %s", out)
    return out
