"""Variants of the quality benchmark set beside the default, seed by seed (the BENCHMARKS.md "variants" section).

A variant (``--sampling unwrapped``, ``--ct-window hu``, ``--dicom-size 256``) changes how the records are made and
nothing else; its entries live in ``bench/results/quality/<variant>/``. Trained with the same seed, a variant's run
and the default's share the train / validation split and the initialisation, so the per-seed difference of their
prospective AUCs is a paired comparison: what the variant changed plus run-to-run variance. This module pairs them
(the seeds both have finished), tests the two CDLMs on the same prospective patients (paired DeLong), and writes
the section. The default table itself stays the default's alone.

Every number comes from SYNTHETIC data.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

VARIANTS_START = "<!-- quality-variants:start -->"
VARIANTS_END = "<!-- quality-variants:end -->"
#: Models whose prospective AUC depends on the images (the clinical and radiological models do not).
IMAGE_MODELS_ORDER = ("fusion", "cdlm")
#: The summary's per-seed bound on any stacking head (:func:`bench.quality.head_bound`), paired like a model.
HEAD_BOUND = "head_bound"


@dataclasses.dataclass(frozen=True)
class PairedModel:
    """One model's prospective AUC in the default and in the variant, for the seeds both finished."""

    modality: str
    model: str
    seeds: tuple[int, ...]
    default: tuple[float, ...]
    variant: tuple[float, ...]

    @property
    def differences(self) -> np.ndarray:
        """Variant minus default, per seed."""
        return np.asarray(self.variant) - np.asarray(self.default)

    @property
    def seeds_better(self) -> int:
        return int(np.sum(self.differences > 0))


@dataclasses.dataclass(frozen=True)
class PairedCdlmTest:
    """Paired DeLong test of the variant's CDLM against the default's on one seed's prospective patients."""

    modality: str
    seed: int
    n: int
    auc_default: float
    auc_variant: float
    z: float
    p_value: float


def _per_seed(block: dict[str, Any], model: str) -> list:
    return block[model] if model == HEAD_BOUND else block[model]["prospective_auc"]


def _image_models(block: dict[str, Any]) -> list[str]:
    signatures = [m for m, v in block.items() if m.startswith("signature_") and "prospective_auc" in v]
    return signatures + [m for m in IMAGE_MODELS_ORDER if m in block]


def pair_models(default: dict[str, Any], variant: dict[str, Any], modality: str) -> list[PairedModel]:
    """Per image-dependent model of ``modality`` (signatures, fusion, CDLM) and for the bound on any head, the two
    summaries' prospective AUCs on their common seeds; empty when the modality has no common seed."""
    a, b = default.get(modality), variant.get(modality)
    if not a or not b:
        return []
    seeds = sorted(set(a["seeds"]) & set(b["seeds"]))
    if not seeds:
        return []
    rows = []
    for model in _image_models(a) + [HEAD_BOUND]:
        if model not in b or model not in a:
            continue
        ia, ib = (dict(zip(block["seeds"], _per_seed(block, model), strict=True)) for block in (a, b))
        pairs = [(s, ia[s], ib[s]) for s in seeds if ia.get(s) is not None and ib.get(s) is not None]
        if pairs:
            rows.append(PairedModel(modality, model, tuple(s for s, _, _ in pairs), tuple(x for _, x, _ in pairs),
                                    tuple(y for _, _, y in pairs)))
    return rows


def cdlm_tests(default_entries: dict[tuple[str, int], dict],
               variant_entries: dict[tuple[str, int], dict]) -> list[PairedCdlmTest]:
    """Seed by seed, the variant's CDLM against the default's on the prospective patients both scored."""
    from mvi_tf.stats import delong_test

    tests = []
    for key in sorted(set(default_entries) & set(variant_entries)):
        a, b = default_entries[key]["prospective_predictions"], variant_entries[key]["prospective_predictions"]
        ia = {p: i for i, p in enumerate(a["patient_id"])}
        ib = {p: i for i, p in enumerate(b["patient_id"])}
        common = sorted(set(ia) & set(ib))
        labels = np.array([a["label"][ia[p]] for p in common])
        if labels.size == 0 or labels.min() == labels.max():
            continue
        test = delong_test(labels, np.array([b["cdlm"][ib[p]] for p in common]),
                           np.array([a["cdlm"][ia[p]] for p in common]))
        tests.append(PairedCdlmTest(key[0], key[1], len(common), float(test.auc_b), float(test.auc_a),
                                    float(test.z), float(test.p_value)))
    return tests


