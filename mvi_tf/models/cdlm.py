"""The paper's three model levels (Wei et al. 2021, section 2.5) as one Keras functional model family.

- **Signature model** ``signature_<phase>``: one phase's ROI stack -> ImageNet normalisation -> ResNet18 ->
  global average pooling -> dropout -> ``Dense(1)`` -> sigmoid. The sigmoid output is the phase's deep-learning
  signature.
- **Fusion model** ``fusion``: one such branch per phase (identical layer names, so a trained signature model's
  weights transfer by name); the branches' pooled features are concatenated -> dropout -> dense (ReLU) ->
  ``Dense(1)`` -> sigmoid.
- **Combined deep-learning model** ``cdlm``: every phase's signature and the selected clinical and
  radiological inputs (``tabular``) -> dense (ReLU; non-negative on the signatures by default) -> ``Dense(1)``
  -> sigmoid. The fusion model is its own model, compared beside the CDLM; the CDLM integrates the signatures,
  as the paper's fully connected layers do.

Inputs are a dict keyed by name: one float32 ``(batch, S, S, 3)`` image in [0, 1] per phase, named after the
phase (``"arterial"``), plus ``"tabular"`` ``(batch, n_tabular)`` for the CDLM. Outputs are a dict:
``"mvi_probability"`` ``(batch, 1)`` and ``f"{phase}_signature"`` ``(batch, 1)`` for every phase. ImageNet
mean/std normalisation is a layer (``f"{phase}_imagenet_norm"``) inside the model, so serving needs no Python
preprocessing.

Without pretrained weights the ResNet18 branches start from torchvision's random initialisation (He normal
``fan_out`` convolutions, batch-norm gamma 1 and beta 0; see :mod:`mvi_tf.models.resnet18`) and the builders log
so. Heads use Keras defaults (Glorot uniform kernels, zero biases). Seed everything with
``keras.utils.set_random_seed`` before building for reproducible initial weights.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence

import keras
import numpy as np

from mvi_tf.models.resnet18 import apply_resnet18

logger = logging.getLogger(__name__)

CT_PHASES = ("plain", "arterial", "portal")
MRI_PHASES = ("t2", "arterial", "portal", "transitional", "hepatobiliary")
KNOWN_PHASES = tuple(dict.fromkeys(CT_PHASES + MRI_PHASES))  # the paper's phases; others are accepted too
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MIN_IMAGE_SIZE = 32
OUTPUT_KEY = "mvi_probability"
TABULAR_INPUT = "tabular"
_PHASE_NAME = re.compile(r"[a-z][a-z0-9_]*")
_BACKBONE_SUFFIXES = ("_conv1", "_bn1", "_relu", "_maxpool", "_stage")


def _check_phase(phase: str) -> str:
    """A phase name comes from the records' schema (``prepare --phases``): any lower-case identifier but the
    tabular input's name, since it names a model input and prefixes every layer of its branch."""
    if not isinstance(phase, str) or not _PHASE_NAME.fullmatch(phase) or phase == TABULAR_INPUT:
        raise ValueError(
            f"A phase name must be a lower-case identifier (letters, digits, '_'; e.g. {list(KNOWN_PHASES)[:3]}) "
            f"other than {TABULAR_INPUT!r}. Received: phase={phase!r}"
        )
    return phase


def _check_phases(phases: Sequence[str]) -> tuple[str, ...]:
    if isinstance(phases, str) or not isinstance(phases, Sequence) or len(phases) == 0:
        raise ValueError(f"`phases` must be a non-empty list of phase names. Received: phases={phases!r}")
    phases = tuple(phases)
    for phase in phases:
        _check_phase(phase)
    if len(set(phases)) != len(phases):
        raise ValueError(f"`phases` must not repeat a phase. Received: phases={phases}")
    return phases


def _check_image_size(image_size: int) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < MIN_IMAGE_SIZE:
        raise ValueError(
            f"`image_size` must be an integer >= {MIN_IMAGE_SIZE}. Received: image_size={image_size!r}"
        )
    return image_size


