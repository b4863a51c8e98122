"""The hyperbolic heads of issue 16: ball centres (Riemannian Adam), the Poincaré-MLR head
``h_mlr`` with its margin, the feature map (clip + learned scale) and the scoring that follows
it; their config fields, recipes and errors; the trainer end to end with them."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hamjax import config_lib, embeddings, heads, losses, nn, optim, scoring, train_state

B, D, C = 12, 8, 5


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    # Norms from ~0.1 to ~30: small ones stay inside any clip, large ones are clipped.
    e = rng.normal(size=(B, D)) * np.geomspace(0.03, 10.0, B)[:, None]
    y = rng.integers(0, C, size=B)
    return jnp.asarray(e, jnp.float32), jnp.asarray(y, jnp.int32)


# ---------------------------------------------------------------------------------------------
# float64 references (numpy).
# ---------------------------------------------------------------------------------------------
def _mobius_add(a, b, c):
    ab = np.sum(a * b, -1, keepdims=True)
    a2, b2 = np.sum(a * a, -1, keepdims=True), np.sum(b * b, -1, keepdims=True)
    return ((1 + 2 * c * ab + c * b2) * a + (1 - c * a2) * b) / (1 + 2 * c * ab + c * c * a2 * b2)


def _expmap0(v, c):
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.tanh(np.sqrt(c) * n) * v / (np.sqrt(c) * n)


def _tangent(e, c, clip, scale):
    v = np.asarray(e, np.float64) * (1.0 if scale is None else scale)
    if clip > 0:
        n = np.linalg.norm(v, axis=-1, keepdims=True)
        v = v * np.minimum(1.0, clip / np.sqrt(c) / n)
    return v


def _gyroplane_distance(x, normals, offsets, c):
    """Ganea et al.'s signed distance from ``x [B, D]`` to the gyroplane through
    ``p_k = expmap0(r_k n_k / |n_k|)`` with normal ``n_k`` (its direction is kept by the
    radial transport from 0 to ``p_k``): ``arsinh(2 sqrt(c) <m, a> / ((1 - c|m|^2)|a|))/sqrt(c)``
    with ``m = (-p_k) + x`` (Möbius addition). An independent formula, not HNN++'s."""
    out = np.zeros((x.shape[0], normals.shape[0]))
    for k, (n, r) in enumerate(zip(normals, offsets, strict=True)):
        a = n / np.linalg.norm(n)
        m = _mobius_add(-_expmap0(r * a, c)[None], x, c)
        out[:, k] = np.arcsinh(2 * np.sqrt(c) * (m @ a) / (1 - c * np.sum(m * m, -1)))
    return out / np.sqrt(c)


def _ball_dist(x, y, c):
    num = 2 * c * np.sum((x - y) ** 2, -1)
    den = (1 - c * np.sum(x * x, -1)) * (1 - c * np.sum(y * y, -1))
    return np.arccosh(1 + num / den) / np.sqrt(c)


# ---------------------------------------------------------------------------------------------
# h_mlr: logits and margin.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("c", [0.3, 1.0, 3.0])
def test_mlr_logits_match_the_gyroplane_distance_in_float64(c):
    rng = np.random.default_rng(int(10 * c))
    e = rng.normal(size=(B, D)) * 0.4
    normals = rng.normal(size=(C, D)) * rng.uniform(0.1, 5.0, size=(C, 1))  # norms do not count
    offsets = rng.normal(size=C) * 0.3
    y = rng.integers(0, C, size=B)
    s, m = 30.0, 0.2
    ref = _gyroplane_distance(_expmap0(e, c), normals, offsets, c)
    with jax.enable_x64(True):
        scores = losses.mlr_logits(e, normals, offsets, None, c=c, scale=s)
        logits = losses.mlr_logits(e, normals, offsets, y, c=c, scale=s, margin=m)
        assert scores.dtype == logits.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(scores), s * ref, rtol=1e-12, atol=1e-11)
    target = np.eye(C)[y]
    np.testing.assert_allclose(np.asarray(logits), s * (ref - m * target), rtol=1e-12, atol=1e-11)
    # And in float32, the head's precision.
    got32 = losses.mlr_logits(jnp.asarray(e, jnp.float32), normals, offsets, y, c=c, scale=s,
                              margin=m)  # fmt: skip
    np.testing.assert_allclose(np.asarray(got32), s * (ref - m * target), rtol=1e-4, atol=1e-4)


