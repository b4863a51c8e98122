"""hamjax.lorentz: float64 references, identities over seeds x dtypes x c, agreement with the
ball, cancellation-free distances, finite values and gradients at the hard places, errors.

Checks are done in "ball units" (distances and tangent norms times sqrt(c), coordinates times
sqrt(c) and divided by the time coordinate's size) so one tolerance per dtype serves every
curvature. Rounded inputs are off the sheet by a rounding; ``hamjax.lorentz`` reads only space
coordinates, so the float64 references are fed the same points with their time coordinate
recomputed (``_sheet``).
"""

from __future__ import annotations

import _lorentz_ref as ref
import _poincare_ref as pref
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from hamjax import lorentz as L
from hamjax import poincare as P

DTYPES = [jnp.float32, jnp.bfloat16, jnp.float64]
CURVATURES = [1e-4, 1.0, 10.0]
D = 5
RMAX = 2.0  # sqrt(c) d(o, x) of the random points: x_0 sqrt(c) <= cosh(2) = 3.8
TOL = {jnp.float32: 3e-5, jnp.bfloat16: 3e-2, jnp.float64: 1e-10}

J = {name: jax.jit(getattr(L, name)) for name in L.__all__ if name != "origin"}


# float64 references in every test of this module (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("x64")


def _f64(a) -> np.ndarray:
    return np.asarray(jnp.asarray(a).astype(jnp.float64))


def _sheet(x64, c):
    """The point with these space coordinates on the sheet (what hamjax.lorentz reads)."""
    xs = x64[..., 1:]
    return np.concatenate([np.sqrt(1 / c + np.sum(xs * xs, -1, keepdims=True)), xs], -1)


def _tangent_at(x64, v64, c):
    """v with the time coordinate that makes it tangent at x (what hamjax.lorentz reads)."""
    vs = v64[..., 1:]
    return np.concatenate([np.sum(x64[..., 1:] * vs, -1, keepdims=True) / x64[..., :1], vs], -1)


def _case(seed, dtype, c, n=2, rmax=RMAX):
    rngs = [np.random.default_rng([s, seed, int(c * 1e4)]) for s in (0, 1)]
    pts = [
        jnp.asarray(np.stack([ref.points(r, (8, D), c, rmax=rmax) for r in rngs]), dtype)
        for _ in range(n)
    ]
    return pts, [_sheet(_f64(p), c) for p in pts], rngs[0]


def _assert_close(actual, expected, dtype, scale=1.0, factor=1.0, what=""):
    err = np.max(np.abs(_f64(actual) - np.asarray(expected, np.float64)) * scale)
    tol = TOL[dtype] * factor
    assert err <= tol, f"{what}: max error {err:.3g} (ball units) > {tol:.3g}"


def _coords_scale(x64, c):
    """Per-point scale that turns coordinate errors into ball units: sqrt(c) / (sqrt(c) x_0)."""
    return 1.0 / x64[..., :1]


params = pytest.mark.parametrize(
    "seed,dtype,c",
    [(0, d, c) for d in DTYPES for c in CURVATURES],
    ids=lambda v: getattr(v, "__name__", str(v)),
)


