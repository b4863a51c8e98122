"""Gyrovector identities and float64 references for hamjax.poincare, over seeds x dtypes x c.

Each check is done in "ball units" (positions times sqrt(c), distances times sqrt(c)) so one
tolerance per dtype serves every curvature. bfloat16 inputs are computed in float32 and rounded
back, so its tolerances are those of an 8-bit mantissa.
"""

from __future__ import annotations

import _poincare_ref as ref
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hamjax import poincare as P

DTYPES = [jnp.float32, jnp.bfloat16, jnp.float64]
CURVATURES = [1e-4, 1.0, 10.0]
SEEDS = [0, 1]
D = 5
# Max abs error, in ball units, of a single function vs the float64 reference.
TOL = {jnp.float32: 2e-5, jnp.bfloat16: 2e-2, jnp.float64: 1e-10}

# One jitted wrapper per public function: c is a traced argument, so a test sweep compiles once
# per (function, dtype, shape) rather than once per curvature.
J = {name: jax.jit(getattr(P, name)) for name in P.__all__ if name not in ("default_eps",)}


# float64 references in every test of this module (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("x64")


def _f64(a) -> np.ndarray:
    return np.asarray(jnp.asarray(a).astype(jnp.float64))


def _case(seed, dtype, c, n=3, rmax=0.9):
    """n arrays of points [len(SEEDS), 8, D] (row s drawn from SEEDS[s]) in the dtype, their
    float64 values (after rounding to the dtype), and an rng for further draws."""
    rngs = [np.random.default_rng([s, seed, int(c * 1e4)]) for s in SEEDS]
    pts = [
        jnp.asarray(np.stack([ref.points(r, (8, D), c, rmax=rmax) for r in rngs]), dtype)
        for _ in range(n)
    ]
    return pts, [_f64(p) for p in pts], rngs[0]


def _assert_close(actual, expected, dtype, scale=1.0, factor=1.0, what=""):
    err = np.max(np.abs(_f64(actual) - np.asarray(expected, np.float64)) * scale)
    tol = TOL[dtype] * factor
    assert err <= tol, f"{what}: max error {err:.3g} (ball units) > {tol:.3g}"


# Seeds are swept along the leading batch axis of every case (see _case); the test id's "seed"
# picks a further stream so that a failure can be replayed exactly.
params = pytest.mark.parametrize(
    "seed,dtype,c",
    [(0, d, c) for d in DTYPES for c in CURVATURES],
    ids=lambda v: getattr(v, "__name__", str(v)),
)


@params
def test_mobius_add_reference_and_left_cancellation(seed, dtype, c):
    (x, y), (x64, y64), _ = _case(seed, dtype, c, n=2)
    sc = np.sqrt(c)
    s = J["mobius_add"](x, y, c=c)
    assert s.dtype == dtype and s.shape == x.shape
    _assert_close(s, ref.mobius_add(x64, y64, c), dtype, sc, what="x (+) y")
    # (-x) (+) (x (+) y) = y: two roundings and a conformal amplification of up to ~10.
    back = J["mobius_add"](-x, s, c=c)
    _assert_close(back, y64, dtype, sc, factor=20, what="left cancellation")
    _assert_close(J["mobius_add"](x, jnp.zeros_like(x), c=c), x64, dtype, sc, what="x (+) 0")
    _assert_close(J["mobius_add"](x, -x, c=c), 0 * x64, dtype, sc, factor=5, what="x (+) -x")