def test_mlr_logits_are_hnnpp_logits_over_their_normal_norms():
    """m = 0: HNN++'s MLR logit 2 |z_k| d(x, H_k) (hamjax.nn.poincare_mlr) divided by 2 |z_k|."""
    rng = np.random.default_rng(1)
    e = jnp.asarray(rng.normal(size=(B, D)) * 0.5, jnp.float32)
    z = jnp.asarray(rng.normal(size=(C, D)) * 3.0, jnp.float32)
    r = jnp.asarray(rng.normal(size=C) * 0.2, jnp.float32)
    x = losses.to_ball(e, c=2.0, mode="expmap")
    hnnpp = nn.poincare_mlr(x, z.T, r, c=2.0) / (2 * jnp.linalg.norm(z, axis=-1))
    got = losses.mlr_logits(e, z, r, None, c=2.0, scale=1.0)
    np.testing.assert_allclose(np.asarray(got), np.asarray(hnnpp), rtol=1e-5, atol=1e-6)


def test_h_mlr_head_margin_warm_up_and_scores(data):
    e, y = data
    head = heads.create_head("h_mlr", C, margin=0.3, c=2.0, feature_clip=1.0, feature_scale=0.2)
    variables = jax.jit(head.init)(jax.random.key(0), e, y)
    params = variables["params"]
    assert set(params) == {"normals", "offsets", "log_feature_scale"}
    assert params["normals"].shape == (C, D) and params["offsets"].shape == (C,)
    # Non-zero offsets, so that the test sees them.
    params = dict(params, offsets=jnp.linspace(-0.2, 0.3, C))

    def run(scale):
        return head.apply({"params": params}, e, y, margin_scale=scale)

    full, half, none = run(1.0), run(0.5), run(0.0)
    target = np.eye(C)[np.asarray(y)]
    v = _tangent(e, 2.0, 1.0, float(np.exp(params["log_feature_scale"])))
    ref = 30.0 * _gyroplane_distance(_expmap0(v, 2.0), np.asarray(params["normals"], np.float64),
                                     np.asarray(params["offsets"], np.float64), 2.0)  # fmt: skip
    for out, scale in ((full, 1.0), (half, 0.5), (none, 0.0)):
        ((weight, logits),) = out.terms
        assert weight == 1.0
        np.testing.assert_allclose(np.asarray(logits), ref - 30.0 * 0.3 * scale * target,
                                   rtol=1e-4, atol=1e-4)  # fmt: skip
        np.testing.assert_allclose(np.asarray(out.scores), ref, rtol=1e-4, atol=1e-4)
    # Margin-free scores without labels; margin 0 is the plain (scaled, normalised) MLR.
    np.testing.assert_allclose(np.asarray(head.apply({"params": params}, e).scores), ref,
                               rtol=1e-4, atol=1e-4)  # fmt: skip
    plain = heads.create_head("h_mlr", C, c=2.0, feature_clip=1.0, feature_scale=0.2)
    out = plain.apply({"params": params}, e, y)
    np.testing.assert_allclose(np.asarray(out.terms[0][1]), np.asarray(out.scores))


def test_h_mlr_is_registered_hyperbolic_and_expmap():
    assert "h_mlr" in heads.HEADS and heads.is_hyperbolic("h_mlr")
    head = heads.create_head("h_mlr", 7, mode="clip", centres="ball")  # fields of other heads
    assert (head.mode, head.c, head.scale, head.margin) == ("expmap", 1.0, 30.0, 0.0)


