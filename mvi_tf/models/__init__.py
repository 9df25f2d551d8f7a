"""The mvi-tf model family: ResNet18 branches, single-phase signatures, fusion model and CDLM.

Modules
-------
resnet18
    torchvision-compatible ResNet18 from basic blocks (``apply_resnet18``, ``resnet18_classifier``).
weights
    torchvision state dicts read without torch (``read_state_dict``) and loaded by layer name.
cdlm
    ``build_signature_model``, ``build_fusion_model``, ``build_cdlm`` and helpers for staged training.

Importing this package imports Keras; the CLI imports it inside its commands.
"""

from mvi_tf.models.cdlm import (
    CT_PHASES,
    KNOWN_PHASES,
    MRI_PHASES,
    OUTPUT_KEY,
    TABULAR_INPUT,
    build_cdlm,
    build_fusion_model,
    build_signature_model,
    freeze_backbones,
    load_pretrained,
    training_view,
    transfer_weights,
)
from mvi_tf.models.resnet18 import (
    apply_basic_block,
    apply_resnet18,
    last_conv_layer_name,
    resnet18_classifier,
    stage_output_layer_name,
)
from mvi_tf.models.weights import load_resnet18_weights, read_state_dict

__all__ = [
    "CT_PHASES",
    "KNOWN_PHASES",
    "MRI_PHASES",
    "OUTPUT_KEY",
    "TABULAR_INPUT",
    "apply_basic_block",
    "apply_resnet18",
    "build_cdlm",
    "build_fusion_model",
    "build_signature_model",
    "freeze_backbones",
    "last_conv_layer_name",
    "load_pretrained",
    "load_resnet18_weights",
    "read_state_dict",
    "resnet18_classifier",
    "stage_output_layer_name",
    "training_view",
    "transfer_weights",
]
