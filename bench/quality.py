"""Model-quality benchmark (`make quality`): does the CDLM earn its place, over several seeds?

Generates the full-scale synthetic cohort once (the demo's settings), trains every (modality, seed) with the
default recipe, and records for each: the prospective AUC of every model, the CDLM's paired DeLong test against
the radiological model, each signature's train / validation / prospective AUC, the attention maps' hit rates per
phase, and the wall time. Each (modality, seed) result is written to ``bench/results/quality/`` the moment it
finishes, with a fingerprint of the code and settings that produced it; a rerun skips finished entries of the same
fingerprint, so the benchmark accumulates over several sittings. ``bench/results/quality.json`` and the
"Model quality" section of BENCHMARKS.md combine the entries of the current fingerprint only. Variants
(``--sampling``, ``--ct-window``, ``--dicom-size``, ``--option``) keep their entries in their own folder and never
enter that table; BENCHMARKS.md's variants section pairs each with the default seed by seed
(:mod:`bench.quality_variants`).

Every number comes from SYNTHETIC data. ``--quick`` runs the same code on a tiny cohort (a smoke test; its
numbers mean nothing) and writes under its own output directory.

Usage::

    python -m bench.quality [--seeds 0 1 2] [--modalities ct mri] [--quick] [--out bench/results]
    python -m bench.quality --no-train [--sampling ...]   # rewrite a summary and its tables from finished entries
    python -m bench.quality --compare-only                # rewrite only the variants section
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from mvi_tf.contract import RunFiles, read_json

ROOT = Path(__file__).resolve().parent.parent
#: Code that computes the trained models (the fingerprint covers these files' bytes): the models, the training
#: numerics and the config defaults (the records themselves are covered by the settings that prepare them). The
#: orchestration modules (``train.py``, ``stacking_stage.py``) are left out so that a refactor that keeps results
#: identical (checked with the deterministic quick demo) does not discard the seeds gathered so far; a change of
#: behaviour belongs in the modules below or must bump ``RECIPE_VERSION``.
FINGERPRINT_SOURCES = ("mvi_tf/models", "mvi_tf/training", "mvi_tf/config.py")
FINGERPRINT_EXCLUDED = ("mvi_tf/training/train.py", "mvi_tf/training/stacking_stage.py",
                        "mvi_tf/training/augment_unwrapped.py")
#: Training sources only a sampling's records reach: part of that sampling's fingerprint, not of the others'.
SAMPLING_SOURCES = {"unwrapped": ("mvi_tf/training/augment_unwrapped.py",)}
#: Settings added after entries had been gathered, with their defaults (left out of the fingerprint when default).
LATER_SETTINGS = {"sampling": "square"}
#: Bump when the orchestration changes what is trained or on which patients.
RECIPE_VERSION = 1
MODALITIES = ("ct", "mri")
SECTION_START = "<!-- quality:start -->"
SECTION_END = "<!-- quality:end -->"

log = logging.getLogger("bench.quality")


@dataclasses.dataclass(frozen=True)
class QualitySettings:
    """Cohort and training budget of one benchmark (the demo's by default)."""

    scale: float = 1.0
    dicom_image_size_px: int = 128
    roi_image_size_px: int = 96
    epochs: int = 20
    cohort_seed: int = 0
    explain_max_patients: int = 64
    ct_window: str = "percentile"
    sampling: str = "square"
    overrides: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def quick(cls) -> QualitySettings:
        return cls(scale=0.05, dicom_image_size_px=64, roi_image_size_px=32, epochs=1, explain_max_patients=4,
                   overrides=(("cross_fit_folds", 2), ("batch_size", 8)))


def fingerprint(settings: QualitySettings) -> str:
    """Hash of the training code (``FINGERPRINT_SOURCES`` but ``FINGERPRINT_EXCLUDED``), ``RECIPE_VERSION`` and
    the benchmark settings."""
    fields = dataclasses.asdict(settings)
    # Settings added after the first entries enter the hash only when changed, so those entries keep theirs.
    for name, default in LATER_SETTINGS.items():
        if fields[name] == default:
            del fields[name]
    payload = {"settings": fields, "recipe_version": RECIPE_VERSION}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode())
    for file in fingerprint_files(settings):
        digest.update(str(file.relative_to(ROOT)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()[:12]


def fingerprint_files(settings: QualitySettings) -> list[Path]:
    """The training sources an entry of ``settings`` depends on, in hashing order."""
    files = []
    for source in FINGERPRINT_SOURCES:
        path = ROOT / source
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            if str(file.relative_to(ROOT)) not in FINGERPRINT_EXCLUDED:
                files.append(file)
    return files + [ROOT / extra for extra in SAMPLING_SOURCES.get(settings.sampling, ())]


def _auc(y, score) -> float | None:
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y).astype(int)
    return None if y.min() == y.max() else float(roc_auc_score(y, score))


def ensure_records(work: Path, settings: QualitySettings) -> tuple[Path, Path]:
    """The synthetic cohort and its TFRecords under ``work`` (generated once; reused when complete)."""
    from data_prep.config import CT_HU_WINDOWS, PrepareConfig
    from data_prep.prepare import prepare_cohort
    from data_prep.synthetic import generate_cohort

    size = "" if settings.dicom_image_size_px == QualitySettings.dicom_image_size_px else \
        f"-{settings.dicom_image_size_px}px"
    sampling = "" if settings.sampling == "square" else f"-{settings.sampling}"
    cohort, records = work / f"cohort{size}", work / f"tfrecords{size}-ct-{settings.ct_window}{sampling}"
    done = records / "records.done"
    if not done.exists():
        generate_cohort(cohort, seed=settings.cohort_seed, scale=settings.scale,
                        image_size=settings.dicom_image_size_px)
        windows = {"ct": dict(CT_HU_WINDOWS)} if settings.ct_window == "hu" else {}
        prepare_cohort(cohort, records, config=PrepareConfig(image_size=settings.roi_image_size_px, windows=windows,
                                                             sampling=settings.sampling))
        done.write_text(json.dumps(dataclasses.asdict(settings)))
    return cohort, records


def run_entry(modality: str, seed: int, cohort: Path, records: Path, work: Path,
              settings: QualitySettings, variant: str = "") -> dict[str, Any]:
    """Train one (modality, seed), explain it, and measure everything the summary needs.

    A variant's runs live in their own sub-folder of ``work/runs`` (and ``work/explain``), so that its training
    never resumes a run of the benchmark itself."""
    from mvi_tf.stats import delong_test
    from mvi_tf.training import train

    run_dir = work / "runs" / variant / f"{modality}-seed{seed}"
    start = time.perf_counter()
    result = train(records, modality, run_dir, epochs=settings.epochs, seed=seed, verbose=0,
                   **dict(settings.overrides))
    train_s = time.perf_counter() - start
    files = RunFiles(run_dir)
    frame = files.predictions()
    models = [c for c in frame.columns if c in ("clinical", "radiological", "fusion", "cdlm")
              or c.startswith("signature_")]
    by_split = {s: g for s, g in frame.groupby("split")}
    pros = by_split["prospective"]
    delong = delong_test(pros["label"].to_numpy(), pros["cdlm"].to_numpy(), pros["radiological"].to_numpy())
    start = time.perf_counter()
    hit_rates = _hit_rates(run_dir, records, cohort, work / "explain" / variant / f"{modality}-seed{seed}",
                           settings)
    explain_s = time.perf_counter() - start
    stacking = read_json(files.stacking_path) if files.stacking_path.exists() else None
    return {
        "modality": modality,
        "seed": seed,
        "auc": {m: {s: _auc(g["label"], g[m]) for s, g in by_split.items()} for m in models},
        "cdlm_vs_radiological": {"z": float(delong.z), "p_value": float(delong.p_value),
                                 "auc_difference": float(delong.auc_a - delong.auc_b)},
        "hit_rates": hit_rates,
        "stacking": stacking,
        "prospective_predictions": {
            "patient_id": pros["patient_id"].astype(str).tolist(), "label": pros["label"].astype(int).tolist(),
            **{m: pros[m].round(6).tolist() for m in models if m != "clinical"},
        },
        "wall_time_s": {"train": round(train_s, 1), "explain": round(explain_s, 1)},
        "selected_features": result.selected_features,
    }


def _run_entry_in_child(*args) -> dict[str, Any]:
    """:func:`run_entry` in a fresh process: TensorFlow frees nothing between trainings in one process (8.5 GB
    after three entries here), so each (modality, seed) gets its own and returns its result."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(run_entry, args)


def _hit_rates(run_dir: Path, records: Path, cohort: Path, out: Path, settings: QualitySettings) -> dict | None:
    """Pointing-game hit rate per phase of the CDLM's maps (MVI-positive prospective patients)."""
    from mvi_tf.explain.run import explain_run

    summary = explain_run(run_dir, records, out, cohort_dir=cohort, max_patients=settings.explain_max_patients,
                          engine="fused", progress=False)
    localisation = summary.get("localisation") or {}
    per_phase = localisation.get("per_phase") or {}
    rates = {phase: row.get("hit_rate") for phase, row in per_phase.items() if isinstance(row, dict)}
    return {"per_phase": rates, "localising_phases": localisation.get("localising_phases"),
            "explained_model": summary.get("explained_model")}


def load_entries(results: Path, fp: str, variant: str = "") -> dict[tuple[str, int], dict]:
    """Finished (modality, seed) entries of fingerprint ``fp`` (in the variant's sub-folder for a variant)."""
    entries = {}
    for path in sorted((results / "quality" / variant).glob("*-seed*.json")):
        doc = json.loads(path.read_text())
        if doc.get("fingerprint") == fp:
            entries[(doc["modality"], int(doc["seed"]))] = doc
    return entries


def sign_ceilings(truth_csv: Path, modality: str) -> dict[str, dict[str, float]]:
    """Per phase, what a perfect detector of the signs that phase shows could reach (SYNTHETIC truth).

    A logistic model of the true signs the generator draws on the phase (``phantom.signs_rendered``; a capsule
    interruption counts only where there is a capsule), fitted on the training cohort; its prospective AUC alone
    (``signs``) and with the true tumour size added (``signs_and_size``: the images show size too).
    """
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from data_prep.synthetic.phantom import signs_rendered
    from data_prep.synthetic.phenotype import MODALITY_PHASES

    truth = pd.read_csv(truth_csv)
    truth = truth[truth["modality"] == modality]
    train, prospective = (truth["cohort"] == "train").values, (truth["cohort"] == "prospective").values
    y = truth["mvi"].astype(int).values
    if len(set(y[train])) < 2 or len(set(y[prospective])) < 2:
        return {phase: {"signs": None, "signs_and_size": None} for phase in MODALITY_PHASES[modality]}

    def visible(sign: str) -> np.ndarray:
        column = truth[f"sign_{sign}"].clip(lower=0)  # -1: the sign does not exist in this modality
        return (column * (truth["capsule_present"] == 1) if sign == "capsule_interruption" else column).values

    out = {}
    for phase in MODALITY_PHASES[modality]:
        columns = [visible(sign) for sign in signs_rendered(phase)]
        out[phase] = {}
        for key, x in (("signs", columns), ("signs_and_size", [*columns, truth["size_cm"].values])):
            x = np.column_stack(x).astype(float)
            model = LogisticRegression(C=1e6, max_iter=1000).fit(x[train], y[train])
            out[phase][key] = round(float(roc_auc_score(y[prospective], model.decision_function(x[prospective]))), 4)
    return out


def summarise(entries: dict[tuple[str, int], dict], bayes: dict,
              ceilings: dict[str, dict] | None = None) -> dict[str, Any]:
    """``quality.json``: per modality the seeds, Bayes AUC, per-phase true-sign ceilings, per-model prospective
    AUCs and the gaps."""
    from mvi_tf.stats import delong_test

    out: dict[str, Any] = {}
    for modality in MODALITIES:
        rows = [entries[k] for k in sorted(entries) if k[0] == modality]
        if not rows:
            continue
        models = list(rows[0]["auc"])
        out[modality] = {
            "seeds": [r["seed"] for r in rows],
            "bayes_auc": bayes.get(modality, {}).get("prospective"),
            "sign_ceiling": (ceilings or {}).get(modality, {}),
            **{m: {"prospective_auc": [r["auc"][m].get("prospective") for r in rows]} for m in models},
            "signature_gap": {m: [_gap(r["auc"][m]) for r in rows] for m in models if m.startswith("signature_")},
            "cdlm_vs_radiological": [r["cdlm_vs_radiological"] for r in rows],
            "head_bound": [head_bound(r["prospective_predictions"]) for r in rows],
            "hit_rates": [r["hit_rates"] for r in rows],
            "explained_model": [_explained_model(r) for r in rows],
            "wall_time_s": [r["wall_time_s"] for r in rows],
        }
        for m in models:
            out[modality][m].update({s: [r["auc"][m].get(s) for r in rows] for s in ("train", "val")})
    paired = []
    for (modality, seed), ct in sorted(entries.items()):
        mri = entries.get(("mri", seed))
        if modality != "ct" or mri is None:
            continue
        a, b = ct["prospective_predictions"], mri["prospective_predictions"]
        common = sorted(set(a["patient_id"]) & set(b["patient_id"]))
        ia = {p: i for i, p in enumerate(a["patient_id"])}
        ib = {p: i for i, p in enumerate(b["patient_id"])}
        y = np.array([a["label"][ia[p]] for p in common])
        test = delong_test(y, np.array([a["cdlm"][ia[p]] for p in common]),
                           np.array([b["cdlm"][ib[p]] for p in common]))
        paired.append({"seed": seed, "n": len(common), "auc_ct": float(test.auc_a), "auc_mri": float(test.auc_b),
                       "z": float(test.z), "p_value": float(test.p_value)})
    out["ct_vs_mri"] = paired
    return out


def _variant(settings: QualitySettings, base: QualitySettings | None = None) -> str:
    """Sub-folder of a variant's entries ("" for the benchmark itself): another CT window, DICOM matrix, ROI
    sampling or training options than ``base`` (the default settings, or the quick ones)."""
    base = base or QualitySettings()
    parts = [] if settings.ct_window == "percentile" else [f"ct-{settings.ct_window}-window"]
    if settings.dicom_image_size_px != base.dicom_image_size_px:
        parts.append(f"dicom-{settings.dicom_image_size_px}px")
    if settings.sampling != base.sampling:
        parts.append(f"{settings.sampling}-roi")
    base_options = dict(base.overrides)
    changed = sorted((k, v) for k, v in settings.overrides if base_options.get(k, object()) != v)
    if changed:
        parts.append("_".join(f"{k.replace('_', '-')}-{v}" for k, v in changed))
    return "".join(f"{part}/" for part in parts)


def parse_options(options: list[str], base: QualitySettings) -> tuple[tuple[str, Any], ...]:
    """``NAME=VALUE`` training options (``mvi_tf.config`` keys; the value read as YAML) merged over ``base``'s own
    overrides; an unknown option or a value the config rejects raises ``ValueError``."""
    import yaml

    from mvi_tf.config import Config

    merged = dict(base.overrides)
    for option in options:
        name, sep, text = option.partition("=")
        if not sep or not name:
            raise ValueError(f"A training option must read NAME=VALUE. Received: {option!r}")
        merged[name.strip()] = yaml.safe_load(text)
    Config().override(**merged)
    return tuple(merged.items())


def _explained_model(entry: dict) -> str:
    """Whose maps the hit rates score: recorded since `explain` falls back to the fusion model for a CDLM without
    signatures; an older entry of such a CDLM scored its empty maps."""
    recorded = (entry.get("hit_rates") or {}).get("explained_model")
    if recorded:
        return recorded
    dropped = ((entry.get("stacking") or {}).get("cdlm") or {}).get("penalty") == "drop"
    return "cdlm (without signatures: empty maps)" if dropped else "cdlm"


def head_bound(predictions: dict[str, list]) -> float | None:
    """What the best head could make of a run's signatures: the AUC of a logistic model of the CDLM's and every
    signature's logit fitted on the prospective patients themselves (in sample, so optimistic). Below a target,
    no stacking head can reach it with these signatures; only better branches can. None for entries written
    before the signatures' predictions were kept, and for a prospective cohort of one class."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    columns = ["cdlm"] + sorted(k for k in predictions if k.startswith("signature_"))
    if len(columns) == 1 or len(set(predictions["label"])) < 2:
        return None
    p = np.clip(np.column_stack([predictions[c] for c in columns]).astype(np.float64), 1e-6, 1 - 1e-6)
    x, y = np.log(p / (1 - p)), np.asarray(predictions["label"], dtype=int)
    model = LogisticRegression(C=1e6, max_iter=1000).fit(x, y)
    return float(roc_auc_score(y, model.decision_function(x)))


def _gap(auc: dict) -> float | None:
    if auc.get("train") is None or auc.get("val") is None:
        return None
    return auc["train"] - auc["val"]


def _mean_sd(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


def _ceiling(value: dict | None) -> str:
    if not value or value.get("signs") is None:
        return ""
    return f"{value['signs']:.3f} ({value['signs_and_size']:.3f})"


def markdown(summary: dict[str, Any], fp: str, settings: QualitySettings) -> str:
    """The "Model quality" section of BENCHMARKS.md."""
    lines = [SECTION_START, "## Model quality on the synthetic cohort (multi-seed, `make quality`)", "",
             f"SYNTHETIC data: {settings.scale:g} x the paper's cohort, {settings.roi_image_size_px} px ROI stacks, "
             f"{settings.epochs} epochs per stage, default recipe; fingerprint `{fp}`. Prospective centre AUC, "
             "mean ± SD over seeds (per-seed values in `bench/results/quality.json`). True-sign ceiling: the "
             "prospective AUC of a logistic model of the true signs the generator draws on that phase (and with "
             "the true tumour size), what a perfect detector of the phase's signs could reach. What was tried to "
             "close the gap: docs/branch-experiments.md.", ""]
    for modality in MODALITIES:
        block = summary.get(modality)
        if not block:
            lines += [f"{modality.upper()}: no finished seed yet for this fingerprint.", ""]
            continue
        lines += [f"### {modality.upper()} (seeds {block['seeds']}; Bayes-optimal AUC {block['bayes_auc']})", "",
                  "| model | prospective AUC | per seed | train − val gap | true-sign ceiling (with size) |",
                  "| --- | --- | --- | --- | --- |"]
        for name, value in block.items():
            if isinstance(value, dict) and "prospective_auc" in value:
                per_seed = ", ".join("n/a" if v is None else f"{v:.3f}" for v in value["prospective_auc"])
                gap = _mean_sd(block["signature_gap"].get(name, [])) if name.startswith("signature_") else ""
                ceiling = _ceiling(block.get("sign_ceiling", {}).get(name.removeprefix("signature_")))
                lines.append(f"| {name} | {_mean_sd(value['prospective_auc'])} | {per_seed} | {gap} | "
                             f"{ceiling if name.startswith('signature_') else ''} |")
        tests = "; ".join(f"Δ {t['auc_difference']:+.3f}, z = {t['z']:.2f}, p = {t['p_value']:.3g}"
                          for t in block["cdlm_vs_radiological"])
        lines += ["", f"CDLM vs radiological (paired DeLong, per seed): {tests}.", ""]
        bounds = block.get("head_bound", [])
        if any(b is not None for b in bounds):
            lines += ["Best any head could do with these signatures (logistic model of the CDLM's and the signatures' "
                      "logits fitted on the prospective patients themselves, optimistic), per seed: "
                      + ", ".join("n/a" if b is None else f"{b:.3f}" for b in bounds) + ".", ""]
        rates = [h["per_phase"] for h in block["hit_rates"] if h]
        if rates:
            phases = list(rates[0])
            lines.append("Attention-map hit rates (mean over seeds): " + ", ".join(
                f"{p} {_mean_sd([r.get(p) for r in rates])}" for p in phases) + "; maps of, per seed: "
                + ", ".join(block.get("explained_model", [])) + ".")
            lines.append("")
        lines.append("Wall time per seed (s): " + ", ".join(
            f"train {w['train']:.0f} + explain {w['explain']:.0f}" for w in block["wall_time_s"]) + ".")
        lines.append("")
    for t in summary.get("ct_vs_mri", []):
        lines.append(f"CT vs MRI CDLM, seed {t['seed']} (n = {t['n']}): {t['auc_ct']:.3f} vs {t['auc_mri']:.3f}, "
                     f"z = {t['z']:.2f}, p = {t['p_value']:.3g}.")
    lines += ["", SECTION_END]
    return "\n".join(lines)


def write_outputs(results: Path, summary: dict, fp: str, settings: QualitySettings, benchmarks_md: Path | None,
                  variant: str = ""):
    """``quality.json`` and the BENCHMARKS.md section; a variant writes ``quality/<variant>/summary.json`` instead and
    leaves both alone (its figures are never mixed into the default table). Either then rewrites BENCHMARKS.md's
    variants section, which sets each variant beside the default seed by seed (:mod:`bench.quality_variants`)."""
    from bench.quality_variants import write_variants_section

    doc = json.dumps({"fingerprint": fp, "settings": dataclasses.asdict(settings), "synthetic": True, **summary},
                     indent=2)
    if variant:
        (results / "quality" / variant / "summary.json").write_text(doc)
        if benchmarks_md is not None:
            write_variants_section(results, benchmarks_md)
        return
    (results / "quality.json").write_text(doc)
    if benchmarks_md is None:
        return
    write_section(benchmarks_md, SECTION_START, SECTION_END, markdown(summary, fp, settings))
    write_variants_section(results, benchmarks_md)


def write_section(benchmarks_md: Path, start: str, end: str, section: str) -> None:
    """Replace the part of ``benchmarks_md`` from marker ``start`` to ``end`` by ``section`` (which carries both
    markers), or append it; the rest of the file is left as it is."""
    text = benchmarks_md.read_text() if benchmarks_md.exists() else "# Benchmarks\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    benchmarks_md.write_text(text)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--modalities", nargs="+", choices=MODALITIES, default=list(MODALITIES))
    parser.add_argument("--quick", action="store_true", help="tiny cohort, 1 epoch: a smoke test")
    parser.add_argument("--ct-window", choices=("percentile", "hu"), default="percentile",
                        help="CT intensity window of the records (the default, or the former fixed HU windows)")
    parser.add_argument("--dicom-size", type=int, default=QualitySettings.dicom_image_size_px,
                        help="matrix of the synthetic DICOM (a variant when not the default: how much of the "
                             "signature gap is resolution; never counted towards the default table)")
    parser.add_argument("--sampling", choices=("square", "unwrapped"), default="square",
                        help="ROI sampling of the records: the paper's square ROI, or the peritumoral band unwrapped "
                             "along the tumour boundary (a variant when not square)")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="a training option (mvi_tf.config key, e.g. cross_fit_folds=5) for every run; a "
                             "variant: its entries go to their own folder, paired with the default's by seed")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (cohort, records, runs)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default bench/results)")
    parser.add_argument("--benchmarks-md", type=Path, default=None)
    parser.add_argument("--no-train", action="store_true",
                        help="train nothing: rewrite the summary and tables from the entries already finished")
    parser.add_argument("--compare-only", action="store_true",
                        help="only rewrite BENCHMARKS.md's variants section from the finished entries (trains nothing)")
    args = parser.parse_args(argv)
    if args.compare_only:
        from bench.quality_variants import write_variants_section

        write_variants_section(args.out or ROOT / "bench" / "results", args.benchmarks_md or ROOT / "BENCHMARKS.md")
        return {}
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    base = QualitySettings.quick() if args.quick else QualitySettings()
    settings = dataclasses.replace(base, ct_window=args.ct_window, sampling=args.sampling,
                                   overrides=parse_options(args.option, base))
    if not args.quick:
        settings = dataclasses.replace(settings, dicom_image_size_px=args.dicom_size)
    variant = _variant(settings, base)
    work = args.work or ROOT / "bench" / "out" / ("quality-quick" if args.quick else "quality")
    results = args.out or (work / "results" if args.quick else ROOT / "bench" / "results")
    benchmarks_md = args.benchmarks_md or (None if args.quick else ROOT / "BENCHMARKS.md")
    (results / "quality" / variant).mkdir(parents=True, exist_ok=True)
    fp = fingerprint(settings)
    cohort, records = ensure_records(work, settings)
    bayes = json.loads((cohort / "truth" / "bayes_auc.json").read_text())
    ceilings = {m: sign_ceilings(cohort / "truth" / "patients.csv", m) for m in MODALITIES}
    entries = load_entries(results, fp, variant)
    for seed in args.seeds:
        for modality in args.modalities:
            if (modality, seed) in entries:
                log.info("%s seed %d: finished under fingerprint %s; skipped", modality, seed, fp)
                continue
            if args.no_train:
                log.info("%s seed %d: not finished under fingerprint %s; not trained (--no-train)", modality, seed, fp)
                continue
            entry = {"fingerprint": fp, **_run_entry_in_child(modality, seed, cohort, records, work, settings,
                                                                 variant)}
            (results / "quality" / f"{variant}{modality}-seed{seed}.json").write_text(
                json.dumps(entry, indent=2))
            entries[(modality, seed)] = entry
            write_outputs(results, summarise(entries, bayes, ceilings), fp, settings, benchmarks_md, variant)
    summary = summarise(entries, bayes, ceilings)
    write_outputs(results, summary, fp, settings, benchmarks_md, variant)
    return summary


if __name__ == "__main__":
    main()