def _check_dropout(dropout: float) -> float:
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"`dropout` must be in [0, 1). Received: dropout={dropout}")
    return float(dropout)


def _check_hidden_units(hidden_units: int) -> int:
    if isinstance(hidden_units, bool) or not isinstance(hidden_units, int) or hidden_units < 1:
        raise ValueError(
            f"`hidden_units` must be a positive integer. Received: hidden_units={hidden_units!r}"
        )
    return hidden_units


def imagenet_normalization(phase: str) -> keras.layers.Layer:
    """The serialisable ImageNet mean/std normalisation layer ``f"{phase}_imagenet_norm"``."""
    return keras.layers.Normalization(
        axis=-1,
        mean=list(IMAGENET_MEAN),
        variance=[s * s for s in IMAGENET_STD],
        name=f"{phase}_imagenet_norm",
    )


def apply_signature_branch(image, phase: str, dropout: float = 0.3):
    """Apply one phase's branch: normalisation, ResNet18, pooling, dropout and the signature head.

    Parameters
    ----------
    image : KerasTensor
        The phase's input ``(batch, S, S, 3)`` in [0, 1].
    phase : str
        Phase name; prefix of every layer in the branch.
    dropout : float
        Dropout rate before the signature logit.

    Returns
    -------
    tuple of KerasTensor
        ``(pooled, signature)``: the pooled 512-d ResNet18 features ``f"{phase}_pool"`` and the sigmoid
        signature ``f"{phase}_signature"`` ``(batch, 1)``.
    """
    pooled, _, signature = _signature_branch(image, phase, dropout)
    return pooled, signature


def _signature_branch(image, phase: str, dropout: float):
    """``(pooled, logit, signature)`` of one phase's branch (see :func:`apply_signature_branch`)."""
    x = imagenet_normalization(phase)(image)
    x = apply_resnet18(x, phase)
    pooled = keras.layers.GlobalAveragePooling2D(name=f"{phase}_pool")(x)
    x = keras.layers.Dropout(dropout, name=f"{phase}_dropout")(pooled)
    logit = keras.layers.Dense(1, name=f"{phase}_signature_logit")(x)
    signature = keras.layers.Activation("sigmoid", dtype="float32", name=f"{phase}_signature")(logit)
    return pooled, logit, signature


def _phase_inputs(phases: Sequence[str], image_size: int) -> dict:
    return {p: keras.Input((image_size, image_size, 3), dtype="float32", name=p) for p in phases}


def _apply_fusion(inputs: dict, phases: Sequence[str], hidden_units: int, dropout: float):
    pooled, signatures = [], {}
    for phase in phases:
        feats, signature = apply_signature_branch(inputs[phase], phase, dropout)
        pooled.append(feats)
        signatures[f"{phase}_signature"] = signature
    if len(pooled) > 1:
        x = keras.layers.Concatenate(axis=-1, name="fusion_concat")(pooled)
    else:
        x = keras.layers.Identity(name="fusion_concat")(pooled[0])
    x = keras.layers.Dropout(dropout, name="fusion_dropout")(x)
    hidden = keras.layers.Dense(hidden_units, activation="relu", name="fusion_dense")(x)
    return hidden, signatures


def _init_weights(model: keras.Model, phases: Sequence[str], weights: str | os.PathLike | None) -> None:
    if weights is None:
        logger.info(
            "%s: ResNet18 backbone(s) %s start from random initialisation (He normal fan_out convolutions, "
            "batch-norm gamma=1); pass weights=PATH to load a torchvision state dict.",
            model.name,
            list(phases),
        )
    else:
        load_pretrained(model, weights, phases)