# ---------------------------------------------------------------------------------------------
# The feature map: clip and learned scale.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "c", "clip", "scale"),
    [
        ("ham_softmax", 3.0, 1.0, None),
        ("ham_softmax", 3.0, 1.0, 0.05),
        ("h_softmax", 0.5, 3.0, None),
        ("h_mlr", 1.0, 0.5, 0.3),
        ("h_mlr", 10.0, 2.0, 2.0),
        ("combined", 3.0, 1.0, 0.05),
    ],
)
def test_feature_clip_keeps_radii_inside_and_spread(name, c, clip, scale, data):
    e, y = data  # |e| from ~0.1 (inside every clip here) to ~30 (clipped)
    kwargs = dict(c=c, feature_clip=clip, feature_scale=scale or 0.0)
    if name != "h_mlr":
        kwargs["mode"] = "expmap"
    head = heads.create_head(name, C, **kwargs)
    variables = jax.jit(head.init)(jax.random.key(1), e, y)
    ball = np.asarray(jax.jit(lambda v, e: head.apply(v, e, method="ball_embed"))(variables, e))
    radius = np.sqrt(c) * np.linalg.norm(ball.astype(np.float64), axis=-1)  # units of 1/sqrt(c)
    assert ball.dtype == np.float32
    assert np.all(radius <= np.tanh(clip) + 1e-6) and np.all(radius < 1.0)
    assert np.ptp(radius) > 1e-2, radius  # not all on one sphere
    ref = _expmap0(_tangent(e, c, clip, scale), c)
    np.testing.assert_allclose(ball, ref, rtol=1e-5, atol=1e-6)
    # Without the map, float32 expmap0 puts large embeddings on the (projected) boundary: at
    # 100x (|e| from ~10, a BatchNorm output's size) every one of them, at one radius.
    bare = heads.create_head(name, C, c=c, **({} if name == "h_mlr" else {"mode": "expmap"}))
    bare_vars = jax.jit(bare.init)(jax.random.key(1), e, y)
    on_edge = np.asarray(bare.apply(bare_vars, 100 * e, method="ball_embed"), np.float64)
    assert np.ptp(np.sqrt(c) * np.linalg.norm(on_edge, axis=-1)) < 1e-6


def test_learned_feature_scale_gets_a_gradient_and_starts_at_its_value(data):
    e, y = data
    head = heads.create_head("ham_softmax", C, mode="expmap", feature_clip=1.0, feature_scale=0.05)
    params = head.init(jax.random.key(2), e, y)["params"]
    assert float(head.apply({"params": params}, method="embedding_scale")) == pytest.approx(0.05)
    grads = jax.grad(lambda p: heads.head_loss(head.apply({"params": p}, e, y), y).mean())(params)
    assert np.isfinite(float(grads["log_feature_scale"]))
    assert float(grads["log_feature_scale"]) != 0.0


def test_tangent_features_is_a_radial_clip():
    v = jnp.asarray([[3.0, 4.0], [0.03, 0.04], [0.0, 0.0]])
    out = np.asarray(losses.tangent_features(v, c=4.0, clip=1.0, scale=2.0))
    np.testing.assert_allclose(out, [[0.3, 0.4], [0.06, 0.08], [0.0, 0.0]], rtol=1e-6)
    grad = jax.grad(lambda v: losses.tangent_features(v, c=4.0, clip=1.0).sum())(v)
    assert np.all(np.isfinite(np.asarray(grad)))  # also at the zero vector
    with pytest.raises(ValueError, match="clip must be a finite number >= 0"):
        losses.tangent_features(v, c=1.0, clip=-1.0)


