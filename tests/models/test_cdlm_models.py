"""Signature, fusion and CDLM builders: contracts, round-trips, weight transfer, freezing and training view."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from mvi_tf.models.cdlm import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_cdlm,
    build_fusion_model,
    build_signature_model,
    build_stacked_model,
    freeze_backbones,
    set_stacking_weights,
    signature_logit_model,
    training_view,
    transfer_weights,
)

SIZE = 32
PHASES = ("arterial", "portal")
N_TABULAR = 3


def _inputs(phases, n_tabular=None, batch=2, seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    data = {p: rng.uniform(0, 1, (batch, SIZE, SIZE, 3)).astype(np.float32) for p in phases}
    if n_tabular:
        data["tabular"] = rng.normal(size=(batch, n_tabular)).astype(np.float32)
    return data


def _predict(model, data) -> dict[str, np.ndarray]:
    return {k: keras.ops.convert_to_numpy(v) for k, v in model(data, training=False).items()}


BUILDERS = {
    "signature": (lambda: build_signature_model("arterial", SIZE), ("arterial",), None),
    "fusion": (lambda: build_fusion_model(PHASES, SIZE, hidden_units=8), PHASES, None),
    "cdlm": (lambda: build_cdlm(PHASES, SIZE, N_TABULAR, hidden_units=8), PHASES, N_TABULAR),
}


@pytest.fixture(scope="module")
def models() -> dict[str, keras.Model]:
    keras.utils.set_random_seed(42)
    return {kind: build() for kind, (build, _, _) in BUILDERS.items()}


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_contract_names_inputs_outputs(models, kind):
    model = models[kind]
    _, phases, n_tabular = BUILDERS[kind]
    assert model.name == {"signature": "signature_arterial"}.get(kind, kind)
    expected_inputs = set(phases) | ({"tabular"} if n_tabular else set())
    assert set(model.input) == expected_inputs
    assert {t.name for t in model.inputs} == expected_inputs
    outputs = _predict(model, _inputs(phases, n_tabular))
    assert set(outputs) == {"mvi_probability"} | {f"{p}_signature" for p in phases}
    for value in outputs.values():
        assert value.shape == (2, 1) and value.dtype == np.float32
        assert np.all((value > 0) & (value < 1))
    for phase in phases:  # the layers Grad-CAM and weight loading look up by name
        for layer in (
            "imagenet_norm",
            "conv1",
            "stage4_block2_conv2",
            "pool",
            "signature_logit",
            "signature",
        ):
            model.get_layer(f"{phase}_{layer}")
        assert all(w.path.startswith(phase) for w in model.get_layer(f"{phase}_stage1_block1_bn1").weights)
    if kind == "fusion":
        for layer in ("fusion_concat", "fusion_dropout", "fusion_dense", "fusion_logit"):
            model.get_layer(layer)
    if kind == "cdlm":
        for layer in ("cdlm_signatures", "cdlm_signature_dense", "cdlm_tabular_dense", "cdlm_add", "cdlm_dense",
                      "cdlm_logit", "cdlm_probability"):
            model.get_layer(layer)
        # The paper's CDLM integrates the signatures, not the fusion model's features.
        assert not [layer.name for layer in model.layers if layer.name.startswith("fusion")]


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_config_round_trip_and_keras_file(models, kind, tmp_path):
    model = models[kind]
    _, phases, n_tabular = BUILDERS[kind]
    data = _inputs(phases, n_tabular, seed=1)
    expected = _predict(model, data)

    rebuilt = keras.Model.from_config(model.get_config())
    rebuilt.set_weights(model.get_weights())
    assert [layer.name for layer in rebuilt.layers] == [layer.name for layer in model.layers]
    for key, value in _predict(rebuilt, data).items():
        np.testing.assert_allclose(value, expected[key], rtol=1e-6, atol=1e-6)

    path = tmp_path / f"{model.name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # no custom objects needed
    assert loaded.name == model.name
    for key, value in _predict(loaded, data).items():
        np.testing.assert_allclose(value, expected[key], rtol=1e-6, atol=1e-6)


def test_imagenet_normalisation_inside_model(models):
    layer = models["signature"].get_layer("arterial_imagenet_norm")
    image = np.full((1, 4, 4, 3), 0.5, np.float32)
    expected = (0.5 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(image))[0, 0, 0], expected, rtol=1e-5)


def test_transfer_signature_to_fusion_to_cdlm():
    keras.utils.set_random_seed(1)
    signatures = {p: build_signature_model(p, SIZE) for p in PHASES}
    fusion = build_fusion_model(PHASES, SIZE, hidden_units=8)
    cdlm = build_cdlm(PHASES, SIZE, N_TABULAR, hidden_units=8)
    data = _inputs(PHASES, N_TABULAR, seed=2)
    for phase, signature in signatures.items():
        copied = transfer_weights(signature, fusion)
        assert len(copied) == 41  # 20 conv + 20 batch norm + the signature logit
        assert f"{phase}_stage4_block2_conv2" in copied and f"{phase}_signature_logit" in copied
    fusion_out = _predict(fusion, {p: data[p] for p in PHASES})
    for phase, signature in signatures.items():  # the fused branches reproduce each signature exactly
        np.testing.assert_allclose(
            fusion_out[f"{phase}_signature"],
            _predict(signature, {phase: data[phase]})["mvi_probability"],
            rtol=1e-5,
        )
    copied = transfer_weights(fusion, cdlm)
    branch_layers = {layer.name for layer in fusion.layers if layer.weights and not layer.name.startswith("fusion")}
    assert set(copied) == branch_layers  # every branch layer; the fusion head has no place in the CDLM
    cdlm_out = _predict(cdlm, data)
    for phase in PHASES:
        np.testing.assert_allclose(
            cdlm_out[f"{phase}_signature"], fusion_out[f"{phase}_signature"], rtol=1e-5
        )
    wider = build_cdlm(PHASES, SIZE, N_TABULAR + 1, hidden_units=8)
    copied = transfer_weights(cdlm, wider)
    assert "cdlm_tabular_dense" not in copied  # shape differs: skipped, not forced
    assert "cdlm_signature_dense" in copied and "cdlm_logit" in copied


@pytest.mark.parametrize("monotone", [True, False])
def test_cdlm_phase_gradient_is_the_signature_gradient_times_a_scalar(monotone):
    """A phase reaches the combined head only through its signature score, so d(CDLM logit)/d(image) is the
    signature's gradient times one scalar per patient; the monotone head keeps that scalar non-negative."""
    keras.utils.set_random_seed(3)
    cdlm = build_cdlm(PHASES, SIZE, N_TABULAR, hidden_units=8, dropout=0.0, monotone=monotone)
    phase = PHASES[0]
    probe = keras.Model(cdlm.input, [cdlm.get_layer("cdlm_logit").output,
                                     cdlm.get_layer(f"{phase}_signature_logit").output])
    data = {k: tf.convert_to_tensor(v) for k, v in _inputs(PHASES, N_TABULAR, seed=4).items()}
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(data[phase])
        combined, signature = probe(data, training=False)
        combined, signature = tf.reduce_sum(combined), tf.reduce_sum(signature)  # rows are independent
    g_combined = tape.gradient(combined, data[phase]).numpy().reshape(2, -1)
    g_signature = tape.gradient(signature, data[phase]).numpy().reshape(2, -1)
    for row_combined, row_signature in zip(g_combined, g_signature, strict=True):
        assert np.abs(row_signature).max() > 0
        scale = float(row_combined @ row_signature) / float(row_signature @ row_signature)
        np.testing.assert_allclose(row_combined, scale * row_signature, rtol=1e-3, atol=1e-6 * np.abs(row_combined).max())
        if monotone:
            assert scale >= 0.0
    if monotone:
        assert np.all(cdlm.get_layer("cdlm_signature_dense").get_weights()[0] >= 0)
        assert np.all(cdlm.get_layer("cdlm_logit").get_weights()[0] >= 0)
        assert isinstance(cdlm.get_layer("cdlm_logit").kernel_constraint, keras.constraints.NonNeg)
    else:
        assert cdlm.get_layer("cdlm_logit").kernel_constraint is None


