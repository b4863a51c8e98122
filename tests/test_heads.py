"""Tests for hamjax.heads: registry, initialisation, outputs, curvature, schedule, learning."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hamjax import heads, losses

NAMES = sorted(heads.HEADS)
B, D, C = 8, 16, 5


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    e = rng.normal(size=(B, D)).astype(np.float32)
    y = rng.integers(0, C, size=B).astype(np.int32)
    return jnp.asarray(e), jnp.asarray(y)


# ---------------------------------------------------------------------------------------------
# Registry.
# ---------------------------------------------------------------------------------------------
def test_registry_has_the_contract_names():
    assert set(heads.HEADS) == {
        "softmax",
        "softmax_scaled",
        "am",
        "aam",
        "ram",
        "h_softmax",
        "ham_softmax",
        "combined",
        "h_mlr",
    }


@pytest.mark.parametrize("name", NAMES)
def test_every_head_builds_and_returns_a_head_output(name, data):
    e, y = data
    # The whole head config section is accepted by every head (irrelevant fields are ignored).
    head = heads.create_head(
        name, C, scale=30.0, margin=0.2, c=3.0, mode="clip", learn_c=False, margin_warmup_steps=5
    )

    @jax.jit
    def run(rng):
        variables = head.init(rng, e, y)
        out = head.apply(variables, e, y)
        return out, heads.head_loss(out, y), head.apply(variables, e)  # labels=None: no margin

    out, loss, scores_only = run(jax.random.key(0))
    assert isinstance(out, heads.HeadOutput)
    assert out.scores.shape == (B, C) and out.scores.dtype == jnp.float32
    n_terms = 2 if name == "combined" else 1
    assert len(out.terms) == n_terms
    for weight, logits in out.terms:
        assert isinstance(weight, float) and logits.shape == (B, C)
    assert loss.shape == (B,) and np.all(np.isfinite(np.asarray(loss)))
    np.testing.assert_allclose(
        np.asarray(scores_only.scores), np.asarray(out.scores), rtol=1e-5, atol=1e-4
    )


def test_unknown_head_lists_the_valid_names():
    with pytest.raises(ValueError, match="unknown head 'arcface'; valid heads are") as info:
        heads.create_head("arcface", 10)
    for name in NAMES:
        assert repr(name) in str(info.value)


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("am", dict(margn=0.2), r"unknown head option\(s\) \['margn'\] for head 'am'"),
        ("am", dict(scale=0.0), "head field scale must be a finite number > 0, got 0.0"),
        ("aam", dict(margin=-0.2), "head field margin must be a finite number >= 0, got -0.2"),
        ("ham_softmax", dict(c=0.0), "head field c must be a finite number > 0, got 0.0"),
        ("h_softmax", dict(c=-3.0), "head field c must be"),
        ("ham_softmax", dict(mode="tanh"), r"head field mode must be one of \('clip', 'expmap'\)"),
        ("combined", dict(euclidean="cos"), "head field euclidean must be one of"),
        ("combined", dict(weights=(0.3,)), "head field weights must be two finite numbers"),
        ("combined", dict(weights=(0.3, -1.0)), "head field weights must be two"),
    ],
)
def test_bad_head_options_raise_at_creation(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        heads.create_head(name, 10, **kwargs)


@pytest.mark.parametrize("num_classes", [0, -3, 2.5])
def test_bad_num_classes(num_classes):
    with pytest.raises(ValueError, match="num_classes must be an integer >= 1"):
        heads.create_head("am", num_classes)


def test_registry_defaults_follow_the_authors():
    am = heads.create_head("am", 10)
    assert (am.kind, am.scale, am.margin) == ("am", 30.0, 0.2)
    h = heads.create_head("h_softmax", 10, margin=0.2)  # H-Softmax has no margin by definition
    assert (h.c, h.margin, h.mode) == (5.0, 0.0, "clip")
    ham = heads.create_head("ham_softmax", 10)
    assert (ham.c, ham.margin, ham.scale) == (3.0, 0.2, 30.0)
    combined = heads.create_head("combined", 10, weights=[0.5, 0.5])
    assert (combined.euclidean, combined.weights) == ("ram", (0.5, 0.5))
    assert heads.create_head("combined", 10).weights == (0.3, 0.7)
    scaled = heads.create_head("softmax_scaled", 10, margin=0.3)
    assert (scaled.kind, scaled.margin) == (None, 0.0)


# ---------------------------------------------------------------------------------------------
# Parameters and outputs.
# ---------------------------------------------------------------------------------------------
def test_initialisations():
    e = jnp.ones((2, 64))
    cos_params = jax.jit(heads.create_head("am", 200).init)(jax.random.key(1), e)["params"]
    weights = np.asarray(cos_params["weights"])
    assert weights.shape == (200, 64)
    # Xavier normal: std = sqrt(2 / (fan_in + fan_out)) (truncated, as flax's initializer is).
    np.testing.assert_allclose(weights.std(), np.sqrt(2.0 / 264), rtol=0.1)
    hyp_params = jax.jit(heads.create_head("ham_softmax", 200).init)(jax.random.key(1), e)["params"]
    centres = np.asarray(hyp_params["centres"])
    assert centres.shape == (200, 64)
    np.testing.assert_allclose(centres.std(), 1e-3, rtol=0.05)
    assert abs(centres.mean()) < 1e-4


def test_head_logits_are_the_loss_functions(data):
    e, y = data

    @jax.jit
    def check(rng):
        ham = heads.create_head("ham_softmax", C, mode="expmap")
        p_ham = ham.init(rng, e, y)["params"]
        aam = heads.create_head("aam", C)
        p_aam = aam.init(rng, e, y)["params"]
        return (
            ham.apply({"params": p_ham}, e, y, margin_scale=0.5).terms[0][1],
            losses.hyperbolic_logits(
                e, p_ham["centres"], y, c=3.0, scale=30.0, margin=0.1, mode="expmap"
            ),
            aam.apply({"params": p_aam}, e, y, margin_scale=0.25).terms[0][1],
            losses.cosine_logits(e, p_aam["weights"], y, scale=30.0, margin=0.05, kind="aam"),
        )

    got_ham, want_ham, got_aam, want_aam = check(jax.random.key(2))
    np.testing.assert_allclose(np.asarray(got_ham), np.asarray(want_ham), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(got_aam), np.asarray(want_aam), rtol=1e-6)


@pytest.mark.parametrize("name", ["am", "aam", "ham_softmax"])
def test_margin_scale_zero_removes_the_margin(name, data):
    e, y = data
    head = heads.create_head(name, C)
    variables = jax.jit(head.init)(jax.random.key(3), e, y)
    apply = jax.jit(head.apply)
    out = apply(variables, e, y, 0.0)
    np.testing.assert_allclose(
        np.asarray(out.terms[0][1]), np.asarray(out.scores), rtol=1e-5, atol=1e-4
    )
    with_margin = apply(variables, e, y, 1.0)
    assert not np.allclose(np.asarray(with_margin.terms[0][1]), np.asarray(out.scores))


def test_combined_is_the_weighted_sum_of_its_parts(data):
    e, y = data
    head = heads.create_head("combined", C, mode="expmap")

    @jax.jit
    def check(rng):
        params = head.init(rng, e, y)["params"]
        out = head.apply({"params": params}, e, y)
        ram = losses.cosine_logits(
            e, params["euclidean_head"]["weights"], y, scale=30.0, margin=0.2, kind="ram"
        )
        centres = params["hyperbolic_head"]["centres"]
        ham = losses.hyperbolic_logits(e, centres, y, c=3.0, scale=30.0, margin=0.2, mode="expmap")
        ce = optax.softmax_cross_entropy_with_integer_labels
        want = 0.3 * ce(ram, y) + 0.7 * ce(ham, y)
        scores = losses.hyperbolic_logits(e, centres, None, c=3.0, scale=30.0, mode="expmap")
        return params, out, want, scores

    params, out, want, scores = check(jax.random.key(4))
    assert set(params) == {"euclidean_head", "hyperbolic_head"}
    assert [w for w, _ in out.terms] == [0.3, 0.7]
    np.testing.assert_allclose(np.asarray(heads.head_loss(out, y)), np.asarray(want), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(out.scores), np.asarray(scores), rtol=1e-6)


@pytest.mark.parametrize("name", ["h_softmax", "ham_softmax", "combined"])
def test_curvature_and_ball_embed_methods(name, data):
    e, y = data
    head = heads.create_head(name, C, c=2.5, learn_c=True, mode="clip")
    variables = jax.jit(head.init)(jax.random.key(5), e, y)
    c = jax.jit(lambda v: head.apply(v, method="curvature"))(variables)
    assert c.shape == () and float(c) == pytest.approx(2.5, rel=1e-6)
    ball = jax.jit(lambda v, e: head.apply(v, e, method="ball_embed"))(variables, e)
    np.testing.assert_allclose(
        np.asarray(ball), np.asarray(losses.to_ball(e, c=2.5, mode="clip")), rtol=1e-6
    )
    assert np.all(np.linalg.norm(np.asarray(ball), axis=-1) < 1 / np.sqrt(2.5))


def test_learnable_curvature_gets_a_gradient_and_reads_back(data):
    e, y = data
    head = heads.create_head("ham_softmax", C, c=3.0, learn_c=True, mode="expmap")
    fixed = heads.create_head("ham_softmax", C, c=3.0, mode="expmap")

    @jax.jit
    def check(rng):
        params = head.init(rng, e / 4, y)["params"]

        def loss(p):
            return heads.head_loss(head.apply({"params": p}, e / 4, y), y).mean()

        grads = jax.grad(loss)(params)
        moved = dict(params, c_raw=params["c_raw"] + 1.0)
        c_moved = head.apply({"params": moved}, method="curvature")
        return params, grads, c_moved, fixed.init(rng, e, y)["params"]

    params, grads, c_moved, fixed_params = check(jax.random.key(6))
    assert "c_raw" in params and "c_raw" not in fixed_params
    assert np.isfinite(float(grads["c_raw"])) and float(grads["c_raw"]) != 0.0
    # c = softplus(raw): raw + 1 gives softplus(softplus^-1(3) + 1).
    want = np.log1p(np.exp(np.log(np.expm1(3.0)) + 1.0))
    assert float(c_moved) == pytest.approx(want, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# Margin schedule.
# ---------------------------------------------------------------------------------------------
def test_margin_schedule_ramps_linearly():
    schedule = heads.margin_schedule(100, start_step=20)
    steps = jnp.array([0, 20, 70, 120, 1000])
    np.testing.assert_allclose(np.asarray(jax.vmap(schedule)(steps)), [0, 0, 0.5, 1, 1], atol=1e-6)
    assert float(jax.jit(schedule)(45)) == pytest.approx(0.25)
    no_warmup = heads.margin_schedule(0)
    assert float(no_warmup(0)) == 1.0 and float(jax.jit(no_warmup)(7)) == 1.0


@pytest.mark.parametrize(
    ("args", "name"), [((-1,), "warmup_steps"), ((5, -2), "start_step"), ((2.5,), "warmup_steps")]
)
def test_margin_schedule_rejects_bad_steps(args, name):
    with pytest.raises(ValueError, match=f"{name} must be an integer >= 0"):
        heads.margin_schedule(*args)


# ---------------------------------------------------------------------------------------------
# Every head learns a small separable problem (one compilation per head).
# ---------------------------------------------------------------------------------------------
class _Toy(nn.Module):
    """A linear "encoder" followed by a head, so that embeddings move as in real training."""

    head: nn.Module

    @nn.compact
    def __call__(self, x, labels=None, margin_scale=1.0):
        return self.head(nn.Dense(8, name="encoder")(x), labels, margin_scale)


_K, _PER_CLASS, _IN = 6, 24, 10  # classes, examples per class, input dims


@pytest.fixture(scope="module")
def clusters():
    rng = np.random.default_rng(7)
    means = rng.normal(scale=3.0, size=(_K, _IN))
    labels = np.repeat(np.arange(_K), _PER_CLASS)
    x = means[labels] + rng.normal(size=(labels.size, _IN))
    x_test = means[labels] + rng.normal(size=(labels.size, _IN))
    return (
        jnp.asarray(x, jnp.float32),
        jnp.asarray(x_test, jnp.float32),
        jnp.asarray(labels, jnp.int32),
    )


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [(n, {}) for n in NAMES] + [("ham_softmax", {"mode": "expmap", "learn_c": True})],
    ids=[*NAMES, "ham_softmax-expmap-learn_c"],
)
def test_every_head_learns_separable_clusters(name, kwargs, clusters):
    x, x_test, y = clusters
    model = _Toy(heads.create_head(name, _K, **kwargs))
    schedule = heads.margin_schedule(50)
    optimizer = optax.adam(1e-2)
    steps = 300

    # LLVM optimisation level 0 halves the compile time that dominates this test (the run
    # itself takes ~0.1 s); numerics are unaffected.
    @functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
    def train(rng):
        params = model.init(rng, x, y)["params"]

        def step(carry, t):
            params, opt_state = carry

            def loss_fn(p):
                out = model.apply({"params": p}, x, y, margin_scale=schedule(t))
                return heads.head_loss(out, y).mean()

            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, _), losses_ = jax.lax.scan(
            step, (params, optimizer.init(params)), jnp.arange(steps)
        )
        scores = model.apply({"params": params}, x_test).scores
        return losses_, jnp.mean(jnp.argmax(scores, -1) == y)

    loss_curve, accuracy = train(jax.random.key(0))
    loss_curve = np.asarray(loss_curve)
    assert np.all(np.isfinite(loss_curve))
    assert loss_curve[-10:].mean() < loss_curve[:10].mean()
    assert float(accuracy) >= 0.97, (name, float(accuracy))
