"""A small but complete study directory for the report tests, written by the pipeline's own library calls.

No training: the run directories hold predictions whose scores rise with the label (as `mvi-tf train` writes
them); `evaluate_runs`, `compare_runs` and `survival_analysis` then write their real outputs, the attention
summary comes from `summarise_scores` on made-up pointing-game scores, and the export / predict outputs are small
stand-ins in their documented layout. Cheap enough (seconds, no TensorFlow) for the default test suite.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mvi_tf.contract import RunFiles, write_json  # noqa: E402

PHASES = {"ct": ["plain", "arterial", "portal"], "mri": ["t2", "arterial", "hepatobiliary"]}
N_TRAIN, N_VAL, N_PROSPECTIVE = 50, 14, 36


def patients(seed: int = 0) -> pd.DataFrame:
    """One row per patient: cohort, split, MVI label, clinical characteristics and follow-up."""
    rng = np.random.default_rng(seed)
    splits = ["train"] * N_TRAIN + ["val"] * N_VAL + ["prospective"] * N_PROSPECTIVE
    n = len(splits)
    label = rng.integers(0, 2, n)
    hazard = np.where(label == 1, 3.0, 1.0) / 30.0
    os_months = np.minimum(rng.exponential(1 / hazard), rng.uniform(6, 48, n)).round(1) + 0.1
    frame = pd.DataFrame({
        "patient_id": [f"SYN-{i:03d}" for i in range(n)], "split": splits,
        "cohort": ["prospective" if s == "prospective" else "train" for s in splits],
        "centre": rng.choice(["C1", "C2"], n), "mvi": label, "label": label,
        "age": rng.normal(55, 9, n).round(), "sex": rng.choice(["M", "F"], n, p=[0.8, 0.2]),
        "aetiology": rng.choice(["HBV", "HCV", "other"], n), "bilirubin_umol_l": rng.gamma(4, 4, n).round(1),
        "alt_u_l": rng.gamma(4, 10, n).round(1), "ast_u_l": rng.gamma(4, 10, n).round(1),
        "platelets_1e9_l": rng.normal(160, 50, n).round(), "afp_ng_ml": np.exp(rng.normal(3 + label, 2, n)).round(1),
        "tumour_size_cm": (rng.gamma(3, 1.2, n) + label).round(1), "tumour_number": rng.choice([1, 2], n, p=[.8, .2]),
        "margin": np.where(rng.random(n) < 0.3 + 0.4 * label, "non-smooth", "smooth"),
        "capsule": rng.choice(["complete", "interrupted", "absent"], n),
        "os_months": os_months, "os_event": (rng.random(n) < 0.6).astype(int),
    })
    frame["pfs_months"] = (frame["os_months"] * rng.uniform(0.4, 1.0, n)).round(1)
    frame["pfs_event"] = np.maximum(frame["os_event"], (rng.random(n) < 0.4).astype(int))
    return frame


def write_cohort(cohort: Path, table: pd.DataFrame, synthetic: bool = True) -> None:
    """clinical.csv, manifest.csv (every patient has CT and MRI) and, for synthetic data, truth/bayes_auc.json."""
    cohort.mkdir(parents=True)
    table.drop(columns=["split", "label"]).to_csv(cohort / "clinical.csv", index=False)
    rows = [{"patient_id": pid, "modality": m, "phase": p, "series_dir": f"dicom/{pid}/{m}/{p}"}
            for pid in table["patient_id"] for m, phases in PHASES.items() for p in phases]
    pd.DataFrame(rows).to_csv(cohort / "manifest.csv", index=False)
    if synthetic:
        (cohort / "truth").mkdir()
        (cohort / "truth" / "bayes_auc.json").write_text(json.dumps(
            {m: {"train": 0.86, "prospective": 0.84} for m in PHASES}))


def write_run(run: Path, modality: str, table: pd.DataFrame, seed: int, strength: float) -> Path:
    """A run directory: predictions.csv (every model's score), thresholds.json and metrics.json."""
    from mvi_tf import stats

    rng = np.random.default_rng(seed)
    run.mkdir(parents=True)
    frame = table.drop(columns=["mvi"]).copy()
    frame.insert(1, "modality", modality)
    models = ["clinical", "radiological"] + [f"signature_{p}" for p in PHASES[modality]] + ["fusion", "cdlm"]
    for k, model in enumerate(models):
        logit = rng.normal(0, 1, len(frame)) + frame["label"].to_numpy() * strength * (0.5 + 0.12 * k)
        frame[model] = np.round(1 / (1 + np.exp(-logit)), 4)
    files = RunFiles(run)
    frame.to_csv(files.predictions_path, index=False)
    train = frame[frame["split"] == "train"]
    thresholds = {m: stats.youden_threshold(train["label"], train[m]).threshold for m in models}
    files.thresholds_path.write_text(json.dumps(thresholds))  # json.dumps: a +/-inf threshold stays a number
    write_json(files.metrics_path, {"synthetic": True, "seed": seed})
    return run


def write_explain(folder: Path, modality: str, run: Path, seed: int = 0) -> None:
    """explain_summary.json, localisation.csv and overlays/<patient>.png as `mvi-tf explain` lays them out."""
    from mvi_tf.explain import localisation as loc

    rng = np.random.default_rng(seed)
    predictions = RunFiles(run).predictions(dtype={"patient_id": str})
    prospective = predictions[predictions["split"] == "prospective"]
    positives = prospective[prospective["label"] == 1]["patient_id"].tolist()
    phases = PHASES[modality]
    scores = [loc.PatientScore(patient_id=pid, phase=p, hit=bool(rng.random() < (0.9 if i == 1 else 0.3)),
                               energy=0.4, centre_hit=bool(rng.random() < 0.2), centre_energy=0.2,
                               random_hit=bool(rng.random() < 0.15), random_energy=0.1, chance=0.12,
                               rank_corr_random=0.1)
              for pid in positives for i, p in enumerate(phases)]
    (folder / "overlays").mkdir(parents=True)
    pd.DataFrame([dataclasses.asdict(s) for s in scores]).to_csv(folder / "localisation.csv", index=False)
    summary = {"modality": modality, "method": "gradcam", "phases": phases, "n_patients": 4,
               "n_mvi_positive": len(positives), "tolerance_mm": 5.0,
               "localisation": loc.summarise_scores(scores, phases)}
    (folder / "explain_summary.json").write_text(json.dumps(summary, indent=2, default=float))
    for pid in positives[:2] + prospective[prospective["label"] == 0]["patient_id"].tolist()[:2]:
        fig, axes = plt.subplots(1, len(phases), figsize=(6, 2))
        for ax, phase in zip(axes, phases, strict=True):
            ax.imshow(rng.random((16, 16)), cmap="jet")
            ax.set_title(phase)
            ax.axis("off")
        fig.savefig(folder / "overlays" / f"{pid}.png", dpi=60)
        plt.close(fig)


def write_deployment(study: Path, patient_id: str) -> None:
    """A model card per modality, small stand-ins for the TFLite files and the held-out prediction."""
    base = study / "saved_models"
    holdout = {"patient_id": patient_id, "modalities": {}}
    for modality in PHASES:
        name = f"mvi-cdlm-{modality}"
        (base / name / "1").mkdir(parents=True)
        (base / name / "1" / "model_card.md").write_text(f"# Model card: {name}\n\nSYNTHETIC DATA demonstration.\n")
        for kind in ("float32", "dynamic", "int8"):
            (base / f"{name}-{kind}.tflite").write_bytes(b"\0" * 2048)
        holdout["modalities"][modality] = {"probabilities": {"keras": 0.61234, "savedmodel": 0.61234,
                                                             "tflite": 0.61233}, "max_abs_difference": 1e-5}
    (study / "predict").mkdir()
    (study / "predict" / "holdout_prediction.json").write_text(json.dumps(holdout))


def make_study(root: Path, synthetic: bool = True) -> Path:
    """Write the whole study under ``root/study`` and return its path."""
    from mvi_tf.evaluation import compare_runs, evaluate_runs
    from mvi_tf.survival import survival_analysis

    study = root / "study"
    table = patients()
    write_cohort(study / "cohort", table, synthetic)
    runs = {m: write_run(study / "runs" / m, m, table, seed=i + 1, strength=1.4 + i)
            for i, m in enumerate(PHASES)}
    evaluate_runs(list(runs.values()), study / "evaluation", synthetic=synthetic, progress=False, n_boot=50)
    compare_runs(runs["ct"], runs["mri"], study / "compare")
    survival_analysis(list(runs.values()), study / "survival")
    for modality, run in runs.items():
        write_explain(study / "explain" / modality, modality, run)
    records = study / "tfrecords"
    records.mkdir()
    pd.DataFrame([{"patient_id": pid, "modality": m, "status": "written", "reason": ""}
                  for pid in table["patient_id"] for m in PHASES]).to_csv(records / "prepare_report.csv", index=False)
    write_deployment(study, table.loc[table["split"] == "prospective", "patient_id"].iloc[0])
    (study / "timings.json").write_text(json.dumps({"prepare": 4.2, "train_ct": 61.0, "report": 0.0}))
    return study
