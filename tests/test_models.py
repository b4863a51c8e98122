"""Tests for hamjax.models: parameter counts, shapes, masking, BatchNorm modes, dtypes, registry.

Numerical tests use small configurations (few channels) so they compile quickly; the full-size
models are only traced with ``jax.eval_shape``. The PyTorch-reference comparisons live in
``test_models_torch.py``.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hamjax import models
from hamjax.models import layers

# ----------------------------------------------------------------------------------------------
# Parameter counts (jax.eval_shape: nothing big is allocated)


def _shapes(encoder: nn.Module, t: int = 200, f: int = 80):
    return jax.eval_shape(
        lambda: encoder.init(jax.random.key(0), jnp.zeros((2, t, f)), jnp.ones((2, t), bool))
    )


def _ecapa_breakdown(c: int, f: int = 80, e: int = 192, att: int = 256) -> dict[str, int]:
    """Hand count of the authors' ECAPA-TDNN per top-level module (weights + biases + BN affine)."""
    w = c // 8

    def conv(cin, cout, k=1):
        return cin * cout * k + cout

    def bn(n):
        return 2 * n

    block = (
        conv(c, 8 * w)
        + bn(8 * w)
        + 7 * (conv(w, w, 3) + bn(w))
        + conv(8 * w, c)
        + bn(c)
        + conv(c, 128)
        + conv(128, c)
    )
    return {
        "conv1": conv(f, c, 5),
        "bn1": bn(c),
        "layer1": block,
        "layer2": block,
        "layer3": block,
        "layer4": conv(3 * c, 1536),
        "attention": conv(4608, att) + bn(att) + conv(att, 1536),
        "bn5": bn(3072),
        "fc6": 3072 * e + e,
        "bn6": bn(e),
    }


def _resnet34_breakdown(m: int = 32, f: int = 80, e: int = 256) -> dict[str, int]:
    """Hand count of WeSpeaker's ResNet34 (bias-free convs, BN affine, seg_1 Linear)."""

    def block(cin, cout):
        n = 9 * cin * cout + 9 * cout * cout + 4 * cout
        if cin != cout:
            n += cin * cout + 2 * cout  # 1x1 shortcut conv + BN
        return n

    counts = {"conv1": 9 * m, "bn1": 2 * m}
    cin = m
    for stage, n in enumerate((3, 4, 6, 3)):
        cout = m * 2**stage
        for j in range(n):
            counts[f"layer{stage + 1}_{j}"] = block(cin, cout)
            cin = cout
    counts["seg_1"] = 2 * cin * (f // 8) * e + e
    return counts


@pytest.mark.parametrize(
    "name, kwargs, expected, breakdown",
    [
        ("ecapa_tdnn_c1024", {}, 15_444_544, _ecapa_breakdown(1024)),
        ("ecapa_tdnn_c512", {}, 6_978_176, _ecapa_breakdown(512)),
        # The ECAPA paper's 14.7M (C=1024): its attention bottleneck has 128 channels, not 256.
        (
            "ecapa_tdnn_c1024",
            {"attention_channels": 128},
            14_657_728,
            _ecapa_breakdown(1024, att=128),
        ),
        ("resnet34", {}, 6_634_336, _resnet34_breakdown()),
    ],
)
def test_parameter_counts_match_pytorch(name, kwargs, expected, breakdown):
    variables = _shapes(models.create_encoder(name, **kwargs))
    params = variables["params"]
    per_module = {k: models.num_params(v) for k, v in params.items()}
    assert per_module == breakdown
    assert sum(breakdown.values()) == expected
    assert models.num_params(params) == expected
    # Running statistics are batch_stats, never params (PyTorch does not count them either).
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(variables))
    assert set(variables) == {"params", "batch_stats"}


def test_ecapa_default_is_c1024_and_presets_fix_channels():
    assert models.create_encoder("ecapa_tdnn").channels == 1024
    assert models.create_encoder("ecapa_tdnn_c512").channels == 512
    with pytest.raises(ValueError, match=r"ecapa_tdnn_c512.*channels=512"):
        models.create_encoder("ecapa_tdnn_c512", channels=256)
    # A config always carries model.channels: the preset's own value is not a clash.
    assert models.create_encoder("ecapa_tdnn_c512", channels=512).channels == 512


@functools.cache
def _full_size(name: str, dtype: str = "float32"):
    enc = models.create_encoder(name, dtype=dtype)
    return enc, _shapes(enc, t=8)  # parameter shapes do not depend on T


