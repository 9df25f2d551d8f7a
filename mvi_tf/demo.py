"""The main job end to end: cohort -> prepare -> train CT and MRI -> evaluate -> compare -> explain -> survival
-> export -> predict -> report.

`run_study` runs the pipeline on any cohort directory (a user's own data, or a synthetic one); `run_demo` first
writes the bundled synthetic multi-centre cohort. Both are resumable: every stage records a fingerprint of its
parameters and of the stages it read from in `<study>/stages/<stage>.json`; a rerun skips a finished stage whose
fingerprint is unchanged and reruns everything downstream of a stage that changed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mvi_tf.contract import StudyLayout, write_json  # StudyLayout re-exported: the layout of a study directory

log = logging.getLogger(__name__)

MODALITIES = ("ct", "mri")


@dataclasses.dataclass(frozen=True)
class StudySettings:
    """Sizes and budgets of one end-to-end study run.

    `dicom_image_size_px` is the synthetic DICOM matrix; `roi_image_size_px` the model input (ROI stack) size.
    """

    scale: float = 1.0
    dicom_image_size_px: int = 128
    roi_image_size_px: int = 96
    epochs: int = 20
    seed: int = 0
    explain_max_patients: int = 64  # every MVI-positive prospective patient of the demo cohort (54) and a few negatives
    workers: int | None = None
    deterministic: bool = False  # TensorFlow op determinism in training: bit-identical reruns, slower
    cross_fit_folds: int | None = None  # fold networks per phase for the stacking heads; None: the recipe's default

    @classmethod
    def quick(cls, seed: int = 0) -> StudySettings:
        """A few-minute run on a 2-core laptop: a small cohort, small images, few epochs."""
        return cls(scale=0.12, dicom_image_size_px=96, roi_image_size_px=48, epochs=3, seed=seed,
                   explain_max_patients=8)


class _StageRunner:
    """Runs named stages once; skips a stage whose inputs (parameters + upstream stages) are unchanged.

    Each stage has an input fingerprint (its parameters and its upstream stages' output fingerprints) and an
    output fingerprint, new every time the stage really runs; so a stage that reruns (changed parameters,
    missing outputs, ``force``) makes every stage downstream of it rerun too.
    """

    def __init__(self, layout: StudyLayout, force: bool = False) -> None:
        self.layout = layout
        self.force = force
        self.fingerprints: dict[str, str] = {}
        self.timings: dict[str, float] = {}
        layout.stages.mkdir(parents=True, exist_ok=True)

    def __call__(self, name: str, params: dict[str, Any], upstream: list[str], outputs: list[Path],
                 fn: Callable[[], Any]) -> Any:
        payload = json.dumps({"params": params, "upstream": [self.fingerprints[u] for u in upstream]},
                             sort_keys=True, default=str)
        inputs = hashlib.sha256(payload.encode()).hexdigest()[:16]
        record = self.layout.stages / f"{name}.json"
        if not self.force and record.exists() and all(p.exists() for p in outputs):
            done = json.loads(record.read_text())
            if done.get("inputs") == inputs:
                log.info("stage %s: up to date (inputs %s), skipped", name, inputs)
                self.fingerprints[name] = done["fingerprint"]
                self.timings[name] = 0.0
                return done.get("result")
        log.info("stage %s: running", name)
        record.unlink(missing_ok=True)
        start = time.perf_counter()
        result = fn()
        elapsed = time.perf_counter() - start
        log.info("stage %s: done in %.1f s", name, elapsed)
        fingerprint = hashlib.sha256(f"{inputs}:{time.time_ns()}".encode()).hexdigest()[:16]
        self.fingerprints[name] = fingerprint
        self.timings[name] = elapsed
        record.write_text(json.dumps({"inputs": inputs, "fingerprint": fingerprint, "params": params,
                                      "seconds": elapsed, "result": _jsonable(result)}, indent=2, default=str))
        return result


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    try:
        json.dumps(value, default=str)
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return str(value)


def _pick_holdout_patient(layout: StudyLayout) -> str:
    """A prospective patient written for both modalities: the 'new patient' that `predict` is shown on."""
    import pandas as pd

    report = pd.read_csv(layout.records / "prepare_report.csv", dtype={"patient_id": str})
    clinical = pd.read_csv(layout.cohort / "clinical.csv", dtype={"patient_id": str})
    prospective = set(clinical.loc[clinical["cohort"] == "prospective", "patient_id"])
    written = report[report["status"] == "written"]
    both = [pid for pid, grp in written.groupby("patient_id")
            if pid in prospective and set(grp["modality"]) >= set(MODALITIES)]
    if not both:
        raise RuntimeError("No prospective patient was prepared for both CT and MRI; cannot demonstrate predict.")
    return sorted(both)[0]


def _predict_holdout(layout: StudyLayout, patient_id: str, exports: dict[str, Any]) -> dict[str, Any]:
    """Predict one held-out patient with every backend, from the cohort's DICOM folders, and check agreement."""
    import pandas as pd

    from mvi_tf.export import predict_patient

    manifest = pd.read_csv(layout.cohort / "manifest.csv", dtype={"patient_id": str})
    lesions = pd.read_csv(layout.cohort / "lesions.csv", dtype={"patient_id": str})
    clinical = pd.read_csv(layout.cohort / "clinical.csv", dtype={"patient_id": str})
    clinical_row = clinical[clinical["patient_id"] == patient_id].iloc[0].to_dict()
    results: dict[str, Any] = {"patient_id": patient_id, "modalities": {}}
    for modality in MODALITIES:
        rows = manifest[(manifest["patient_id"] == patient_id) & (manifest["modality"] == modality)]
        series = {r.phase: str(layout.cohort / r.series_dir) for r in rows.itertuples()}
        lesion = lesions[(lesions["patient_id"] == patient_id) & (lesions["modality"] == modality)].iloc[0]
        mask_path = lesion.get("mask_path")
        kwargs: dict[str, Any] = dict(series=series, modality=modality, clinical=clinical_row,
                                      run_dir=str(layout.run(modality)))
        if isinstance(mask_path, str) and mask_path:
            kwargs.update(mask_path=str(layout.cohort / mask_path), mask_phase=lesion["mask_phase"])
        else:
            kwargs.update(roi=(lesion["roi_center_x_mm"], lesion["roi_center_y_mm"], lesion["roi_center_z_mm"],
                               lesion["roi_side_mm"]))
        export = exports[modality]
        per_backend = {}
        for backend, model_path in (("keras", export["keras_model"]), ("savedmodel", export["saved_model_dir"]),
                                    ("tflite", export["tflite_float32"])):
            out_dir = layout.predict / modality / backend
            prediction = predict_patient(model_path, backend=backend, out_dir=str(out_dir), **kwargs)
            per_backend[backend] = float(prediction["mvi_probability"])
        spread = max(per_backend.values()) - min(per_backend.values())
        results["modalities"][modality] = {"probabilities": per_backend, "max_abs_difference": spread}
        if spread > 1e-4:
            raise RuntimeError(f"Backends disagree for the held-out {modality} patient {patient_id}: {per_backend}")
    layout.predict.mkdir(parents=True, exist_ok=True)
    write_json(layout.holdout_prediction, results)
    return results


def run_study(cohort_dir: str | Path, out_dir: str | Path, settings: StudySettings | None = None,
              force: bool = False, synthetic: bool | None = None,
              earlier_timings: dict[str, float] | None = None) -> dict[str, Any]:
    """Run every stage of the study on a cohort directory and write the HTML report.

    Parameters
    ----------
    cohort_dir : path
        A cohort directory in the documented format (manifest.csv, lesions.csv, clinical.csv).
    out_dir : path
        Study directory; every stage writes under it (see `StudyLayout`).
    settings : StudySettings
        Image sizes, epochs, seed.
    force : bool
        Rerun every stage even when its fingerprint is unchanged.
    synthetic : bool, optional
        Label the outputs as synthetic; default: true when the cohort has a `truth/` folder.
    earlier_timings : dict, optional
        Seconds of stages run before this one (the demo's `synth`), listed first in `timings.json`.
    """
    from data_prep.prepare import prepare_cohort
    from mvi_tf.evaluation import compare_runs, evaluate_runs
    from mvi_tf.explain import explain_run
    from mvi_tf.export import export_run
    from mvi_tf.report import build_report
    from mvi_tf.survival import survival_analysis
    from mvi_tf.training import train

    settings = settings or StudySettings()
    cohort_dir = Path(cohort_dir)
    layout = StudyLayout(Path(out_dir), cohort_dir=cohort_dir)
    layout.root.mkdir(parents=True, exist_ok=True)
    if synthetic is None:
        synthetic = (cohort_dir / "truth").is_dir()
    write_json(layout.study_info, {"cohort_dir": str(cohort_dir.resolve()), "synthetic": bool(synthetic),
                                   "settings": dataclasses.asdict(settings)})
    stage = _StageRunner(layout, force=force)
    cohort_fp = _cohort_fingerprint(cohort_dir)
    stage.fingerprints["cohort"] = cohort_fp

    stage("prepare", {"image_size": settings.roi_image_size_px, "workers": settings.workers}, ["cohort"],
          [layout.records / "prepare_report.csv"],
          lambda: prepare_cohort(layout.cohort, layout.records, image_size=settings.roi_image_size_px,
                                 workers=settings.workers))
    for modality in MODALITIES:
        stage(f"train_{modality}", _train_inputs(settings), ["prepare"],
              [layout.run_files(modality).cdlm_path, layout.run_files(modality).predictions_path],
              lambda m=modality: _train_fresh(layout, m, settings, stage.fingerprints["prepare"], train))
    runs = [layout.run(m) for m in MODALITIES]
    trained = [f"train_{m}" for m in MODALITIES]
    stage("evaluate", {"synthetic": synthetic}, trained, [layout.evaluation],
          lambda: evaluate_runs(runs, layout.evaluation, synthetic=synthetic))
    stage("compare", {}, trained, [layout.compare],
          lambda: compare_runs(layout.run("ct"), layout.run("mri"), layout.compare))
    for modality in MODALITIES:
        stage(f"explain_{modality}", {"max_patients": settings.explain_max_patients}, [f"train_{modality}"],
              [layout.explain(modality) / "explain_summary.json"],
              lambda m=modality: explain_run(layout.run(m), layout.records, layout.explain(m),
                                             cohort_dir=layout.cohort, max_patients=settings.explain_max_patients))
    stage("survival", {}, trained, [layout.survival],
          lambda: survival_analysis(runs, layout.survival))
    exports = {}
    for modality in MODALITIES:
        exports[modality] = stage(
            f"export_{modality}", {}, [f"train_{modality}"], [layout.saved_models],
            lambda m=modality: _fresh_export(layout, m, export_run))
    holdout = _pick_holdout_patient(layout)
    stage("predict", {"patient": holdout}, [f"export_{m}" for m in MODALITIES],
          [layout.holdout_prediction],
          lambda: _predict_holdout(layout, holdout, exports))
    timings = {**(earlier_timings or {}), **{k: round(v, 1) for k, v in stage.timings.items()}}
    write_json(layout.timings, timings)  # before the report, which shows them
    report = build_report(layout.root)
    return {"study_dir": str(layout.root), "report": str(report), "timings_s": timings}


def _train_inputs(settings: StudySettings) -> dict[str, Any]:
    """What a training run depends on besides its records: epochs, seed and the default training recipe."""
    from mvi_tf.config import Config

    recipe = dataclasses.asdict(Config())
    inputs = {"epochs": settings.epochs, "seed": settings.seed,
              "recipe": {k: recipe[k] for k in ("data", "model", "train")}}
    if settings.deterministic:
        inputs["deterministic"] = True
    if settings.cross_fit_folds is not None:
        inputs["cross_fit_folds"] = settings.cross_fit_folds
    return inputs


def _train_fresh(layout: StudyLayout, modality: str, settings: StudySettings, records_fingerprint: str,
                 train: Callable[..., Any]) -> Any:
    """Train one modality; a run directory left by other records or settings is replaced, not resumed.

    `train` resumes a run directory (finished stages are loaded, a killed epoch restarts from its backup), which is
    right after an interruption of this same stage and wrong after its inputs changed.
    """
    run_dir = layout.run(modality)
    stamp = run_dir / "study_inputs.json"
    inputs = {"records": records_fingerprint, **_train_inputs(settings)}
    if run_dir.exists() and (not stamp.exists() or json.loads(stamp.read_text()) != inputs):
        log.info("run directory %s was trained on other inputs; starting afresh", run_dir)
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(inputs))
    folds = {} if settings.cross_fit_folds is None else {"cross_fit_folds": settings.cross_fit_folds}
    return train(layout.records, modality, run_dir, epochs=settings.epochs, seed=settings.seed,
                 deterministic=settings.deterministic, **folds)