@params
def test_expmap_logmap_inverse_at_zero_and_at_x(seed, dtype, c):
    (x, y), (x64, y64), rng = _case(seed, dtype, c, n=2)
    sc = np.sqrt(c)
    # sqrt(c)|v| ~ 1: expmap0 stays clear of the boundary, where log0 is ill-conditioned.
    v = jnp.asarray(0.5 * rng.normal(size=x.shape) / sc, dtype)
    v64 = _f64(v)
    _assert_close(J["expmap0"](v, c=c), ref.expmap0(v64, c), dtype, sc, what="expmap0")
    _assert_close(J["logmap0"](x, c=c), ref.logmap0(x64, c), dtype, sc, factor=5, what="logmap0")
    _assert_close(J["logmap0"](J["expmap0"](v, c=c), c=c), v64, dtype, sc, 50, "log0(exp0 v)")
    _assert_close(J["expmap0"](J["logmap0"](x, c=c), c=c), x64, dtype, sc, 5, "exp0(log0 x)")
    _assert_close(J["expmap"](x, v, c=c), ref.expmap(x64, v64, c), dtype, sc, 5, "expmap")
    _assert_close(J["logmap"](x, y, c=c), ref.logmap(x64, y64, c), dtype, sc, 20, "logmap")
    # exp_x(log_x y) = y; log_x(exp_x v) = v for moderate v (|v| lambda_x <= 4).
    _assert_close(J["expmap"](x, J["logmap"](x, y, c=c), c=c), y64, dtype, sc, 50, "exp(log)")
    lam = ref.lam(x64, c)
    vs = jnp.asarray(
        v64 / np.maximum(1.0, lam * np.linalg.norm(v64, axis=-1, keepdims=True)), dtype
    )
    _assert_close(
        J["logmap"](x, J["expmap"](x, vs, c=c), c=c), _f64(vs), dtype, sc, 100, "log(exp)"
    )
    # expmap at the origin is expmap0.
    zero = jnp.zeros_like(x)
    _assert_close(J["expmap"](zero, v, c=c), _f64(J["expmap0"](v, c=c)), dtype, sc, 2, "exp_0")


@params
def test_distance_axioms_and_references(seed, dtype, c):
    (x, y, z), (x64, y64, z64), _ = _case(seed, dtype, c, n=3)
    sc = np.sqrt(c)
    dxy = J["dist"](x, y, c=c)
    assert dxy.shape == x.shape[:-1] and dxy.dtype == dtype
    _assert_close(dxy, ref.dist(x64, y64, c), dtype, sc, factor=10, what="dist vs artanh form")
    _assert_close(J["dist"](y, x, c=c), _f64(dxy), dtype, sc, what="symmetry")
    assert np.all(_f64(J["dist"](x, x, c=c)) == 0.0), "dist(x, x) must be exactly 0"
    tri = _f64(J["dist"](x, z, c=c)) - _f64(dxy) - _f64(J["dist"](y, z, c=c))
    assert np.max(tri) * sc <= TOL[dtype] * 10, "triangle inequality"
    zero = jnp.zeros_like(x)
    _assert_close(J["dist0"](x, c=c), _f64(J["dist"](zero, x, c=c)), dtype, sc, what="dist0")
    _assert_close(J["dist0"](x, c=c), ref.dist(0 * x64, x64, c), dtype, sc, 10, "dist0 ref")
    # Möbius translations are isometries: d(a (+) x, a (+) y) = d(x, y).
    a = jnp.asarray(ref.points(np.random.default_rng(seed), x.shape, c, rmax=0.5), dtype)
    moved = J["dist"](J["mobius_add"](a, x, c=c), J["mobius_add"](a, y, c=c), c=c)
    _assert_close(moved, _f64(dxy), dtype, sc, factor=100, what="isometry")
    # Riemannian norm of the log map is the distance; d(x, exp_x v) = lambda_x |v|.
    lognorm = ref.lam(x64, c)[..., 0] * np.linalg.norm(_f64(J["logmap"](x, y, c=c)), axis=-1)
    _assert_close(lognorm, _f64(dxy), dtype, sc, factor=50, what="lambda |log_x y|")


@params
def test_pairwise_dist_matches_broadcast_dist(seed, dtype, c):
    rng = np.random.default_rng([seed, 7])
    x = jnp.asarray(ref.points(rng, (6, D), c, rmax=0.95), dtype)
    y = jnp.asarray(np.concatenate([_f64(x)[:3], ref.points(rng, (4, D), c, rmax=0.95)]), dtype)
    pw = J["pairwise_dist"](x, y, c=c)
    assert pw.shape == (6, 7) and pw.dtype == dtype
    sc = np.sqrt(c)
    bc = _f64(J["dist"](x[:, None], y[None], c=c))
    _assert_close(pw, bc, dtype, sc, factor=20, what="pairwise vs broadcast")
    # Coincident pairs (x[i] == y[i]) are 0 up to the documented float32 accuracy.
    diag = np.diagonal(_f64(pw)[:3, :3]) * sc
    assert np.all(np.abs(diag) <= {jnp.float64: 1e-9}.get(dtype, 1e-3)), diag


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64], ids=lambda d: d.__name__)
def test_small_curvature_limit_is_euclidean(dtype):
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(8, D)), dtype)
    y = jnp.asarray(rng.normal(size=(8, D)), dtype)
    c = 1e-9
    x64, y64 = _f64(x), _f64(y)
    d = _f64(J["dist"](x, y, c=c))
    np.testing.assert_allclose(d, 2 * np.linalg.norm(x64 - y64, axis=-1), rtol=1e-5)
    np.testing.assert_allclose(_f64(J["mobius_add"](x, y, c=c)), x64 + y64, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_f64(J["expmap0"](x, c=c)), x64, rtol=1e-5)
    np.testing.assert_allclose(
        _f64(J["pairwise_dist"](x, y, c=c)),
        2 * np.linalg.norm(x64[:, None] - y64[None], axis=-1),
        rtol=1e-4,
    )