def build_signature_model(
    phase: str,
    image_size: int,
    dropout: float = 0.3,
    weights: str | os.PathLike | None = None,
) -> keras.Model:
    """Build the single-phase signature model ``signature_<phase>``.

    Parameters
    ----------
    phase : str
        One of :data:`KNOWN_PHASES`; names the input and prefixes every layer.
    image_size : int
        Side ``S`` of the square ``(S, S, 3)`` input, at least 32.
    dropout : float
        Dropout rate before the signature logit.
    weights : path-like, optional
        torchvision ResNet18 state dict (``.pth`` or ``.npz``) for the backbone; random initialisation if None.

    Returns
    -------
    keras.Model
        Inputs ``{phase: (batch, S, S, 3)}``; outputs ``{"mvi_probability": sig, f"{phase}_signature": sig}``
        (the same tensor twice).
    """
    phase = _check_phase(phase)
    image_size = _check_image_size(image_size)
    dropout = _check_dropout(dropout)
    inputs = _phase_inputs([phase], image_size)
    _, signature = apply_signature_branch(inputs[phase], phase, dropout)
    model = keras.Model(
        inputs, {OUTPUT_KEY: signature, f"{phase}_signature": signature}, name=f"signature_{phase}"
    )
    _init_weights(model, [phase], weights)
    return model


def build_fusion_model(
    phases: Sequence[str],
    image_size: int,
    hidden_units: int = 64,
    dropout: float = 0.3,
    weights: str | os.PathLike | None = None,
) -> keras.Model:
    """Build the fusion deep-learning model ``fusion`` over several phases.

    Parameters
    ----------
    phases : sequence of str
        Distinct phase names, one branch each.
    image_size : int
        Side ``S`` of each ``(S, S, 3)`` input, at least 32.
    hidden_units : int
        Width of ``fusion_dense``.
    dropout : float
        Dropout rate in each branch head and in ``fusion_dropout``.
    weights : path-like, optional
        torchvision ResNet18 state dict loaded into every branch; random initialisation if None.

    Returns
    -------
    keras.Model
        Inputs ``{phase: image}``; outputs ``{"mvi_probability": ..., f"{phase}_signature": ...}``.
    """
    phases = _check_phases(phases)
    image_size = _check_image_size(image_size)
    hidden_units = _check_hidden_units(hidden_units)
    dropout = _check_dropout(dropout)
    inputs = _phase_inputs(phases, image_size)
    hidden, signatures = _apply_fusion(inputs, phases, hidden_units, dropout)
    logit = keras.layers.Dense(1, name="fusion_logit")(hidden)
    probability = keras.layers.Activation("sigmoid", dtype="float32", name="fusion_probability")(logit)
    model = keras.Model(inputs, {OUTPUT_KEY: probability, **signatures}, name="fusion")
    _init_weights(model, phases, weights)
    return model


