"""Feature pattern maps (the paper's Figure S3): what early and late convolution filters respond to.

For one patient and phase the activations of an early convolution (default ``<phase>_stage1_block1_conv1``, edges
and textures) and of the last one (``<phase>_stage4_block2_conv2``, shape-level patterns) are read out with a
sub-model that shares the trained layers. The ``n_filters`` channels with the highest mean activation are shown,
each min-max scaled on its own, in one PNG grid per phase.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def default_feature_layers(phase: str) -> tuple[str, str]:
    """The early (stage 1) and late (stage 4) convolution shown for ``phase``."""
    from mvi_tf.explain.gradcam import last_conv_layer_name

    return f"{phase}_stage1_block1_conv1", last_conv_layer_name(phase)


def feature_activations(
    model,
    inputs: Mapping[str, np.ndarray],
    layer_names: Sequence[str],
    n_filters: int = 16,
) -> dict[str, np.ndarray]:
    """Activations of the most active filters of some layers for ONE patient.

    Parameters
    ----------
    model : keras.Model
        The trained model.
    inputs : mapping
        One patient's inputs keyed by input name, each with a leading batch axis of 1.
    layer_names : sequence of str
        Layers to read.
    n_filters : int
        Channels kept per layer, ordered by decreasing mean activation.

    Returns
    -------
    dict
        ``layer name -> (H, W, k)`` float32 activations, ``k = min(n_filters, channels)``.
    """
    import keras

    if n_filters < 1:
        raise ValueError(f"`n_filters` must be >= 1. Received: n_filters={n_filters}")
    names = {layer.name for layer in model.layers}
    missing = [n for n in layer_names if n not in names]
    if missing:
        raise ValueError(f"Layers {missing} not found in model {model.name!r}.")
    reader = keras.Model(model.inputs, [model.get_layer(n).output for n in layer_names])
    batch = [np.asarray(inputs[t.name], dtype=np.float32) for t in model.inputs]
    if batch[0].shape[0] != 1:
        raise ValueError(f"Feature maps are drawn for one patient. Received batch size {batch[0].shape[0]}")
    outputs = reader(batch, training=False)
    if not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    result = {}
    for name, out in zip(layer_names, outputs):
        act = np.asarray(out)[0]
        order = np.argsort(-act.mean(axis=(0, 1)), kind="stable")[:n_filters]
        result[name] = act[..., order].astype(np.float32)
    return result


def save_feature_grid(activations: Mapping[str, np.ndarray], path: str | Path, title: str) -> Path:
    """Write a PNG grid: one row per layer, one panel per filter (each min-max scaled)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n_cols = max(a.shape[-1] for a in activations.values())
    n_rows = len(activations)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.3 * n_cols, 1.5 * n_rows + 0.6), squeeze=False)
    for r, (name, act) in enumerate(activations.items()):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_axis_off()
            if c >= act.shape[-1]:
                continue
            channel = act[..., c]
            span = float(channel.max() - channel.min())
            shown = (channel - channel.min()) / span if span > 0 else np.zeros_like(channel)
            ax.imshow(shown, cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
            if c == 0:
                ax.set_title(f"{name} ({act.shape[0]}x{act.shape[1]})", fontsize=7, loc="left")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
