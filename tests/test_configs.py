"""Configs, their validation, the optimiser (against torch's Adam) and the small trainer helpers.

No model is compiled here: these tests are cheap.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from hamjax import checkpointing, config_lib, model_builder, train_lib, train_state

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(config_lib.RECIPES)


def load_config(name: str, variant: str | None = None):
    """Loads configs/<name>.py as config_flags does: ``get_config(variant)``."""
    spec = importlib.util.spec_from_file_location(f"cfg_{name}", ROOT / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config() if variant is None else module.get_config(variant)


# The paper's settings (METHOD.md, "Authors' recipe"): head name, s, m, c.
EXPECTED_HEADS = {
    "softmax": ("softmax", None, None, None),
    "softmax_scaled": ("softmax_scaled", 30.0, None, None),
    "am_softmax": ("am", 30.0, 0.2, None),
    "aam_softmax": ("aam", 30.0, 0.2, None),
    "ram_softmax": ("ram", 30.0, 0.2, None),
    "h_softmax": ("h_softmax", 30.0, 0.0, 5.0),
    "ham_softmax": ("ham_softmax", 30.0, 0.2, 3.0),
    "eh_am_softmax": ("combined", 30.0, 0.2, 3.0),
}


@pytest.mark.parametrize("variant,epochs", [("vox1", 150), ("vox2", 100)])
@pytest.mark.parametrize("recipe", RECIPES)
def test_paper_recipes_carry_the_authors_settings(recipe, variant, epochs):
    config = load_config(recipe, variant)
    name, scale, margin, c = EXPECTED_HEADS[recipe]
    assert config.head.name == name
    if scale is not None:
        assert config.head.scale == scale
    if margin is not None:
        assert config.head.margin == margin
    if c is not None:
        assert config.head.c == c
    assert config.train.num_epochs == epochs
    assert config.train.global_batch_size == 256
    assert config.train.average_last == 5
    assert (config.model.name, config.model.channels, config.model.embed_dim) == (
        "ecapa_tdnn",
        1024,
        192,
    )
    assert config.optim.learning_rate == 1e-3 and config.optim.weight_decay == 2e-5
    assert config.optim.lr_decay == 0.97
    assert config.data.crop_frames == 200 and config.data.augment.enabled
    assert config.data.name == ("voxceleb1_dev" if variant == "vox1" else "voxceleb2_dev")
    train_lib.validate_config(config, num_devices=8)
    # Every recipe builds its modules (the head registry accepts the config's fields).
    encoder, head = model_builder.build_modules(config, num_classes=10)
    assert encoder.channels == 1024 and head.num_classes == 10


def test_eh_recipe_weights_are_the_authors():
    config = load_config("eh_am_softmax")
    assert config.head.euclidean == "ram" and tuple(config.head.weights) == (0.3, 0.7)


def test_unknown_variant_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"variant 'vox3'.*'vox1', 'vox2'"):
        load_config("ham_softmax", "vox3")


def test_quickstart_uses_the_synthetic_corpus_and_its_trials():
    config = load_config("quickstart")
    train_lib.validate_config(config, num_devices=8)
    assert config.data.source == "synthetic" and config.data.synthetic.size == "quickstart"
    assert set(config.eval.trials) <= {"heldout_speakers", "heldout_bases", "within_family"}
    assert config.eval.trials and config.head.name == "ham_softmax"
    kwargs = train_lib.synthetic_kwargs(config)
    from hamjax.data import synthetic

    assert {k: kwargs[k] for k in synthetic.QUICKSTART} == synthetic.QUICKSTART
    assert kwargs["seed"] == config.seed


def test_base_config_loads():
    config = load_config("base")
    train_lib.validate_config(config, num_devices=1)
    assert config.head.name == "softmax"


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("head.name", "arcface", r"config\.head\.name = 'arcface'.*one of"),
        ("head.c", -1.0, r"config\.head\.c = -1\.0.*curvature in \[0\.0001, 10\]"),
        ("head.c", 20.0, r"config\.head\.c = 20\.0.*curvature in \[0\.0001, 10\]"),
        ("head.c", 1e-5, r"config\.head\.c = 1e-05"),
        ("head.margin", 1.5, r"config\.head\.margin = 1\.5.*ham_softmax margin in \[0, 1\)"),
        ("head.scale", 1000.0, r"config\.head\.scale = 1000\.0.*\[0\.001, 128"),
        ("head.c", 0.0, r"config\.head\.c = 0\.0"),
        ("head.mode", "lorentz", r"config\.head\.mode = 'lorentz'"),
        ("head.scale", 0.0, r"config\.head\.scale = 0\.0"),
        ("head.margin", -0.1, r"config\.head\.margin = -0\.1"),
        ("model.name", "wavlm", r"config\.model\.name = 'wavlm'"),
        ("model.dtype", "float16", r"config\.model\.dtype = 'float16'"),
        ("train.global_batch_size", 12, r"global_batch_size = 12.*multiple of the 8 devices"),
        ("train.global_batch_size", 0, r"global_batch_size = 0"),
        ("optim.learning_rate", 0.0, r"config\.optim\.learning_rate = 0\.0"),
        ("optim.lr_decay", 1.5, r"config\.optim\.lr_decay = 1\.5"),
        ("data.source", "librispeech", r"config\.data\.source = 'librispeech'"),
        ("data.crop_frames", 5, r"config\.data\.crop_frames = 5"),
        ("features.kind", "mfcc", r"config\.features\.kind = 'mfcc'"),
        ("train.steps_per_epoch", 0, r"config\.train\.steps_per_epoch = 0"),
        ("head.num_classes", 0, r"config\.head\.num_classes = 0"),
    ],
)
def test_bad_values_are_refused_naming_field_and_value(field, value, message):
    config = load_config("ham_softmax")
    section, key = field.split(".")
    config[section][key] = value
    with pytest.raises(ValueError, match=message):
        train_lib.validate_config(config, num_devices=8)


def test_combined_weights_are_checked():
    config = load_config("eh_am_softmax")
    config.head.weights = (0.3, -0.7)
    with pytest.raises(ValueError, match=r"config\.head\.weights"):
        train_lib.validate_config(config)


# --------------------------------------------------------------------------- optimiser


def test_optimizer_matches_torch_adam_with_coupled_weight_decay():
    torch = pytest.importorskip("torch")
    config = load_config("ham_softmax")
    # Large decay and lr so that coupled (torch Adam) and decoupled (AdamW) decay, or a smooth
    # instead of a staircase schedule, differ far beyond float32 rounding.
    config.optim.weight_decay, config.optim.learning_rate, config.optim.lr_decay = 0.5, 0.1, 0.5
    steps_per_epoch = 3
    tx, _ = train_state.make_optimizer(config, steps_per_epoch)
    rng = np.random.default_rng(0)
    theta0 = rng.standard_normal(7).astype(np.float32)
    grads = rng.standard_normal((7, 7)).astype(np.float32)  # 7 steps of gradients

    p = torch.nn.Parameter(torch.tensor(theta0))
    opt = torch.optim.Adam([p], lr=0.1, weight_decay=0.5, betas=(0.9, 0.999), eps=1e-8)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=steps_per_epoch, gamma=0.5)
    params = jnp.asarray(theta0)
    state = tx.init(params)
    for g in grads:
        opt.zero_grad()
        p.grad = torch.tensor(g)
        opt.step()
        sched.step()
        updates, state = tx.update(jnp.asarray(g), state, params)
        params = params + updates
    np.testing.assert_allclose(np.asarray(params), p.detach().numpy(), rtol=1e-5, atol=1e-6)
    # The recipe's lr itself: staircase x0.97 per epoch.
    _, schedule = train_state.make_optimizer(load_config("ham_softmax"), steps_per_epoch)
    assert float(schedule(steps_per_epoch - 1)) == pytest.approx(1e-3)
    assert float(schedule(steps_per_epoch)) == pytest.approx(0.97e-3)
    assert float(schedule(5 * steps_per_epoch + 1)) == pytest.approx(1e-3 * 0.97**5)


def test_warmup_and_clipping_are_wired():
    config = load_config("ham_softmax")
    config.optim.warmup_steps = 10
    config.optim.grad_clip_norm = 1.0
    tx, schedule = train_state.make_optimizer(config, 100)
    assert float(schedule(0)) == 0.0 and float(schedule(5)) == pytest.approx(5e-4)
    assert float(schedule(10)) == pytest.approx(1e-3)
    params = jnp.zeros(4)
    updates, _ = tx.update(jnp.full(4, 1e6), tx.init(params), params)
    # Clipped to norm 1 before Adam: Adam's first update is lr * sign, whatever the scale.
    assert np.all(np.isfinite(np.asarray(updates)))


# --------------------------------------------------------------------------- helpers


class _Info:
    def __init__(self, step):
        self.step = step


def test_latest_epochs_policy_keeps_the_newest_epoch_checkpoints():
    policy = checkpointing.LatestEpochs(n=2, steps_per_epoch=4)
    steps = [2, 4, 6, 8, 10, 12, 13]
    keep = policy.should_preserve([_Info(s) for s in steps], context=None)
    assert [s for s, k in zip(steps, keep, strict=True) if k] == [8, 12]


def test_average_trees_is_the_elementwise_mean():
    trees = [{"a": np.full(3, float(i), np.float32), "b": {"c": np.eye(2) * i}} for i in (1, 2, 6)]
    avg = checkpointing.average_trees(trees)
    np.testing.assert_allclose(avg["a"], np.full(3, 3.0))
    np.testing.assert_allclose(avg["b"]["c"], np.eye(2) * 3.0)
    assert avg["a"].dtype == np.float32
    with pytest.raises(ValueError, match="at least one"):
        checkpointing.average_trees([])


def test_check_finite_names_step_and_quantity():
    good = {"loss": 1.0, "grad_norm": 2.0, "grad_norm/head": 1.0}
    train_lib.check_finite(3, good, last_good=2)
    bad = {"loss": 1.0, "grad_norm/encoder": float("inf"), "grad_norm": float("inf")}
    with pytest.raises(
        train_lib.NonFiniteError, match=r"non-finite grad_norm/encoder at step 7.*step 6"
    ):
        train_lib.check_finite(7, bad, last_good=6)
    with pytest.raises(train_lib.NonFiniteError, match=r"non-finite loss at step 1.*no checkpoint"):
        train_lib.check_finite(1, {"loss": float("nan")}, last_good=None)


def test_epoch_steps():
    assert checkpointing.epoch_steps([0, 3, 5, 6, 9, 10], 3) == [3, 6, 9]


@pytest.mark.parametrize(
    "recipe,changes,message",
    [
        # AAM's target logit cos(theta + m) is no longer monotone in the angle at m = 4.
        (
            "aam_softmax",
            {"margin": 4.0},
            r"config\.head\.margin = 4\.0.*aam margin in \[0, 1\.571\)",
        ),
        ("am_softmax", {"margin": 1.5}, r"config\.head\.margin = 1\.5.*am margin in \[0, 1\)"),
        ("ram_softmax", {"margin": 1.0}, r"config\.head\.margin = 1\.0.*ram margin"),
        ("eh_am_softmax", {"weights": (0.0, 0.0)}, r"config\.head\.weights.*not both 0"),
        ("eh_am_softmax", {"euclidean": "arc"}, r"config\.head\.euclidean = 'arc'"),
        ("ham_softmax", {"margin_warmup_steps": -1}, r"config\.head\.margin_warmup_steps = -1"),
    ],
)
def test_head_hyper_parameters_outside_their_meaningful_range_are_refused(recipe, changes, message):
    config = load_config(recipe)
    for key, value in changes.items():
        config.head[key] = value
    with pytest.raises(ValueError, match=message):
        train_lib.validate_config(config)


def test_validation_names_come_from_the_registries():
    # One source for names: a head or encoder added to its registry is valid at once.
    from hamjax import heads, models

    config = load_config("ham_softmax")
    for name in heads.HEADS:
        config.head.name = name
        config.head.margin = 0.0
        train_lib.validate_config(config)
    config = load_config("ham_softmax")
    for name in models.ENCODERS:
        config.model.name = name
        config.model.channels = 512 if name.endswith("c512") else 1024
        train_lib.validate_config(config)
