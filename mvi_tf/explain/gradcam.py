"""Grad-CAM and Grad-CAM++ of the combined model's MVI output, per phase, through tf-keras-vis.

For each phase the class activation map is taken at the output of that phase's last ResNet18 stage
(``<phase>_stage4_block2_out``: the last block's ReLU after the residual addition, i.e. the very feature map the
global average pooling reads; ``stage=3`` takes stage 3's output instead, at twice the resolution). The
convolution inside the last block (``<phase>_stage4_block2_conv2``) is not used: it sits before batch
normalisation and the identity shortcut, so its gradients describe only part of what the head sees (on the demo
cohort its maps did no better than those of randomised weights). The gradient of the MVI score with respect to the
feature map weights its channels
(Grad-CAM: spatial mean of the gradient; Grad-CAM++: the higher-order weighting of Chattopadhay et al. 2018). The
score is the model's MVI *logit* when the model has one (``cdlm_logit``, ``fusion_logit`` or
``<phase>_signature_logit``), else the probability. For a sigmoid output the two give the same Grad-CAM up to a
positive factor per patient, but the logit does not saturate, so confident patients still get a map.

tf-keras-vis is called with ``expand_cam=False`` because its own resize breaks on the non-image ``tabular`` input; the
coarse map is upsampled here with ``tf.image.resize`` (bilinear) to the model's image size and then min-max
normalised to [0, 1] per patient (a constant map becomes all zeros).

``engine="tf-keras-vis"`` (default) makes one tf-keras-vis call per phase, i.e. one forward pass per phase.
``engine="fused"`` computes the same maps (same formulas, pinned to tf-keras-vis by a test) for every phase from a
single forward pass and a single backward pass that stops at the phases' target feature maps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

METHODS = ("gradcam", "gradcam++")
ENGINES = ("tf-keras-vis", "fused")
_LOGIT_LAYERS = ("cdlm_logit", "fusion_logit")


DEFAULT_STAGE = 4


def target_layer_name(phase: str, stage: int = DEFAULT_STAGE) -> str:
    """Grad-CAM target of a phase branch: the output of its ResNet18 stage ``stage`` (default the last, 4)."""
    from mvi_tf.models.resnet18 import stage_output_layer_name

    return stage_output_layer_name(phase, stage)


def last_conv_layer_name(phase: str) -> str:
    """Name of a phase branch's last convolution (delegates to ``mvi_tf.models.resnet18`` when present)."""
    try:
        from mvi_tf.models.resnet18 import last_conv_layer_name as models_last_conv
    except ImportError:  # the models package is optional for this helper
        return f"{phase}_stage4_block2_conv2"
    return models_last_conv(phase)


def score_view(model, target: str = "logit"):
    """A single-output view of a (dict-output) MVI model for tf-keras-vis, sharing its layers.

    Parameters
    ----------
    model : keras.Model
        Functional model whose output is ``mvi_probability`` (a dict holding it, or a single tensor).
    target : {"logit", "probability"}
        Score to explain. ``"logit"`` uses the layer feeding the final sigmoid when it can be found.

    Returns
    -------
    keras.Model
        Model with the same inputs and one ``(batch, 1)`` output.
    """
    import keras

    if target not in ("logit", "probability"):
        raise ValueError(f"`target` must be 'logit' or 'probability'. Received: target={target!r}")
    if target == "logit":
        names = {layer.name for layer in model.layers}
        candidates = list(_LOGIT_LAYERS) + [n for n in sorted(names) if n.endswith("_signature_logit")]
        for name in candidates:
            if name in names:
                if name.endswith("_signature_logit") and any(n in names for n in _LOGIT_LAYERS):
                    continue
                return keras.Model(model.inputs, model.get_layer(name).output, name=f"{model.name}_logit_view")
    output = model.output
    if isinstance(output, Mapping):
        if "mvi_probability" not in output:
            raise ValueError(
                f"Model {model.name!r} has no 'mvi_probability' output. Received outputs: {sorted(output)}"
            )
        output = output["mvi_probability"]
    elif isinstance(output, (list, tuple)):
        output = output[0]
    return keras.Model(model.inputs, output, name=f"{model.name}_probability_view")


def _normalise(maps: np.ndarray) -> np.ndarray:
    """Min-max normalise each ``(H, W)`` map of a batch to [0, 1]; constant maps become zeros."""
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    safe = np.where(span > 1e-12, span, 1.0)
    return np.where(span > 1e-12, (maps - low) / safe, 0.0).astype(np.float32)


