"""hamjax.optim: Riemannian SGD / Adam against a float64 numpy transcription of the papers'
equations, 10,000 steps on the manifolds, composition with optax, jit and sharded state."""

from __future__ import annotations

import _lorentz_ref as lref
import _poincare_ref as pref
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as Spec

from hamjax import lorentz as L
from hamjax import optim
from hamjax import poincare as P

# ----------------------------------------------------------------------------------------------
# The float64 reference: Bécigneul & Ganea (2019), Algorithm 1 (RADAM / RAMSGRAD) with optax's
# bias corrections and eps, and Riemannian SGD with transported momentum, one point per row.
# Geometry from tests/_poincare_ref.py (Ganea et al. 2018 formulas, gyration by composition)
# and tests/_lorentz_ref.py (textbook hyperboloid formulas).
# ----------------------------------------------------------------------------------------------


class _Ball:
    def __init__(self, c):
        self.c = c

    def rgrad(self, x, g):
        return g / pref.lam(x, self.c) ** 2

    def sqnorm(self, x, v):
        return np.sum((pref.lam(x, self.c) * v) ** 2, -1, keepdims=True)

    def exp(self, x, v):
        return pref.expmap(x, v, self.c)

    def transport(self, x, y, v):
        return pref.parallel_transport(x, y, v, self.c)


class _Hyperboloid:
    def __init__(self, c):
        self.c = c

    def rgrad(self, x, g):
        return lref.egrad2rgrad(x, g, self.c)

    def sqnorm(self, x, v):
        return lref.inner(v, v)

    def exp(self, x, v):
        return lref.expmap(x, v, self.c)

    def transport(self, x, y, v):
        return lref.parallel_transport(x, y, v, self.c)


def _lr(schedule, count):
    # Evaluated at an int32 count, as optax does (a schedule may compute in float32 then).
    return float(schedule(jnp.asarray(count, jnp.int32)))


def _ref_adam(manifold, x, grad_fn, steps, lr, b1=0.9, b2=0.999, eps=1e-8, amsgrad=False):
    m = np.zeros_like(x)
    v = np.zeros(x.shape[:-1] + (1,))
    vmax = np.zeros_like(v)
    for t in range(1, steps + 1):
        r = manifold.rgrad(x, grad_fn(x))
        m = b1 * m + (1 - b1) * r
        v = b2 * v + (1 - b2) * manifold.sqnorm(x, r)
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        if amsgrad:
            vmax = np.maximum(vmax, v_hat)
            v_hat = vmax
        y = manifold.exp(x, -_lr(lr, t - 1) * m_hat / (np.sqrt(v_hat) + eps))
        m = manifold.transport(x, y, m)
        x = y
    return x


def _ref_sgd(manifold, x, grad_fn, steps, lr, mu=0.0, nesterov=False):
    buf = np.zeros_like(x)
    for t in range(steps):
        r = manifold.rgrad(x, grad_fn(x))
        buf = r + mu * buf
        d = r + mu * buf if nesterov else buf
        y = manifold.exp(x, -_lr(lr, t) * d)
        buf = manifold.transport(x, y, buf)
        x = y
    return x


# float64 references in every test of this module (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("x64")