@pytest.mark.parametrize("name, dim", [("ecapa_tdnn_c1024", 192), ("resnet34", 256)])
@pytest.mark.parametrize(
    "frames, dtype, train",
    [  # 1 s, 2 s, 10 s at a 10 ms hop; the dtype and train variants once each
        (101, "float32", False),
        (201, "float32", False),
        (1001, "float32", False),
        (201, "bfloat16", False),
        (201, "float32", True),
    ],
)
def test_output_shapes_full_size(name, dim, frames, dtype, train):
    enc, variables = _full_size(name, dtype)
    feats = jax.ShapeDtypeStruct((3, frames, 80), jnp.float32)
    mask = jax.ShapeDtypeStruct((3, frames), jnp.bool_)
    if train:
        out, updates = jax.eval_shape(
            lambda v, x, m: enc.apply(v, x, m, train=True, mutable=["batch_stats"]),
            variables,
            feats,
            mask,
        )
        assert jax.tree_util.tree_structure(updates["batch_stats"]) == (
            jax.tree_util.tree_structure(variables["batch_stats"])
        )
    else:
        out = jax.eval_shape(lambda v, x, m: enc.apply(v, x, m), variables, feats, mask)
    assert out.shape == (3, dim) and out.dtype == jnp.float32


# ----------------------------------------------------------------------------------------------
# Numerics on small configurations

F = 40  # feature bins for the small numeric tests (divisible by 8 for the ResNet)


def _small(kind: str, dtype: str = "float32") -> nn.Module:
    """Small configurations with every structural feature of the full models (three dilated
    SE-Res2 blocks with dense-sum inputs; identity and projection shortcuts in four stages)."""
    if kind == "ecapa":
        return models.create_encoder(
            "ecapa_tdnn",
            channels=16,
            scale=4,
            se_bottleneck=4,
            mfa_channels=24,
            attention_channels=8,
            embed_dim=16,
            dtype=dtype,
        )
    return models.ResNet(num_blocks=(1, 1, 1, 1), m_channels=4, embed_dim=16, dtype=dtype)


def _random_variables(enc: nn.Module, seed: int):
    """Variables filled from numpy (no jitted init to compile): weights ~ U(+-1/sqrt(fan_in)),
    random BN affine parameters and running statistics, so BN is far from the identity and
    padded frames would visibly leak if a mask were missing."""
    shapes = jax.eval_shape(enc.init, jax.random.key(0), jnp.zeros((1, 16, F)))
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name, shape = path[-1].key, leaf.shape
        is_bn = path[0].key == "batch_stats" or name == "scale" or "bn" in str(path[-2].key)
        if name in ("scale", "var"):
            x = rng.uniform(0.5, 1.5, shape)
        elif name == "mean" or (name == "bias" and is_bn):
            x = 0.5 * rng.standard_normal(shape)
        elif name == "kernel":
            x = rng.uniform(-1, 1, shape) / np.sqrt(np.prod(shape[:-1]))
        else:  # conv / dense bias
            x = rng.uniform(-0.1, 0.1, shape)
        return jnp.asarray(x, jnp.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes)


@functools.cache
def _setup(kind: str, dtype: str = "float32"):
    """(encoder, variables, jitted eval fn, jitted train fn), built once per kind and dtype."""
    enc = _small(kind, dtype)
    variables = _random_variables(_small(kind), seed=2)
    eval_fn = jax.jit(lambda v, x, m: enc.apply(v, x, m, train=False))
    train_fn = jax.jit(lambda v, x, m: enc.apply(v, x, m, train=True, mutable=["batch_stats"]))
    return enc, variables, eval_fn, train_fn


def _feats(seed: int, shape=(3, 48, F)) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


@pytest.mark.parametrize("kind", ["ecapa", "resnet"])
def test_padding_does_not_change_embeddings(kind):
    _, variables, eval_fn, _ = _setup(kind)
    lengths = [48, 29, 17]  # odd lengths exercise the ResNet's ceil(L/2) downsampled masks
    mask = layers.prefix_mask(jnp.array(lengths), 48)
    # Garbage (not zeros) in the padding: it must be ignored, not merely be harmless.
    feats = jnp.where(mask[..., None], _feats(3), 100.0)
    batched = eval_fn(variables, feats, mask)
    n = lengths[1]  # one "alone" shape: every extra length is one more compilation
    alone = eval_fn(variables, feats[1:2, :n], None)
    np.testing.assert_allclose(batched[1], alone[0], rtol=2e-4, atol=2e-4)
    # The full-length utterance is unaffected by the mask; the padded ones change without it.
    unmasked = eval_fn(variables, feats, None)
    np.testing.assert_allclose(unmasked[0], batched[0], rtol=1e-5, atol=1e-5)
    assert not np.allclose(unmasked[1], batched[1], atol=1e-2)
    assert not np.allclose(unmasked[2], batched[2], atol=1e-2)
    # Utterance 2 (17 frames) alone, emulated by zero padding: mask=None on zeroed frames is
    # exactly what its own convolutions' zero padding gives, except in the pooling and BN
    # statistics; so it must differ from the masked result (the pooling really is masked).
    zero_padded = eval_fn(variables, jnp.where(mask[..., None], feats, 0.0), None)
    assert not np.allclose(zero_padded[2], batched[2], atol=1e-3)


