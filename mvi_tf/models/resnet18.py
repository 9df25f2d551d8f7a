"""ResNet18 built from basic blocks, laid out exactly like torchvision's ``resnet18``.

Keras Applications ships no ResNet18, so the network is written here as plain functions over the Keras
functional API. The structure mirrors torchvision layer for layer so that a torchvision state dict loads into
it one tensor per layer (see :mod:`mvi_tf.models.weights`):

- convolutions carry no bias; the classifier ``fc`` does;
- batch normalisation uses ``epsilon=1e-5`` and ``momentum=0.9`` (torch's ``momentum=0.1``);
- torch pads symmetrically, Keras ``"same"`` with stride 2 pads only bottom/right, so the 7x7 stem, the 3x3
  max-pool and every stride-2 3x3 convolution use an explicit ``ZeroPadding2D`` followed by a ``"valid"`` layer.
  The max-pool follows a ReLU, so zero padding equals torch's ``-inf`` padding there. Stride-1 3x3
  convolutions use ``"same"``, which pads one pixel on every side exactly as torch does;
- a block's shortcut is a 1x1 stride-2 convolution plus batch normalisation when it changes resolution or width.

Random initialisation follows torchvision: convolution kernels He normal with ``fan_out`` and ReLU gain
(``std = sqrt(2 / (k * k * out_channels))``), batch-norm ``gamma = 1``, ``beta = 0``, running mean 0 and
variance 1; the ``fc`` layer uses torch's default ``Linear`` init (uniform in ``+-1/sqrt(fan_in)``).

Every layer gets a fixed, readable name built from a prefix (the phase name in mvi-tf models), e.g.
``arterial_stage4_block2_conv2``; weight loading, Grad-CAM and export find layers by these names.
"""

from __future__ import annotations

import keras

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9
STAGE_FILTERS = (64, 128, 256, 512)
BLOCKS_PER_STAGE = 2


def _conv_initializer() -> keras.initializers.Initializer:
    """He normal on ``fan_out`` (torchvision's ``kaiming_normal_(mode="fan_out", nonlinearity="relu")``)."""
    return keras.initializers.VarianceScaling(scale=2.0, mode="fan_out", distribution="untruncated_normal")


def _batch_norm(x, name: str):
    return keras.layers.BatchNormalization(axis=-1, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)(x)


def _conv(x, filters: int, kernel_size: int, stride: int, name: str):
    """A bias-free convolution padded symmetrically by ``kernel_size // 2`` like torch's ``Conv2d``."""
    pad = kernel_size // 2
    if stride == 1 and kernel_size % 2 == 1:
        padding = "same"
    else:
        padding = "valid"
        if pad:
            x = keras.layers.ZeroPadding2D(padding=pad, name=f"{name}_pad")(x)
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=stride,
        padding=padding,
        use_bias=False,
        kernel_initializer=_conv_initializer(),
        name=name,
    )(x)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name or not name.replace("_", "").isalnum():
        raise ValueError(
            f"`name` must be a non-empty string of letters, digits and underscores. Received: name={name!r}"
        )