def _cohort_fingerprint(cohort_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in ("manifest.csv", "lesions.csv", "clinical.csv"):
        path = cohort_dir / name
        if not path.exists():
            raise FileNotFoundError(f"Cohort directory {cohort_dir} has no {name}; see README 'Cohort directory'.")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _fresh_export(layout: StudyLayout, modality: str, export_run: Callable[..., Any]) -> dict[str, Any]:
    name = f"mvi-cdlm-{modality}"
    # A retrained model gets a fresh model directory: versions of an older training run are not this study's.
    shutil.rmtree(layout.saved_models / name, ignore_errors=True)
    result = export_run(layout.run(modality), out_base=layout.saved_models, name=name, records_dir=layout.records)
    return _jsonable(result)


def run_demo(out_dir: str | Path = "study", quick: bool = False, seed: int = 0, force: bool = False,
             settings: StudySettings | None = None, deterministic: bool = False) -> dict[str, Any]:
    """Write the bundled synthetic multi-centre cohort, then run the whole study on it (`run_study`)."""
    from data_prep.synthetic import generate_cohort

    settings = settings or (StudySettings.quick(seed=seed) if quick else StudySettings(seed=seed))
    if deterministic:
        settings = dataclasses.replace(settings, deterministic=True)
    layout = StudyLayout(Path(out_dir))
    layout.root.mkdir(parents=True, exist_ok=True)
    runner = _StageRunner(layout, force=force)
    runner("synth", {"seed": settings.seed, "scale": settings.scale, "image_size": settings.dicom_image_size_px},
           [], [layout.cohort / "clinical.csv"],
           lambda: _fresh_cohort(layout, settings, generate_cohort))
    return run_study(layout.cohort, layout.root, settings=settings, force=force, synthetic=True,
                     earlier_timings={"synth": round(runner.timings["synth"], 1)})


def _fresh_cohort(layout: StudyLayout, settings: StudySettings, generate_cohort: Callable[..., Any]) -> Any:
    # generate_cohort keeps an identical complete cohort, replaces an older synthetic one and refuses a folder
    # that holds anything else.
    return generate_cohort(layout.cohort, seed=settings.seed, scale=settings.scale,
                           image_size=settings.dicom_image_size_px, workers=settings.workers)
