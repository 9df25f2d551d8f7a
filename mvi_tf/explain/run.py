"""`explain_run`: attention maps for a trained run, placed on the DICOM slices and scored against the truth.

Reads the run directory (``cdlm.keras``, ``schema.json``, ``feature_selection.json``), the TFRecords the run was
trained from (plus their ``prepare_report.csv`` for each patient's ROI) and, optionally, the cohort directory
(``manifest.csv`` for the DICOM series, ``truth/invasion/`` for the invasion sectors of synthetic cohorts). Writes
into ``out_dir``:

- ``overlays/<patient_id>.png`` — all phases side by side (full slice with ROI box and map; ROI close-up);
- ``maps/<patient_id>.npz`` — ROI-frame and slice-frame maps per phase, randomised-weight maps, the sector;
- ``feature_maps/<patient_id>_<phase>.png`` — stage-1 and stage-4 activations of the first patient (Figure S3);
- ``localisation.csv`` — one row per scored MVI-positive patient and phase (with whether the truth renders a
  peritumoral sign in that phase's image);
- ``explain_summary.json`` — hit rate and energy fraction per phase with both baselines, the chance level, the
  phases ranked by hit rate, and the rank correlation between trained and randomised-weight maps.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from data_prep.errors import InputError
from data_prep.unwrap import UnwrappedFrame
from mvi_tf import na
from mvi_tf.contract import CONFIG_FILE, FEATURE_SELECTION_FILE, SCHEMA_FILE, RunFiles, to_jsonable, write_json
from mvi_tf.explain import localisation as loc
from mvi_tf.explain.gradcam import DEFAULT_STAGE, ENGINES, METHODS, compute_gradcam, score_view, target_layer_name
from mvi_tf.explain.overlays import save_patient_maps, save_patient_overlay
from mvi_tf.explain.placement import (
    RoiFrame,
    UnwrappedPlacement,
    read_nearest_slice,
    read_nifti_mask_in_roi,
    roi_to_slice,
    unwrapped_display_frame,
)

log = logging.getLogger(__name__)

TABULAR_INPUT = "tabular"
SLICE_DISTANCE_WARN_MM = 5.0
SUMMARY_FILE = "explain_summary.json"


def tabular_feature_names(schema: dict) -> list[str]:
    """Names of the encoded tabular features, in the order of the records' ``tabular`` vector."""
    tab = schema.get("tabular")
    candidates = []
    if isinstance(tab, dict):
        candidates += [tab.get("feature_names"), tab.get("names"), tab.get("features")]
    candidates += [schema.get("tabular_feature_names"), schema.get("tabular_features"), schema.get("feature_names")]
    for names in candidates:
        if isinstance(names, list) and names:
            return [n["name"] if isinstance(n, dict) else str(n) for n in names]
    raise ValueError(f"{SCHEMA_FILE} lists no tabular feature names. Keys present: {sorted(schema)}")


def _modality_of(run_dir: Path, schema: dict) -> str:
    for key in ("modality",):
        if isinstance(schema.get(key), str):
            return schema[key]
    files = RunFiles(run_dir)
    if files.config_path.is_file():
        cfg = files.config()
        for section in (cfg, cfg.get("data") or {}):
            if isinstance(section, dict) and isinstance(section.get("modality"), str):
                return section["modality"]
    raise ValueError(f"Cannot tell the run's modality: no 'modality' in {files.schema_path} or {CONFIG_FILE}")


def _load_run(run_dir: Path):
    import keras

    files = RunFiles(run_dir)
    model_path = files.cdlm_path
    if not model_path.is_file():
        raise FileNotFoundError(f"Run directory has no trained CDLM: {model_path}")
    model = keras.models.load_model(model_path, compile=False)
    explained = {"model": "cdlm", "note": None}
    if ignores_images(model) and files.fusion_path.is_file():
        model = keras.models.load_model(files.fusion_path, compile=False)
        explained = {"model": "fusion", "note": CDLM_WITHOUT_IMAGES}
        if ignores_images(model):
            from mvi_tf.models.cdlm import set_stacking_weights

            # In memory only: each phase's map is then its own signature network's.
            set_stacking_weights(model, [1.0] * len(model.inputs), 0.0)
            explained = {"model": EQUAL_WEIGHT_FUSION, "note": NEITHER_HEAD_USES_IMAGES}
        log.warning("explain: %s", explained["note"])
    schema = files.schema()
    input_names = [t.name for t in model.inputs]
    phases = [n for n in input_names if n != TABULAR_INPUT]
    # A reloaded model lists its dict inputs sorted by name; keep the study's phase order where it is known.
    ordered = [p for p in schema.get("phases", []) if p in phases]
    phases = ordered + [p for p in phases if p not in ordered]
    selected_idx = None
    if TABULAR_INPUT in input_names:
        selected = files.feature_selection().get("selected")
        names = tabular_feature_names(schema)
        unknown = [s for s in selected or [] if s not in names]
        if not selected or unknown:
            raise ValueError(
                f"{FEATURE_SELECTION_FILE} 'selected' must name schema features. Received: selected={selected}, "
                f"unknown={unknown}"
            )
        selected_idx = np.array([names.index(s) for s in selected])
    return model, schema, phases, selected_idx, _modality_of(run_dir, schema), explained