@params
def test_gyration_and_parallel_transport(seed, dtype, c):
    (u, v, x), (u64, v64, x64), rng = _case(seed, dtype, c, n=3)
    sc = np.sqrt(c)
    w = jnp.asarray(ref.points(rng, u.shape, c, rmax=0.5), dtype)
    w64 = _f64(w)
    g = J["gyration"](u, v, w, c=c)
    _assert_close(g, ref.gyration(u64, v64, w64, c), dtype, sc, factor=50, what="vs composition")
    # Gyrations are rotations: |gyr[u, v] w| = |w|.
    _assert_close(
        np.linalg.norm(_f64(g), axis=-1),
        np.linalg.norm(w64, axis=-1),
        dtype,
        sc,
        factor=10,
        what="gyration norm",
    )
    # Gyro-commutative law: u (+) v = gyr[u, v](v (+) u).
    vu = J["mobius_add"](v, u, c=c)
    _assert_close(
        J["gyration"](u, v, vu, c=c),
        _f64(J["mobius_add"](u, v, c=c)),
        dtype,
        sc,
        factor=20,
        what="gyrocommutative",
    )
    # Parallel transport preserves the Riemannian norm lambda |v| and maps log_x y to -log_y x.
    t = rng.normal(size=u.shape) / sc
    pt = J["parallel_transport"](x, u, jnp.asarray(t, dtype), c=c)
    _assert_close(
        pt,
        ref.parallel_transport(x64, u64, _f64(jnp.asarray(t, dtype)), c),
        dtype,
        sc,
        factor=50,
        what="PT vs reference",
    )
    n_before = ref.lam(x64, c)[..., 0] * np.linalg.norm(_f64(jnp.asarray(t, dtype)), axis=-1)
    n_after = ref.lam(u64, c)[..., 0] * np.linalg.norm(_f64(pt), axis=-1)
    _assert_close(n_after, n_before, dtype, sc, factor=100, what="PT Riemannian norm")
    back = J["parallel_transport"](x, u, J["logmap"](x, u, c=c), c=c)
    _assert_close(back, -_f64(J["logmap"](u, x, c=c)), dtype, sc, factor=100, what="PT log")


@params
def test_scalar_mul_and_matvec(seed, dtype, c):
    (x,), (x64,), rng = _case(seed, dtype, c, n=1, rmax=0.8)
    sc = np.sqrt(c)
    r = rng.uniform(-2, 2, size=x.shape[:-1])
    _assert_close(
        J["mobius_scalar_mul"](r, x, c=c),
        ref.scalar_mul(r, x64, c),
        dtype,
        sc,
        10,
        "scalar_mul ref",
    )
    _assert_close(
        J["mobius_scalar_mul"](2.0, x, c=c),
        _f64(J["mobius_add"](x, x, c=c)),
        dtype,
        sc,
        20,
        "2 (x) x = x (+) x",
    )
    rs = J["mobius_scalar_mul"](0.3, J["mobius_scalar_mul"](1.5, x, c=c), c=c)
    _assert_close(rs, _f64(J["mobius_scalar_mul"](0.45, x, c=c)), dtype, sc, 20, "(rs) x")
    radd = J["mobius_add"](
        J["mobius_scalar_mul"](0.4, x, c=c), J["mobius_scalar_mul"](0.7, x, c=c), c=c
    )
    _assert_close(radd, _f64(J["mobius_scalar_mul"](1.1, x, c=c)), dtype, sc, 20, "(r+s) x")
    d0 = _f64(J["dist0"](J["mobius_scalar_mul"](r, x, c=c), c=c))
    _assert_close(d0, np.abs(r) * _f64(J["dist0"](x, c=c)), dtype, sc, 50, "d0(r x)")

    m = rng.normal(size=(3, D))
    m2 = rng.normal(size=(D, D)) / np.sqrt(D)
    mv = J["mobius_matvec"](jnp.asarray(m, dtype), x, c=c)
    assert mv.shape == x.shape[:-1] + (3,)
    _assert_close(mv, ref.matvec(_f64(jnp.asarray(m, dtype)), x64, c), dtype, sc, 10, "matvec")
    mm = J["mobius_matvec"](
        jnp.asarray(m, dtype), J["mobius_matvec"](jnp.asarray(m2, dtype), x, c=c), c=c
    )
    ref_mm = J["mobius_matvec"](
        jnp.asarray(_f64(jnp.asarray(m, dtype)) @ _f64(jnp.asarray(m2, dtype)), dtype), x, c=c
    )
    _assert_close(mm, _f64(ref_mm), dtype, sc, 50, "(M M') x")
    q, _ = np.linalg.qr(rng.normal(size=(D, D)))
    _assert_close(
        J["mobius_matvec"](jnp.asarray(q, dtype), x, c=c),
        x64 @ _f64(jnp.asarray(q, dtype)).T,
        dtype,
        sc,
        20,
        "orthogonal M",
    )
    # Mx = 0 maps to the origin, finitely.
    z = J["mobius_matvec"](jnp.zeros((3, D), dtype), x, c=c)
    assert np.all(_f64(z) == 0)


