"""hamjax.nn: float64 references for the layer formulas (HNN / HNN++), shapes, finite values and
gradients at the boundary in float32 / bfloat16 over c in [1e-4, 10], the learnable curvature."""

from __future__ import annotations

import _poincare_ref as pref
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

from hamjax import nn as hnn
from hamjax import poincare as P

CURVATURES = [1e-4, 1.0, 10.0]
D, K = 5, 4


# float64 references in every test of this module (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("x64")


# ----------------------------------------------------------------------------------------------
# numpy float64 references, written from the papers' equations
# ----------------------------------------------------------------------------------------------


def _ref_poincare_mlr(x, z, r, c):
    """HNN++ eq. 6: v_k = 2|z_k|/sqrt(c) asinh(lam <sqrt(c) x, z_k/|z_k|> cosh(2 sqrt(c) r_k)
    - (lam - 1) sinh(2 sqrt(c) r_k)), lam = 2 / (1 - c|x|^2)."""
    sc = np.sqrt(c)
    lam = 2.0 / (1.0 - c * np.sum(x * x, -1, keepdims=True))
    zn = np.linalg.norm(z, axis=0)
    inner = (sc * x) @ (z / zn)
    return (
        2
        * zn
        / sc
        * np.arcsinh(lam * inner * np.cosh(2 * sc * r) - (lam - 1) * np.sinh(2 * sc * r))
    )


def _ref_poincare_fc(x, z, r, c):
    """HNN++ eq. 7: w = sinh(sqrt(c) v) / sqrt(c), y = w / (1 + sqrt(1 + c|w|^2))."""
    w = np.sinh(np.sqrt(c) * _ref_poincare_mlr(x, z, r, c)) / np.sqrt(c)
    return w / (1 + np.sqrt(1 + c * np.sum(w * w, -1, keepdims=True)))


def _ref_gyroplane_mlr(x, p, a, c):
    """Ganea et al. 2018 eq. 25 with the explicit [B, K, D] Möbius difference (-p) (+) x."""
    sc = np.sqrt(c)
    diff = pref.mobius_add(-p[None], x[:, None], c)  # [B, K, D]
    an = np.linalg.norm(a, axis=-1)
    lam_p = 2 / (1 - c * np.sum(p * p, -1))
    arg = 2 * sc * np.sum(diff * a[None], -1) / ((1 - c * np.sum(diff**2, -1)) * an)
    return lam_p * an / sc * np.arcsinh(arg)


def _points(rng, shape, c, rmax=0.9):
    return pref.points(rng, shape, c, rmax=rmax)


@pytest.mark.parametrize("c", CURVATURES)
def test_mlr_and_fc_formulas_match_float64_references(c):
    rng = np.random.default_rng(int(c * 1e4))
    sc = np.sqrt(c)
    x = _points(rng, (7, D), c)
    z = rng.normal(size=(D, K))
    r = rng.normal(size=K) * 0.3 / sc
    v = np.asarray(jax.jit(hnn.poincare_mlr)(x, z, r, c=c))
    assert v.shape == (7, K)
    np.testing.assert_allclose(v * sc, _ref_poincare_mlr(x, z, r, c) * sc, rtol=1e-10, atol=1e-10)
    y = np.asarray(jax.jit(hnn.poincare_fc)(x, z, r, c=c))
    assert y.shape == (7, K) and np.all(np.linalg.norm(y, axis=-1) * sc < 1)
    np.testing.assert_allclose(y * sc, _ref_poincare_fc(x, z, r, c) * sc, rtol=1e-10, atol=1e-12)
    # HNN++'s meaning of the FC layer: the output's signed distances to the coordinate
    # gyroplanes through the origin are the input's MLR values (MLR with z = I, r = 0 is
    # twice the signed distance).
    back = hnn.poincare_mlr(y, np.eye(K), np.zeros(K), c=c)
    np.testing.assert_allclose(np.asarray(back) * sc, 2 * v * sc, rtol=1e-8, atol=1e-9)
    # Gyroplane MLR against the explicit Möbius form, and = HNN++ MLR at p = 0, r = 0.
    p = _points(rng, (K, D), c, rmax=0.6)
    a = rng.normal(size=(K, D)) / sc
    g = np.asarray(jax.jit(hnn.gyroplane_mlr)(x, p, a, c=c))
    np.testing.assert_allclose(g * sc, _ref_gyroplane_mlr(x, p, a, c) * sc, rtol=1e-9, atol=1e-9)
    g0 = hnn.gyroplane_mlr(x, 0 * p, z.T, c=c)
    np.testing.assert_allclose(g0, hnn.poincare_mlr(x, z, 0 * r, c=c), rtol=1e-12)
    # A point on a gyroplane has logit 0: x = p (+) u with <u, a> = 0.
    u = _points(rng, (K, D), c, rmax=0.5)
    u -= np.sum(u * a, -1, keepdims=True) * a / np.sum(a * a, -1, keepdims=True)
    on = pref.mobius_add(p, u, c)
    diag = np.diagonal(np.asarray(hnn.gyroplane_mlr(on, p, a, c=c)))
    np.testing.assert_allclose(diag * sc, 0.0, atol=1e-10)


