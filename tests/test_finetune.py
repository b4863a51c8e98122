"""Fine-tuning a trained work directory: train.init_from, the encoder learning-rate multiplier,
and WeSpeaker's large-margin recipe (configs/finetune_lm.py)."""

from __future__ import annotations

import importlib.util

import jax
import ml_collections
import numpy as np
import pytest
from conftest import REPO

from hamjax import train_lib
from hamjax.inference import Verifier


def _finetune_config(trained, **changes):
    workdir, config = trained
    c = ml_collections.ConfigDict(config.to_dict())
    c.train.init_from = str(workdir)
    c.train.max_steps = 2
    for field, value in changes.items():
        section, key = field.split("__")
        c[section][key] = value
    return c


def test_a_frozen_encoder_keeps_the_source_weights_and_trains_a_new_head(trained, tmp_path):
    workdir, _ = trained
    source = Verifier.from_workdir(workdir)
    config = _finetune_config(trained, optim__encoder_lr_multiplier=0.0, optim__weight_decay=0.0)
    out = train_lib.train_and_evaluate(config, tmp_path / "ft")
    assert out["step"] == 2
    tuned = Verifier.from_workdir(tmp_path / "ft", "latest")
    jax.tree.map(
        np.testing.assert_array_equal,
        tuned.variables["params"]["encoder"],
        source.variables["params"]["encoder"],
    )
    head_a = jax.tree.leaves(tuned.variables["params"]["head"])
    head_b = jax.tree.leaves(source.variables["params"]["head"])
    assert any(not np.array_equal(a, b) for a, b in zip(head_a, head_b, strict=True))


def test_a_moving_encoder_starts_from_the_source(trained, tmp_path):
    workdir, _ = trained
    source = Verifier.from_workdir(workdir)
    config = _finetune_config(trained, optim__encoder_lr_multiplier=0.1)
    train_lib.train_and_evaluate(config, tmp_path / "ft")
    tuned = Verifier.from_workdir(tmp_path / "ft", "latest")
    a = jax.tree.leaves(tuned.variables["params"]["encoder"])
    b = jax.tree.leaves(source.variables["params"]["encoder"])
    # Close to the source (two small steps), not to a fresh initialisation.
    moved = np.sqrt(sum(float(np.sum((x - y) ** 2)) for x, y in zip(a, b, strict=True)))
    size = np.sqrt(sum(float(np.sum(y**2)) for y in b))
    assert 0 < moved / size < 0.05, moved / size


def test_another_encoder_is_refused_naming_the_fields(trained, tmp_path):
    config = _finetune_config(trained, model__channels=24)
    with pytest.raises(ValueError, match=r"its encoder is another model \(channels: 16 vs 24\)"):
        train_lib.train_and_evaluate(config, tmp_path / "ft")
    config = _finetune_config(trained, train__init_from=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match=r"config\.train\.init_from = .*nowhere"):
        train_lib.train_and_evaluate(config, tmp_path / "ft2")


def test_large_margin_recipe(trained, tmp_path):
    workdir, _ = trained
    spec = importlib.util.spec_from_file_location("lm", REPO / "configs" / "finetune_lm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(str(workdir))
    assert config.train.init_from == str(workdir)
    assert (config.data.crop_frames, config.head.margin, config.optim.learning_rate) == (
        600,
        0.5,
        1e-4,
    )
    assert config.optim.learning_rate * config.optim.lr_decay**5 == pytest.approx(2.5e-5)
    config.train.max_steps = 1
    out = train_lib.train_and_evaluate(config, tmp_path / "lm")
    assert out["step"] == 1 and np.isfinite(out["last_metrics"]["loss"])
    with pytest.raises(ValueError, match="needs the work directory to fine-tune"):
        module.get_config("")