@pytest.mark.parametrize("kind", ["ecapa", "resnet"])
def test_train_mode_batch_stats_ignore_padding(kind):
    """Same utterances padded to 48 or to 64 frames: identical outputs and updated statistics."""
    _, variables, eval_fn, train_fn = _setup(kind)
    lengths = jnp.array([48, 29, 17])
    feats = _feats(4, (3, 64, F))
    out_a, upd_a = train_fn(variables, feats[:, :48], layers.prefix_mask(lengths, 48))
    out_b, upd_b = train_fn(variables, feats, layers.prefix_mask(lengths, 64))
    # The final BN normalises over a batch of 3 and amplifies float rounding (sums over 48 vs 64
    # frames) ~100x; leaked padding would move the outputs by O(1).
    np.testing.assert_allclose(out_a, out_b, rtol=1e-2, atol=1e-2)
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5),
        upd_a["batch_stats"],
        upd_b["batch_stats"],
    )
    # Train mode normalises with batch statistics, eval mode with the running ones ...
    out_eval = eval_fn(variables, feats[:, :48], layers.prefix_mask(lengths, 48))
    assert not np.allclose(out_a, out_eval, atol=1e-2)
    # ... and every running statistic moved: new = 0.9 * old + 0.1 * batch (PyTorch momentum).
    changed = jax.tree_util.tree_map(
        lambda old, new: bool(np.any(np.abs(np.asarray(old) - np.asarray(new)) > 1e-6)),
        variables["batch_stats"],
        upd_a["batch_stats"],
    )
    assert all(jax.tree_util.tree_leaves(changed))


def test_first_batchnorm_running_mean_is_masked_frame_mean():
    """The stem BN's running-mean update equals 0.9 * old + 0.1 * (mean over valid frames)."""
    _, variables, _, train_fn = _setup("ecapa")
    lengths = jnp.array([48, 29, 17])
    feats = _feats(4, (3, 64, F))[:, :48]  # the same call as above: no new compilation
    mask = layers.prefix_mask(lengths, 48)
    _, upd = train_fn(variables, feats, mask)
    p = variables["params"]["conv1"]
    x = np.asarray(feats * mask[..., None], np.float64)
    w = np.asarray(p["kernel"], np.float64)  # [5, F, C]
    xp = np.pad(x, ((0, 0), (2, 2), (0, 0)))
    h = sum(np.einsum("btf,fc->btc", xp[:, k : k + 48], w[k]) for k in range(5))
    h = np.maximum(h + np.asarray(p["bias"]), 0.0)
    batch_mean = h[np.asarray(mask)].mean(axis=0)
    expected = 0.9 * np.asarray(variables["batch_stats"]["bn1"]["mean"]) + 0.1 * batch_mean
    np.testing.assert_allclose(upd["batch_stats"]["bn1"]["mean"], expected, rtol=1e-4, atol=1e-5)
    # The unmasked mean would differ: padding is not counted.
    assert not np.allclose(h.reshape(-1, h.shape[-1]).mean(0), batch_mean, atol=1e-3)


@pytest.mark.parametrize("kind", ["ecapa", "resnet"])
def test_bfloat16_compute_close_to_float32(kind):
    _, variables, eval_fn, _ = _setup(kind)
    eval16 = _setup(kind, "bfloat16")[2]
    feats = _feats(6)
    mask = layers.prefix_mask(jnp.array([48, 40, 30]), 48)
    e32 = eval_fn(variables, feats, mask)
    e16 = eval16(variables, feats, mask)  # the same float32 parameters
    assert e16.dtype == jnp.float32
    cos = jnp.sum(e32 * e16, -1) / (jnp.linalg.norm(e32, axis=-1) * jnp.linalg.norm(e16, axis=-1))
    assert np.all(np.asarray(cos) > 0.99), cos
    rel = np.linalg.norm(e32 - e16, axis=-1) / np.linalg.norm(e32, axis=-1)
    assert np.all(rel < 0.1), rel
    assert not np.array_equal(e32, e16)  # bfloat16 really was used
    # Parameters created under bfloat16 compute are float32.
    p16 = jax.eval_shape(_small(kind, "bfloat16").init, jax.random.key(0), feats)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(p16)} == {jnp.dtype(jnp.float32)}