@pytest.mark.parametrize("c", CURVATURES)
def test_mobius_layers_and_beta_concat_match_references(c):
    rng = np.random.default_rng(int(c * 1e4) + 1)
    sc = np.sqrt(c)
    x = jnp.asarray(_points(rng, (6, D), c, rmax=0.8))
    x2 = jnp.asarray(_points(rng, (6, 3), c, rmax=0.8))
    key = jax.random.key(0)
    bias = jnp.asarray(rng.normal(size=K) * 0.3 / sc)

    lin = hnn.MobiusLinear(K)
    params = jax.jit(lin.init)(key, x, c=c)["params"]
    params = {**params, "bias": bias}
    y = jax.jit(lin.apply)({"params": params}, x, c=c)
    assert y.shape == (6, K) and params["kernel"].shape == (D, K)
    expect = pref.mobius_add(
        pref.matvec(np.asarray(params["kernel"]).T, np.asarray(x), c),
        pref.expmap0(np.asarray(bias), c),
        c,
    )
    np.testing.assert_allclose(np.asarray(y) * sc, expect * sc, rtol=1e-10, atol=1e-12)

    mb = hnn.MobiusBias()
    pb = {"bias": jnp.asarray(rng.normal(size=D) * 0.3 / sc)}
    assert jax.tree_util.tree_map(jnp.shape, jax.eval_shape(mb.init, key, x, c=c)["params"]) == {
        "bias": (D,)
    }
    np.testing.assert_allclose(
        np.asarray(jax.jit(mb.apply)({"params": pb}, x, c=c)) * sc,
        pref.mobius_add(np.asarray(x), pref.expmap0(np.asarray(pb["bias"]), c), c) * sc,
        rtol=1e-10,
    )

    cat = hnn.MobiusConcat(K)
    pc = jax.jit(cat.init)(key, [x, x2], c=c)["params"]
    pc = {**pc, "bias": bias}
    yc = jax.jit(cat.apply)({"params": pc}, [x, x2], c=c)
    t1 = pref.matvec(np.asarray(pc["kernel_0"]).T, np.asarray(x), c)
    t2 = pref.matvec(np.asarray(pc["kernel_1"]).T, np.asarray(x2), c)
    expect = pref.mobius_add(pref.mobius_add(t1, t2, c), pref.expmap0(np.asarray(bias), c), c)
    np.testing.assert_allclose(np.asarray(yc) * sc, expect * sc, rtol=1e-10, atol=1e-12)

    # beta-concatenation: log0, scale by B(n/2, 1/2) / B(n_i/2, 1/2), concatenate, exp0.
    bc = jax.jit(hnn.beta_concat)([x, x2], c=c)
    n = D + 3
    s1 = scipy.special.beta(n / 2, 0.5) / scipy.special.beta(D / 2, 0.5)
    s2 = scipy.special.beta(n / 2, 0.5) / scipy.special.beta(3 / 2, 0.5)
    expect = pref.expmap0(
        np.concatenate(
            [s1 * pref.logmap0(np.asarray(x), c), s2 * pref.logmap0(np.asarray(x2), c)], -1
        ),
        c,
    )
    np.testing.assert_allclose(np.asarray(bc) * sc, expect * sc, rtol=1e-10)
    assert jax.eval_shape(
        lambda a, b: hnn.beta_concat([a, b], c=c), x[:, None], x2[None]
    ).shape == (
        6,
        6,
        n,
    )
    # mobius_fn: exp0(f(log0(x))).
    np.testing.assert_allclose(
        jax.jit(lambda a, cc: hnn.mobius_fn(jnp.tanh, a, c=cc))(x, c),
        pref.expmap0(np.tanh(pref.logmap0(np.asarray(x), c)), c),
        rtol=1e-10,
    )