CDLM_WITHOUT_IMAGES = (
    "the CDLM gives every signature zero weight (its stacking head dropped them), so its output does not depend "
    "on the images and its maps would be empty; the maps shown are the fusion model's, whose output does")
EQUAL_WEIGHT_FUSION = "equal-weight fusion"
NEITHER_HEAD_USES_IMAGES = (
    "neither the CDLM nor the fusion model gives any signature a weight (out of fold the signatures added nothing), "
    "so neither output depends on the images and both models' maps would be empty; the maps shown are those of the "
    "fusion model with every signature weighted 1, i.e. each phase's map is its own signature network's")
#: The signature-weight layer of each stacked model (:func:`mvi_tf.models.cdlm.build_stacked_model`).
_SIGNATURE_LAYERS = {"cdlm": "cdlm_signature_dense", "fusion": "fusion_logit"}


def ignores_images(model) -> bool:
    """True when a stacked CDLM's or fusion model's weights on its signatures are all zero."""
    try:
        layer = model.get_layer(_SIGNATURE_LAYERS[model.name])
    except (KeyError, ValueError):
        return False
    return bool(np.all(np.asarray(layer.get_weights()[0]) == 0.0))


def _text(value) -> str:
    value = np.asarray(value).reshape(-1)[0] if np.ndim(value) else value
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _load_examples(records_dir: Path, modality: str, phases: Sequence[str], cohorts) -> list[dict]:
    from mvi_tf.data import read_examples

    examples = []
    for ex in read_examples(str(records_dir), modality, cohorts=list(cohorts) if cohorts else None):
        row = {
            "patient_id": _text(ex["patient_id"].numpy()),
            "cohort": _text(ex["cohort"].numpy()) if "cohort" in ex else "",
            "label": int(np.asarray(ex["label"]).reshape(-1)[0]),
            "tabular": np.asarray(ex["tabular"], dtype=np.float32),
        }
        for phase in phases:
            if phase not in ex:
                raise ValueError(
                    f"Patient {row['patient_id']}: records in {records_dir / modality} lack phase {phase!r} "
                    f"that the model expects. Record keys: {sorted(ex)}"
                )
            row[phase] = np.asarray(ex[phase], dtype=np.float32)
        examples.append(row)
    return examples


def _select(examples: list[dict], patients: Sequence[str] | None, max_patients: int | None) -> list[dict]:
    if patients:
        by_id = {e["patient_id"]: e for e in examples}
        unknown = [p for p in patients if p not in by_id]
        if unknown:
            raise ValueError(f"Patients {unknown} are not in the records (after the cohort filter).")
        chosen = [by_id[p] for p in patients]
    else:
        # MVI-positive patients first: they are the ones the localisation scores are computed on.
        chosen = sorted(examples, key=lambda e: (-e["label"], e["patient_id"]))
    if max_patients is not None:
        if max_patients < 1:
            raise ValueError(f"`max_patients` must be >= 1. Received: max_patients={max_patients}")
        chosen = chosen[:max_patients]
    return chosen