def build_cdlm(
    phases: Sequence[str],
    image_size: int,
    n_tabular: int,
    hidden_units: int = 64,
    dropout: float = 0.3,
    weights: str | os.PathLike | None = None,
    monotone: bool = True,
) -> keras.Model:
    """Build the combined deep-learning model ``cdlm``: the single-phase signatures plus clinical/radiological inputs.

    As in the paper (section 2.5), fully connected layers integrate the phases' signatures with the selected
    clinical and radiological factors: ``cdlm_signature_dense`` (signatures) and ``cdlm_tabular_dense``
    (``tabular``) are summed (``cdlm_add``), then ReLU (``cdlm_dense``) and ``cdlm_logit``. The signatures reach
    the head only as scores, so the gradient of the combined output with respect to one phase's features is the
    signature's own gradient times one scalar; Grad-CAM of the CDLM then shows what that phase's signature saw.

    Parameters
    ----------
    phases : sequence of str
        Distinct phase names, one branch each.
    image_size : int
        Side ``S`` of each ``(S, S, 3)`` input, at least 32.
    n_tabular : int
        Number of selected tabular features (the ``tabular`` input's width), at least 1.
    hidden_units : int
        Width of the combined hidden layer.
    dropout : float
        Dropout rate in each branch head.
    weights : path-like, optional
        torchvision ResNet18 state dict loaded into every branch; random initialisation if None.
    monotone : bool
        Constrain ``cdlm_signature_dense`` and ``cdlm_logit`` to non-negative kernels (initialised
        non-negative), so the combined risk never falls when a signature rises: each phase then only adds
        evidence for MVI and its attention map keeps the signature's sign. The tabular path is unconstrained.

    Returns
    -------
    keras.Model
        Inputs ``{phase: image, "tabular": (batch, n_tabular)}``; outputs
        ``{"mvi_probability": ..., f"{phase}_signature": ...}``.
    """
    phases = _check_phases(phases)
    image_size = _check_image_size(image_size)
    if isinstance(n_tabular, bool) or not isinstance(n_tabular, int) or n_tabular < 1:
        raise ValueError(f"`n_tabular` must be a positive integer. Received: n_tabular={n_tabular!r}")
    hidden_units = _check_hidden_units(hidden_units)
    dropout = _check_dropout(dropout)
    inputs = _phase_inputs(phases, image_size)
    inputs[TABULAR_INPUT] = keras.Input((n_tabular,), dtype="float32", name=TABULAR_INPUT)
    signatures = {}
    for phase in phases:
        _, signatures[f"{phase}_signature"] = apply_signature_branch(inputs[phase], phase, dropout)
    scores = [signatures[f"{phase}_signature"] for phase in phases]
    if len(scores) > 1:
        x = keras.layers.Concatenate(axis=-1, name="cdlm_signatures")(scores)
    else:
        x = keras.layers.Identity(name="cdlm_signatures")(scores[0])
    if monotone:
        # A small non-negative start: the constraint would zero half of a symmetric kernel at the first step, and a
        # large one makes the head lean on every signature from the outset (prospective AUC 0.67 vs 0.74 on the demo).
        positive = {
            "kernel_constraint": keras.constraints.NonNeg(),
            "kernel_initializer": keras.initializers.RandomUniform(0.0, 0.05),
        }
    else:
        positive = {}
    from_signatures = keras.layers.Dense(hidden_units, use_bias=False, name="cdlm_signature_dense", **positive)(x)
    from_tabular = keras.layers.Dense(hidden_units, name="cdlm_tabular_dense")(inputs[TABULAR_INPUT])
    x = keras.layers.Add(name="cdlm_add")([from_signatures, from_tabular])
    x = keras.layers.Activation("relu", name="cdlm_dense")(x)
    logit = keras.layers.Dense(1, name="cdlm_logit", **positive)(x)
    probability = keras.layers.Activation("sigmoid", dtype="float32", name="cdlm_probability")(logit)
    model = keras.Model(inputs, {OUTPUT_KEY: probability, **signatures}, name="cdlm")
    _init_weights(model, phases, weights)
    return model