def test_module_shapes_and_parameters():
    key = jax.random.key(1)
    x = P.expmap0(0.1 * jax.random.normal(key, (2, 3, D)), c=1.0)
    cases = [
        (hnn.MobiusLinear(7), (2, 3, 7), {"kernel": (D, 7), "bias": (7,)}),
        (hnn.MobiusLinear(7, use_bias=False), (2, 3, 7), {"kernel": (D, 7)}),
        (hnn.MobiusBias(), (2, 3, D), {"bias": (D,)}),
        (hnn.PoincareFC(7), (2, 3, 7), {"z": (D, 7), "r": (7,)}),
        (hnn.PoincareMLR(11), (2, 3, 11), {"z": (D, 11), "r": (11,)}),
        (hnn.GyroplaneMLR(11), (2, 3, 11), {"p_raw": (11, D), "a_raw": (11, D)}),
    ]
    for module, out_shape, param_shapes in cases:
        variables = jax.eval_shape(module.init, key, x, c=1.0)
        assert jax.tree_util.tree_map(jnp.shape, variables["params"]) == param_shapes, module
        y = jax.eval_shape(module.apply, variables, x, c=1.0)
        assert y.shape == out_shape and y.dtype == x.dtype, module
    cat = hnn.MobiusConcat(4)
    v = jax.eval_shape(cat.init, key, [x, x[..., :2]], c=1.0)
    assert jax.tree_util.tree_map(jnp.shape, v["params"]) == {
        "kernel_0": (D, 4),
        "kernel_1": (2, 4),
        "bias": (4,),
    }
    assert jax.eval_shape(cat.apply, v, [x, x[..., :2]], c=1.0).shape == (2, 3, 4)
    # HNN++ initialisation: z ~ N(0, (2 D K)^-1), r = 0; gyroplanes start through the origin.
    z = hnn.PoincareMLR(400).init(key, jnp.zeros((1, 50)), c=1.0)["params"]["z"]
    np.testing.assert_allclose(np.std(np.asarray(z)), (2 * 50 * 400) ** -0.5, rtol=0.05)
    # bfloat16 inputs give bfloat16 outputs inside the ball.
    xb = x.astype(jnp.bfloat16)
    for module, _, _ in cases:
        y = jax.eval_shape(lambda v, m=module: m.apply(m.init(key, v, c=1.0), v, c=1.0), xb)
        assert y.dtype == jnp.bfloat16


def test_learnable_curvature():
    for initial in (1e-4, 1.0, 10.0):
        curv = hnn.Curvature(initial)
        v = jax.jit(curv.init)(jax.random.key(0))
        np.testing.assert_allclose(float(jax.jit(curv.apply)(v)), initial, rtol=1e-5)
        g = jax.jit(jax.grad(lambda p, curv=curv: curv.apply({"params": p})))(v["params"])
        assert np.isfinite(float(g["c_raw"])) and float(g["c_raw"]) > 0
    fixed = hnn.Curvature(3.0, learnable=False)
    assert fixed.init(jax.random.key(0)) == {}
    assert float(fixed.apply({})) == 3.0
    # Far below: the floor keeps c > 0.
    floor = hnn.Curvature(1.0).apply({"params": {"c_raw": jnp.float32(-1e4)}})
    assert float(floor) == float(np.float32(1e-5))
    with pytest.raises(ValueError, match="initial must be"):
        hnn.Curvature(0.0).init(jax.random.key(0))

    # A shared learned curvature through a small network: gradients reach c_raw.
    class Net(hnn.nn.Module):
        @hnn.nn.compact
        def __call__(self, x):
            c = hnn.Curvature(1.0)()
            h = hnn.MobiusLinear(8)(P.expmap0(x, c=c), c=c)
            h = hnn.PoincareFC(8)(h, c=c)
            return hnn.PoincareMLR(3)(h, c=c)

    x = jax.random.normal(jax.random.key(2), (4, D))
    net = Net()
    params = jax.jit(net.init)(jax.random.key(3), x)["params"]
    grads = jax.jit(jax.grad(lambda p: jnp.sum(net.apply({"params": p}, x) ** 2)))(params)
    assert float(jnp.abs(grads["Curvature_0"]["c_raw"])) > 0


# ----------------------------------------------------------------------------------------------
# Finite values and gradients at the boundary
# ----------------------------------------------------------------------------------------------


def _boundary_inputs(c):
    u = np.ones(D) / np.sqrt(D)
    e = np.eye(D)
    rows = [
        0 * u,  # the origin
        0.5 * u,
        (1 - 1e-7) * u,  # within float32 rounding of the boundary
        1.0 * e[0],  # on it
        10.0 * e[1],  # far outside
        -(1 - 1e-6) * u,
    ]
    return np.stack(rows) / np.sqrt(c)


