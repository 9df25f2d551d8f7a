"""ResNet18 structure: torchvision parameter count, layer names, shapes, initialisation and argument checks."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from mvi_tf.models.resnet18 import (
    apply_basic_block,
    apply_resnet18,
    last_conv_layer_name,
    resnet18_classifier,
    stage_output_layer_name,
)


def _count(weights) -> int:
    return int(sum(np.prod(w.shape) for w in weights))


def test_parameter_count_matches_torchvision():
    model = resnet18_classifier()
    # torchvision counts parameters only (its BN running statistics are buffers): 11,689,512.
    assert _count(model.trainable_weights) == 11_689_512
    # The BN running mean/variance: 2 x (64 + 4*64 + 5*128 + 5*256 + 5*512) = 9,600.
    assert _count(model.non_trainable_weights) == 9_600
    assert model.output.shape == (None, 1000)


def test_layer_names_and_feature_map_shape():
    inputs = keras.Input((64, 64, 3))
    features = apply_resnet18(inputs, "arterial")
    model = keras.Model(inputs, features)
    assert features.shape == (None, 2, 2, 512)
    names = {layer.name for layer in model.layers}
    for stem in ("conv1", "bn1", "relu", "maxpool"):
        assert f"arterial_{stem}" in names
    for stage in range(1, 5):
        for block in (1, 2):
            for part in ("conv1", "bn1", "conv2", "bn2"):
                assert f"arterial_stage{stage}_block{block}_{part}" in names
    downsampled = {n.rsplit("_downsample", 1)[0] for n in names if n.endswith("_downsample_conv")}
    assert downsampled == {f"arterial_stage{s}_block1" for s in (2, 3, 4)}
    assert last_conv_layer_name("arterial") == "arterial_stage4_block2_conv2"
    assert model.get_layer(last_conv_layer_name("arterial")).output.shape == (None, 2, 2, 512)
    assert stage_output_layer_name("arterial") == "arterial_stage4_block2_out"
    assert model.get_layer(stage_output_layer_name("arterial", 3)).output.shape == (None, 4, 4, 256)
    with pytest.raises(ValueError, match="stage=0"):
        stage_output_layer_name("arterial", 0)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 20 and not any(layer.use_bias for layer in convs)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert all(layer.epsilon == 1e-5 and layer.momentum == 0.9 for layer in bns)


def test_random_initialisation_follows_torchvision():
    keras.utils.set_random_seed(0)
    model = resnet18_classifier((32, 32, 3), num_classes=10)
    kernel = model.get_layer("resnet18_stage4_block1_conv2").get_weights()[0]  # 3x3x512x512
    expected_std = np.sqrt(2.0 / (3 * 3 * 512))  # He normal, fan_out
    assert abs(kernel.std() / expected_std - 1.0) < 0.02
    gamma, beta, mean, var = model.get_layer("resnet18_bn1").get_weights()
    assert np.all(gamma == 1) and np.all(beta == 0) and np.all(mean == 0) and np.all(var == 1)
    fc_kernel = model.get_layer("fc").get_weights()[0]
    assert np.abs(fc_kernel).max() <= 512**-0.5 + 1e-7


def test_seed_fixes_initial_weights():
    keras.utils.set_random_seed(123)
    first = resnet18_classifier((32, 32, 3), num_classes=2).get_layer("resnet18_conv1").get_weights()[0]
    keras.utils.set_random_seed(123)
    second = resnet18_classifier((32, 32, 3), num_classes=2).get_layer("resnet18_conv1").get_weights()[0]
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"input_shape": (16, 16, 3)}, r"input_shape=\(16, 16, 3\)"),
        ({"input_shape": (64, 64, 1)}, r"input_shape=\(64, 64, 1\)"),
        ({"num_classes": 0}, "num_classes=0"),
        ({"name": "bad name"}, "name='bad name'"),
    ],
)
def test_classifier_argument_checks(kwargs, message):
    with pytest.raises(ValueError, match=message):
        resnet18_classifier(**kwargs)


def test_basic_block_argument_checks():
    inputs = keras.Input((32, 32, 64))
    with pytest.raises(ValueError, match="stride=3"):
        apply_basic_block(inputs, 64, 3, "x_stage1_block1")
    out = apply_basic_block(inputs, 64, 1, "x_stage1_block1")
    assert out.shape == (None, 32, 32, 64)