@functools.cache
def _init_fn(kind: str):
    return jax.jit(_small(kind).init)


# Keys use the "rbg" PRNG only because a threefry init compiles 3-10x slower on CPU (it is
# compiled per parameter shape); determinism and the distributions do not depend on it.
_KEY_IMPL = "rbg"


@pytest.mark.parametrize("kind", ["ecapa", "resnet"])
def test_init_deterministic_given_rng(kind):
    init = _init_fn(kind)
    feats = jnp.zeros((1, 16, F))
    a, b, c = (init(jax.random.key(s, impl=_KEY_IMPL), feats)["params"] for s in (7, 7, 8))
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)
    differs = jax.tree_util.tree_map(lambda x, y: not np.array_equal(x, y), a, c)
    # Every weight differs across seeds; the constant BN initialisers (1, 0) do not.
    kernels = [v for p, v in jax.tree_util.tree_leaves_with_path(differs) if "kernel" in str(p)]
    assert kernels and all(kernels)


def test_pytorch_style_initialisation():
    """Conv/Linear weights and biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as in PyTorch."""
    params = _init_fn("ecapa")(jax.random.key(0, impl=_KEY_IMPL), jnp.zeros((1, 16, F)))["params"]
    k, b = params["conv1"]["kernel"], params["conv1"]["bias"]  # fan_in = 5 * F
    bound = 1 / np.sqrt(5 * F)
    assert np.abs(k).max() <= bound and np.abs(k).max() > 0.95 * bound
    assert np.abs(b).max() <= bound and np.abs(b).max() > 0.5 * bound
    np.testing.assert_allclose(np.std(k), bound / np.sqrt(3), rtol=0.05)  # uniform variance
    assert np.all(params["bn1"]["scale"] == 1) and np.all(params["bn1"]["bias"] == 0)


# ----------------------------------------------------------------------------------------------
# Pooling layers against direct numpy formulas


def test_masked_statistics_match_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 7, 3)).astype(np.float32)
    mask = np.array([[True] * 7, [True] * 4 + [False] * 3])
    mean, std = layers.masked_mean_std(jnp.asarray(x), jnp.asarray(mask), ddof=1, eps=1e-8)
    for b, n in enumerate((7, 4)):
        np.testing.assert_allclose(mean[b], x[b, :n].mean(0), rtol=1e-5)
        np.testing.assert_allclose(std[b], np.sqrt(x[b, :n].var(0, ddof=1) + 1e-8), rtol=1e-5)
    w = layers.masked_softmax(jnp.asarray(x), jnp.asarray(mask))
    np.testing.assert_array_equal(w[1, 4:], 0.0)
    e = np.exp(x[1, :4] - x[1, :4].max(0))
    np.testing.assert_allclose(w[1, :4], e / e.sum(0), rtol=1e-5)
    np.testing.assert_allclose(
        layers.masked_mean(jnp.asarray(x), jnp.asarray(mask))[1], x[1, :4].mean(0), rtol=1e-5
    )
    # One valid frame: the unbiased variance would divide by zero; it is clamped instead.
    _, std1 = layers.masked_mean_std(jnp.asarray(x), jnp.asarray(mask[:, :1] & True), ddof=1)
    assert np.all(np.isfinite(std1))


def test_downsample_lengths_match_strided_conv_output():
    conv = nn.Conv(1, (3, 3), strides=(2, 2), padding=[(1, 1), (1, 1)])
    for length in range(1, 12):
        x = jax.ShapeDtypeStruct((1, length, 1, 1), jnp.float32)
        y, _ = jax.eval_shape(lambda x: conv.init_with_output(jax.random.key(0), x), x)
        assert y.shape[1] == int(layers.downsample_lengths(jnp.array(length), 2))


# ----------------------------------------------------------------------------------------------
# Registry and errors