def build_stacked_model(
    phases: Sequence[str],
    image_size: int,
    n_tabular: int | None = None,
    dropout: float = 0.3,
) -> keras.Model:
    """Build the leak-free stacking form of the fusion model (``n_tabular`` None) or of the CDLM.

    Every phase's signature branch feeds its logit (``f"{phase}_signature_logit"``, the signature's log-odds)
    into one logistic layer: ``<name>_signatures`` (the logits side by side) -> ``<name>_signature_dense``
    (``Dense(1)``, non-negative kernel); the CDLM adds ``cdlm_tabular_dense`` (``Dense(1)`` on ``tabular``) in
    ``cdlm_logit``; the fusion model's ``fusion_logit`` is the signature layer with a bias. The weights are not
    trained by gradient descent: :func:`set_stacking_weights` writes the coefficients of a head fitted on
    out-of-fold signatures (:mod:`mvi_tf.training.stacking`). Inputs and outputs are those of
    :func:`build_fusion_model` / :func:`build_cdlm`, so export, predict and explain treat both forms alike.

    Parameters
    ----------
    phases : sequence of str
        Distinct phase names, one branch each.
    image_size : int
        Side ``S`` of each ``(S, S, 3)`` input, at least 32.
    n_tabular : int, optional
        Width of the ``tabular`` input of the CDLM; None builds the fusion model.
    dropout : float
        Dropout rate in each branch head (inactive at inference).

    Returns
    -------
    keras.Model
        ``fusion`` or ``cdlm``, outputs ``{"mvi_probability": ..., f"{phase}_signature": ...}``.
    """
    phases = _check_phases(phases)
    image_size = _check_image_size(image_size)
    dropout = _check_dropout(dropout)
    name = "fusion" if n_tabular is None else "cdlm"
    inputs = _phase_inputs(phases, image_size)
    logits, signatures = [], {}
    for phase in phases:
        _, logit, signatures[f"{phase}_signature"] = _signature_branch(inputs[phase], phase, dropout)
        logits.append(logit)
    combine = keras.layers.Concatenate(axis=-1, name=f"{name}_signatures") if len(logits) > 1 else None
    x = combine(logits) if combine else keras.layers.Identity(name=f"{name}_signatures")(logits[0])
    positive = {"kernel_constraint": keras.constraints.NonNeg(), "kernel_initializer": "zeros"}
    if n_tabular is None:
        logit = keras.layers.Dense(1, name="fusion_logit", **positive)(x)
    else:
        if isinstance(n_tabular, bool) or not isinstance(n_tabular, int) or n_tabular < 1:
            raise ValueError(f"`n_tabular` must be a positive integer. Received: n_tabular={n_tabular!r}")
        inputs[TABULAR_INPUT] = keras.Input((n_tabular,), dtype="float32", name=TABULAR_INPUT)
        from_signatures = keras.layers.Dense(1, use_bias=False, name="cdlm_signature_dense", **positive)(x)
        from_tabular = keras.layers.Dense(1, kernel_initializer="zeros", name="cdlm_tabular_dense")(
            inputs[TABULAR_INPUT]
        )
        logit = keras.layers.Add(name="cdlm_logit")([from_signatures, from_tabular])
    probability = keras.layers.Activation("sigmoid", dtype="float32", name=f"{name}_probability")(logit)
    return keras.Model(inputs, {OUTPUT_KEY: probability, **signatures}, name=name)


def set_stacking_weights(
    model: keras.Model,
    signature_coef: Sequence[float],
    intercept: float,
    tabular_coef: Sequence[float] | None = None,
) -> None:
    """Write a fitted stacking head into a model of :func:`build_stacked_model`.

    Parameters
    ----------
    model : keras.Model
        ``fusion`` or ``cdlm`` in stacking form.
    signature_coef : sequence of float
        One non-negative coefficient per phase, on the signature logits, in the model's phase order.
    intercept : float
        The head's intercept.
    tabular_coef : sequence of float, optional
        The CDLM's coefficients on the ``tabular`` input (required for ``cdlm``).
    """
    coef = np.asarray(signature_coef, dtype=np.float32).reshape(-1, 1)
    if (coef < 0).any():
        raise ValueError(f"Signature coefficients must be >= 0. Received: signature_coef={list(signature_coef)}")
    if model.name == "fusion":
        model.get_layer("fusion_logit").set_weights([coef, np.array([intercept], dtype=np.float32)])
        return
    if tabular_coef is None:
        raise ValueError(f"The CDLM head needs `tabular_coef`. Received: tabular_coef=None, model={model.name!r}")
    model.get_layer("cdlm_signature_dense").set_weights([coef])
    tab = np.asarray(tabular_coef, dtype=np.float32).reshape(-1, 1)
    model.get_layer("cdlm_tabular_dense").set_weights([tab, np.array([intercept], dtype=np.float32)])


def signature_logit_model(model: keras.Model, phase: str) -> keras.Model:
    """A view of ``model`` that outputs ``phase``'s signature logit ``(batch, 1)`` from that phase's image."""
    return keras.Model({phase: model.input[phase]}, model.get_layer(f"{phase}_signature_logit").output)