def test_freeze_backbones_and_training_view_share_weights():
    keras.utils.set_random_seed(2)
    model = build_cdlm(PHASES, SIZE, N_TABULAR, hidden_units=8, dropout=0.0)
    n_trainable = len(model.trainable_weights)
    changed = freeze_backbones(model, ["arterial"])
    assert "arterial_stage4_block2_conv2" in changed and "arterial_signature_logit" not in changed
    assert not any(name.startswith("portal") for name in changed)
    assert len(model.trainable_weights) == n_trainable - 60  # 20 kernels + 20 x (gamma, beta)
    frozen_before = model.get_layer("arterial_conv1").get_weights()[0].copy()
    trained_before = model.get_layer("portal_conv1").get_weights()[0].copy()

    view = training_view(model)
    assert view.output.shape == (None, 1)
    view.compile(optimizer=keras.optimizers.SGD(0.1), loss="binary_crossentropy")
    data = _inputs(PHASES, N_TABULAR, batch=4, seed=3)
    view.fit(data, np.array([[0], [1], [0], [1]], np.float32), epochs=1, batch_size=4, verbose=0)
    np.testing.assert_array_equal(model.get_layer("arterial_conv1").get_weights()[0], frozen_before)
    assert not np.array_equal(model.get_layer("portal_conv1").get_weights()[0], trained_before)
    freeze_backbones(model, ["arterial"], trainable=True)
    assert len(model.trainable_weights) == n_trainable


