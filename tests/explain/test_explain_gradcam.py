"""Grad-CAM / Grad-CAM++ through tf-keras-vis on multi-input MVI models."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from mvi_tf.explain.feature_maps import (
    default_feature_layers,
    feature_activations,
    save_feature_grid,
)
from mvi_tf.explain.gradcam import compute_gradcam, score_view
from mvi_tf.explain.localisation import randomise_weights, rank_correlation

SIZE = 32
CDLM_SIZE = 64  # the smallest input whose stage-4 map is not 1x1 (64 / 32 = 2x2)
QUADRANTS = {"top_left": (0, 0), "top_right": (0, 1), "bottom_left": (1, 0), "bottom_right": (1, 1)}


def _quadrant_model(quadrant: str) -> keras.Model:
    """CDLM-shaped model whose MVI output depends only on one quadrant of the ``portal`` image.

    The ``portal`` image is zeroed outside the quadrant by a fixed mask, then goes through a bias-free conv named
    like the ResNet18 last conv (stride 4 -> an 8x8 map, as coarse relative to its input as a real stage-4 map).
    The ``arterial`` branch sees its whole image but reaches the output through zero weights only. All other
    weights are positive, so the score grows with every portal activation.
    """
    qr, qc = QUADRANTS[quadrant]
    half = SIZE // 2
    mask = np.zeros((1, SIZE, SIZE, 1), np.float32)
    mask[:, qr * half:(qr + 1) * half, qc * half:(qc + 1) * half] = 1.0
    inputs = {p: keras.Input((SIZE, SIZE, 3), name=p) for p in ("arterial", "portal")}
    inputs["tabular"] = keras.Input((2,), name="tabular")
    positive = keras.initializers.RandomUniform(0.05, 0.5, seed=1)
    pooled = []
    for phase in ("arterial", "portal"):
        x = inputs[phase]
        if phase == "portal":
            x = keras.layers.Lambda(lambda t: t * mask, name="portal_quadrant_mask")(x)
        x = keras.layers.Conv2D(
            4, 4, strides=4, use_bias=False, kernel_initializer=positive, name=f"{phase}_stage4_block2_out"
        )(x)
        pooled.append(keras.layers.GlobalAveragePooling2D(name=f"{phase}_pool")(x))
    x = keras.layers.Concatenate(name="cdlm_concat")(pooled + [inputs["tabular"]])
    logit = keras.layers.Dense(1, name="cdlm_logit")
    out = logit(x)
    logit.set_weights([np.array([0.0] * 4 + [1.0] * 4 + [0.0, 0.0], np.float32)[:, None], np.zeros(1, np.float32)])
    prob = keras.layers.Activation("sigmoid", name="cdlm_probability")(out)
    return keras.Model(inputs, {"mvi_probability": prob, "portal_signature": prob, "arterial_signature": prob})


def _inputs(batch=3, n_tab=2, seed=0, size=SIZE):
    rng = np.random.default_rng(seed)
    x = {p: rng.uniform(0, 1, (batch, size, size, 3)).astype(np.float32) for p in ("arterial", "portal")}
    x["tabular"] = rng.normal(size=(batch, n_tab)).astype(np.float32)
    return x


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
@pytest.mark.parametrize("quadrant", sorted(QUADRANTS))
def test_map_concentrates_in_the_quadrant_the_output_depends_on(quadrant, method):
    model = _quadrant_model(quadrant)
    maps = compute_gradcam(model, _inputs(), ["portal"], method=method)
    cam = maps["portal"]
    assert cam.shape == (3, SIZE, SIZE) and cam.dtype == np.float32
    qr, qc = QUADRANTS[quadrant]
    half = SIZE // 2
    inside = cam[:, qr * half:(qr + 1) * half, qc * half:(qc + 1) * half]
    for b in range(3):
        assert inside[b].sum() / cam[b].sum() > 0.9
        peak = np.unravel_index(cam[b].argmax(), cam[b].shape)
        assert (peak[0] // half, peak[1] // half) == (qr, qc)
    # The arterial image does not influence the output: its map is empty.
    assert not compute_gradcam(model, _inputs(), ["arterial"], method=method)["arterial"].any()


@pytest.fixture(scope="module")
def cdlm():
    """A random-weight CDLM whose Grad-CAM is not empty on the test inputs.

    With random weights the sign of the class-activation sum is arbitrary, and an all-negative sum is a legitimate
    empty map (ReLU); the first seed from 0 that gives a non-empty map for both phases is used.
    """
    cdlm_module = pytest.importorskip("mvi_tf.models.cdlm")
    inputs = _inputs(batch=2, size=CDLM_SIZE)
    for seed in range(20):
        keras.utils.set_random_seed(seed)
        model = cdlm_module.build_cdlm(["arterial", "portal"], CDLM_SIZE, n_tabular=2, hidden_units=8)
        maps = compute_gradcam(model, inputs, ["arterial", "portal"])
        if all(np.allclose(m.max(axis=(1, 2)), 1.0) for m in maps.values()):
            return model
    pytest.fail("no seed in 0..19 gave a random CDLM with non-empty Grad-CAM maps")


def test_maps_of_the_cdlm_have_the_documented_shape_and_match_a_hand_computed_gradcam(cdlm):
    inputs = _inputs(batch=2, size=CDLM_SIZE)
    maps = compute_gradcam(cdlm, inputs, ["arterial", "portal"])
    assert sorted(maps) == ["arterial", "portal"]
    for cam in maps.values():
        assert cam.shape == (2, CDLM_SIZE, CDLM_SIZE) and cam.dtype == np.float32
        assert cam.min() >= 0.0 and cam.max() <= 1.0
        assert np.allclose(cam.max(axis=(1, 2)), 1.0)

    # Independent Grad-CAM: channel weights = spatial mean of d logit / d features, ReLU of the weighted sum.
    layer = cdlm.get_layer("portal_stage4_block2_out")
    probe = keras.Model(cdlm.inputs, [cdlm.get_layer("cdlm_logit").output, layer.output])
    feeds = [tf.constant(inputs[t.name]) for t in cdlm.inputs]
    with tf.GradientTape() as tape:
        logit, features = probe(feeds, training=False)
    grads = tape.gradient(logit, features).numpy()
    cam = np.maximum((features.numpy() * grads.mean(axis=(1, 2), keepdims=True)).sum(-1), 0.0)
    up = tf.image.resize(cam[..., None], (CDLM_SIZE, CDLM_SIZE), method="bilinear")[..., 0].numpy()
    lo, hi = up.min(axis=(1, 2), keepdims=True), up.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(maps["portal"], (up - lo) / (hi - lo), atol=1e-4)


def test_bad_arguments_are_named(cdlm):
    inputs = _inputs(batch=1, size=CDLM_SIZE)
    with pytest.raises(ValueError, match="method"):
        compute_gradcam(cdlm, inputs, ["portal"], method="saliency")
    with pytest.raises(ValueError, match="not an input"):
        compute_gradcam(cdlm, inputs, ["hepatobiliary"])
    with pytest.raises(ValueError, match="missing"):
        compute_gradcam(cdlm, {"portal": inputs["portal"]}, ["portal"])
    with pytest.raises(ValueError, match="target"):
        score_view(cdlm, target="loss")


def test_randomised_weights_change_the_maps(cdlm):
    inputs = _inputs(batch=2, seed=5, size=CDLM_SIZE)
    trained = compute_gradcam(cdlm, inputs, ["arterial", "portal"])
    random_model = randomise_weights(cdlm, ["arterial", "portal"], seed=11)
    randomised = compute_gradcam(random_model, inputs, ["arterial", "portal"])
    for phase in ("arterial", "portal"):
        assert np.abs(trained[phase] - randomised[phase]).mean() > 0.05
    corr = [rank_correlation(trained[p][b], randomised[p][b]) for p in ("arterial", "portal") for b in range(2)]
    assert np.nanmean(corr) < 0.8
    name = "portal_stage4_block2_conv2"
    assert not np.allclose(cdlm.get_layer(name).get_weights()[0], random_model.get_layer(name).get_weights()[0])
    # The fixed ImageNet normalisation is not learned and stays as it was.
    assert cdlm.get_layer("portal_imagenet_norm").get_config() == random_model.get_layer(
        "portal_imagenet_norm"
    ).get_config()
    # One cascade step (head only) keeps the backbone and re-draws the head.
    head_only = randomise_weights(cdlm, ["arterial", "portal"], seed=11, levels=("head",))
    np.testing.assert_array_equal(cdlm.get_layer(name).get_weights()[0], head_only.get_layer(name).get_weights()[0])
    assert not np.allclose(cdlm.get_layer("cdlm_logit").get_weights()[0], head_only.get_layer("cdlm_logit").get_weights()[0])
    # Seeded: the same seed gives the same randomised model.
    again = randomise_weights(cdlm, ["arterial", "portal"], seed=11)
    np.testing.assert_array_equal(again.get_layer(name).get_weights()[0], random_model.get_layer(name).get_weights()[0])


def test_randomisation_redraws_frozen_trunks(cdlm):
    """Training saves the CDLM with frozen trunks; the sanity check must still re-draw them (Adebayo et al.)."""
    from mvi_tf.models.cdlm import freeze_backbones

    frozen = keras.models.clone_model(cdlm)
    frozen.set_weights(cdlm.get_weights())
    freeze_backbones(frozen, ["arterial", "portal"])
    random_model = randomise_weights(frozen, ["arterial", "portal"], seed=11)
    for name in ("portal_stage4_block2_conv2", "arterial_conv1"):
        assert not np.allclose(frozen.get_layer(name).get_weights()[0], random_model.get_layer(name).get_weights()[0])
    inputs = _inputs(batch=2, seed=5, size=CDLM_SIZE)
    trained = compute_gradcam(frozen, inputs, ["arterial", "portal"])
    randomised = compute_gradcam(random_model, inputs, ["arterial", "portal"])
    corr = [rank_correlation(trained[p][b], randomised[p][b]) for p in ("arterial", "portal") for b in range(2)]
    assert np.nanmean(corr) < 0.8


def test_feature_pattern_maps(cdlm, tmp_path):
    inputs = {k: v[:1] for k, v in _inputs(batch=1, size=CDLM_SIZE).items()}
    layers = default_feature_layers("portal")
    acts = feature_activations(cdlm, inputs, layers, n_filters=6)
    early, late = (acts[n] for n in layers)
    assert early.shape == (CDLM_SIZE // 4, CDLM_SIZE // 4, 6) and late.shape == (2, 2, 6)
    means = early.mean(axis=(0, 1))
    assert np.all(np.diff(means) <= 1e-6)  # most active filters first
    png = save_feature_grid(acts, tmp_path / "fm.png", "P-1 portal")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="not found"):
        feature_activations(cdlm, inputs, ["portal_stage9_conv"])


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_fused_engine_gives_the_tf_keras_vis_maps(cdlm, method):
    inputs = _inputs(batch=2, seed=7, size=CDLM_SIZE)
    reference = compute_gradcam(cdlm, inputs, ["arterial", "portal"], method=method)
    fused = compute_gradcam(cdlm, inputs, ["arterial", "portal"], method=method, engine="fused")
    for phase in ("arterial", "portal"):
        np.testing.assert_allclose(fused[phase], reference[phase], atol=1e-4)
    with pytest.raises(ValueError, match="engine"):
        compute_gradcam(cdlm, inputs, ["portal"], engine="torch")


def test_target_is_the_stage_output_the_pooling_reads(cdlm):
    from mvi_tf.explain import target_layer_name

    assert target_layer_name("portal") == "portal_stage4_block2_out"
    assert target_layer_name("portal", stage=3) == "portal_stage3_block2_out"
    with pytest.raises(ValueError, match="stage"):
        target_layer_name("portal", stage=5)
    # The stage-4 output feeds the branch's global average pooling directly.
    pool = cdlm.get_layer("portal_pool")
    assert pool.input is cdlm.get_layer(target_layer_name("portal")).output
    inputs = _inputs(batch=2, size=CDLM_SIZE)
    fine = compute_gradcam(cdlm, inputs, ["portal"], stage=3)["portal"]
    assert fine.shape == (2, CDLM_SIZE, CDLM_SIZE) and np.allclose(fine.max(axis=(1, 2)), 1.0)
    fused = compute_gradcam(cdlm, inputs, ["portal"], stage=3, engine="fused")["portal"]
    np.testing.assert_allclose(fused, fine, atol=1e-4)