def find_variants(results: Path) -> list[str]:
    """Variant folders (``"unwrapped-roi/"``, ``"ct-hu-window/dicom-256px/"``) holding a summary, sorted."""
    root = results / "quality"
    return sorted(str(p.parent.relative_to(root)) + "/" for p in root.rglob("summary.json") if p.parent != root)


def _settings_changed(default: dict[str, Any], variant: dict[str, Any]) -> str:
    """The settings the variant changed; a setting the default's summary predates counts at its default value."""
    from bench.quality import LATER_SETTINGS

    a, b = {**LATER_SETTINGS, **default.get("settings", {})}, variant.get("settings", {})
    changed = [f"{k} {b[k]} (default {a[k]})" for k in sorted(b) if k in a and a[k] != b[k] and k != "overrides"]
    options, base_options = dict(map(tuple, b.get("overrides", []))), dict(map(tuple, a.get("overrides", [])))
    changed += [f"training option {k} = {v} (default {base_options.get(k, 'as configured')})"
                for k, v in options.items() if base_options.get(k, object()) != v]
    return ", ".join(changed) or "no setting differs"


def _fmt(values) -> str:
    return ", ".join(f"{v:+.3f}" for v in values)


def variants_markdown(results: Path) -> str:
    """The section comparing every variant with the default (``bench/results/quality.json``), seed by seed."""
    from bench.quality import MODALITIES, load_entries

    lines = [VARIANTS_START, "## Model-quality variants, paired with the default by seed (`make quality` options)", "",
             "SYNTHETIC data. A variant changes how the records are made (ROI sampling, CT window, DICOM matrix) and "
             "nothing else; run with the same seed as a default entry it shares its split and initialisation, so "
             "the per-seed difference (Δ = variant − default, prospective AUC) is paired. Run-to-run variance "
             "without `--deterministic` is part of each Δ (about 0.04 on one signature). Only seeds finished by "
             "both are compared. Whether a variant becomes the default is decided in docs/branch-experiments.md.",
             ""]
    default_path = results / "quality.json"
    variants = find_variants(results)
    if not default_path.exists() or not variants:
        return "\n".join(lines + ["No variant has a finished entry yet.", "", VARIANTS_END])
    default = json.loads(default_path.read_text())
    default_entries = load_entries(results, default["fingerprint"])
    for variant in variants:
        summary = json.loads((results / "quality" / variant / "summary.json").read_text())
        lines += [f"### {variant.rstrip('/')} (fingerprint `{summary.get('fingerprint')}` vs default "
                  f"`{default['fingerprint']}`; {_settings_changed(default, summary)})", ""]
        rows = [row for modality in MODALITIES for row in pair_models(default, summary, modality)]
        if not rows:
            lines += ["No seed finished by both yet.", ""]
            continue
        lines += ["| modality | model | seeds | default (mean) | variant (mean) | mean Δ | Δ per seed | seeds better |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in rows:
            name = "bound on any head (optimistic)" if r.model == HEAD_BOUND else r.model
            lines.append(f"| {r.modality.upper()} | {name} | {', '.join(map(str, r.seeds))} | "
                         f"{np.mean(r.default):.3f} | {np.mean(r.variant):.3f} | {np.mean(r.differences):+.3f} | "
                         f"{_fmt(r.differences)} | {r.seeds_better} of {len(r.seeds)} |")
        tests = cdlm_tests(default_entries, load_entries(results, summary.get("fingerprint"), variant))
        if tests:
            lines += ["", "CDLM, variant vs default (paired DeLong on the same prospective patients): " + "; ".join(
                f"{t.modality.upper()} seed {t.seed} (n = {t.n}) {t.auc_variant:.3f} vs {t.auc_default:.3f}, "
                f"z = {t.z:.2f}, p = {t.p_value:.3g}" for t in tests) + "."]
        lines.append("")
    return "\n".join(lines + [VARIANTS_END])


def write_variants_section(results: Path, benchmarks_md: Path) -> None:
    """Replace (or append) the variants section of ``benchmarks_md``; the rest of the file is left as it is."""
    from bench.quality import write_section

    write_section(benchmarks_md, VARIANTS_START, VARIANTS_END, variants_markdown(results))