def test_random_initialisation_is_logged(caplog):
    with caplog.at_level("INFO", logger="mvi_tf.models.cdlm"):
        build_signature_model("t2", SIZE)
    assert "random initialisation" in caplog.text and "signature_t2" in caplog.text


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: build_signature_model("Venous phase", SIZE), "phase='Venous phase'"),
        (lambda: build_signature_model("tabular", SIZE), "phase='tabular'"),
        (lambda: build_signature_model("arterial", 16), "image_size=16"),
        (lambda: build_fusion_model(["arterial", "arterial"], SIZE), r"phases=\('arterial', 'arterial'\)"),
        (lambda: build_fusion_model("arterial", SIZE), "phases='arterial'"),
        (lambda: build_fusion_model(["arterial", "dwi-b800"], SIZE), "phase='dwi-b800'"),
        (lambda: build_fusion_model(PHASES, SIZE, dropout=1.0), "dropout=1.0"),
        (lambda: build_cdlm(PHASES, SIZE, 0), "n_tabular=0"),
        (lambda: build_cdlm(PHASES, SIZE, 2, hidden_units=0), "hidden_units=0"),
    ],
)
def test_argument_checks(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_single_phase_fusion_and_all_mri_phases():
    model = build_fusion_model(["hepatobiliary"], SIZE, hidden_units=4)
    assert set(_predict(model, _inputs(["hepatobiliary"]))) == {"mvi_probability", "hepatobiliary_signature"}
    mri = ("t2", "arterial", "portal", "transitional", "hepatobiliary")
    cdlm = build_cdlm(mri, SIZE, 1, hidden_units=4)
    assert cdlm.get_layer("cdlm_signatures").output.shape == (None, len(mri))
    single = build_cdlm(["hepatobiliary"], SIZE, 1, hidden_units=4)
    assert single.get_layer("cdlm_signatures").output.shape == (None, 1)


def test_a_protocol_phase_outside_the_papers_builds_and_names_its_input():
    model = build_stacked_model(["arterial", "equilibrium"], SIZE, n_tabular=2)
    assert set(model.input) == {"arterial", "equilibrium", "tabular"}
    assert "equilibrium_signature" in _predict(model, _inputs(["arterial", "equilibrium"], 2))


@pytest.mark.parametrize("n_tabular", [None, N_TABULAR])
def test_stacked_model_applies_the_fitted_head_to_the_signature_logits(n_tabular):
    keras.utils.set_random_seed(5)
    model = build_stacked_model(PHASES, SIZE, n_tabular=n_tabular)
    assert model.name == ("fusion" if n_tabular is None else "cdlm")
    coef, intercept, tab = [0.7, 0.0], -0.4, [0.5, -1.0, 2.0]
    set_stacking_weights(model, coef, intercept, tab if n_tabular else None)
    data = _inputs(PHASES, n_tabular, batch=4)
    logits = np.column_stack([
        keras.ops.convert_to_numpy(signature_logit_model(model, p)({p: data[p]})).ravel() for p in PHASES
    ])
    expected = intercept + logits @ np.array(coef)
    if n_tabular:
        expected = expected + data["tabular"] @ np.array(tab)
    got = _predict(model, data)["mvi_probability"].ravel()
    np.testing.assert_allclose(got, 1 / (1 + np.exp(-expected)), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="signature_coef"):
        set_stacking_weights(model, [-0.1, 0.2], 0.0, tab if n_tabular else None)
