"""Hypothesis property tests: points anywhere in the ball (up to 1e-6 of the boundary), any c.

Derandomized (the examples are a fixed function of the test), few examples, and every function
jitted once at fixed shapes so the sweep costs little more than one call per example.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hamjax import poincare as P

D = 3
SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)


# float64 references in every test of this module (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("x64")


curvatures = st.floats(-4.0, 1.0).map(lambda e: float(10.0**e))  # c in [1e-4, 10]
directions = st.lists(st.floats(-1.0, 1.0), min_size=D, max_size=D).filter(
    lambda v: np.linalg.norm(v) > 1e-3
)
radii = st.one_of(
    st.floats(0.0, 1.0 - 1e-6),  # anywhere
    st.floats(-6.0, -1.0).map(lambda e: 1.0 - 10.0**e),  # log-spaced towards the boundary
)


@st.composite
def ball_points(draw, n):
    """(c, [n, D] float64 points with sqrt(c)|x| = r, and their radii r)."""
    c = draw(curvatures)
    pts, rs = [], []
    for _ in range(n):
        v = np.asarray(draw(directions))
        r = draw(radii)
        pts.append(v / np.linalg.norm(v) * r / np.sqrt(c))
        rs.append(r)
    return c, np.stack(pts), np.asarray(rs)


@jax.jit
def _geometry(pts, c):
    x, y, z = pts[0], pts[1], pts[2]
    return {
        "cancel": P.mobius_add(-x, P.mobius_add(x, y, c=c), c=c),
        "dxy": P.dist(x, y, c=c),
        "dyx": P.dist(y, x, c=c),
        "dxz": P.dist(x, z, c=c),
        "dyz": P.dist(y, z, c=c),
        "pw": P.pairwise_dist(pts, pts, c=c),
        "d0": P.dist0(x, c=c),
        "d0ref": P.dist(jnp.zeros_like(x), x, c=c),
        "lognorm": P.conformal_factor(x, c=c) * jnp.linalg.norm(P.logmap(x, y, c=c)),
        "lorentz": P.from_lorentz(P.to_lorentz(x, c=c), c=c),
    }


@SETTINGS
@given(ball_points(3))
def test_identities_anywhere_in_the_ball_float64(case):
    c, pts, r = case
    out = {k: np.asarray(v) for k, v in _geometry(jnp.asarray(pts), c).items()}
    x, y = pts[0], pts[1]
    sc = np.sqrt(c)
    lam = 2.0 / (1.0 - r**2)  # conformal factors (in ball units)
    # Left cancellation: x (+) y has a conformal factor up to ~lambda_x lambda_y, and undoing
    # it loses that factor squared in relative accuracy (1e-6 at sqrt(c)|x| = 1 - 1e-5).
    err = np.max(np.abs(out["cancel"] - y)) * sc
    assert err <= 1e-14 * (lam[0] * lam[1]) ** 2, err
    # Metric axioms, dist0 and the Riemannian norm of log, with rounding-level slack.
    d = out["dxy"] * sc
    scale = 1e-9 * (1.0 + d)
    assert d >= 0
    assert abs(out["dyx"] * sc - d) <= scale
    assert out["dxz"] * sc <= d + out["dyz"] * sc + 1e-9 * (1 + out["dxz"] * sc)
    assert abs(out["d0"] - out["d0ref"]) * sc <= 1e-9 * (1 + out["d0"] * sc)
    # pairwise_dist agrees with dist on every pair, including the diagonal (0).
    pw = out["pw"] * sc
    assert np.max(np.abs(np.diagonal(pw))) <= 1e-6
    assert abs(pw[0, 1] - d) <= 1e-6 * (1 + d) * lam[0]
    if r.max() < 1 - 1e-4:  # artanh(sqrt(c)|(-x)+y|) is resolvable: log is a unit-speed chart
        assert abs(out["lognorm"] * sc - d) <= 1e-7 * (1 + d) * lam[0]
    assert np.max(np.abs(out["lorentz"] - x)) * sc <= 1e-10 * lam[0]


@jax.jit
def _f32_grads(pts, c):
    def loss(p, cc):
        x, y = p[0], p[1]
        return (
            P.dist(x, y, c=cc)
            + jnp.sum(P.pairwise_dist(p, p, c=cc))
            + jnp.sum(P.logmap(x, y, c=cc))
            + jnp.sum(P.expmap(x, y, c=cc))
            + jnp.sum(P.parallel_transport(x, y, p[2], c=cc))
            + P.dist0(y, c=cc)
        )

    return jax.value_and_grad(loss, argnums=(0, 1))(pts, c)


@SETTINGS
@given(ball_points(3))
def test_float32_values_and_gradients_finite_anywhere(case):
    c, pts, _ = case
    value, (gp, gc) = _f32_grads(jnp.asarray(pts, jnp.float32), jnp.float32(c))
    assert np.isfinite(float(value))
    assert np.all(np.isfinite(np.asarray(gp))) and np.isfinite(float(gc))
