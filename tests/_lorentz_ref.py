"""Independent float64 numpy transcription of the hyperboloid formulas, for the tests.

Written from the textbook forms (Nickel & Kiela 2018; geoopt's ``lorentz/math.py`` with
``k = 1/c``), deliberately *not* the cancellation-free rearrangements of ``hamjax.lorentz``:
``arcosh(-c<x, y>_L)``, ``log_x y = d u / |u|_L`` with ``u = y + c<x, y>_L x``, transport with
``<y, v>_L``, and all coordinates read at face value. Only for points at moderate distances from
the origin (where these forms are accurate in float64); no clamps.
"""

from __future__ import annotations

import decimal

import numpy as np


def inner(u, v):
    return -u[..., :1] * v[..., :1] + np.sum(u[..., 1:] * v[..., 1:], axis=-1, keepdims=True)


def origin(d, c):
    o = np.zeros(d + 1)
    o[0] = 1 / np.sqrt(c)
    return o


def dist(x, y, c):
    return (np.arccosh(np.maximum(-c * inner(x, y), 1.0)) / np.sqrt(c))[..., 0]


def expmap(x, v, c):
    n = np.sqrt(np.maximum(inner(v, v), 0.0))
    s = np.sqrt(c) * n
    return np.cosh(s) * x + np.sinh(s) / s * v


def logmap(x, y, c):
    u = y + c * inner(x, y) * x
    d = dist(x, y, c)[..., None]
    return d * u / np.sqrt(inner(u, u))


def proj_tangent(x, v, c):
    return v + c * inner(x, v) * x


def egrad2rgrad(x, g, c):
    h = np.array(g, dtype=np.float64)
    h[..., 0] = -h[..., 0]
    return proj_tangent(x, h, c)


def parallel_transport(x, y, v, c):
    return v + c * inner(y, v) / (1 - c * inner(x, y)) * (x + y)


def from_poincare(b, c):
    b2 = np.sum(b * b, axis=-1, keepdims=True)
    return np.concatenate([(1 + c * b2) / (np.sqrt(c) * (1 - c * b2)), 2 * b / (1 - c * b2)], -1)


def to_poincare(p, c):
    return p[..., 1:] / (1 + np.sqrt(c) * p[..., :1])


def points(rng, shape, c, rmax=3.0, rmin=0.0):
    """Hyperboloid points [*shape[:-1], D + 1] (shape[-1] = D) with sqrt(c) d(o, x) uniform in
    [rmin, rmax] and uniform directions, built from cosh / sinh of the radius."""
    u = rng.normal(size=shape)
    u /= np.linalg.norm(u, axis=-1, keepdims=True)
    r = rng.uniform(rmin, rmax, size=shape[:-1] + (1,))
    return np.concatenate([np.cosh(r), np.sinh(r) * u], axis=-1) / np.sqrt(c)


def tangent(rng, x, c, scale=1.0):
    """Random tangent vectors at x with Riemannian norms ~ scale / sqrt(c)."""
    v = rng.normal(size=x.shape) * scale / np.sqrt(c)
    v = proj_tangent(x, v, c)
    n = np.sqrt(inner(v, v))
    return v / n * scale * rng.uniform(0.2, 1.0, size=n.shape) / np.sqrt(c)


def dist_exact(x, y, c, digits=40):
    """arcosh(-c<x, y>_L) / sqrt(c) in ``digits``-digit decimal arithmetic, for the points on the
    sheet over the given space coordinates (the time coordinate is recomputed exactly).

    float64 would lose ~log10(c x_0 y_0 / t) digits to the cancellation in ``-c<x, y>_L - 1``
    for nearly coincident points; the stdlib ``decimal`` module does not.
    """
    ctx = decimal.Context(prec=digits)
    dec = lambda v: ctx.create_decimal_from_float(float(v))  # exact conversion
    cd = dec(c)
    out = np.empty(np.broadcast_shapes(x.shape[:-1], y.shape[:-1]))
    xb, yb = np.broadcast_arrays(x, y)
    for i in np.ndindex(out.shape):
        a, b = [dec(v) for v in xb[i][1:]], [dec(v) for v in yb[i][1:]]
        x0 = ctx.sqrt(ctx.add(ctx.divide(1, cd), sum((ctx.multiply(v, v) for v in a), dec(0))))
        y0 = ctx.sqrt(ctx.add(ctx.divide(1, cd), sum((ctx.multiply(v, v) for v in b), dec(0))))
        ab = sum((ctx.multiply(u, v) for u, v in zip(a, b, strict=True)), dec(0))
        z = ctx.multiply(cd, ctx.subtract(ctx.multiply(x0, y0), ab))
        acosh = ctx.ln(ctx.add(z, ctx.sqrt(ctx.subtract(ctx.multiply(z, z), 1))))
        out[i] = float(ctx.divide(acosh, ctx.sqrt(cd)))
    return out
