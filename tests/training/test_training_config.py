"""Config dataclasses: defaults, YAML override, flat overrides, round trip, bad values."""

from __future__ import annotations

import pytest
import yaml

from mvi_tf.config import Config, load_config


def test_yaml_override_and_round_trip(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"data": {"val_fraction": 0.3, "phases": ["arterial"]}, "train": {"epochs": 4}}))
    config = Config.load(path)
    assert config.data.val_fraction == 0.3 and config.data.phases == ["arterial"] and config.train.epochs == 4
    assert config.model.hidden_units == Config().model.hidden_units  # untouched default
    saved = config.save(tmp_path / "out" / "config.yaml")
    assert Config.load(saved) == config
    assert Config.from_dict(config.to_dict()) == config


def test_flat_overrides_ignore_none_and_apply_after_yaml(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  epochs: 7\n  seed: 3\n")
    config = load_config(path, epochs=2, seed=None, image_size=48, train__batch_size=4)
    assert (config.train.epochs, config.train.seed, config.data.image_size, config.train.batch_size) == (2, 3, 48, 4)


@pytest.mark.parametrize(
    "values, match",
    [
        ({"train": {"epochs": 0}}, "epochs=0"),
        ({"train": {"strategy": "tpu"}}, "strategy='tpu'"),
        ({"data": {"val_fraction": 1.5}}, "val_fraction=1.5"),
        ({"data": {"image_size": 16}}, "image_size=16"),
        ({"model": {"dropout": 1.0}}, "dropout=1.0"),
        ({"train": {"epoch": 3}}, "train.epoch"),
        ({"optim": {}}, "optim"),
        ({"train": {"lr_schedule": "step"}}, "lr_schedule='step'"),
    ],
)
def test_bad_values_name_the_field(values, match):
    with pytest.raises(ValueError, match=match):
        Config.from_dict(values)


def test_bad_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  batch_size: 0\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        Config.load(path)


def test_cosine_schedule_decays_the_learning_rate_to_zero_over_the_stage():
    import keras

    from mvi_tf.training.stages import compile_for_training

    inputs = keras.Input((2,), name="x")
    model = keras.Model(inputs, {"mvi_probability": keras.layers.Dense(1, activation="sigmoid")(inputs)})
    view = compile_for_training(model, 1e-3, jit_compile=False, decay_steps=10)
    lr = view.optimizer._get_current_learning_rate
    assert float(lr()) == pytest.approx(1e-3)
    view.optimizer.iterations.assign(5)
    assert float(lr()) == pytest.approx(5e-4, rel=1e-3)
    view.optimizer.iterations.assign(10)
    assert float(lr()) == pytest.approx(0.0, abs=1e-9)
    constant = compile_for_training(model, 1e-3, jit_compile=False)
    constant.optimizer.iterations.assign(10)
    assert float(constant.optimizer._get_current_learning_rate()) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="decay_steps=0"):
        compile_for_training(model, 1e-3, jit_compile=False, decay_steps=0)
    assert Config().train.lr_schedule == "cosine"


def test_patience_zero_trains_every_epoch_and_keeps_the_last_weights(tmp_path):
    import keras

    from mvi_tf.training.callbacks import stage_callbacks

    def kinds(patience):
        return [type(c) for c in stage_callbacks(tmp_path, "signature_t2", patience, tensorboard=False)]

    assert keras.callbacks.EarlyStopping not in kinds(0)
    assert Config().train.patience == 0
    early = [c for c in stage_callbacks(tmp_path, "fusion", 3, tensorboard=False)
             if isinstance(c, keras.callbacks.EarlyStopping)]
    assert len(early) == 1 and early[0].patience == 3 and early[0].restore_best_weights
    assert isinstance(stage_callbacks(tmp_path, "cdlm", 0)[-1], keras.callbacks.BackupAndRestore)