MODULES = {
    "MobiusLinear": hnn.MobiusLinear(K),
    "MobiusBias": hnn.MobiusBias(),
    "PoincareFC": hnn.PoincareFC(K),
    "PoincareMLR": hnn.PoincareMLR(K),
    "GyroplaneMLR": hnn.GyroplaneMLR(K),
}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=lambda d: d.__name__)
def test_values_and_gradients_finite_at_the_boundary(dtype):
    key = jax.random.key(4)
    variables = {name: m.init(key, jnp.zeros((1, D), dtype), c=1.0) for name, m in MODULES.items()}
    # Non-trivial parameters: large ones too (HNN++'s FC overflows sinh without care).
    variables = jax.tree_util.tree_map(lambda a: a + 0.7, variables)
    big = jax.tree_util.tree_map(lambda a: a * 50.0, variables)

    @jax.jit
    def values_and_grads(x, c, variables):
        out = {}
        for name, m in MODULES.items():

            def loss(xx, cc, v, m=m):
                return jnp.sum(m.apply(v, xx, c=cc).astype(jnp.float32))

            out[name] = jax.value_and_grad(loss, argnums=(0, 1, 2))(x, c, variables[name])
        xs = [x, x[..., :2]]
        cat = hnn.MobiusConcat(K)
        vc = cat.init(jax.random.key(0), xs, c=1.0)
        out["MobiusConcat"] = jax.value_and_grad(
            lambda xx, cc: jnp.sum(cat.apply(vc, [xx, xx[..., :2]], c=cc).astype(jnp.float32)),
            argnums=(0, 1),
        )(x, c)
        out["beta_concat"] = jax.value_and_grad(
            lambda xx, cc: jnp.sum(hnn.beta_concat([xx, xx[..., :2]], c=cc).astype(jnp.float32)),
            argnums=(0, 1),
        )(x, c)
        return out

    bad = []
    for c in CURVATURES:
        x = jnp.asarray(_boundary_inputs(c), dtype)
        for tag, v in (("params", variables), ("big params", big)):
            for name, (val, grads) in values_and_grads(x, jnp.asarray(c, dtype), v).items():
                leaves = [val, *jax.tree_util.tree_leaves(grads)]
                if not all(np.all(np.isfinite(np.asarray(a, np.float32))) for a in leaves):
                    bad.append(f"{name} ({tag}, c={c})")
    assert not bad, bad
    # Outputs that are points stay inside the ball even for boundary inputs and big params.
    for c in CURVATURES:
        x = jnp.asarray(_boundary_inputs(c), dtype)
        for name in ("MobiusLinear", "MobiusBias", "PoincareFC"):
            y = MODULES[name].apply(big[name], x, c=c)
            r = np.linalg.norm(np.asarray(y, np.float64), axis=-1) * np.sqrt(c)
            assert np.all(r < 1.0), (name, c, r)


def test_poincare_fc_float32_matches_float64_for_large_logits():
    """The overflow-free evaluation: logits sqrt(c) v up to ~300 (sinh overflows float32 at 89)
    give the float64 direction and a point on the projection margin."""
    rng = np.random.default_rng(5)
    x = _points(rng, (16, D), 1.0, rmax=0.99)
    z = rng.normal(size=(D, K)) * 20.0
    r = np.zeros(K)
    y32 = np.asarray(hnn.poincare_fc(x.astype(np.float32), z.astype(np.float32), r, c=1.0))
    y64 = np.asarray(hnn.poincare_fc(x, z, r, c=1.0))
    assert np.max(np.abs(hnn.poincare_mlr(x, z, r, c=1.0))) > 100
    cos = np.sum(y32 * y64, -1) / (np.linalg.norm(y32, axis=-1) * np.linalg.norm(y64, axis=-1))
    assert np.all(cos > 1 - 1e-5), cos
    small = _points(rng, (16, D), 1.0, rmax=0.5)
    zs = rng.normal(size=(D, K))
    np.testing.assert_allclose(
        hnn.poincare_fc(small.astype(np.float32), zs.astype(np.float32), r, c=1.0),
        hnn.poincare_fc(small, zs, r, c=1.0),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: hnn.poincare_mlr(jnp.zeros((2, 3)), jnp.zeros((4, 2)), jnp.zeros(2), c=1.0), "z"),
        (lambda: hnn.poincare_fc(jnp.zeros((2, 3)), jnp.zeros((3, 2)), jnp.zeros(3), c=1.0), "r"),
        (lambda: hnn.gyroplane_mlr(jnp.zeros(3), jnp.zeros((2, 3)), jnp.zeros((2, 4)), c=1.0), "a"),
        (lambda: hnn.poincare_mlr(jnp.zeros((2, 3)), jnp.zeros((3, 2)), jnp.zeros(2), c=0.0), "c"),
        (lambda: hnn.beta_concat([], c=1.0), "at least one"),
        (lambda: hnn.MobiusConcat(3).init(jax.random.key(0), [], c=1.0), "at least one"),
    ],
)  # fmt: skip
def test_bad_input_raises_clear_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