@params
def test_sheet_inner_projections_and_ball_maps(seed, dtype, c):
    (x, y), (x64, y64), rng = _case(seed, dtype, c)
    sc = np.sqrt(c)
    # The origin and projections are on the sheet; inner is the Minkowski form.
    o = L.origin(D, c=c, dtype=dtype)
    assert o.shape == (D + 1,) and o.dtype == dtype
    np.testing.assert_allclose(_f64(o), ref.origin(D, c), rtol=TOL[dtype])
    ip = J["inner"](x, y)
    assert ip.shape == x.shape[:-1] and ip.dtype == dtype
    _assert_close(ip, ref.inner(_f64(x), _f64(y))[..., 0], dtype, c / (x64[..., 0] * y64[..., 0]))
    px = J["project"](x, c=c)
    _assert_close(px, x64, dtype, _coords_scale(x64, c), what="project")
    pc = _f64(px)
    constraint = c * ref.inner(pc, pc)[..., 0]
    assert np.max(np.abs(constraint + 1) / (c * pc[..., 0] ** 2)) <= TOL[dtype] * 5
    # Tangent projection: tangent, and the identity on tangent vectors.
    w = jnp.asarray(rng.normal(size=x.shape) / sc, dtype)
    pw = J["project_tangent"](x, w, c=c)
    _assert_close(
        pw, ref.proj_tangent(x64, _f64(w), c), dtype, sc / x64[..., :1] ** 2, 5, "proj_tangent"
    )
    _assert_close(ref.inner(x64, _f64(pw)), 0 * x64[..., :1], dtype, sc / x64[..., :1], 20, "tan")
    v = jnp.asarray(ref.tangent(rng, x64, c), dtype)
    v64 = _tangent_at(x64, _f64(v), c)
    scale = sc / x64[..., :1]
    _assert_close(J["project_tangent"](x, v, c=c), v64, dtype, scale, 20, "proj on tangent")
    # Exact maps to and from the ball: the same as poincare's, and inverse of each other.
    b = jnp.asarray(pref.points(rng, (2, 8, D), c, rmax=0.9), dtype)
    b64 = _f64(b)
    p = J["from_poincare"](b, c=c)
    np.testing.assert_array_equal(_f64(p), _f64(jax.jit(P.to_lorentz)(b, c=c)))
    _assert_close(p, ref.from_poincare(b64, c), dtype, _coords_scale(_f64(p), c), 5, "from")
    np.testing.assert_array_equal(
        _f64(J["to_poincare"](x, c=c)), _f64(jax.jit(P.from_lorentz)(x, c=c))
    )
    _assert_close(J["to_poincare"](x, c=c), ref.to_poincare(x64, c), dtype, sc, 5, "to_poincare")
    _assert_close(J["to_poincare"](p, c=c), b64, dtype, sc, 20, "ball round trip")


@params
def test_distances_reference_axioms_and_ball_agreement(seed, dtype, c):
    (x, y, z), (x64, y64, z64), _ = _case(seed, dtype, c, n=3)
    sc = np.sqrt(c)
    dxy = J["dist"](x, y, c=c)
    assert dxy.shape == x.shape[:-1] and dxy.dtype == dtype
    _assert_close(dxy, ref.dist(x64, y64, c), dtype, sc, 5, "dist vs arcosh(-c<x,y>)")
    _assert_close(J["dist"](y, x, c=c), _f64(dxy), dtype, sc, 2, "symmetry")
    assert np.all(_f64(J["dist"](x, x, c=c)) == 0.0), "dist(x, x) must be exactly 0"
    tri = _f64(J["dist"](x, z, c=c)) - _f64(dxy) - _f64(J["dist"](y, z, c=c))
    assert np.max(tri) * sc <= TOL[dtype] * 10, "triangle inequality"
    o = jnp.broadcast_to(L.origin(D, c=c, dtype=dtype), x.shape)
    _assert_close(J["dist0"](x, c=c), ref.dist(0 * x64 + ref.origin(D, c), x64, c), dtype, sc)
    _assert_close(J["dist0"](x, c=c), _f64(J["dist"](o, x, c=c)), dtype, sc, 5, "dist0 = d(o,.)")
    # The isometry with the ball: d_H(x, y) = d_D(to_poincare x, to_poincare y).
    bx, by = P.from_lorentz(x64, c=c), P.from_lorentz(y64, c=c)
    _assert_close(dxy, _f64(P.dist(bx, by, c=c)), dtype, sc, 5, "vs poincare.dist")
    # Lorentz boosts (isometries) preserve distances: apply the same boost to both points.
    phi = 0.7
    boost = np.eye(D + 1)
    boost[:2, :2] = [[np.cosh(phi), np.sinh(phi)], [np.sinh(phi), np.cosh(phi)]]
    moved = J["dist"](jnp.asarray(x64 @ boost.T, dtype), jnp.asarray(y64 @ boost.T, dtype), c=c)
    _assert_close(moved, _f64(dxy), dtype, sc, 20, "boost invariance")


