"""Tests for hamjax.losses: float64 references, margins, finite gradients, input errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.extend.core import jaxprs_in_params

from hamjax import losses, poincare

EPS = 1e-5  # the authors' epsilon

# One compiled function per (shapes, mode/kind): hyper-parameters are traced arguments, so the
# parametrised tests below share compilations (the suite runs on 2 shared cores).
HYP = jax.jit(losses.hyperbolic_logits, static_argnames="mode")
COS = jax.jit(losses.cosine_logits, static_argnames="kind")


def _hyp_loss(e, w, labels, c, mode):
    z = losses.hyperbolic_logits(e, w, labels, c=c, scale=30.0, margin=0.2, mode=mode)
    return optax.softmax_cross_entropy_with_integer_labels(z, labels).mean()


def _cos_loss(e, w, labels, kind):
    z = losses.cosine_logits(e, w, labels, scale=30.0, margin=0.2, kind=kind)
    return optax.softmax_cross_entropy_with_integer_labels(z, labels).mean()


HYP_GRADS = jax.jit(jax.value_and_grad(_hyp_loss, argnums=(0, 1, 3)), static_argnames="mode")
COS_GRADS = jax.jit(jax.value_and_grad(_cos_loss, argnums=(0, 1)), static_argnames="kind")


# ---------------------------------------------------------------------------------------------
# Float64 references.
# ---------------------------------------------------------------------------------------------
def authors_clip_logits_f64(e, w, labels, *, c, scale, margin):
    """Transcription of the authors' HAM head in float64 numpy, with its [B, C, D] tensor.

    clip every vector to radius (1 - eps)/sqrt(c); unit-curvature distance
    arcosh(1 + 2|x - w|^2 / max((1 - min(|x|^2, 1 - eps))(1 - min(|w|^2, 1 - eps)), eps)).
    """
    e = np.asarray(e, np.float64)
    w = np.asarray(w, np.float64)
    radius = (1.0 - EPS) / np.sqrt(c)

    def clip(v):
        n = np.linalg.norm(v, axis=-1, keepdims=True)
        return np.where(n > radius, v / n * radius, v)

    x, p = clip(e), clip(w)
    diff = x[:, None, :] - p[None, :, :]  # [B, C, D], as in the authors' code
    sq = np.sum(diff * diff, axis=-1)
    x2 = np.clip(np.sum(x * x, -1), 0.0, 1.0 - EPS)
    p2 = np.clip(np.sum(p * p, -1), 0.0, 1.0 - EPS)
    den = np.maximum((1.0 - x2)[:, None] * (1.0 - p2)[None, :], EPS)
    d = np.arccosh(1.0 + 2.0 * sq / den)
    one_hot = np.zeros_like(d)
    if labels is not None:
        one_hot[np.arange(len(labels)), labels] = 1.0
    return -scale * (d + margin * one_hot)


def expmap_logits_f64(e, w, labels, *, c, scale, margin):
    """Reference for mode="expmap" from poincare.dist evaluated in float64 on [B, C] pairs."""
    with jax.enable_x64(True):
        e64 = jnp.asarray(np.asarray(e, np.float64))
        w64 = jnp.asarray(np.asarray(w, np.float64))
        x = poincare.project(poincare.expmap0(e64, c=c), c=c, eps=EPS)
        p = poincare.project(poincare.expmap0(w64, c=c), c=c, eps=EPS)
        d = np.asarray(poincare.dist(x[:, None, :], p[None, :, :], c=c))
    one_hot = np.zeros_like(d)
    if labels is not None:
        one_hot[np.arange(len(labels)), labels] = 1.0
    return -scale * (d + margin * one_hot)


def cos_f64(e, w):
    e = np.asarray(e, np.float64)
    w = np.asarray(w, np.float64)
    e = e / np.linalg.norm(e, axis=-1, keepdims=True)
    w = w / np.linalg.norm(w, axis=-1, keepdims=True)
    return np.clip(e @ w.T, -1.0, 1.0)


def _rel_close(actual, expected, rtol):
    actual = np.asarray(actual, np.float64)
    np.testing.assert_array_less(np.abs(actual - expected), rtol * np.abs(expected) + 1e-30)


# ---------------------------------------------------------------------------------------------
# Inputs shaped like the real thing: BatchNorm outputs (norm ~14 at D=192), centres near 0,
# plus a few trained-like centres far from 0 and one centre sitting on its embedding.
# ---------------------------------------------------------------------------------------------
B, C, D = 6, 9, 192


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    e = rng.normal(size=(B, D)).astype(np.float32)  # |e| ~ sqrt(192) ~ 14
    e[1] *= 0.02  # one embedding inside every clipping radius used here
    w = (1e-3 * rng.normal(size=(C, D))).astype(np.float32)
    w[3] = 0.05 * rng.normal(size=D)  # |w| ~ 0.7: clipped for c >= 3, not for c = 1
    w[4] = rng.normal(size=D)  # far outside: clipped for every c
    labels = np.array([0, 3, 4, 2, 5, 8], np.int32)
    w[5] = e[4]  # embedding 4 sits exactly on (the clip of) its centre
    return e, w, labels


@pytest.mark.parametrize("c", [0.5, 1.0, 3.0, 5.0, 10.0])
def test_clip_matches_authors_float64_transcription(batch, c):
    e, w, labels = batch
    fn = HYP
    got = fn(e, w, labels, c=c, scale=30.0, margin=0.2, mode="clip")
    want = authors_clip_logits_f64(e, w, labels, c=c, scale=30.0, margin=0.2)
    assert got.shape == (B, C) and got.dtype == jnp.float32
    _rel_close(got, want, 1e-5)
    got0 = fn(e, w, None, c=c, scale=30.0, margin=0.2, mode="clip")
    _rel_close(got0, authors_clip_logits_f64(e, w, None, c=c, scale=30.0, margin=0.0), 1e-5)


def test_clip_uses_the_authors_denominator_clamp_at_c1(batch):
    # At c = 1 both points of a pair clipped to radius 1 - 1e-5 have (1-|x|^2)(1-|w|^2) ~ 4e-10,
    # so the clamp at 1e-5 decides the value; without it the distance would be ~log(1e10).
    e, w, labels = batch
    got = np.asarray(HYP(e, w, None, c=1.0, scale=1.0, mode="clip"))
    x = e[0] / np.linalg.norm(e[0]) * (1 - EPS)
    p = w[4] / np.linalg.norm(w[4]) * (1 - EPS)
    expected = np.arccosh(1 + 2 * np.sum((x - p) ** 2) / EPS)
    np.testing.assert_allclose(-got[0, 4], expected, rtol=1e-5)


@pytest.mark.parametrize("c", [0.5, 3.0])
def test_expmap_matches_float64_dist_reference(c):
    rng = np.random.default_rng(1)
    # Moderate norms: in float32 tanh(sqrt(c)|v|) saturates beyond ~9 and every such embedding
    # lands on the same projected sphere, which a float64 reference would resolve differently.
    e = (rng.normal(size=(5, 16)) / 4).astype(np.float32)
    w = (rng.normal(size=(7, 16)) / 4).astype(np.float32)
    w[6] = e[2]
    labels = np.array([1, 0, 6, 3, 3], np.int32)
    got = HYP(e, w, labels, c=c, scale=30.0, margin=0.2, mode="expmap")
    want = expmap_logits_f64(e, w, labels, c=c, scale=30.0, margin=0.2)
    # The target entry of row 2 is exactly the margin term (distance 0).
    assert float(got[2, 6]) == pytest.approx(-30.0 * 0.2, rel=1e-6)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", losses.MODES)
def test_margin_moves_only_the_target_logit(batch, mode):
    e, w, labels = batch
    kw = dict(c=3.0, scale=30.0, mode=mode)
    no_margin = np.asarray(HYP(e, w, labels, margin=0.0, **kw))
    with_margin = np.asarray(HYP(e, w, labels, margin=0.2, **kw))
    expected = no_margin.copy()
    expected[np.arange(B), labels] -= 30.0 * 0.2
    np.testing.assert_allclose(with_margin, expected, rtol=1e-6, atol=1e-4)
    scores = np.asarray(HYP(e, w, None, **kw))
    np.testing.assert_allclose(scores, no_margin, rtol=1e-5)


def test_target_distance_is_exact_where_the_matmul_form_cancels():
    # Two nearly coincident points near the boundary at c = 1: the expansion
    # |x|^2 + |w|^2 - 2 x.w loses ~all digits of |x - w|^2 ~ 1e-10 in float32, the direct
    # difference used for the target column does not.
    rng = np.random.default_rng(2)
    direction = rng.normal(size=32)
    direction /= np.linalg.norm(direction)
    e = (0.6 * direction)[None].astype(np.float32)
    w = np.stack([0.6 * direction + 1e-5 * rng.normal(size=32), -direction]).astype(np.float32)
    got = HYP(e, w, np.array([0]), c=1.0, scale=1.0, mode="clip")
    want = authors_clip_logits_f64(e, w, [0], c=1.0, scale=1.0, margin=0.0)
    np.testing.assert_allclose(np.asarray(got)[0, 0], want[0, 0], rtol=1e-4)


def test_never_materialises_a_batch_class_dim_tensor():
    b, c, d = 8, 16, 32  # distinct sizes so that a [B, C, D] intermediate is recognisable

    def loss(e, w, labels):
        z = losses.hyperbolic_logits(e, w, labels, c=3.0, scale=30.0, margin=0.2, mode="clip")
        z2 = losses.hyperbolic_logits(e, w, labels, c=3.0, scale=30.0, margin=0.2, mode="expmap")
        ce = optax.softmax_cross_entropy_with_integer_labels
        return jnp.mean(ce(z, labels) + ce(z2, labels))

    args = (jnp.ones((b, d)), jnp.ones((c, d)), jnp.zeros((b,), jnp.int32))
    jaxpr = jax.make_jaxpr(jax.value_and_grad(loss, argnums=(0, 1)))(*args)

    def sizes(jx):
        for eqn in jx.eqns:
            for var in eqn.outvars:
                yield int(np.prod(var.aval.shape)) if hasattr(var.aval, "shape") else 0
            for sub in jaxprs_in_params(eqn.params):
                yield from sizes(sub)

    # O(B C + (B + C) D): the largest intermediates are [C, 2D] operand copies of the matmul.
    largest = max(sizes(jaxpr.jaxpr))
    assert largest <= 2 * max(b * c, b * d, c * d) < b * c * d, largest


# ---------------------------------------------------------------------------------------------
# Cosine logits.
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cos_batch():
    rng = np.random.default_rng(3)
    e = rng.normal(size=(8, 12)).astype(np.float32)
    w = rng.normal(size=(10, 12)).astype(np.float32)
    labels = rng.integers(0, 10, size=8).astype(np.int32)
    return e, w, labels


@pytest.mark.parametrize("kind", ["am", "aam"])
def test_zero_margin_gives_scaled_cosine(cos_batch, kind):
    e, w, labels = cos_batch
    got = COS(e, w, labels, scale=30.0, margin=0.0, kind=kind)
    np.testing.assert_allclose(np.asarray(got), 30.0 * cos_f64(e, w), atol=3e-5)
    scores = COS(e, w, None, scale=30.0, kind=kind)
    np.testing.assert_allclose(np.asarray(scores), 30.0 * cos_f64(e, w), atol=3e-5)


def test_am_and_aam_target_logits(cos_batch):
    e, w, labels = cos_batch
    m, s = 0.3, 30.0
    cos = cos_f64(e, w)
    rows = np.arange(len(labels))
    am = np.asarray(COS(e, w, labels, scale=s, margin=m, kind="am"))
    want = s * cos
    want[rows, labels] = s * (cos[rows, labels] - m)
    np.testing.assert_allclose(am, want, atol=3e-5)
    aam = np.asarray(COS(e, w, labels, scale=s, margin=m, kind="aam"))
    theta = np.arccos(cos[rows, labels])
    assert np.all(theta + m < np.pi)  # the main branch
    want[rows, labels] = s * np.cos(theta + m)
    np.testing.assert_allclose(aam, want, atol=1e-4)


def test_aam_fallback_beyond_pi():
    # theta = pi (embedding opposite its class weight): cos(theta + m) would increase again, so
    # the logit falls back to the monotone cos(theta) - m sin(pi - m) = -1 - m sin(m).
    m = 0.2
    w = np.eye(3, dtype=np.float32)
    e = -w[:1]
    got = COS(e, w, np.array([0]), scale=1.0, margin=m, kind="aam")
    np.testing.assert_allclose(float(got[0, 0]), -1.0 - m * np.sin(np.pi - m), rtol=1e-6)


def test_ram_zeroes_exactly_the_satisfied_non_targets(cos_batch):
    e, w, labels = cos_batch
    s, m = 10.0, 0.2
    am = np.asarray(COS(e, w, labels, scale=s, margin=m, kind="am"), np.float64)
    ram = np.asarray(COS(e, w, labels, scale=s, margin=m, kind="ram"))
    rows = np.arange(len(labels))
    z_target = am[rows, labels][:, None]
    below = am < z_target
    is_target = np.zeros_like(below)
    is_target[rows, labels] = True
    assert 0 < below.sum() < below.size - len(rows)  # both cases occur in this batch
    assert np.all(ram[below | is_target] == 0.0)
    np.testing.assert_allclose(
        ram[~below & ~is_target], (am - z_target)[~below & ~is_target], atol=1e-4
    )
    # The loss is log(1 + sum_{j != y} exp(s max(0, cos_j + m - cos_y))).
    cos = cos_f64(e, w)
    hinge = np.maximum(0.0, cos + m - cos[rows, labels][:, None])
    hinge[rows, labels] = -np.inf
    want = np.log1p(np.sum(np.exp(s * hinge), axis=-1))
    got = optax.softmax_cross_entropy_with_integer_labels(jnp.asarray(ram), labels)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)


def test_ram_sends_no_gradient_to_classes_that_respect_the_margin(cos_batch):
    e, w, labels = cos_batch
    s, m = 10.0, 0.2

    def loss(w):
        z = losses.cosine_logits(e, w, labels, scale=s, margin=m, kind="ram")
        return optax.softmax_cross_entropy_with_integer_labels(z, labels).sum()

    grad = np.asarray(jax.jit(jax.grad(loss))(jnp.asarray(w)))
    cos = cos_f64(e, w)
    rows = np.arange(len(labels))
    violating = cos + m > cos[rows, labels][:, None]
    violating[rows, labels] = False
    pushed = violating.any(axis=0) | np.isin(np.arange(w.shape[0]), labels[violating.any(1)])
    assert np.all(grad[~pushed] == 0.0)
    assert np.all(np.abs(grad[pushed]).sum(-1) > 0)


# ---------------------------------------------------------------------------------------------
# Finite values and gradients at the singular points.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", losses.MODES)
@pytest.mark.parametrize("c", [1.0, 3.0, 10.0])
def test_finite_when_an_embedding_sits_on_its_centre(mode, c):
    rng = np.random.default_rng(4)
    e = rng.normal(size=(4, 16)).astype(np.float32)
    e[1] *= 1e-3  # well inside the ball
    w = rng.normal(size=(5, 16)).astype(np.float32)
    labels = np.array([0, 1, 2, 3], np.int32)
    w[:4] = e  # every embedding exactly on its centre (clipped copies coincide too)
    value, grads = HYP_GRADS(e, w, labels, jnp.float32(c), mode=mode)
    assert np.isfinite(float(value))
    for g in grads:
        assert np.all(np.isfinite(np.asarray(g)))


@pytest.mark.parametrize("kind", losses.COSINE_KINDS)
def test_cosine_finite_at_plus_minus_one_and_zero_embedding(kind):
    w = np.eye(4, dtype=np.float32)
    e = np.stack([w[0], -w[1], 2 * w[2], np.zeros(4, np.float32)])  # cos = 1, -1, 1, 0
    labels = np.array([0, 1, 2, 3], np.int32)
    value, (ge, gw) = COS_GRADS(e, w, labels, kind=kind)
    assert np.isfinite(float(value))
    assert np.all(np.isfinite(np.asarray(ge))) and np.all(np.isfinite(np.asarray(gw)))


@pytest.mark.parametrize("mode", losses.MODES)
def test_traced_curvature_gets_a_gradient(mode):
    rng = np.random.default_rng(5)
    e = (rng.normal(size=(4, 16)) / 3).astype(np.float32)
    w = (rng.normal(size=(5, 16)) / 3).astype(np.float32)
    labels = np.array([0, 1, 2, 0], np.int32)
    _, (_, _, g) = HYP_GRADS(e, w, labels, jnp.float32(3.0), mode=mode)
    assert np.isfinite(float(g)) and float(g) != 0.0


def test_to_ball_modes():
    v = jnp.asarray([[14.0, 0.0], [0.1, 0.0]])
    clip = losses.to_ball(v, c=3.0, mode="clip")
    np.testing.assert_allclose(
        np.asarray(clip), [[(1 - EPS) / np.sqrt(3), 0.0], [0.1, 0.0]], rtol=1e-6
    )
    exp = losses.to_ball(v, c=3.0, mode="expmap")
    np.testing.assert_allclose(float(exp[1, 0]), np.tanh(np.sqrt(3) * 0.1) / np.sqrt(3), rtol=1e-6)
    assert float(jnp.linalg.norm(exp[0])) < 1 / np.sqrt(3)


def test_bfloat16_embeddings_are_computed_in_float32(batch):
    e, w, labels = batch
    z = HYP(jnp.asarray(e, jnp.bfloat16), w, labels, c=3.0, scale=30.0)
    assert z.dtype == jnp.float32 and np.all(np.isfinite(np.asarray(z)))


# ---------------------------------------------------------------------------------------------
# Errors name the field and the value.
# ---------------------------------------------------------------------------------------------
_E, _W, _Y = np.ones((2, 3), np.float32), np.ones((4, 3), np.float32), np.array([0, 1])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(c=0.0), "c must be a finite number > 0, got 0.0"),
        (dict(c=-1.0), "c must be"),
        (dict(scale=0.0), "scale must be a finite number > 0"),
        (dict(scale=float("nan")), "scale must be"),
        (dict(margin=-0.1), "margin must be a finite number >= 0, got -0.1"),
        (dict(mode="exp"), r"mode must be one of \('clip', 'expmap'\), got 'exp'"),
        (dict(c=np.ones(2)), "c must be a scalar"),
    ],
)
def test_hyperbolic_bad_hyperparameters(kwargs, match):
    args = dict(c=3.0, scale=30.0, margin=0.2, mode="clip") | kwargs
    with pytest.raises(ValueError, match=match):
        losses.hyperbolic_logits(_E, _W, _Y, **args)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(kind="arc"), r"kind must be one of \('am', 'aam', 'ram'\), got 'arc'"),
        (dict(scale=-30.0), "scale must be a finite number > 0, got -30.0"),
        (dict(margin=-1.0), "margin must be a finite number >= 0"),
    ],
)
def test_cosine_bad_hyperparameters(kwargs, match):
    args = dict(scale=30.0, margin=0.2, kind="am") | kwargs
    with pytest.raises(ValueError, match=match):
        losses.cosine_logits(_E, _W, _Y, **args)


@pytest.mark.parametrize(
    ("e", "w", "y", "match"),
    [
        (np.ones(3), _W, _Y, r"embeddings must have shape \[B, D\]"),
        (_E, np.ones((4, 5)), _Y, "must share D"),
        (_E, np.ones(3), _Y, r"must have shape \[C, D\]"),
        (_E, _W, np.array([0, 1, 2]), r"labels must have shape \[B\] = \(2,\)"),
        (_E, _W, np.array([0.0, 1.0]), "labels must be integers"),
    ],
)
def test_bad_shapes_and_labels(e, w, y, match):
    with pytest.raises(ValueError, match=match):
        losses.hyperbolic_logits(e, w, y, c=1.0, scale=1.0)
    with pytest.raises(ValueError, match=match.replace("centres", "weights")):
        losses.cosine_logits(e, w, y, scale=1.0)
