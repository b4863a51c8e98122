"""Independent float64 numpy transcription of the Poincaré-ball formulas, for the tests.

Written from Ganea et al. 2018 ("Hyperbolic Neural Networks") and Ungar's gyrovector identities,
deliberately in the *other* textbook forms where one exists (artanh distance instead of the
arcosh form, gyration as a composition of Möbius additions instead of the closed form), so that
agreement with ``hamjax.poincare`` is evidence, not a tautology. Only for points well inside the
ball: no clamps.
"""

from __future__ import annotations

import numpy as np


def _n(x):
    return np.linalg.norm(x, axis=-1, keepdims=True)


def _dot(x, y):
    return np.sum(x * y, axis=-1, keepdims=True)


def mobius_add(x, y, c):
    x2, y2, xy = _dot(x, x), _dot(y, y), _dot(x, y)
    return ((1 + 2 * c * xy + c * y2) * x + (1 - c * x2) * y) / (1 + 2 * c * xy + c**2 * x2 * y2)


def lam(x, c):
    return 2.0 / (1.0 - c * _dot(x, x))


def expmap0(v, c):
    s = np.sqrt(c)
    n = _n(v)
    return np.tanh(s * n) * v / (s * n)


def logmap0(x, c):
    s = np.sqrt(c)
    n = _n(x)
    return np.arctanh(s * n) * x / (s * n)


def expmap(x, v, c):
    s = np.sqrt(c)
    n = _n(v)
    return mobius_add(x, np.tanh(s * lam(x, c) * n / 2) * v / (s * n), c)


def logmap(x, y, c):
    s = np.sqrt(c)
    u = mobius_add(-x, y, c)
    n = _n(u)
    return 2 / (s * lam(x, c)) * np.arctanh(s * n) * u / n


def dist(x, y, c):
    s = np.sqrt(c)
    return (2 / s * np.arctanh(s * _n(mobius_add(-x, y, c))))[..., 0]


def scalar_mul(r, x, c):
    s = np.sqrt(c)
    n = _n(x)
    return np.tanh(np.asarray(r)[..., None] * np.arctanh(s * n)) * x / (s * n)


def matvec(m, x, c):
    s = np.sqrt(c)
    mx = x @ m.T
    xn, mxn = _n(x), _n(mx)
    return np.tanh(mxn / xn * np.arctanh(s * xn)) * mx / (mxn * s)


def gyration(u, v, w, c):
    # gyr[u, v] w = -(u + v) + (u + (v + w))   (Ungar; "+" is Möbius addition)
    return mobius_add(-mobius_add(u, v, c), mobius_add(u, mobius_add(v, w, c), c), c)


def parallel_transport(x, y, v, c):
    return gyration(y, -x, v, c) * lam(x, c) / lam(y, c)


def to_lorentz(x, c):
    x2 = _dot(x, x)
    return np.concatenate(
        [(1 + c * x2) / (np.sqrt(c) * (1 - c * x2)), 2 * x / (1 - c * x2)], axis=-1
    )


def lorentz_dist(p, q, c):
    inner = p[..., 0] * q[..., 0] - np.sum(p[..., 1:] * q[..., 1:], axis=-1)
    return np.arccosh(np.maximum(c * inner, 1.0)) / np.sqrt(c)


def points(rng, shape, c, rmax=0.9, rmin=0.0):
    """Random points with sqrt(c)|x| uniform in [rmin, rmax] and uniform directions."""
    v = rng.normal(size=shape)
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    r = rng.uniform(rmin, rmax, size=shape[:-1] + (1,))
    return v * r / np.sqrt(c)