@params
def test_exp_log_transport_and_gradients(seed, dtype, c):
    (x, y), (x64, y64), rng = _case(seed, dtype, c)
    sc = np.sqrt(c)
    xs = sc / x64[..., :1]
    v = jnp.asarray(ref.tangent(rng, x64, c), dtype)
    v64 = _tangent_at(x64, _f64(v), c)
    e = J["expmap"](x, v, c=c)
    e64 = ref.expmap(x64, v64, c)
    _assert_close(e, e64, dtype, sc / e64[..., :1], 10, "expmap vs reference")
    lg = J["logmap"](x, y, c=c)
    _assert_close(lg, ref.logmap(x64, y64, c), dtype, xs, 20, "logmap vs reference")
    # Tangency, norms and inverses.
    _assert_close(ref.inner(x64, _f64(lg)), 0 * xs, dtype, xs, 20, "log is tangent")
    _assert_close(J["tangent_norm"](x, lg, c=c), ref.dist(x64, y64, c), dtype, sc, 20, "|log|")
    _assert_close(J["tangent_norm"](x, v, c=c), np.sqrt(ref.inner(v64, v64))[..., 0], dtype, sc)
    _assert_close(J["dist"](x, e, c=c), np.sqrt(ref.inner(v64, v64))[..., 0], dtype, sc, 20)
    _assert_close(J["expmap"](x, lg, c=c), y64, dtype, sc / y64[..., :1], 50, "exp(log)")
    _assert_close(J["logmap"](x, e, c=c), v64, dtype, xs, 50, "log(exp)")
    assert np.all(_f64(J["logmap"](x, x, c=c)) == 0.0), "log_x(x) must be exactly 0"
    # At the origin.
    o = jnp.broadcast_to(L.origin(D, c=c, dtype=dtype), x.shape)
    v0 = jnp.asarray(np.concatenate([0 * x64[..., :1], _f64(v)[..., 1:]], -1), dtype)
    v064 = _f64(v0)
    _assert_close(J["expmap0"](v0, c=c), _f64(J["expmap"](o, v0, c=c)), dtype, sc / x64[..., :1])
    _assert_close(J["logmap0"](x, c=c), ref.logmap(0 * x64 + ref.origin(D, c), x64, c), dtype, sc)
    _assert_close(J["logmap0"](J["expmap0"](v0, c=c), c=c), v064, dtype, sc, 20, "log0(exp0)")
    _assert_close(
        J["to_poincare"](J["expmap0"](v0, c=c), c=c),
        _f64(P.expmap0(v0[..., 1:] / 2, c=c)),
        dtype,
        sc,
        10,
        "exp0 vs ball",
    )
    # Parallel transport: the textbook form, Minkowski-norm preservation, log_x y -> -log_y x.
    pt = J["parallel_transport"](x, y, v, c=c)
    _assert_close(pt, ref.parallel_transport(x64, y64, v64, c), dtype, sc / y64[..., :1], 20)
    _assert_close(ref.inner(y64, _f64(pt)), 0 * xs, dtype, sc / y64[..., :1], 20, "PT tangent")
    _assert_close(
        J["tangent_norm"](y, pt, c=c), np.sqrt(ref.inner(v64, v64))[..., 0], dtype, sc, 20
    )
    back = J["parallel_transport"](x, y, lg, c=c)
    _assert_close(back, -_f64(J["logmap"](y, x, c=c)), dtype, sc / y64[..., :1], 50, "PT log")
    _assert_close(J["parallel_transport"](x, x, v, c=c), v64, dtype, xs, 5, "PT x -> x")
    # Riemannian gradient of d(., y): -log_x(y) / d, unit norm; against the reference.
    egrad = jax.jit(jax.grad(lambda a: jnp.sum(L.dist(a, y, c=c).astype(jnp.float32))))(x)
    rgrad = J["egrad2rgrad"](x, egrad, c=c)
    d64 = ref.dist(x64, y64, c)[..., None]
    _assert_close(rgrad, -ref.logmap(x64, y64, c) / d64, dtype, 1 / x64[..., :1], 200, "rgrad")
    _assert_close(J["tangent_norm"](x, rgrad, c=c), 1 + 0 * d64[..., 0], dtype, 1.0, 200)
    g = jnp.asarray(rng.normal(size=x.shape), dtype)
    _assert_close(
        J["egrad2rgrad"](x, g, c=c),
        ref.egrad2rgrad(x64, _f64(g), c),
        dtype,
        1 / x64[..., :1] ** 2,
        10,
        "egrad2rgrad ref",
    )