def _quadratic(d, seed):
    """A loss gradient g(x) = a + B x (B symmetric PSD) per row, in numpy and in JAX."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=d)
    q = rng.normal(size=(d, d))
    b = q @ q.T / d
    return (lambda x: a + x @ b), (lambda x: jnp.asarray(a) + x @ jnp.asarray(b))


def _run(tx, params, grad_fn, steps, **extra):
    def body(carry, _):
        p, s = carry
        u, s = tx.update(jax.tree_util.tree_map(grad_fn, p), s, p, **extra)
        return (optax.apply_updates(p, u), s), None

    @jax.jit
    def run(p):
        return jax.lax.scan(body, (p, tx.init(p)), None, length=steps)[0][0]

    return run(params)


# Exactly representable rates: a float32 schedule that XLA fuses differently under jit would
# otherwise differ from the eager reference by an ulp of lr (~1e-9 after 20 steps).
SCHEDULE = optax.piecewise_constant_schedule(0.05, {5: 0.5, 12: 0.5})
SGD_SCHEDULE = optax.piecewise_constant_schedule(0.01, {5: 0.5, 12: 0.5})
CASES = {
    "adam": (
        lambda m: optim.riemannian_adam(SCHEDULE, m),
        lambda man, x, g: _ref_adam(man, x, g, 20, SCHEDULE),
    ),
    "amsgrad": (
        lambda m: optim.riemannian_adam(0.03, m, b1=0.8, b2=0.9, amsgrad=True),
        lambda man, x, g: _ref_adam(man, x, g, 20, lambda t: 0.03, b1=0.8, b2=0.9, amsgrad=True),
    ),
    "sgd_momentum": (
        lambda m: optim.riemannian_sgd(SGD_SCHEDULE, m, momentum=0.9),
        lambda man, x, g: _ref_sgd(man, x, g, 20, SGD_SCHEDULE, mu=0.9),
    ),
    "sgd_nesterov": (
        lambda m: optim.riemannian_sgd(0.01, m, momentum=0.5, nesterov=True),
        lambda man, x, g: _ref_sgd(man, x, g, 20, lambda t: 0.01, mu=0.5, nesterov=True),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_matches_float64_reference_of_the_papers_equations(name):
    """20 steps on a ball and a hyperboloid leaf for each c in {1e-4, 1, 10} (one optimiser,
    one tree) against the numpy transcription, to 1e-9 in ball units."""
    make, reference = CASES[name]
    rng = np.random.default_rng(0)
    d = 4
    curvatures = {"1e-4": 1e-4, "1": 1.0, "10": 10.0}
    g_np, g_jax = _quadratic(d, 1)
    gh_np, gh_jax = _quadratic(d + 1, 2)
    params, manifolds, grads, start = {"eucl": jnp.asarray(rng.normal(size=(3, d)))}, {}, {}, {}
    manifolds["eucl"], grads["eucl"] = "euclidean", g_jax
    for tag, c in curvatures.items():
        sc = np.sqrt(c)  # gradients in the curvature's units, so every c takes similar steps
        start["ball" + tag] = pref.points(rng, (6, d), c, rmax=0.8)
        start["hyp" + tag] = lref.points(rng, (6, d), c, rmax=1.5)
        manifolds["ball" + tag], manifolds["hyp" + tag] = optim.PoincareBall(c), optim.Lorentz(c)
        grads["ball" + tag] = lambda x, sc=sc: g_jax(x * sc)
        grads["hyp" + tag] = lambda x, sc=sc: gh_jax(x * sc)
    params.update({k: jnp.asarray(v) for k, v in start.items()})
    tx = make(manifolds)

    def body(carry, _):
        p, s = carry
        g = {k: grads[k](v) for k, v in p.items()}
        u, s = tx.update(g, s, p)
        return (optax.apply_updates(p, u), s), None

    out = jax.jit(lambda p: jax.lax.scan(body, (p, tx.init(p)), None, length=20)[0][0])(params)
    for tag, c in curvatures.items():
        sc = np.sqrt(c)
        ball0, hyp0 = start["ball" + tag], start["hyp" + tag]
        ball = reference(_Ball(c), ball0, lambda x, sc=sc: g_np(x * sc))
        hyp = reference(_Hyperboloid(c), hyp0, lambda x, sc=sc: gh_np(x * sc))
        np.testing.assert_allclose(np.asarray(out["ball" + tag]) * sc, ball * sc, atol=1e-9)
        scale = 1.0 / hyp[..., :1]  # coordinate errors in ball units
        np.testing.assert_allclose(np.asarray(out["hyp" + tag]) * scale, hyp * scale, atol=1e-9)
        # The points moved (the test is not vacuous) and stayed on their manifolds.
        assert np.min(pref.dist(ball, ball0, c)) > 1e-2
        assert np.min(lref.dist(hyp, hyp0, c)) > 1e-2
        assert np.all(np.linalg.norm(np.asarray(out["ball" + tag]), axis=-1) * sc < 1)
        h = np.asarray(out["hyp" + tag])
        np.testing.assert_allclose(c * lref.inner(h, h), -1.0, atol=1e-9 * np.max(c * h**2))
    # Euclidean leaves follow optax (the same operations; XLA may fuse them differently).
    euclid_tx = {
        "adam": optax.adam(SCHEDULE),
        "amsgrad": optax.amsgrad(0.03, b1=0.8, b2=0.9),
        "sgd_momentum": optax.sgd(SGD_SCHEDULE, momentum=0.9),
        "sgd_nesterov": optax.sgd(0.01, momentum=0.5, nesterov=True),
    }[name]
    expect_eucl = _run(euclid_tx, {"eucl": params["eucl"]}, g_jax, 20)["eucl"]
    np.testing.assert_allclose(np.asarray(out["eucl"]), np.asarray(expect_eucl), rtol=1e-13)


def test_retraction_is_first_order_close_to_the_exponential_map():
    c = 2.0
    rng = np.random.default_rng(1)
    params = {"ball": jnp.asarray(pref.points(rng, (8, 3), c, rmax=0.7))}
    params["hyp"] = jnp.asarray(lref.points(rng, (8, 3), c, rmax=1.0))
    _, g = _quadratic(3, 3)
    _, gh = _quadratic(4, 4)
    grad = lambda x: g(x) if x.shape[-1] == 3 else gh(x)
    m = {"ball": optim.PoincareBall(c), "hyp": optim.Lorentz(c)}
    exact = _run(optim.riemannian_sgd(1e-3, m), params, grad, 5)
    retr = _run(optim.riemannian_sgd(1e-3, m, retraction=True), params, grad, 5)
    for k in params:
        moved = np.max(np.abs(np.asarray(exact[k]) - np.asarray(params[k])))
        gap = np.max(np.abs(np.asarray(exact[k]) - np.asarray(retr[k])))
        assert moved > 1e-4 and gap < 1e-2 * moved, (k, moved, gap)


# ----------------------------------------------------------------------------------------------
# 10,000 steps stay on the manifolds
# ----------------------------------------------------------------------------------------------


def _long_run_params(rng):
    ball = lambda c, dt: jnp.asarray(pref.points(rng, (8, 4), c, rmax=0.5), dt)
    hyp = lambda c: jnp.asarray(lref.points(rng, (8, 4), c, rmax=1.0), jnp.float32)
    params = {
        "ball_1e-4": ball(1e-4, jnp.float32),
        "ball_1": ball(1.0, jnp.float32),
        "ball_10": ball(10.0, jnp.float32),
        "ball_bf16": ball(1.0, jnp.bfloat16),
        "hyp_1e-4": hyp(1e-4),
        "hyp_1": hyp(1.0),
        "hyp_10": hyp(10.0),
        "eucl": jnp.asarray(rng.normal(size=(4, 8)), jnp.float32),
    }
    curv = {k: 1.0 if "bf16" in k else float(k.split("_")[1]) for k in params if k != "eucl"}
    manifolds = {
        k: (optim.PoincareBall(curv[k]) if k.startswith("ball") else optim.Lorentz(curv[k]))
        for k in curv
    }
    manifolds["eucl"] = optim.Euclidean()
    return params, manifolds, curv


LONG_RUNS = {
    "adam": (lambda lr, m: optim.riemannian_adam(lr, m), 0.5),
    "amsgrad_retraction": (
        lambda lr, m: optim.riemannian_adam(lr, m, amsgrad=True, retraction=True),
        0.5,
    ),
    "sgd_nesterov": (lambda lr, m: optim.riemannian_sgd(lr, m, momentum=0.9, nesterov=True), 1),
}


@pytest.mark.parametrize("name", list(LONG_RUNS))
def test_ten_thousand_steps_stay_on_the_manifolds(name):
    """A loss that pulls ball points onto the boundary (-r, r = sqrt(c) d(o, x)) and hyperboloid
    points to r = 6 plus noise: float32 / bfloat16 points stay finite, inside the ball (pressed
    against the projection margin) and on the sheet (near r = 6). One transform per curvature
    through optax.multi_transform, with the learning rate scaled so that every curvature moves
    as fast in ball units (Adam steps ~lr in Riemannian distance: lr / sqrt(c); SGD steps
    lr |grad|, and |grad r| = sqrt(c): lr / c)."""
    make, power = LONG_RUNS[name]
    params, manifolds, curv = _long_run_params(np.random.default_rng(7))
    lrs = {g: 3e-3 / c**power for g, c in {"1e-4": 1e-4, "1": 1.0, "10": 10.0}.items()}
    # bfloat16 leaves need steps above their rounding (2**-9 relative), as with plain optax;
    # 0.3 reaches the ball's bfloat16 margin (0.99), where one ulp is ~0.04 in Riemannian units.
    lrs["bf16"] = 0.3
    labels = {k: "1" if k == "eucl" else k.split("_")[1] for k in params}
    tx = optax.multi_transform({g: make(lr, manifolds) for g, lr in lrs.items()}, labels)

    def loss(p, key):
        total = jnp.sum(p["eucl"] ** 2)
        for k, c in curv.items():
            x = p[k].astype(jnp.float32)
            if k.startswith("ball"):
                total -= jnp.sum(P.dist0(x, c=c)) * np.sqrt(c)
            else:
                r = L.dist0(x, c=c) * np.sqrt(c)
                noise = jax.random.normal(jax.random.fold_in(key, len(k)), x.shape)
                # Noise on log_0(x): a gradient of bounded Riemannian norm (noise on the
                # ambient coordinates would grow like e^(2r) and be a different test).
                total += jnp.sum((r - 6.0) ** 2)
                total += 0.1 * jnp.sum(noise * L.logmap0(x, c=c)) * np.sqrt(c)
        return total

    def body(carry, key):
        p, s = carry
        g = jax.grad(loss)(p, key)
        u, s = tx.update(g, s, p)
        return (optax.apply_updates(p, u), s), None

    keys = jax.random.split(jax.random.key(0), 10_000)
    run = jax.jit(lambda p: jax.lax.scan(body, (p, tx.init(p)), keys)[0])
    out, state = run(params)
    for path, leaf in jax.tree_util.tree_leaves_with_path((out, state)):
        assert np.all(np.isfinite(np.asarray(leaf, np.float32))), jax.tree_util.keystr(path)
    for k, c in curv.items():
        x = np.asarray(out[k], np.float64)
        if k.startswith("ball"):
            r = np.linalg.norm(x, axis=-1) * np.sqrt(c)
            # Pushed onto the projection margin, never through it.
            assert np.all(r < 1.0) and np.all(r > 1 - 5 * P.default_eps(out[k].dtype)), (k, r)
        else:
            constraint = c * lref.inner(x, x)[..., 0]
            assert np.all(np.abs(constraint + 1) <= 1e-5 * c * x[..., 0] ** 2), k
            r = np.asarray(L.dist0(out[k], c=c)) * np.sqrt(c)
            assert np.all(np.abs(r - 6.0) < 0.5), (k, r)
    # project_params (and apply_updates) land exactly on the sheet / inside the ball.
    proj = optim.project_params(out, manifolds)
    h = np.asarray(proj["hyp_1"], np.float64)
    np.testing.assert_allclose(h[:, 0], np.sqrt(1 + np.sum(h[:, 1:] ** 2, -1)), rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# Composition with optax
# ----------------------------------------------------------------------------------------------


def _tree(rng, c=1.0):
    return {
        "w": jnp.asarray(rng.normal(size=(5, 3))),
        "centres": jnp.asarray(pref.points(rng, (7, 3), c, rmax=0.6)),
        "hyp": jnp.asarray(lref.points(rng, (4, 3), c, rmax=1.0)),
    }


def _grad_fn(x):
    return jnp.cos(3 * x) + 0.2


def test_weight_decay_on_euclidean_leaves_only_and_schedules():
    rng = np.random.default_rng(2)
    params = _tree(rng)
    m = {"w": "euclidean", "centres": optim.PoincareBall(1.0), "hyp": "lorentz"}
    sched = optax.exponential_decay(0.05, 5, 0.5)
    tx = optax.chain(
        optax.add_decayed_weights(1e-2, mask=optim.euclidean_mask(m)),
        optim.riemannian_adam(sched, m),
    )
    out = _run(tx, params, _grad_fn, 10)
    alone = _run(optim.riemannian_adam(sched, m), params, _grad_fn, 10)
    adamw = _run(
        optax.chain(optax.add_decayed_weights(1e-2), optax.adam(sched)),
        {"w": params["w"]},
        _grad_fn,
        10,
    )
    np.testing.assert_allclose(out["w"], adamw["w"], rtol=1e-13)
    np.testing.assert_allclose(out["centres"], alone["centres"], rtol=1e-13)
    np.testing.assert_allclose(out["hyp"], alone["hyp"], rtol=1e-13)
    assert optim.euclidean_mask(m)(params) == {"w": True, "centres": False, "hyp": False}
    # Clipping before the Riemannian transform sees (and clips) Euclidean gradients.
    clipped = optax.chain(optax.clip_by_global_norm(1e-3), optim.riemannian_sgd(0.1, m))
    out = _run(clipped, params, _grad_fn, 3)
    assert np.all(np.isfinite(np.asarray(out["centres"])))


def test_multi_transform_and_learned_curvature():
    rng = np.random.default_rng(3)
    params = _tree(rng, c=2.0)
    params["c_raw"] = jnp.asarray(np.log(np.expm1(2.0)))  # softplus(c_raw) = 2
    labels = {"w": "adam", "centres": "riem", "hyp": "riem", "c_raw": "adam"}
    # The inner transforms of multi_transform see the whole tree (other groups' leaves masked),
    # so the declaration covers every key.
    riem_m = {"w": "euclidean", "centres": optim.PoincareBall(2.0), "hyp": optim.Lorentz(2.0)}
    riem_m["c_raw"] = "euclidean"
    tx = optax.multi_transform(
        {"adam": optax.adam(1e-2), "riem": optim.riemannian_adam(1e-2, riem_m)}, labels
    )
    out = _run(tx, params, _grad_fn, 8)
    riem = _run(optim.riemannian_adam(1e-2, riem_m), params, _grad_fn, 8)
    adam = _run(optax.adam(1e-2), {"w": params["w"], "c_raw": params["c_raw"]}, _grad_fn, 8)
    np.testing.assert_allclose(out["centres"], riem["centres"], rtol=1e-13)
    np.testing.assert_allclose(out["hyp"], riem["hyp"], rtol=1e-13)
    np.testing.assert_allclose(out["w"], adam["w"], rtol=1e-13)
    # A curvature read from another leaf (callable) or passed per update by name: with the same
    # value as a constant, the same trajectory; a learned c_raw moves and the callable follows.
    softplus_c = lambda p: jax.nn.softplus(p["c_raw"])
    frozen = {"c_raw": params["c_raw"], "centres": params["centres"]}
    zero_c = lambda x: 0 * x if x.ndim == 0 else _grad_fn(x)
    const = {"c_raw": "euclidean", "centres": optim.PoincareBall(2.0)}
    ref = _run(optim.riemannian_adam(1e-2, const), frozen, zero_c, 8)
    read = {"c_raw": "euclidean", "centres": optim.PoincareBall(softplus_c)}
    by_leaf = _run(optim.riemannian_adam(1e-2, read), frozen, zero_c, 8)
    np.testing.assert_allclose(by_leaf["centres"], ref["centres"], rtol=1e-12)
    named = optax.chain(
        optax.identity(), optim.riemannian_adam(1e-2, {"centres": optim.PoincareBall("ball")})
    )
    by_name = _run(named, {"centres": params["centres"]}, _grad_fn, 8, curvatures={"ball": 2.0})
    np.testing.assert_allclose(by_name["centres"], ref["centres"], rtol=1e-12)
    # Learned: c_raw trained by Adam, the ball reads the current value each step.
    learned = optim.riemannian_adam(
        1e-2, {"c_raw": "euclidean", "centres": optim.PoincareBall(softplus_c)}
    )
    out = _run(learned, frozen, lambda x: jnp.ones_like(x) if x.ndim == 0 else _grad_fn(x), 50)
    c_end = float(jax.nn.softplus(out["c_raw"]))
    assert c_end < 1.8
    assert np.all(np.linalg.norm(np.asarray(out["centres"]), axis=-1) * np.sqrt(c_end) < 1)


# ----------------------------------------------------------------------------------------------
# jit and a sharded state on 8 devices
# ----------------------------------------------------------------------------------------------


def test_jit_and_sharded_state_on_eight_devices():
    assert jax.device_count() >= 8, "tests/conftest.py gives 8 CPU devices"
    mesh = Mesh(np.asarray(jax.devices()[:8]), ("data",))
    rng = np.random.default_rng(4)
    params = {
        "w": jnp.asarray(rng.normal(size=(16, 6)), jnp.float32),
        "centres": jnp.asarray(pref.points(rng, (16, 6), 3.0, rmax=0.8), jnp.float32),
        "hyp": jnp.asarray(lref.points(rng, (16, 6), 3.0, rmax=1.0), jnp.float32),
    }
    m = {"w": "euclidean", "centres": optim.PoincareBall(3.0), "hyp": optim.Lorentz(3.0)}
    tx = optim.riemannian_adam(1e-2, m, amsgrad=True)
    rows = NamedSharding(mesh, Spec("data"))
    sharded = jax.device_put(params, rows)
    # As for any optax state: shapes from eval_shape, shardings chosen by the caller (rows of
    # every per-row moment on the data axis, the count replicated), created in place by jit.
    abstract = jax.eval_shape(tx.init, params)
    state_shardings = jax.tree_util.tree_map(
        lambda a: rows if a.ndim else NamedSharding(mesh, Spec()), abstract
    )
    state = jax.jit(tx.init, out_shardings=state_shardings)(sharded)
    for leaf in jax.tree_util.tree_leaves((state.mu, state.nu, state.nu_max)):
        assert leaf.sharding.is_equivalent_to(rows, leaf.ndim), leaf.sharding
    assert state.nu["centres"].shape == (16, 1) and state.nu["w"].shape == (16, 6)
    shardings = jax.tree_util.tree_map(lambda a: a.sharding, (sharded, state))

    def step(p, s):
        g = jax.tree_util.tree_map(_grad_fn, p)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    step_sharded = jax.jit(step, out_shardings=shardings, donate_argnums=(0, 1))
    p, s = sharded, state
    for _ in range(3):
        p, s = step_sharded(p, s)
    p_ref, s_ref = params, tx.init(params)
    for _ in range(3):
        p_ref, s_ref = jax.jit(step)(p_ref, s_ref)
    leaves, ref_leaves = (
        jax.tree_util.tree_leaves((p, s)),
        jax.tree_util.tree_leaves((p_ref, s_ref)),
    )
    for a, b in zip(leaves, ref_leaves, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    assert p["centres"].sharding.is_equivalent_to(rows, 2)
    assert jax.tree_util.tree_structure(abstract) == jax.tree_util.tree_structure(s)


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------


def _update_without_params():
    tx = optim.riemannian_adam(1e-2)
    tx.update({"a": jnp.zeros(2)}, tx.init({"a": jnp.zeros(2)}))


def _update_without_named_curvature():
    tx = optim.riemannian_adam(1e-2, optim.PoincareBall("k"))
    x = jnp.zeros((1, 2))
    tx.update(x, tx.init(x), x)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: optim.riemannian_adam(1e-2, "sphere").init({"a": jnp.zeros(3)}), "unknown"),
        (
            lambda: optim.riemannian_adam(1e-2, {"b": "poincare"}).init({"a": jnp.zeros(3)}),
            "prefix",
        ),
        (lambda: optim.riemannian_sgd(1e-2, optim.Lorentz(1.0)).init(jnp.zeros((2, 1))), r"D \+ 1"),
        (lambda: optim.riemannian_sgd(1e-2, "poincare").init(jnp.zeros(())), "vector axis"),
        (lambda: optim.riemannian_sgd(1e-2, momentum=1.0), "momentum must be"),
        (lambda: optim.riemannian_sgd(1e-2, nesterov=True), "needs momentum"),
        (lambda: optim.riemannian_adam(1e-2, b1=1.0), "b1 and b2"),
        (lambda: optim.PoincareBall(-1.0), "c must be a curvature"),
        (_update_without_params, "needs the current params"),
        (_update_without_named_curvature, "curvatures"),
    ],
)
def test_bad_input_raises_clear_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