def transfer_weights(source: keras.Model, target: keras.Model) -> list[str]:
    """Copy weights from ``source`` into ``target`` for every layer of equal name and weight shapes.

    Layers without weights are skipped; a layer present in both with different weight shapes is skipped with
    a warning (e.g. ``cdlm_tabular_dense`` after a change of ``n_tabular``).

    Parameters
    ----------
    source, target : keras.Model
        Built models, typically ``signature_<phase>`` -> ``fusion`` -> ``cdlm``.

    Returns
    -------
    list of str
        Names of the target layers whose weights were copied, in target layer order.
    """
    source_layers = {layer.name: layer for layer in source.layers}
    copied = []
    for layer in target.layers:
        if not layer.weights or layer.name not in source_layers:
            continue
        src_weights = source_layers[layer.name].get_weights()
        shapes = [tuple(w.shape) for w in layer.weights]
        src_shapes = [tuple(w.shape) for w in src_weights]
        if shapes != src_shapes:
            logger.warning(
                "transfer_weights %s -> %s: layer %s skipped, weight shapes %s != %s",
                source.name,
                target.name,
                layer.name,
                src_shapes,
                shapes,
            )
            continue
        layer.set_weights(src_weights)
        copied.append(layer.name)
    logger.info("transfer_weights %s -> %s: copied %d layers", source.name, target.name, len(copied))
    return copied


def backbone_layers(model: keras.Model, phase: str) -> list[keras.layers.Layer]:
    """The ResNet18 trunk layers of ``phase``'s branch in ``model`` (stem and stages, not norm or head)."""
    prefixes = tuple(f"{phase}{suffix}" for suffix in _BACKBONE_SUFFIXES)
    return [layer for layer in model.layers if layer.name.startswith(prefixes)]


def freeze_backbones(model: keras.Model, phases: Sequence[str], trainable: bool = False) -> list[str]:
    """Set ``trainable`` on the ResNet18 trunk layers of each phase (frozen batch norm runs in inference mode).

    Recompile the model afterwards for the change to take effect in ``fit``.

    Returns
    -------
    list of str
        Names of the layers changed.
    """
    phases = _check_phases(phases)
    changed = []
    for phase in phases:
        layers = backbone_layers(model, phase)
        if not layers:
            raise ValueError(
                f"Model {model.name!r} has no ResNet18 branch for phase {phase!r}. Received: phases={phases}"
            )
        for layer in layers:
            layer.trainable = trainable
            changed.append(layer.name)
    return changed


def training_view(model: keras.Model) -> keras.Model:
    """A single-output view of ``model`` (output ``mvi_probability``) sharing its layers and weights.

    Training this view trains ``model``. Useful to ``compile``/``fit`` with one loss and one AUC metric.
    """
    outputs = model.output
    if not isinstance(outputs, dict) or OUTPUT_KEY not in outputs:
        raise ValueError(f"Model {model.name!r} has no {OUTPUT_KEY!r} output. Received outputs: {outputs}")
    return keras.Model(model.input, outputs[OUTPUT_KEY], name=f"{model.name}_training")


def load_pretrained(model: keras.Model, path: str | os.PathLike, phases: Sequence[str]) -> list[str]:
    """Load a torchvision ResNet18 state dict into every phase branch of ``model`` (``fc`` is not used).

    Parameters
    ----------
    model : keras.Model
        A signature, fusion or CDLM model.
    path : path-like
        ``.pth`` (torch zip format, read without torch) or ``.npz`` with torchvision key names.
    phases : sequence of str
        Branches to load.

    Returns
    -------
    list of str
        The state-dict keys loaded, ``f"{phase}:{key}"``.
    """
    from mvi_tf.models.weights import load_resnet18_weights, read_state_dict

    phases = _check_phases(phases)
    state_dict = read_state_dict(path)
    loaded = []
    for phase in phases:
        keys = load_resnet18_weights(model, state_dict, phase)
        loaded.extend(f"{phase}:{key}" for key in keys)
    logger.info(
        "%s: loaded ResNet18 weights from %s into branch(es) %s (%d tensors)",
        model.name,
        os.fspath(path),
        list(phases),
        len(loaded),
    )
    return loaded