def test_registry_names_and_unknown_name():
    assert {"ecapa_tdnn", "ecapa_tdnn_c512", "ecapa_tdnn_c1024", "resnet34"} <= set(models.ENCODERS)
    with pytest.raises(ValueError, match=r"unknown encoder 'ecapa'.*ecapa_tdnn.*resnet34"):
        models.create_encoder("ecapa")


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("ecapa_tdnn", {"channels": 0}, r"channels must be a positive int, got 0"),
        ("ecapa_tdnn", {"channels": -8}, r"channels must be a positive int, got -8"),
        ("ecapa_tdnn", {"channels": 64.0}, r"channels must be a positive int, got 64.0"),
        ("ecapa_tdnn", {"channels": 4}, r"channels=4 must be >= scale=8"),
        ("ecapa_tdnn", {"embed_dim": 0}, r"embed_dim must be a positive int"),
        ("ecapa_tdnn", {"kernel_size": 4}, r"kernel_size=4 must be odd"),
        ("ecapa_tdnn", {"dilations": []}, r"dilations=\(\) must be a non-empty"),
        ("ecapa_tdnn", {"dtype": "int32"}, r"dtype must be a floating dtype.*'int32'"),
        ("ecapa_tdnn", {"dtype": "bfloat17"}, r"dtype must be a floating dtype.*'bfloat17'"),
        ("ecapa_tdnn", {"chanels": 512}, r"unexpected argument\(s\) chanels; accepted: channels"),
        ("resnet34", {"channels": 32}, r"unexpected argument\(s\) channels.*m_channels"),
        ("resnet34", {"m_channels": 0}, r"m_channels must be a positive int"),
    ],
)
def test_bad_hyperparameters_raise(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.create_encoder(name, **kwargs)


def test_config_style_arguments_are_accepted():
    enc = models.create_encoder("ecapa_tdnn", channels=64, dilations=[2, 3], dtype="bfloat16")
    assert enc.dilations == (2, 3) and enc.dtype == jnp.bfloat16
    params = _shapes(enc, t=8)["params"]
    assert "layer2" in params and "layer3" not in params
    # 2 blocks of 64 channels feed the 1x1 aggregation conv.
    assert params["layer4"]["kernel"].shape == (1, 128, 1536)


@pytest.mark.parametrize(
    "feats, mask, match",
    [
        ((2, 10), None, r"feats must be \[batch, frames, features\], got shape \(2, 10\)"),
        (
            (2, 10, F),
            (2, 9),
            r"frame_mask must have shape \[batch, frames\] = \(2, 10\), got \(2, 9\)",
        ),
        ((2, 0, F), None, r"0 frames"),
    ],
)
@pytest.mark.parametrize("kind", ["ecapa", "resnet"])
def test_bad_inputs_raise(kind, feats, mask, match):
    enc, variables, eval_fn, train_fn = _setup(kind)
    m = None if mask is None else jnp.ones(mask, bool)
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(lambda v: enc.apply(v, jnp.zeros(feats), m), variables)


# ----------------------------------------------------------------------------------------------
# make_embed_fn


def test_embed_fn_matches_features_then_encoder_and_ignores_padding():
    from hamjax import frontend

    enc, variables, eval_fn, _ = _setup("ecapa")
    # A config-style features section: the training-only spec_augment entry is dropped.
    fkw = {"kind": "logmel", "n_mels": F, "spec_augment": {"max_time_width": 10}}
    embed = jax.jit(models.make_embed_fn(enc, fkw))
    rng = np.random.default_rng(0)
    wav = jnp.asarray(0.1 * rng.standard_normal((2, 8000)), jnp.float32)
    mask = layers.prefix_mask(jnp.array([8000, 5000]), 8000)
    emb = embed(variables, wav, mask)
    assert emb.shape == (2, 16) and emb.dtype == jnp.float32
    feats, fmask = frontend.compute_features(wav, mask, kind="logmel", n_mels=F)
    np.testing.assert_allclose(emb, eval_fn(variables, feats, fmask), rtol=1e-5, atol=1e-5)
    # Whatever lies in the padded samples, the embedding is the same.
    noisy = jnp.where(mask, wav, jnp.asarray(rng.standard_normal((2, 8000)), jnp.float32))
    np.testing.assert_allclose(embed(variables, noisy, mask), emb, rtol=1e-5, atol=1e-5)


def test_embed_fn_rejects_bad_feature_kwargs():
    enc = _setup("ecapa")[0]
    with pytest.raises(ValueError, match="kind"):
        models.make_embed_fn(enc, {"kind": "mfcc"})
    with pytest.raises(ValueError, match="feature_kwargs must be a mapping"):
        models.make_embed_fn(enc, [("kind", "logmel")])