@params
def test_lorentz_round_trip_and_distance(seed, dtype, c):
    (x, y), (x64, y64), _ = _case(seed, dtype, c, n=2)
    sc = np.sqrt(c)
    p = J["to_lorentz"](x, c=c)
    assert p.shape == x.shape[:-1] + (D + 1,)
    p64 = _f64(p)
    # On the hyperboloid: -p0^2 + |p_s|^2 = -1/c (relative to p0^2).
    constraint = (-(p64[..., 0] ** 2) + np.sum(p64[..., 1:] ** 2, -1)) * c
    assert np.max(np.abs(constraint + 1) / (c * p64[..., 0] ** 2)) <= TOL[dtype] * 20
    assert np.all(p64[..., 0] > 0)
    _assert_close(p, ref.to_lorentz(x64, c), dtype, sc / ref.lam(x64, c), 10, "to_lorentz")
    _assert_close(J["from_lorentz"](p, c=c), x64, dtype, sc, 20, "round trip")
    dl = ref.lorentz_dist(ref.to_lorentz(x64, c), ref.to_lorentz(y64, c), c)
    _assert_close(J["dist"](x, y, c=c), dl, dtype, sc, 10, "Lorentz distance")


@jax.jit
def _dist_grad(x, y, c):
    return jax.grad(lambda a: jnp.sum(P.dist(a, y, c=c).astype(jnp.float32)))(x)


@params
def test_conformal_factor_egrad2rgrad_project(seed, dtype, c):
    (x, y), (x64, y64), _ = _case(seed, dtype, c, n=2)
    sc = np.sqrt(c)
    lam = J["conformal_factor"](x, c=c)
    assert lam.shape == x.shape[:-1]
    np.testing.assert_allclose(_f64(lam), ref.lam(x64, c)[..., 0], rtol=TOL[dtype] * 10)
    assert P.conformal_factor(x, c=c, keepdims=True).shape == x.shape[:-1] + (1,)
    # The distance to a point has unit Riemannian gradient: lambda_x |rgrad| = 1, and the
    # Riemannian gradient is -log_x(y) / d(x, y).
    egrad = _dist_grad(x, y, c)
    rgrad = _f64(J["egrad2rgrad"](x, egrad, c=c))
    unit = ref.lam(x64, c)[..., 0] * np.linalg.norm(rgrad, axis=-1)
    np.testing.assert_allclose(unit, 1.0, atol=TOL[dtype] * 500)
    expect = -_f64(J["logmap"](x, y, c=c)) / _f64(J["dist"](x, y, c=c))[..., None]
    _assert_close(rgrad, expect, dtype, sc, 500, "rgrad = -log/d")
    # project: identity inside; outside, lands on radius (1 - eps)/sqrt(c).
    assert np.all(_f64(J["project"](x, c=c)) == x64)
    far = jnp.asarray(x64 * 100.0, dtype)
    pr = _f64(J["project"](far, c=c, eps=0.1))
    np.testing.assert_allclose(np.linalg.norm(pr, axis=-1) * sc, 0.9, rtol=TOL[dtype] * 10)
    pr = _f64(J["project"](far, c=c))
    r = np.linalg.norm(pr, axis=-1) * sc
    assert np.all(r < 1.0) and np.all(r >= 1 - 2 * P.default_eps(dtype)), r