# ---------------------------------------------------------------------------------------------
# Scoring follows the head's map.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("h_mlr", dict(c=2.0, feature_clip=1.0, feature_scale=0.2)),
        ("h_mlr", dict(c=1.0)),
        ("ham_softmax", dict(c=3.0, mode="expmap", feature_clip=0.8)),
        ("combined", dict(c=3.0, mode="expmap", feature_clip=1.0, feature_scale=0.1)),
    ],
)
def test_poincare_scoring_uses_the_heads_map_and_the_radius(name, kwargs, data):
    e, y = data
    head = heads.create_head(name, C, **kwargs)
    params = jax.jit(head.init)(jax.random.key(4), e, y)["params"]
    if kwargs.get("feature_scale"):
        leaf = params["hyperbolic_head"] if name == "combined" else params
        leaf["log_feature_scale"] = jnp.log(jnp.float32(0.37))  # a "trained" value
    geo = scoring.ball_geometry(head, params, name)
    c = kwargs["c"]
    scale = 0.37 if kwargs.get("feature_scale") else None
    assert geo.mode == "expmap" and geo.c == pytest.approx(c)
    assert geo.feature_clip == kwargs.get("feature_clip", 0.0)
    assert geo.feature_scale == (None if scale is None else pytest.approx(scale))

    rng = np.random.default_rng(5)
    # |e| up to ~3: unclipped, d(0, x) = 2|e| stays where float32 is accurate (GEOMETRY.md).
    full = (rng.normal(size=(10, D)) * rng.uniform(0.05, 1.0, size=(10, 1))).astype(np.float32)
    # One direction, two radii inside every clip here: cosine 1, two different ball points.
    full[0] = 0.1 * full[0] / np.linalg.norm(full[0])
    full[1] = 3 * full[0]
    emb = embeddings.Embeddings(tuple(f"u{i}" for i in range(10)), full, None)
    enroll, test = np.array([0, 0, 2, 3, 4, 5]), np.array([1, 0, 3, 9, 8, 7])
    got = scoring.score_trials(emb, enroll, test, score="poincare", geometry=geo)
    pts = _expmap0(_tangent(full, c, kwargs.get("feature_clip", 0.0), scale), c)
    np.testing.assert_allclose(got, -_ball_dist(pts[enroll], pts[test], c), rtol=2e-4, atol=2e-4)
    # The ball points are the head's own (ball_embed), and the radius counts.
    ball = np.asarray(head.apply({"params": params}, jnp.asarray(full), method="ball_embed"))
    np.testing.assert_allclose(ball, pts, rtol=1e-5, atol=1e-6)
    assert got[0] < -0.05 and got[1] == pytest.approx(0.0, abs=1e-3)
    assert scoring.score_trials(emb, enroll[:1], test[:1])[0] == pytest.approx(1.0)  # cosine


# ---------------------------------------------------------------------------------------------
# Centres on the ball: the optimiser.
# ---------------------------------------------------------------------------------------------
def _ham_ball_config(mode="clip", **optim_fields):
    config = config_lib.paper_recipe("ham_ball")
    config.head.mode, config.head.num_classes = mode, C
    for key, value in optim_fields.items():
        config.optim[key] = value
    return config