def _read_csv(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _roi_frames(records_dir: Path, modality: str,
                image_size: int) -> tuple[dict[str, RoiFrame], dict[str, UnwrappedFrame]]:
    """Each patient's ROI frame, and for unwrapped records (`data_prep.unwrap`) the unwrapped frame, whose maps
    are shown and scored on a square frame that holds the whole band."""
    path = records_dir / "prepare_report.csv"
    if not path.is_file():
        raise FileNotFoundError(f"ROI provenance not found: {path} (written by `mvi-tf prepare`)")
    frames, unwrapped = {}, {}
    for row in _read_csv(path):
        if row.get("modality") != modality or row.get("status", "ok") not in ("ok", "written"):
            continue
        try:
            centre = tuple(float(row[k]) for k in ("roi_center_x_mm", "roi_center_y_mm", "roi_center_z_mm"))
            side = float(row["roi_side_mm"])
            # data_prep writes the three slice z's as "z0;z1;z2"; the map refers to the central one.
            zs = [float(z) for z in str(row.get("slice_z_mm") or "").split(";") if z.strip()]
            slice_z = zs[len(zs) // 2] if zs else None
            if row.get("unwrap_boundary_mm"):
                unwrapped[row["patient_id"]] = UnwrappedFrame.from_report(row, tuple(zs))
        except (KeyError, ValueError, InputError) as err:
            raise ValueError(f"{path}: bad ROI columns for patient {row.get('patient_id')}: {err}") from err
        frame = unwrapped.get(row["patient_id"])
        frames[row["patient_id"]] = (RoiFrame(centre, side, image_size, slice_z) if frame is None
                                     else unwrapped_display_frame(frame))
    return frames, unwrapped


def _truth_rows(cohort_dir: Path, modality: str) -> dict[str, dict]:
    """``truth/patients.csv`` rows of one modality by patient (empty when the cohort has no such table)."""
    path = cohort_dir / "truth" / "patients.csv"
    if not path.is_file():
        return {}
    return {r["patient_id"]: r for r in _read_csv(path) if r.get("modality") == modality}


def _sign_visible(truth_row: dict | None, phase: str) -> bool | None:
    if truth_row is None:
        return None
    from data_prep.synthetic.phenotype import visible_signs

    return bool(visible_signs(truth_row, phase))


def _series_dirs(cohort_dir: Path, modality: str) -> dict[tuple[str, str], tuple[Path, str | None]]:
    rows = _read_csv(cohort_dir / "manifest.csv")
    return {
        (r["patient_id"], r["phase"]): (cohort_dir / r["series_dir"], (r.get("series_uid") or None))
        for r in rows
        if r.get("modality") == modality
    }


def _batched_maps(model, view, examples, phases, selected_idx, method, batch_size, engine="tf-keras-vis",
                  stage=DEFAULT_STAGE):
    maps = {p: [] for p in phases}
    probs = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        inputs = {p: np.stack([e[p] for e in chunk]) for p in phases}
        if selected_idx is not None:
            inputs[TABULAR_INPUT] = np.stack([e["tabular"][selected_idx] for e in chunk])
        out = compute_gradcam(model, inputs, phases, method=method, view=view, engine=engine, stage=stage)
        for p in phases:
            maps[p].append(out[p])
        pred = model({t.name: inputs[t.name] for t in model.inputs}, training=False)
        pred = pred["mvi_probability"] if isinstance(pred, dict) else pred
        probs.append(np.asarray(pred).reshape(-1))
    return {p: np.concatenate(v) for p, v in maps.items()}, np.concatenate(probs)


def explain_run(
    run_dir: str | Path,
    records_dir: str | Path,
    out_dir: str | Path,
    cohort_dir: str | Path | None = None,
    patients: Sequence[str] | None = None,
    cohorts: Sequence[str] | None = ("prospective",),
    max_patients: int | None = None,
    method: str = "gradcam",
    tolerance_mm: float = loc.DEFAULT_TOLERANCE_MM,
    randomisation: str = "full",
    seed: int = 0,
    batch_size: int = 8,
    feature_map_filters: int = 16,
    engine: str = "tf-keras-vis",
    stage: int = DEFAULT_STAGE,
    progress: bool = True,
) -> dict:
    """Attention maps for a trained run, with localisation scores and baselines.

    Parameters
    ----------
    run_dir : path-like
        Training run (``cdlm.keras``, ``schema.json``, ``feature_selection.json``).
    records_dir : path-like
        TFRecords directory of ``mvi-tf prepare`` (holds ``<modality>/`` and ``prepare_report.csv``).
    out_dir : path-like
        Output directory.
    cohort_dir : path-like, optional
        Cohort directory: full-slice placement needs its ``manifest.csv`` series, localisation scores its
        ``truth/invasion`` masks. Without it only ROI-frame maps are written.
    patients : sequence of str, optional
        Patient IDs to explain (default: all patients of ``cohorts``).
    cohorts : sequence of str, optional
        Cohorts to read (default the prospective cohort; None = all).
    max_patients : int, optional
        Cap on the number of patients (MVI-positive patients first, then by patient_id).
    method : {"gradcam", "gradcam++"}
        Map type.
    tolerance_mm : float
        Width of the peritumoral ring around the invasion sector that still counts as a hit.
    randomisation : {"full", "cascading"}
        Adebayo et al. weight randomisation for the baseline maps; "cascading" additionally reports the rank
        correlation after each top-down randomisation step.
    seed : int
        Seed of the weight randomisation.
    batch_size : int
        Patients per Grad-CAM batch.
    feature_map_filters : int
        Filters shown per layer in the feature pattern maps.
    engine : {"tf-keras-vis", "fused"}
        One tf-keras-vis call per phase, or all phases from one forward/backward pass (same maps, faster).
    stage : int
        ResNet18 stage whose output the maps are taken at: 4 (default, the last stage, 1/32 of the ROI side) or
        3 (1/16: finer, one stage further from the decision).
    progress : bool
        Show a progress bar over patients.

    Returns
    -------
    dict
        The content of ``explain_summary.json``.
    """
    _check_options(method, engine, randomisation, stage, batch_size)
    run_dir, records_dir, out_dir = Path(run_dir), Path(records_dir), Path(out_dir)
    cohort_dir = Path(cohort_dir) if cohort_dir is not None else None
    if cohort_dir is not None and not (cohort_dir / "manifest.csv").is_file():
        raise FileNotFoundError(f"Cohort directory has no manifest.csv: {cohort_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)

    plan = _plan(run_dir, records_dir, cohort_dir, patients, cohorts, max_patients)
    model, phases, examples, selected_idx = plan.model, plan.phases, plan.examples, plan.selected_idx
    view = score_view(model)
    maps, probabilities = _batched_maps(model, view, examples, phases, selected_idx, method, batch_size, engine, stage)
    random_model = loc.randomise_weights(model, phases, seed=seed)
    random_maps, _ = _batched_maps(
        random_model, score_view(random_model), examples, phases, selected_idx, method, batch_size, engine, stage
    )

    tally = _Tally(corr={p: [] for p in phases})
    overlay_dir, maps_dir = out_dir / "overlays", out_dir / "maps"
    for i, ex in enumerate(tqdm(examples, desc=f"explain {plan.modality}", unit="patient", disable=not progress)):
        pid = ex["patient_id"]
        roi_maps, rnd_maps, images = _shown(plan, pid, {p: maps[p][i] for p in phases},
                                            {p: random_maps[p][i] for p in phases}, {p: ex[p] for p in phases})
        ex = {**ex, **images}
        slices, placed, sector = _explain_patient(plan, ex, roi_maps, rnd_maps, tolerance_mm, tally)
        subtitle = (f"{plan.explained['model']} P(MVI)={probabilities[i]:.2f}  "
                    f"label={'MVI+' if ex['label'] == 1 else 'MVI-'}  {method}")
        save_patient_overlay(
            overlay_dir / f"{pid}.png", pid, phases, {p: ex[p] for p in phases}, roi_maps, slices, placed, sector,
            subtitle,
        )
        save_patient_maps(maps_dir / f"{pid}.npz", roi_maps, placed, rnd_maps, sector)

    _feature_maps(model, examples[0], phases, selected_idx, out_dir / "feature_maps", feature_map_filters)
    _write_scores(out_dir / "localisation.csv", tally.scores)

    summary = _summary(plan, tally, method, engine, stage, cohorts, tolerance_mm, randomisation, seed)
    if randomisation == "cascading":
        summary["cascading_rank_corr"] = _cascade(
            model, examples, phases, selected_idx, method, batch_size, seed, maps, engine, stage
        )
    summary = to_jsonable(summary)
    write_json(out_dir / SUMMARY_FILE, summary)
    log.info("explain: %d patients, summary in %s", len(examples), out_dir / SUMMARY_FILE)
    return summary


def _shown(plan: _Plan, pid: str, *arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], ...]:
    """Maps ``(S, S)`` or images ``(S, S, C)`` of one patient (one dict per kind, keyed by phase) on the frame they
    are shown and scored on: unwrapped ones placed on their square display frame, the others as they are."""
    frame = plan.unwrapped.get(pid)
    if frame is None:
        return arrays
    placement = UnwrappedPlacement.between(frame, plan.frames[pid])
    return tuple({p: placement.place(v).astype(np.float32) for p, v in kind.items()} for kind in arrays)


def _check_options(method: str, engine: str, randomisation: str, stage: int, batch_size: int) -> None:
    """Raise on a map type, engine, randomisation, stage or batch size that :func:`explain_run` does not know."""
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}. Received: method={method!r}")
    if engine not in ENGINES:
        raise ValueError(f"`engine` must be one of {ENGINES}. Received: engine={engine!r}")
    if randomisation not in ("full", "cascading"):
        raise ValueError(f"`randomisation` must be 'full' or 'cascading'. Received: randomisation={randomisation!r}")
    if stage not in (3, 4):
        raise ValueError(f"`stage` must be 3 or 4. Received: stage={stage!r}")
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1. Received: batch_size={batch_size}")


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What an explain run works on: the model, its patients, their ROI frames, DICOM series and truth rows."""

    model: Any
    phases: list[str]
    selected_idx: np.ndarray | None
    modality: str
    examples: list[dict]
    frames: dict[str, RoiFrame]
    unwrapped: dict[str, UnwrappedFrame]
    series: dict[tuple[str, str], tuple[Path, str | None]]
    truth_rows: dict[str, dict]
    cohort_dir: Path | None
    explained: dict = dataclasses.field(default_factory=lambda: {"model": "cdlm", "note": None})


@dataclasses.dataclass
class _Tally:
    """Per-patient results gathered over the loop: localisation scores, rank correlations and counts."""

    corr: dict[str, list[float]]
    scores: list[loc.PatientScore] = dataclasses.field(default_factory=list)
    n_positive: int = 0
    n_no_truth: int = 0
    n_sector_outside: int = 0


def _plan(
    run_dir: Path, records_dir: Path, cohort_dir: Path | None, patients: Sequence[str] | None,
    cohorts: Sequence[str] | None, max_patients: int | None,
) -> _Plan:
    """Load the run and the patients to explain, with their ROI provenance and (optionally) the cohort's files."""
    model, _schema, phases, selected_idx, modality, explained = _load_run(run_dir)
    examples = _select(_load_examples(records_dir, modality, phases, cohorts), patients, max_patients)
    if not examples:
        raise ValueError(f"No patients to explain in {records_dir / modality} for cohorts={cohorts}.")
    image_size = int(examples[0][phases[0]].shape[0])
    frames, unwrapped = _roi_frames(records_dir, modality, image_size)
    return _Plan(
        model=model,
        phases=phases,
        selected_idx=selected_idx,
        modality=modality,
        examples=examples,
        frames=frames,
        unwrapped=unwrapped,
        series=_series_dirs(cohort_dir, modality) if cohort_dir is not None else {},
        truth_rows=_truth_rows(cohort_dir, modality) if cohort_dir is not None else {},
        cohort_dir=cohort_dir,
        explained=explained,
    )


def _explain_patient(
    plan: _Plan, ex: dict, roi_maps: dict, rnd_maps: dict, tolerance_mm: float, tally: _Tally
) -> tuple[dict, dict, np.ndarray | None]:
    """Rank correlations, slice placement and localisation scores of one patient; returns slices, placed maps
    and the invasion sector (None when the patient has none)."""
    pid = ex["patient_id"]
    for p in plan.phases:
        tally.corr[p].append(loc.rank_correlation(roi_maps[p], rnd_maps[p]))
    frame = plan.frames.get(pid)
    if frame is None:
        log.warning("Patient %s: no ROI in prepare_report.csv; maps stay in the ROI frame.", pid)
    slices, placed = {}, {}
    if frame is not None and plan.cohort_dir is not None:
        slices, placed = _place_on_slices(plan, pid, frame, roi_maps)
    sector = None
    if ex["label"] == 1:
        tally.n_positive += 1
        cohort_dir = plan.cohort_dir
        truth = cohort_dir / "truth" / "invasion" / f"{pid}_{plan.modality}.nii.gz" if cohort_dir else None
        if frame is None or truth is None or not truth.is_file():
            tally.n_no_truth += 1
        else:
            sector = read_nifti_mask_in_roi(truth, frame)
            scored = [
                loc.score_patient(pid, p, roi_maps[p], rnd_maps[p], sector, frame.pixel_mm, tolerance_mm,
                                  sign_visible=_sign_visible(plan.truth_rows.get(pid), p))
                for p in plan.phases
            ]
            if scored[0] is None:
                tally.n_sector_outside += 1
            tally.scores += [s for s in scored if s is not None]
    return slices, placed, sector


def _place_on_slices(plan: _Plan, pid: str, frame: RoiFrame, roi_maps: dict) -> tuple[dict, dict]:
    """Each phase's nearest axial DICOM slice to the ROI and the ROI map placed on it."""
    slices, placed = {}, {}
    for p in plan.phases:
        if (pid, p) not in plan.series:
            raise ValueError(
                f"Patient {pid}: no {plan.modality} series for phase {p!r} in {plan.cohort_dir}/manifest.csv"
            )
        series_dir, uid = plan.series[(pid, p)]
        try:
            axial = read_nearest_slice(series_dir, frame.z_mm, uid)
        except (OSError, ValueError) as err:
            raise ValueError(f"Patient {pid}, phase {p}: cannot read series {series_dir}: {err}") from err
        if axial.distance_mm > SLICE_DISTANCE_WARN_MM:
            log.warning("Patient %s, phase %s: nearest slice is %.1f mm from the ROI slice.", pid, p,
                        axial.distance_mm)
        slices[p] = axial
        placed[p] = roi_to_slice(roi_maps[p], frame, axial.geometry)
    return slices, placed


def _summary(
    plan: _Plan, tally: _Tally, method: str, engine: str, stage: int, cohorts: Sequence[str] | None,
    tolerance_mm: float, randomisation: str, seed: int,
) -> dict[str, Any]:
    """The content of ``explain_summary.json`` (before the cascading randomisation is added)."""
    phases = plan.phases
    summary = {
        "modality": plan.modality,
        "explained_model": plan.explained["model"],
        "explained_model_note": plan.explained["note"],
        "method": method,
        "engine": engine,
        "target_layers": {p: target_layer_name(p, stage) for p in phases},
        "phases": phases,
        "cohorts": list(cohorts) if cohorts else None,
        "n_patients": len(plan.examples),
        "n_mvi_positive": tally.n_positive,
        "n_mvi_positive_without_truth": tally.n_no_truth,
        "n_mvi_positive_sector_outside_slice": tally.n_sector_outside,
        "tolerance_mm": tolerance_mm,
        "centre_baseline_sigma_fraction_of_side": 1.0 / 6.0,
        "randomisation": randomisation,
        "randomisation_seed": seed,
        "rank_corr_trained_vs_randomised": {
            p: na.explain({"mean": float(np.nanmean(v)) if np.isfinite(v).any() else None,
                           "median": float(np.nanmedian(v)) if np.isfinite(v).any() else None, "n": len(v)},
                          mean=loc.CONSTANT_MAPS, median=loc.CONSTANT_MAPS)
            for p, v in tally.corr.items()
        },
    }
    if tally.scores:
        summary["localisation"] = loc.summarise_scores(tally.scores, phases)
    else:
        summary["localisation_note"] = (
            "no MVI-positive patient with a truth invasion sector on its ROI slice"
            + ("" if plan.cohort_dir else " (no cohort directory given)")
        )
        na.mark(summary, "localisation", summary["localisation_note"])
    return summary


def _cascade(model, examples, phases, selected_idx, method, batch_size, seed, trained_maps, engine, stage) -> dict:
    """Mean Spearman correlation (all phases, patients) after each cumulative top-down randomisation step."""
    result = {}
    for k in range(1, len(loc.CASCADE_LEVELS) + 1):
        levels = loc.CASCADE_LEVELS[:k]
        randomised = loc.randomise_weights(model, phases, seed=seed, levels=levels)
        maps, _ = _batched_maps(
            randomised, score_view(randomised), examples, phases, selected_idx, method, batch_size, engine, stage
        )
        values = [
            loc.rank_correlation(trained_maps[p][i], maps[p][i]) for p in phases for i in range(len(examples))
        ]
        result["+".join(levels)] = float(np.nanmean(values)) if np.isfinite(values).any() else None
    return result


def _feature_maps(model, example, phases, selected_idx, out_dir: Path, n_filters: int) -> None:
    from mvi_tf.explain.feature_maps import (
        default_feature_layers,
        feature_activations,
        save_feature_grid,
    )

    inputs = {p: example[p][None] for p in phases}
    if selected_idx is not None:
        inputs[TABULAR_INPUT] = example["tabular"][selected_idx][None]
    for phase in phases:
        acts = feature_activations(model, inputs, default_feature_layers(phase), n_filters)
        save_feature_grid(
            acts, out_dir / f"{example['patient_id']}_{phase}.png",
            f"{example['patient_id']} {phase}: feature pattern maps (most active filters)",
        )


def _write_scores(path: Path, scores: Sequence[loc.PatientScore]) -> None:
    fields = [f.name for f in dataclasses.fields(loc.PatientScore)]
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for s in scores:
            writer.writerow(dataclasses.asdict(s))