def compute_gradcam(
    model,
    inputs: Mapping[str, np.ndarray],
    phases: Sequence[str],
    method: str = "gradcam",
    target: str = "logit",
    view=None,
    engine: str = "tf-keras-vis",
    stage: int = DEFAULT_STAGE,
) -> dict[str, np.ndarray]:
    """Grad-CAM (or Grad-CAM++) maps of the MVI score for every phase.

    Parameters
    ----------
    model : keras.Model
        MVI model with one image input per phase (named after the phase) and possibly ``tabular``.
    inputs : mapping
        Batch of inputs keyed by input name: ``phase -> (B, S, S, 3)`` float32 and ``"tabular" -> (B, n)``.
    phases : sequence of str
        Phases to explain; each needs a layer ``target_layer_name(phase, stage)``.
    method : {"gradcam", "gradcam++"}
        Map type.
    target : {"logit", "probability"}
        Score that is explained (see :func:`score_view`).
    view : keras.Model, optional
        A precomputed :func:`score_view` of ``model`` (saves rebuilding it on repeated calls).
    engine : {"tf-keras-vis", "fused"}
        One tf-keras-vis call per phase, or all phases from one forward/backward pass (same maps).
    stage : int
        ResNet18 stage whose output is the target feature map (4: 1/32 of the input side; 3: 1/16).

    Returns
    -------
    dict
        ``phase -> (B, S, S)`` float32 maps in [0, 1], upsampled bilinearly to the phase's input size.
    """
    import tensorflow as tf
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
    from tf_keras_vis.utils.scores import BinaryScore

    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}. Received: method={method!r}")
    if engine not in ENGINES:
        raise ValueError(f"`engine` must be one of {ENGINES}. Received: engine={engine!r}")
    phases = list(phases)
    if not phases or len(set(phases)) != len(phases):
        raise ValueError(f"`phases` must be a non-empty list of distinct names. Received: phases={phases}")
    view = score_view(model, target) if view is None else view
    input_names = [t.name for t in view.inputs]
    missing = [name for name in input_names if name not in inputs]
    if missing:
        raise ValueError(f"Inputs {missing} are missing. Received inputs: {sorted(inputs)}")
    layer_names = {layer.name for layer in view.layers}
    targets = {phase: target_layer_name(phase, stage) for phase in phases}
    for phase in phases:
        if phase not in input_names:
            raise ValueError(f"Phase {phase!r} is not an input of the model. Model inputs: {input_names}")
        if targets[phase] not in layer_names:
            raise ValueError(f"Layer {targets[phase]!r} (Grad-CAM target of phase {phase!r}) not found in the model.")
    seed = [np.asarray(inputs[name], dtype=np.float32) for name in input_names]
    batch = seed[0].shape[0]
    if any(x.shape[0] != batch for x in seed):
        raise ValueError(f"All inputs need the same batch size. Received shapes: {[x.shape for x in seed]}")
    if engine == "fused":
        coarse = _fused_cams(view, seed, phases, method, targets)
    else:
        cam_class = Gradcam if method == "gradcam" else GradcamPlusPlus
        explainer = cam_class(view, clone=False)
        score = BinaryScore(True)
        coarse = {
            phase: explainer(
                score,
                seed,
                penultimate_layer=targets[phase],
                seek_penultimate_conv_layer=False,
                expand_cam=False,
                normalize_cam=False,
            )
            for phase in phases
        }
    maps: dict[str, np.ndarray] = {}
    for phase in phases:
        cam = tf.convert_to_tensor(coarse[phase], dtype=tf.float32)[..., None]
        size = np.asarray(inputs[phase]).shape[1:3]
        up = tf.image.resize(cam, size, method="bilinear")[..., 0].numpy()
        maps[phase] = _normalise(up)
    return maps


def _fused_cams(view, seed: list[np.ndarray], phases: Sequence[str], method: str, targets: Mapping[str, str]) -> dict:
    """Coarse (un-normalised) CAMs of all phases from one forward and one backward pass.

    Grad-CAM: channel weight = spatial mean of the score's gradient at the feature map; map = ReLU of the weighted
    channel sum. Grad-CAM++ (Chattopadhay et al. 2018, with the exponential-score closed form that tf-keras-vis
    uses): with ``g`` the gradient and ``E = exp(score)``, ``alpha = E g^2 / (2 E g^2 + E g^3 * sum_ij A)``,
    normalised over the spatial positions, channel weight = ``sum_ij alpha * ReLU(E g)``.
    """
    import keras
    import tensorflow as tf

    layers = [view.get_layer(targets[p]) for p in phases]
    probe = keras.Model(view.inputs, [view.output] + [layer.output for layer in layers])
    feeds = [tf.constant(x) for x in seed]
    with tf.GradientTape() as tape:
        outputs = probe(feeds, training=False)
        score, features = tf.reshape(outputs[0], (-1,)), outputs[1:]
    grads = tape.gradient(score, features)
    cams = {}
    for phase, a, g in zip(phases, features, grads):
        spatial = (1, 2)
        if method == "gradcam":
            weights = tf.reduce_mean(g, axis=spatial, keepdims=True)
        else:
            e = tf.reshape(tf.exp(score), (-1, 1, 1, 1))
            first = e * g
            second = first * g
            third = second * g
            denom = 2.0 * second + third * tf.reduce_sum(a, axis=spatial, keepdims=True)
            denom += tf.cast(tf.equal(second, 0.0), denom.dtype)
            alpha = second / denom
            norm = tf.reduce_sum(alpha, axis=spatial, keepdims=True)
            alpha /= norm + tf.cast(tf.equal(norm, 0.0), norm.dtype)
            weights = tf.reduce_sum(alpha * tf.nn.relu(first), axis=spatial, keepdims=True)
        cams[phase] = tf.nn.relu(tf.reduce_sum(a * weights, axis=-1)).numpy()
    return cams