def test_ball_optimizer_is_riemannian_adam_on_centres_and_adam_elsewhere(data):
    e, y = data
    # A staircase lr halving every step and a large decay: both must show, or not, per leaf.
    fields = dict(learning_rate=0.05, lr_decay=0.5, weight_decay=0.3)
    ball_cfg = _ham_ball_config(**fields)
    euclid_cfg = _ham_ball_config(**fields)
    euclid_cfg.head.centres = "euclidean"
    tx_ball, sched = train_state.make_optimizer(ball_cfg, 1)
    tx_euclid, _ = train_state.make_optimizer(euclid_cfg, 1)
    head = heads.from_config(ball_cfg.head, C)
    params = {"encoder": {"w": jnp.full((3,), 0.7)}, "head": head.init(jax.random.key(0), e, y)}
    params["head"] = params["head"]["params"]
    manifolds = {"encoder": optim.Euclidean(), "head": {"centres": optim.PoincareBall(3.0)}}
    reference = optim.riemannian_adam(sched, manifolds)  # no decay on the centres
    rng = np.random.default_rng(0)
    states = [tx_ball.init(params), tx_euclid.init(params), reference.init(params)]
    p_ball = p_euclid = p_ref = params
    for _ in range(4):
        g = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params)
        g_decayed = {"encoder": {"w": g["encoder"]["w"] + 0.3 * p_ref["encoder"]["w"]},
                     "head": g["head"]}  # fmt: skip
        u_ball, states[0] = tx_ball.update(g, states[0], p_ball)
        u_euclid, states[1] = tx_euclid.update(g, states[1], p_euclid)
        u_ref, states[2] = reference.update(g_decayed, states[2], p_ref)
        p_ball = optax.apply_updates(p_ball, u_ball)
        p_euclid = optax.apply_updates(p_euclid, u_euclid)
        p_ref = optax.apply_updates(p_ref, u_ref)
    # Euclidean leaves: today's Adam with coupled decay and the schedule.
    np.testing.assert_allclose(p_ball["encoder"]["w"], p_euclid["encoder"]["w"], rtol=1e-6)
    # Centres: Riemannian Adam with the same schedule and no decay.
    np.testing.assert_allclose(p_ball["head"]["centres"], p_ref["head"]["centres"], rtol=1e-6,
                               atol=1e-7)  # fmt: skip
    assert not np.allclose(p_ball["head"]["centres"], p_euclid["head"]["centres"], atol=1e-4)
    assert float(sched(3)) == pytest.approx(0.05 / 8)


