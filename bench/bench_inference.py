"""Inference benchmark: size on disk and per-patient latency (batch 1) for Keras, SavedModel and TFLite.

A CT CDLM (three ResNet18 branches, random weights) is exported with `export_run` into a temporary folder; each
backend then predicts the same patients one at a time. Targets (issue 8): the int8 TFLite model is at most a
third of the float32 model's size, and faster than Keras at batch 1. Run with
``python -m bench.bench_inference [--image-size 64]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

PHASES = ("plain", "arterial", "portal")
N_TABULAR = 6


def _size_bytes(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _latency_ms(fn, patients: list[dict[str, np.ndarray]], warmup: int = 3) -> float:
    for patient in patients[:warmup]:
        fn(patient)
    start = time.perf_counter()
    for patient in patients:
        fn(patient)
    return 1000.0 * (time.perf_counter() - start) / len(patients)


def _fake_run(run_dir: Path, image_size: int, seed: int) -> Path:
    import keras

    from mvi_tf.contract import RunFiles, write_json
    from mvi_tf.models.cdlm import build_cdlm

    keras.utils.set_random_seed(seed)
    run_dir.mkdir(parents=True)
    files = RunFiles(run_dir)
    build_cdlm(list(PHASES), image_size, N_TABULAR).save(files.cdlm_path)
    names = [f"feature_{i}" for i in range(N_TABULAR)]
    schema = {"modality": "ct", "phases": list(PHASES), "image_size": image_size, "synthetic": True,
              "tabular": {"feature_names": names, "columns": [{"name": n, "kind": "numeric", "features": [n]}
                                                              for n in names]}}
    write_json(files.schema_path, schema)
    write_json(files.feature_selection_path, {"selected": names})
    write_json(files.thresholds_path, {"cdlm": 0.5})
    return run_dir


def run(image_size: int = 64, n_patients: int = 20, seed: int = 0, out_dir: str | Path | None = None) -> dict:
    """Export a CT CDLM and time every backend at batch 1.

    Parameters
    ----------
    image_size : int
        ROI side in pixels (the records' default is 64).
    n_patients : int
        Patients timed per backend (after 3 warm-up calls).
    seed : int
        Seed of the weights and inputs.
    out_dir : str or Path, optional
        Keep the exported models there; a temporary folder otherwise.

    Returns
    -------
    dict
        ``title``, ``target``, ``meets_target`` and ``figures`` (sizes in MB, latencies in ms per patient).
    """
    import keras

    from mvi_tf.export import export_run
    from mvi_tf.export.saved_model import load_serving_function, run_saved_model
    from mvi_tf.export.tflite import TFLiteRunner

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(out_dir) if out_dir is not None else Path(tmp)
        run_dir = _fake_run(root / "run", image_size, seed)
        result = export_run(run_dir, out_base=root / "saved_models", seed=seed)
        rng = np.random.default_rng(seed)
        patients = [{**{p: rng.random((1, image_size, image_size, 3), dtype=np.float32) for p in PHASES},
                     "tabular": rng.standard_normal((1, N_TABULAR)).astype(np.float32)} for _ in range(n_patients)]
        model = keras.models.load_model(result.keras_model, compile=False)
        serving = load_serving_function(result.saved_model_dir)
        backends = {
            "keras": (result.keras_model, lambda x: model(x, training=False)),
            "savedmodel": (result.saved_model_dir, lambda x: run_saved_model(serving, x)),
            "tflite_float32": (result.tflite_float32, TFLiteRunner(result.tflite_float32)),
            "tflite_dynamic": (result.tflite_dynamic, TFLiteRunner(result.tflite_dynamic)),
            "tflite_int8": (result.tflite_int8, TFLiteRunner(result.tflite_int8)),
        }
        figures: dict[str, float | str] = {"image_size_px": image_size, "patients_timed": n_patients}
        for name, (path, fn) in backends.items():
            figures[f"{name}_size_mb"] = _size_bytes(Path(path)) / 1e6
            figures[f"{name}_latency_ms"] = _latency_ms(fn, patients)
        figures["int8_size_ratio_vs_float32"] = figures["tflite_int8_size_mb"] / figures["tflite_float32_size_mb"]
        figures["int8_speedup_vs_keras"] = figures["keras_latency_ms"] / figures["tflite_int8_latency_ms"]
        figures["tflite_float32_max_abs_diff_vs_keras"] = result.parity["tflite_float32_vs_keras_max_abs_diff"]["value"]
        figures["saved_model_max_abs_diff_vs_keras"] = result.parity["saved_model_vs_keras_max_abs_diff"]["value"]
    meets = figures["int8_size_ratio_vs_float32"] <= 1 / 3 and figures["int8_speedup_vs_keras"] > 1.0
    return {
        "title": "Inference: model size and per-patient latency (CT CDLM, batch 1)",
        "target": "int8 TFLite at most 1/3 of float32's size and faster than Keras at batch 1",
        "meets_target": bool(meets),
        "figures": figures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--patients", type=int, default=20)
    parser.add_argument("--out", default=None, help="Keep the exported models in this folder.")
    args = parser.parse_args()
    print(json.dumps(run(image_size=args.image_size, n_patients=args.patients, out_dir=args.out), indent=2))


if __name__ == "__main__":
    main()