@pytest.mark.parametrize("c", CURVATURES)
def test_dist_is_cancellation_free_for_nearly_coincident_points(c):
    """float32 distances of pairs 1e-4 apart (in ball units) at sqrt(c) d(o, x) up to 6 agree
    with float64 on the same inputs to ~1e-6 relative, where arcosh(-c<x, y>) is off by ~1e-3."""
    rng = np.random.default_rng(3)
    x = ref.points(rng, (64, 16), c, rmin=0.0, rmax=6.0)
    v = ref.tangent(rng, x, c, scale=1e-4)
    y = ref.expmap(x, v, c)
    x32, y32 = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    x64, y64 = _sheet(_f64(x32), c), _sheet(_f64(y32), c)
    expected = ref.dist_exact(x64, y64, c)
    got = _f64(jax.jit(lambda a, b: L.dist(a, b, c=c))(x32, y32))
    rel = np.max(np.abs(got - expected) / expected)
    assert rel < 2e-5, rel
    naive = np.arccosh(np.maximum(-c * _f64(L.inner(x32, y32)), 1.0)) / np.sqrt(c)
    assert np.max(np.abs(naive - expected) / expected) > 100 * rel
    # logmap shares the same t: its norm is the distance.
    lg = jax.jit(lambda a, b: L.logmap(a, b, c=c))(x32, y32)
    n = _f64(L.tangent_norm(x32, lg, c=c))
    assert np.max(np.abs(n - expected) / expected) < 2e-4


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64], ids=lambda d: d.__name__)
def test_small_curvature_limit_is_euclidean(dtype):
    rng = np.random.default_rng(4)
    xs, ys = rng.normal(size=(8, D)), rng.normal(size=(8, D))
    c = 1e-9
    x = L.project(jnp.asarray(np.concatenate([np.ones((8, 1)), xs], -1), dtype), c=c)
    y = L.project(jnp.asarray(np.concatenate([np.ones((8, 1)), ys], -1), dtype), c=c)
    d = _f64(J["dist"](x, y, c=c))
    np.testing.assert_allclose(d, np.linalg.norm(_f64(x)[:, 1:] - _f64(y)[:, 1:], axis=-1), 1e-5)
    lg = _f64(J["logmap"](x, y, c=c))[:, 1:]
    np.testing.assert_allclose(lg, _f64(y)[:, 1:] - _f64(x)[:, 1:], rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Hard places
# ----------------------------------------------------------------------------------------------


def _edge_pairs(c: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[K, D + 1] points x, y and tangent-ish vectors v at the hard places, for curvature c."""
    e = np.eye(D)
    u = np.ones(D) / np.sqrt(D)

    def pt(r, direction):
        return np.concatenate([[np.cosh(r)], np.sinh(r) * direction]) / np.sqrt(c)

    cases = [
        (pt(1.0, u), pt(1.0, u), 0.3 * u),  # x == y
        (pt(0.0, u), pt(0.0, u), 0 * u),  # x == y == o, v = 0
        (pt(0.0, u), pt(2.0, e[1]), 1e3 * u),  # x == o, huge v
        (pt(15.0, u), pt(15.0, u), 1e-3 * u),  # x == y far out (a float32 ball saturates)
        (pt(15.0, u), pt(15.0, -u), 1e8 * u),  # far and antipodal; huge radial v
        (pt(30.0, e[0]), pt(30.0, e[1]), e[2]),  # far apart, far out
        (pt(2.0, u), pt(2.0 + 1e-6, u), 1e-20 * u),  # nearly coincident, radial; tiny v
        (pt(1e-20, u), pt(0.0, u), 1e30 * e[3]),  # x tiny; absurd v
        (pt(5.0, e[2]), pt(5.0, e[2]) * (1 + 1e-3), -e[2]),  # y off the sheet
    ]
    xs, ys, vs = (np.stack(z) for z in zip(*cases, strict=True))
    vs = np.concatenate([np.zeros((len(cases), 1)), vs], -1) / np.sqrt(c)
    return xs, ys, vs


FUNCTIONS = {
    "inner": lambda x, y, v, c: L.inner(x, v),
    "project": lambda x, y, v, c: L.project(y, c=c),
    "project_tangent": lambda x, y, v, c: L.project_tangent(x, v, c=c),
    "tangent_norm": lambda x, y, v, c: L.tangent_norm(x, v, c=c),
    "dist": lambda x, y, v, c: L.dist(x, y, c=c),
    "dist0": lambda x, y, v, c: L.dist0(x, c=c),
    "expmap": lambda x, y, v, c: L.expmap(x, v, c=c),
    "expmap0": lambda x, y, v, c: L.expmap0(v, c=c),
    "logmap": lambda x, y, v, c: L.logmap(x, y, c=c),
    "logmap0": lambda x, y, v, c: L.logmap0(y, c=c),
    "parallel_transport": lambda x, y, v, c: L.parallel_transport(x, y, v, c=c),
    "egrad2rgrad": lambda x, y, v, c: L.egrad2rgrad(x, v, c=c),
    "to_poincare": lambda x, y, v, c: L.to_poincare(x, c=c),
    "from_poincare": lambda x, y, v, c: L.from_poincare(L.to_poincare(y, c=c), c=c),
}


@jax.jit
def _values_and_grads(x, y, v, c):
    out = {}
    for name, f in FUNCTIONS.items():
        # Each output is normalised by its own (stopped) scale so that far points' huge
        # coordinates do not overflow the float32 sum; the gradients stay those of f.
        def loss(a, b, w, cc, f=f):
            r = f(a, b, w, cc)
            r = r.astype(jnp.promote_types(r.dtype, jnp.float32))  # bfloat16 sums overflow
            return jnp.sum(r / jax.lax.stop_gradient(1.0 + jnp.max(jnp.abs(r))))

        out[name] = jax.value_and_grad(loss, argnums=(0, 1, 2, 3))(x, y, v, c)
    return out


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float64], ids=str)
def test_values_and_gradients_finite_at_hard_places(dtype):
    bad = []
    for c in CURVATURES:  # c is traced: one compilation per dtype
        xs, ys, vs = _edge_pairs(c)
        args = [jnp.asarray(a, dtype) for a in (xs, ys, vs)]
        out = _values_and_grads(*args, jnp.asarray(c, dtype))
        for name, (value, grads) in out.items():
            if not np.isfinite(float(value)):
                bad.append(f"{name} (c={c})")
            for arg, g in zip(("x", "y", "v", "c"), grads, strict=True):
                if not np.all(np.isfinite(np.asarray(g.astype(jnp.float32)))):
                    bad.append(f"d {name} / d {arg} (c={c})")
    assert not bad, f"non-finite in {dtype.__name__}: {bad}"


def test_edge_values_are_right():
    c = 1.0
    x = L.expmap0(jnp.asarray([[0.0, 0.3, 0.1, 0.0, 0.2]], jnp.float32), c=c)
    np.testing.assert_array_equal(L.dist(x, x, c=c), 0.0)
    np.testing.assert_array_equal(jax.grad(lambda a: L.dist(a, x, c=c).sum())(x), 0.0)
    o = L.origin(4, c=c)[None]
    np.testing.assert_array_equal(jax.grad(lambda a: L.dist0(a, c=c).sum())(o), 0.0)
    np.testing.assert_array_equal(L.logmap(x, x, c=c), 0.0)
    np.testing.assert_array_equal(L.expmap(x, 0 * x, c=c), L.project(x, c=c))
    # A float32 point 30 units out (where the float32 ball is long saturated) is still
    # resolved radially: the pair (30, 30.5) is at distance 0.5.
    u = np.ones(4) / 2.0
    far = [np.concatenate([[np.cosh(r)], np.sinh(r) * u]) for r in (30.0, 30.5)]
    a, b = (jnp.asarray(p[None], jnp.float32) for p in far)
    np.testing.assert_allclose(L.dist(a, b, c=c), 0.5, rtol=1e-5)
    np.testing.assert_allclose(L.dist0(b, c=c), 30.5, rtol=1e-6)
    # expmap0 of an absurd vector is finite (clamped geodesic length) and on the sheet.
    huge = L.expmap0(jnp.asarray([[0.0, 1e30, 0, 0, 0]], jnp.float32), c=c)
    assert np.all(np.isfinite(np.asarray(huge)))
    assert 40 < float(L.dist0(huge, c=c)[0]) < 45
    # A drifted time coordinate is ignored (read as its projection).
    drift = x.at[..., 0].multiply(1.01)
    np.testing.assert_array_equal(L.dist(drift, x, c=c), 0.0)


def test_check_grads_float64():
    rng = np.random.default_rng(5)
    c = jnp.float64(0.7)
    x = jnp.asarray(ref.points(rng, (3, 4), 0.7, rmax=1.5))
    y = jnp.asarray(ref.points(rng, (3, 4), 0.7, rmax=1.5))
    v = jnp.asarray(ref.tangent(rng, np.asarray(x), 0.7))
    g = jnp.asarray(rng.normal(size=(3, 5)))
    cases = [
        (lambda a, b, cc: L.dist(a, b, c=cc), (x, y, c)),
        (lambda a, cc: L.dist0(a, c=cc), (x, c)),
        (lambda a, w, cc: L.expmap(a, w, c=cc), (x, v, c)),
        (lambda w, cc: L.expmap0(w, c=cc), (v, c)),
        (lambda a, b, cc: L.logmap(a, b, c=cc), (x, y, c)),
        (lambda b, cc: L.logmap0(b, c=cc), (y, c)),
        (lambda a, b, w, cc: L.parallel_transport(a, b, w, c=cc), (x, y, v, c)),
        (lambda a, w, cc: L.egrad2rgrad(a, w, c=cc), (x, g, c)),
        (lambda a, w, cc: L.project_tangent(a, w, c=cc), (x, g, c)),
        (lambda a, w, cc: L.tangent_norm(a, w, c=cc), (x, v, c)),
        (lambda a, cc: L.project(a, c=cc), (x, c)),
        (lambda a, b: L.inner(a, b), (x, y)),
    ]
    # The small-t series of logmap, on a nearly coincident pair.
    close = jnp.asarray(ref.expmap(np.asarray(x), 1e-3 * np.asarray(v), 0.7))
    cases.append((lambda a, b, cc: L.logmap(a, b, c=cc), (x, close, c)))
    for group in (cases[:7], cases[7:]):
        flat, spans = [], []
        for _, args in group:
            spans.append((len(flat), len(flat) + len(args)))
            flat.extend(args)

        def combined(*a, group=group, spans=spans):
            return tuple(f(*a[i:j]) for (f, _), (i, j) in zip(group, spans, strict=True))

        check_grads(jax.jit(combined), tuple(flat), order=1, modes=("rev",), atol=1e-6, rtol=1e-6)


def test_jit_vmap_and_dtypes():
    rng = np.random.default_rng(6)
    x = jnp.asarray(ref.points(rng, (2, 3, 4), 1.3), jnp.float32)
    y = jnp.asarray(ref.points(rng, (2, 3, 4), 1.3), jnp.float32)

    def several(a, b):
        lg = L.logmap(a, b, c=1.3)
        return (
            L.dist(a, b, c=1.3),
            lg,
            L.expmap(a, lg, c=1.3),
            L.parallel_transport(a, b, lg, c=1.3),
        )

    eager = jax.jit(several)(x, y)
    mapped = jax.jit(jax.vmap(jax.vmap(several)))(x, y)
    for e, m in zip(eager, mapped, strict=True):
        np.testing.assert_allclose(m, e, rtol=1e-5, atol=1e-5)
    # Broadcasting of leading axes.
    np.testing.assert_allclose(
        L.dist(x, y[0, 0], c=1.3), L.dist(x, jnp.broadcast_to(y[0, 0], x.shape), c=1.3)
    )
    assert L.dist(x.astype(jnp.bfloat16), y.astype(jnp.bfloat16), c=1.0).dtype == jnp.bfloat16
    assert L.expmap0(x.astype(jnp.bfloat16), c=1.0).dtype == jnp.bfloat16
    assert L.dist(x, y.astype(jnp.float64), c=1.0).dtype == jnp.float64
    # A learned curvature: the gradient w.r.t. c matches finite differences.
    total = jax.jit(lambda cc: L.dist(x, y, c=cc).sum())
    gc = jax.grad(total)(jnp.float32(1.3))
    fd = (total(jnp.float32(1.31)) - total(jnp.float32(1.29))) / 0.02
    np.testing.assert_allclose(gc, fd, rtol=1e-2)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: L.dist(jnp.zeros((2, 3)), jnp.zeros((2, 3)), c=0.0), "c must be a finite"),
        (lambda: L.expmap0(jnp.zeros(3), c=-1.0), "c must be a finite"),
        (lambda: L.dist0(jnp.zeros(3), c=jnp.asarray([1.0, 2.0])), "c must be a scalar"),
        (lambda: L.dist(jnp.zeros(3), jnp.zeros(4), c=1.0), "same last-axis size"),
        (lambda: L.logmap0(jnp.zeros((2, 1)), c=1.0), r"D \+ 1"),
        (lambda: L.inner(jnp.float32(1.0), jnp.zeros(3)), r"D \+ 1"),
        (lambda: L.origin(0, c=1.0), "dim must be"),
    ],
)
def test_bad_input_raises_clear_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