def _stress_problem():
    """Four classes in nearly one direction, embeddings far outside the clip: a HAM loss pulls
    each centre toward its class's point on the clipping sphere, i.e. to the boundary."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=D)
    dirs = base / np.linalg.norm(base) + 0.05 * rng.normal(size=(4, D))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    y = np.repeat(np.arange(4), 8)
    e = dirs[y] * 5.0 + 0.01 * rng.normal(size=(32, D))
    return jnp.asarray(e, jnp.float32), jnp.asarray(y, jnp.int32)


@pytest.mark.parametrize("mode", ["clip", "expmap"])
def test_ball_centres_stay_strictly_inside_over_10000_float32_steps(mode):
    e, y = _stress_problem()
    config = _ham_ball_config(mode, learning_rate=0.1, lr_decay=1.0, weight_decay=1e-2)
    config.head.num_classes = 4
    tx, _ = train_state.make_optimizer(config, 100)
    head = heads.from_config(config.head, 4)
    sqrt_c = np.sqrt(3.0)

    @jax.jit
    def run(key):
        params = {"encoder": {"s": jnp.ones(())}, "head": head.init(key, e, y)["params"]}

        def loss_fn(p):
            out = head.apply({"params": p["head"]}, e * p["encoder"]["s"], y)
            return heads.head_loss(out, y).mean()

        def step(carry, _):
            p, s = carry
            loss, g = jax.value_and_grad(loss_fn)(p)
            u, s = tx.update(g, s, p)
            p = optax.apply_updates(p, u)
            radius = sqrt_c * jnp.linalg.norm(p["head"]["centres"], axis=-1)
            finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves((p, s))]))
            return (p, s), (loss, radius.max(), finite)

        init = (params, tx.init(params))
        return jax.lax.scan(step, init, None, length=10_000)[1]

    loss, radius, finite = jax.device_get(run(jax.random.key(0)))
    assert radius.dtype == np.float32 and np.all(finite)
    assert np.all(radius < 1.0), radius.max()
    assert radius.max() <= 1.0 - 9e-6  # the projection margin 1e-5, up to one rounding
    assert loss[-100:].mean() < loss[:100].mean()
    if mode == "clip":
        assert radius.max() > 0.9999  # the test did push them to the boundary


# ---------------------------------------------------------------------------------------------
# bfloat16 embeddings (a bf16 encoder): heads compute in float32.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("h_mlr", dict(margin=0.2)),
        ("h_mlr", dict(c=3.0, feature_clip=1.0, feature_scale=0.05)),
        ("ham_softmax", dict(centres="ball")),
        ("ham_softmax", dict(mode="expmap", centres="ball", feature_clip=1.0, feature_scale=0.1)),
    ],
)
def test_bfloat16_embeddings_give_finite_float32_logits_and_gradients(name, kwargs, data):
    e, y = data
    e16 = (e * 20.0).astype(jnp.bfloat16)
    head = heads.create_head(name, C, **kwargs)
    params = jax.jit(head.init)(jax.random.key(6), e16, y)["params"]

    @jax.jit
    def run(params, e16):
        def loss(p, x):
            out = head.apply({"params": p}, x, y)
            return heads.head_loss(out, y).mean(), out

        (value, out), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, e16)
        return value, out, grads

    value, out, (g_params, g_emb) = run(params, e16)
    assert out.scores.dtype == jnp.float32 and out.terms[0][1].dtype == jnp.float32
    assert g_emb.dtype == jnp.bfloat16
    for leaf in jax.tree.leaves((value, out, g_params, g_emb)):
        assert np.all(np.isfinite(np.asarray(leaf, np.float32)))


# ---------------------------------------------------------------------------------------------
# Config: fields, errors, recipes.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(centres="sphere"),
         r"config\.head\.centres = 'sphere'.*one of \('euclidean', 'ball'\)"),
        (dict(name="am", centres="ball"), r"config\.head\.centres = 'ball'.*'euclidean' for head"
         r" 'am'.*combined, h_softmax, ham_softmax"),
        (dict(name="h_mlr", centres="ball"), r"config\.head\.centres = 'ball'.*head 'h_mlr'"),
        (dict(feature_clip=1.0), r"config\.head\.feature_clip = 1\.0.*head\.mode = 'expmap'"),
        (dict(feature_scale=0.1), r"config\.head\.feature_scale = 0\.1.*head\.mode = 'expmap'"),
        (dict(mode="expmap", feature_clip=3.5), r"config\.head\.feature_clip = 3\.5.*\(0, 3\]"),
        (dict(mode="expmap", feature_clip=-1.0), r"config\.head\.feature_clip = -1\.0"),
        (dict(mode="expmap", feature_scale=float("nan")), r"config\.head\.feature_scale = nan"),
        (dict(name="aam", feature_scale=0.1), r"feature_scale = 0\.1.*'aam'.*no Poincare ball"),
        (dict(name="h_mlr", margin=1.0), r"config\.head\.margin = 1\.0.*h_mlr margin in \[0, 1\)"),
        (dict(name="h_mlr", c=20.0), r"config\.head\.c = 20\.0.*curvature in \[0\.0001, 10\]"),
    ],
)  # fmt: skip
def test_bad_fields_are_refused_naming_field_and_value(changes, message):
    config = config_lib.paper_recipe("ham_softmax")
    for key, value in changes.items():
        config.head[key] = value
    with pytest.raises(ValueError, match=message):
        heads.validate_config(config.head)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(centres="sphere"), r"head field centres must be one of \('euclidean', 'ball'\)"),
        (dict(feature_clip=1.0), "feature_clip / feature_scale .* need mode='expmap'"),
        (dict(mode="expmap", feature_scale=-0.1), "feature_scale must be a finite number >= 0"),
    ],
)
def test_bad_fields_raise_at_creation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        heads.create_head("ham_softmax", 3, **kwargs)


def test_h_mlr_works_as_a_name_override_of_any_hyperbolic_recipe():
    config = config_lib.paper_recipe("ham_softmax")  # mode 'clip', margin 0.2, c 3
    config.head.name = "h_mlr"  # --config.head.name=h_mlr
    heads.validate_config(config.head)
    head = heads.from_config(config.head, 4)
    assert isinstance(head, heads.HyperbolicMLRHead)
    assert (head.c, head.margin, head.scale, head.mode) == (3.0, 0.2, 30.0, "expmap")


def _mbrola(variant):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "configs" / "mbrola.py"
    spec = importlib.util.spec_from_file_location("cfg_mbrola_ext", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, module.get_config(variant)


@pytest.mark.parametrize(
    ("recipe", "expected"),
    [
        ("ham_ball", dict(name="ham_softmax", mode="clip", centres="ball", margin=0.2, c=3.0)),
        ("ham_feature_clip", dict(name="ham_softmax", mode="expmap", feature_clip=1.0,
                                  feature_scale=0.025, margin=0.2)),
        ("h_mlr", dict(name="h_mlr", margin=0.0, c=3.0, feature_clip=1.0, scale=30.0)),
        ("h_mlr_margin", dict(name="h_mlr", margin=0.2, c=3.0, feature_clip=1.0)),
    ],
)  # fmt: skip
def test_extension_recipes_in_the_mbrola_config(recipe, expected):
    from hamjax import cli_common, train_lib

    module, config = _mbrola(recipe)
    assert recipe in module.VARIANTS and set(config_lib.RECIPES) < set(module.VARIANTS)
    assert {k: config.head[k] for k in expected} == expected
    assert config.model.embed_dim == 128 and config.data.name == "mbrola"
    train_lib.validate_config(config, num_devices=8)
    assert recipe in cli_common.recipes_help()  # train.py --help lists it
    # The paper recipes themselves are untouched by the new fields.
    paper = _mbrola("ham_softmax")[1].head
    assert (paper.centres, paper.feature_clip, paper.feature_scale) == ("euclidean", 0.0, 0.0)


# ---------------------------------------------------------------------------------------------
# The trainer end to end (train_and_evaluate, then the work directory's Verifier).
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, compile_cache):
    from test_train_lib import tiny_config

    from hamjax import train_lib

    base = tmp_path_factory.mktemp("hyp_train")
    config = tiny_config(base)
    train_lib.prepare_data(config)
    return base, config


@pytest.mark.slow
@pytest.mark.parametrize(
    "fields",
    [
        dict(name="h_mlr", mode="expmap", c=3.0, margin=0.2, feature_clip=1.0, feature_scale=0.1),
        dict(name="ham_softmax", centres="ball"),
    ],
    ids=["h_mlr", "centres_ball"],
)
def test_trainer_end_to_end(fields, tiny_data, tmp_path):
    from hamjax import train_lib
    from hamjax.inference import Verifier

    _, config = tiny_data
    config = config.copy_and_resolve_references()
    for key, value in fields.items():
        config.head[key] = value
    config.train.max_steps = 3
    workdir = tmp_path / "run"
    out = train_lib.train_and_evaluate(config, workdir)
    assert out["step"] == 3 and out["final"]
    saved = json.loads((workdir / "config.json").read_text())["head"]
    assert {k: saved[k] for k in fields} == fields
    verifier = Verifier.from_workdir(workdir, "final")
    head_params = verifier.variables["params"]["head"]
    if fields["name"] == "h_mlr":
        assert set(head_params) == {"normals", "offsets", "log_feature_scale"}
    else:
        centres = np.asarray(head_params["centres"], np.float64)
        assert np.all(np.sqrt(3.0) * np.linalg.norm(centres, axis=-1) < 1.0)
    geo = verifier.geometry
    assert geo.c == pytest.approx(3.0)
    if fields["name"] == "h_mlr":
        assert geo.mode == "expmap" and geo.feature_clip == 1.0 and geo.feature_scale > 0
    wave = np.random.default_rng(0).normal(size=(2, 16000)).astype(np.float32) * 0.1
    emb = verifier.embed_batch(list(wave))
    assert emb.shape == (2, config.model.embed_dim) and np.all(np.isfinite(emb))
    full = embeddings.Embeddings(("a", "b"), emb, None)
    score = scoring.score_trials(full, [0], [1], score="poincare", geometry=geo)[0]
    assert np.isfinite(score) and score <= 0.0