def apply_basic_block(x, filters: int, stride: int, name: str):
    """Apply one ResNet basic block (two 3x3 convolutions and a residual connection).

    Parameters
    ----------
    x : KerasTensor
        Input feature map ``(batch, H, W, C)``.
    filters : int
        Output channels of both convolutions.
    stride : int
        Stride of the first convolution, 1 or 2. A projection shortcut (1x1 convolution + batch norm, named
        ``f"{name}_downsample_conv"`` / ``f"{name}_downsample_bn"``) is added when ``stride != 1`` or the
        input width differs from ``filters``.
    name : str
        Layer-name prefix, e.g. ``"arterial_stage4_block2"``; layers are ``f"{name}_conv1"``,
        ``f"{name}_bn1"``, ``f"{name}_relu1"``, ``f"{name}_conv2"``, ``f"{name}_bn2"``, ``f"{name}_add"``,
        ``f"{name}_out"``.

    Returns
    -------
    KerasTensor
        Output feature map ``(batch, H / stride, W / stride, filters)``.
    """
    if stride not in (1, 2):
        raise ValueError(f"`stride` must be 1 or 2. Received: stride={stride}")
    if int(filters) < 1:
        raise ValueError(f"`filters` must be a positive integer. Received: filters={filters}")
    _check_name(name)
    shortcut = x
    y = _conv(x, filters, 3, stride, name=f"{name}_conv1")
    y = _batch_norm(y, name=f"{name}_bn1")
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = _conv(y, filters, 3, 1, name=f"{name}_conv2")
    y = _batch_norm(y, name=f"{name}_bn2")
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv(x, filters, 1, stride, name=f"{name}_downsample_conv")
        shortcut = _batch_norm(shortcut, name=f"{name}_downsample_bn")
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def apply_resnet18(x, name: str):
    """Apply the ResNet18 trunk (stem and four stages, no pooling or classifier).

    Parameters
    ----------
    x : KerasTensor
        Input images ``(batch, H, W, 3)``, already normalised (ImageNet mean/std for pretrained weights).
    name : str
        Layer-name prefix: stem layers ``f"{name}_conv1"``, ``f"{name}_bn1"``, ``f"{name}_relu"``,
        ``f"{name}_maxpool"``; blocks ``f"{name}_stage{s}_block{b}_..."`` for ``s`` in 1..4, ``b`` in 1..2.

    Returns
    -------
    KerasTensor
        The stage-4 feature map ``(batch, H / 32, W / 32, 512)``.
    """
    _check_name(name)
    x = _conv(x, 64, 7, 2, name=f"{name}_conv1")
    x = _batch_norm(x, name=f"{name}_bn1")
    x = keras.layers.ReLU(name=f"{name}_relu")(x)
    x = keras.layers.ZeroPadding2D(padding=1, name=f"{name}_maxpool_pad")(x)
    x = keras.layers.MaxPooling2D(pool_size=3, strides=2, padding="valid", name=f"{name}_maxpool")(x)
    for stage, filters in enumerate(STAGE_FILTERS, start=1):
        for block in range(1, BLOCKS_PER_STAGE + 1):
            stride = 2 if stage > 1 and block == 1 else 1
            x = apply_basic_block(x, filters, stride, name=f"{name}_stage{stage}_block{block}")
    return x


def stage_output_layer_name(name: str, stage: int = 4) -> str:
    """Name of the layer that outputs stage ``stage`` (1-4) of the trunk with prefix ``name``.

    It is the last block's ReLU after the residual addition: the feature map the next stage (or, for stage 4,
    the global average pooling) reads. Grad-CAM's target layer.
    """
    _check_name(name)
    if stage not in range(1, len(STAGE_FILTERS) + 1):
        raise ValueError(f"`stage` must be one of 1-{len(STAGE_FILTERS)}. Received: stage={stage}")
    return f"{name}_stage{stage}_block{BLOCKS_PER_STAGE}_out"


def last_conv_layer_name(name: str) -> str:
    """Name of the last convolution of the trunk with prefix ``name`` (the usual Grad-CAM target layer)."""
    _check_name(name)
    return f"{name}_stage4_block{BLOCKS_PER_STAGE}_conv2"


def resnet18_classifier(
    input_shape: tuple[int, int, int] = (224, 224, 3),
    num_classes: int = 1000,
    name: str = "resnet18",
) -> keras.Model:
    """Build torchvision's ``resnet18`` as a Keras model: trunk, global average pooling and ``fc``.

    The model takes images already normalised with ImageNet mean/std and returns logits (no softmax), as
    torchvision does. With the 1000-class head it has 11,689,512 parameters.

    Parameters
    ----------
    input_shape : tuple of int
        ``(H, W, 3)``; H and W at least 32.
    num_classes : int
        Output units of ``fc``.
    name : str
        Model name and layer-name prefix.

    Returns
    -------
    keras.Model
        Input ``f"{name}_input"``, layers ``f"{name}_..."``, ``f"{name}_avgpool"`` and ``fc``.
    """
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] != 3 or min(input_shape[:2]) < 32:
        raise ValueError(
            f"`input_shape` must be (H, W, 3) with H, W >= 32. Received: input_shape={input_shape}"
        )
    if int(num_classes) < 1:
        raise ValueError(f"`num_classes` must be a positive integer. Received: num_classes={num_classes}")
    _check_name(name)
    inputs = keras.Input(input_shape, name=f"{name}_input")
    x = apply_resnet18(inputs, name)
    x = keras.layers.GlobalAveragePooling2D(name=f"{name}_avgpool")(x)
    fan_in_limit_scale = 1.0 / 3.0  # torch Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    outputs = keras.layers.Dense(
        num_classes,
        kernel_initializer=keras.initializers.VarianceScaling(
            scale=fan_in_limit_scale, mode="fan_in", distribution="uniform"
        ),
        bias_initializer=keras.initializers.RandomUniform(-(512**-0.5), 512**-0.5),
        name="fc",
    )(x)
    return keras.Model(inputs, outputs, name=name)
