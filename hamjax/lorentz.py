r"""The hyperboloid (Lorentz) model with an explicit, learnable curvature ``c``.

Pure functions over arrays, the same conventions as :mod:`hamjax.poincare`: vectors on the last
axis, leading axes broadcast, keyword-only curvature ``c > 0`` (a Python float or a scalar array,
possibly traced). The model is

.. math:: \mathbb{H}^n_c = \{x \in \mathbb{R}^{n+1} : \langle x, x\rangle_L = -1/c,\ x_0 > 0\},
          \qquad \langle x, y\rangle_L = -x_0 y_0 + \langle x_s, y_s\rangle

with sectional curvature ``-c`` (the ball :math:`\mathbb{D}^n_c` of radius ``1/sqrt(c)`` is its
stereographic projection, :func:`to_poincare` / :func:`from_poincare`), origin
``o = (1/sqrt(c), 0, ..., 0)``, time coordinate first and space coordinates
``x_s = x[..., 1:]``. geoopt's ``Lorentz(k)`` is ``c = 1/k``; Nickel & Kiela, "Learning
Continuous Hierarchies in the Lorentz Model of Hyperbolic Geometry" (ICML 2018) use ``c = 1``.

Representation (the one deliberate difference from textbook code). Points are ``[..., D + 1]``
arrays, but every function reads only their *space* coordinates and takes the time coordinate
from the constraint, :math:`x_0 = \sqrt{1/c + \|x_s\|^2}`; tangent vectors at ``x`` satisfy
:math:`\langle x, v\rangle_L = 0`, i.e. :math:`v_0 = \langle x_s, v_s\rangle / x_0`, and
functions that take them (:func:`expmap`, :func:`tangent_norm`, :func:`parallel_transport`)
read ``v_s`` only. Every result is returned with its time coordinate recomputed, so it is on
the sheet (or in the tangent space) to rounding. Exceptions, by their nature: :func:`inner`
(the Minkowski form of whatever it is given), :func:`project_tangent` and :func:`egrad2rgrad`
(which project arbitrary ambient vectors). Consequences:

* A point whose time coordinate drifted (one rounding after ``optax.apply_updates``, or a
  curvature that changed under a learned ``c``) is used as its projection along the time axis,
  the same choice as :func:`hamjax.poincare.from_lorentz`.
* The formulas can be rearranged so that nothing cancels: ``dist`` and ``logmap`` never form
  ``-c<x, y>_L - 1`` (which loses every digit for nearly coincident points), and tangent norms
  never form ``|v_s|^2 - v_0^2``. See :func:`dist`.

Numerics (see ``tests/test_lorentz.py``):

* Values and gradients (w.r.t. points, vectors and ``c``) are finite at ``x == y``, at the
  origin, for huge tangent vectors and far points, for ``c`` in ``[1e-4, 10]``, in float32,
  bfloat16 and float64. Half-precision inputs are computed in float32 and cast back (as in
  :mod:`hamjax.poincare`).
* Range: coordinates grow like ``e^r`` with ``r = sqrt(c) d(o, x)``; ``|x_s|^2`` overflows at
  ``r ~ 44`` in float32 (``~ 354`` in float64). :func:`expmap` / :func:`expmap0` clamp the
  geodesic length at that bound so they stay finite.
* Precision (measured by ``bench/geometry_toolbox.py``; table and advice in
  ``docs/GEOMETRY.md``). In either model a float32 point at ``r`` carries a position error of
  ``~ eps e^r / 2`` (its coordinates, or its direction, are rounded relatively); the formulas
  here add no cancellation on top. For pairs a unit apart the float32 error stays below 1e-5
  up to ``r ~ 6`` in both models and reaches 1e-3 at ``r ~ 12`` (ball) / ``~ 14``
  (hyperboloid); along a ray the hyperboloid is ~500-1000x more accurate up to ``r ~ 12``;
  the float32 ball saturates (points round onto the boundary) from ``r ~ 20``. Beyond ``r ~ 12``
  use float64 (both models below 1e-3 up to ``r ~ 30``, the hyperboloid ~10x better). The
  textbook ``arcosh(-c<x, y>_L)`` has a relative error of ~2e-2 already at ``r = 0.5`` for
  float32 pairs 1e-3 apart; :func:`dist` has ~5e-6 there.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from hamjax import numerics, poincare

__all__ = [
    "dist",
    "dist0",
    "egrad2rgrad",
    "expmap",
    "expmap0",
    "from_poincare",
    "inner",
    "logmap",
    "logmap0",
    "origin",
    "parallel_transport",
    "project",
    "project_tangent",
    "tangent_norm",
    "to_poincare",
]


# ----------------------------------------------------------------------------------------------
# dtype and curvature plumbing (the same rules as hamjax.poincare, kept private to each module)
# ----------------------------------------------------------------------------------------------


def _curv(c: ArrayLike, dtype: np.dtype) -> jax.Array:
    return numerics.curvature(c, dtype, "sheet <x, x>_L = -1/c")


def _check_ambient(name: str, x: jax.Array) -> None:
    if x.ndim == 0 or x.shape[-1] < 2:
        raise ValueError(
            f"{name} must be [..., D + 1] with D >= 1 (time coordinate first), got shape {x.shape}"
        )


def _check_same(name_x: str, x: jax.Array, name_y: str, y: jax.Array) -> None:
    _check_ambient(name_x, x)
    _check_ambient(name_y, y)
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(
            f"{name_x} and {name_y} must have the same last-axis size, got shapes "
            f"{x.shape} and {y.shape}"
        )


# Floor for norms before dividing by them (x / |x| at x = 0); its square must stay a normal
# number after multiplying by the smallest c we support (1e-4), as in hamjax.poincare.
_MIN_NORM = 1e-15
# Floor for squared norms before dividing by them. Not _MIN_NORM**2: the backward pass of
# u / max(a2, floor) divides by floor**2, which must stay a normal float32 (1e-60 flushes to
# zero and gives 0/0 = NaN). Where |a|^2 is below it the projection onto a is incomplete; the
# callers only use it where that is negligible (see _t and _tangent_sqnorm).
_MIN_SQNORM = 1e-15


def _max_theta(c: jax.Array) -> jax.Array:
    # Coordinates of exp results are ~cosh(theta) / sqrt(c); their squares (|y_s|^2) must stay
    # below the dtype's max: theta <= (log(max) + log(c)) / 2 - 1 (float32: ~43 at c = 1,
    # ~39 at c = 1e-4; float64: ~354).
    return (float(np.log(jnp.finfo(c.dtype).max)) + jnp.log(c)) / 2.0 - 1.0


def _series_t(dtype: np.dtype) -> float:
    # Below this t the ratio arcosh(1 + t) / sqrt(t (t + 2)) is taken from its series
    # 1 - t/3 + 2 t^2/15, whose next term (~4 t^3 / 105) is then below the dtype's eps.
    return float(jnp.finfo(dtype).eps) ** (1.0 / 3.0)


def _dot(x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.sum(x * y, axis=-1, keepdims=True)


def _safe_norm(x: jax.Array) -> jax.Array:
    # jnp.maximum routes the cotangent to the constant below the floor: gradient 0 at x = 0.
    return jnp.sqrt(jnp.maximum(_dot(x, x), _MIN_NORM * _MIN_NORM))


def _time(xs: jax.Array, c: jax.Array) -> jax.Array:
    """The time coordinate ``sqrt(1/c + |x_s|^2)`` of the sheet point over ``x_s``, [..., 1]."""
    return jnp.sqrt(1.0 / c + _dot(xs, xs))


def _with_time(xs: jax.Array, c: jax.Array) -> jax.Array:
    return jnp.concatenate([_time(xs, c), xs], axis=-1)


def _tangent_time(xs: jax.Array, x0: jax.Array, vs: jax.Array) -> jax.Array:
    """v_0 = <x_s, v_s> / x_0: the time coordinate that makes v tangent at x."""
    return _dot(xs, vs) / x0


def _perp_sq(a: jax.Array, a2: jax.Array, v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(|v_perp|^2, <a, v>) with v_perp the component of v orthogonal to a, [..., 1] each.

    Formed by subtracting the projection (error ~eps |v| |v_perp|), not as |v|^2 - <a,v>^2/|a|^2
    (error ~eps |v|^2): what keeps the tangent norm and the distance cancellation-free.
    """
    av = _dot(a, v)
    perp = v - (av / jnp.maximum(a2, _MIN_SQNORM)) * a
    return _dot(perp, perp), av


def _tangent_sqnorm(xs: jax.Array, vs: jax.Array, c: jax.Array) -> jax.Array:
    r"""<v, v>_L of the tangent vector at x over v_s, without cancellation, [..., 1].

    |v_s|^2 - v_0^2 = |v_perp|^2 + <x_s, v_s>^2 / (|x_s|^2 (1 + c |x_s|^2)), v_perp the part of
    v_s orthogonal to x_s: both terms are non-negative.
    """
    a2, v2 = _dot(xs, xs), _dot(vs, vs)
    perp2, av = _perp_sq(xs, a2, vs)
    # <x_s, v_s> / |x_s| before squaring: <x_s, v_s>^2 alone overflows float32 at r ~ 22.
    av_unit = av / jnp.sqrt(jnp.maximum(a2, _MIN_SQNORM))
    split = perp2 + av_unit * av_unit / (1.0 + c * a2)
    # Near the origin (c|x_s|^2 <= 1) the direct form |v_s|^2 - c<x_s,v_s>^2 / (1 + c|x_s|^2)
    # cancels at most half of |v_s|^2, and unlike the split form it stays exact for |x_s| below
    # the norm floor. Both branches are finite, so where() is safe.
    direct = jnp.maximum(v2 - c * av * av / (1.0 + c * a2), 0.0)
    return jnp.where(c * a2 > 1.0, split, direct)


def _pow2_scale(v: jax.Array) -> jax.Array:
    """A power of two >= max |v_i| per vector, [..., 1], treated as a constant by autodiff.

    Dividing by it is exact and keeps squared norms of huge vectors finite. Any constant scale
    gives the same function of v, so stopping its gradient is exact, not an approximation.
    """
    m = jnp.max(jnp.abs(jax.lax.stop_gradient(v)), axis=-1, keepdims=True)
    _, e = jnp.frexp(jnp.maximum(m, _MIN_NORM))
    return jnp.ldexp(jnp.ones_like(m), e)


def _t(a: jax.Array, b: jax.Array, c: jax.Array) -> jax.Array:
    r"""t = -c<x, y>_L - 1 = cosh(sqrt(c) d) - 1 >= 0 from space coordinates, cancellation-free.

    In units of 1/sqrt(c) (A = sqrt(c) a, B = sqrt(c) b, X_0 = sqrt(1 + |A|^2), Y_0 likewise),

        t = X_0 Y_0 - <A, B> - 1 = (|A - B|^2 + |A ^ B|^2) / (1 + X_0 Y_0 + <A, B>)

    (multiply by the conjugate; |A ^ B|^2 = |A|^2 |B|^2 - <A, B>^2). The numerator is a sum of
    non-negative terms; A - B is sqrt(c) (a - b) (the exact difference, scaled once) and
    |A ^ B|^2 = |A|^2 |(B - A)_perp|^2 (perp to A) is formed by projection. The denominator is a
    sum of positive terms when <A, B> >= 0; otherwise it is rewritten, again by the conjugate,
    as (|A ^ B|^2 + (X_0 + Y_0)^2) / (1 + X_0 Y_0 - <A, B>). Numerator and denominator are
    divided by X_0 Y_0 term by term, so no intermediate exceeds ~e^(2r) (|A ^ B|^2 alone
    reaches e^(2 r_x + 2 r_y) and overflows float32 for two points at r = 22).
    """
    sc = jnp.sqrt(c)
    big_a, big_b, diff = sc * a, sc * b, sc * (b - a)
    a2, b2 = _dot(big_a, big_a), _dot(big_b, big_b)
    x0, y0 = jnp.sqrt(1.0 + a2), jnp.sqrt(1.0 + b2)
    x0y0 = x0 * y0
    perp2, _ = _perp_sq(big_a, a2, diff)
    wedge = (a2 / x0) * (perp2 / y0)  # |A ^ B|^2 / (X_0 Y_0)
    num = _dot(diff, diff) / x0y0 + wedge
    ab = _dot(big_a, big_b)
    den_pos = 1.0 + (1.0 + ab) / x0y0
    # 1 + X_0 Y_0 - <A, B> >= 1 + X_0 Y_0 - |A||B| > 1 exactly; in rounding it can reach 0 for
    # coincident far points (1 + |A|^2 rounds to |A|^2), which would make this (unselected)
    # branch's gradient 0 * inf = NaN, hence the clamp at its exact lower bound.
    den_neg = (wedge + x0 / y0 + 2.0 + y0 / x0) / jnp.maximum(1.0 + x0y0 - ab, 1.0)
    return num / jnp.where(ab >= 0, den_pos, den_neg)


def _arcosh_ratio(t: jax.Array) -> jax.Array:
    """arcosh(1 + t) / sqrt(t (t + 2)) (= s / sinh(s) for t = cosh(s) - 1); 1 at t = 0."""
    small = t < _series_t(t.dtype)
    ts = jnp.where(small, 1.0, t)  # the unused branch must not see 0/0 (NaN gradients)
    ratio = poincare.arcosh1p(ts) / (jnp.sqrt(ts) * jnp.sqrt(ts + 2.0))
    return jnp.where(small, 1.0 - t / 3.0 + 2.0 * t * t / 15.0, ratio)


# ----------------------------------------------------------------------------------------------
# Inner product, origin, projections
# ----------------------------------------------------------------------------------------------


def inner(u: ArrayLike, v: ArrayLike, *, keepdims: bool = False) -> jax.Array:
    r"""The Minkowski (Lorentzian) inner product.

    .. math:: \langle u, v\rangle_L = -u_0 v_0 + \sum_{i \ge 1} u_i v_i

    Read at face value (all coordinates). Points satisfy ``<x, x>_L = -1/c``; tangent vectors at
    ``x`` satisfy ``<x, v>_L = 0`` and have ``<v, v>_L >= 0`` (use :func:`tangent_norm` for a
    cancellation-free norm).

    Args:
      u: ``[..., D + 1]`` vectors.
      v: ``[..., D + 1]`` vectors (broadcast against ``u``).
      keepdims: keep the vector axis as size 1.

    Returns:
      ``[...]`` (or ``[..., 1]``) inner products.
    """
    out, (u, v) = numerics.compute_arrays(u, v)
    _check_same("u", u, "v", v)
    res = _dot(u[..., 1:], v[..., 1:]) - u[..., :1] * v[..., :1]
    if not keepdims:
        res = res[..., 0]
    return res.astype(out)


def origin(dim: int, *, c: ArrayLike, dtype: Any = jnp.float32) -> jax.Array:
    r"""The origin :math:`o = (1/\sqrt c, 0, \dots, 0)` of :math:`\mathbb{H}^{dim}_c`.

    Args:
      dim: ``D >= 1``, the dimension of the manifold (the array has ``D + 1`` entries).
      c: curvature > 0.
      dtype: floating dtype of the result.

    Returns:
      ``[D + 1]`` the origin (the image of the ball's centre under :func:`from_poincare`).
    """
    if int(dim) != dim or dim < 1:
        raise ValueError(f"origin: dim must be an integer >= 1, got {dim!r}")
    compute = np.dtype(dtype) if np.dtype(dtype).itemsize >= 4 else np.dtype(np.float32)
    c = _curv(c, compute)
    o = jnp.zeros((dim + 1,), compute).at[0].set(1.0 / jnp.sqrt(c))
    return o.astype(dtype)


def project(x: ArrayLike, *, c: ArrayLike) -> jax.Array:
    r"""Projects onto the sheet along the time axis: keeps ``x_s``, recomputes ``x_0``.

    .. math:: \operatorname{proj}(x) = \big(\sqrt{1/c + \|x_s\|^2},\ x_s\big)

    The identity on the sheet (to rounding); what every function here applies implicitly.

    Args:
      x: ``[..., D + 1]`` vectors (the time coordinate is ignored).
      c: curvature > 0.

    Returns:
      ``[..., D + 1]`` points with ``<x, x>_L = -1/c`` and ``x_0 > 0``.
    """
    out, (x,) = numerics.compute_arrays(x)
    _check_ambient("x", x)
    c = _curv(c, x.dtype)
    return _with_time(x[..., 1:], c).astype(out)


def project_tangent(x: ArrayLike, v: ArrayLike, *, c: ArrayLike) -> jax.Array:
    r"""Minkowski-orthogonal projection of an ambient vector onto the tangent space at ``x``.

    .. math:: \operatorname{proj}_x(v) = v + c\,\langle x, v\rangle_L\, x

    so that :math:`\langle x, \operatorname{proj}_x(v)\rangle_L = 0`; the identity on tangent
    vectors. ``x`` is first projected onto the sheet; ``v`` is read in full.

    Args:
      x: ``[..., D + 1]`` points.
      v: ``[..., D + 1]`` ambient vectors.
      c: curvature > 0.

    Returns:
      ``[..., D + 1]`` tangent vectors at ``x``.
    """
    out, (x, v) = numerics.compute_arrays(x, v)
    _check_same("x", x, "v", v)
    c = _curv(c, x.dtype)
    return _proj_tangent(_with_time(x[..., 1:], c), v, c).astype(out)


def _proj_tangent(x: jax.Array, v: jax.Array, c: jax.Array) -> jax.Array:
    xs, x0 = x[..., 1:], x[..., :1]
    coef = c * (_dot(xs, v[..., 1:]) - x0 * v[..., :1])
    vs = v[..., 1:] + coef * xs
    # The time coordinate from the tangency condition (equal to v_0 + coef x_0 in exact
    # arithmetic, without its cancellation).
    return jnp.concatenate([_tangent_time(xs, x0, vs), vs], axis=-1)


def tangent_norm(x: ArrayLike, v: ArrayLike, *, c: ArrayLike, keepdims: bool = False) -> jax.Array:
    r"""Riemannian norm of a tangent vector ``v`` at ``x``, :math:`\sqrt{\langle v, v\rangle_L}`.

    .. math:: \langle v, v\rangle_L = \|v_s\|^2 - v_0^2
              = \|v_\perp\|^2 + \frac{\langle x_s, v_s\rangle^2}{\|x_s\|^2 (1 + c\|x_s\|^2)}

    with ``v_0 = <x_s, v_s> / x_0`` implied and :math:`v_\perp` the part of ``v_s`` orthogonal
    to ``x_s``: both terms are non-negative, so nothing cancels (``|v_s|^2 - v_0^2`` loses
    ``log10(c x_0^2)`` digits for a radial ``v``).

    Args:
      x: ``[..., D + 1]`` points.
      v: ``[..., D + 1]`` tangent vectors at ``x`` (only ``v_s`` is read).
      c: curvature > 0.
      keepdims: keep the vector axis as size 1.

    Returns:
      ``[...]`` (or ``[..., 1]``) norms; ``d(x, expmap(x, v)) = tangent_norm(x, v)``.
    """
    out, (x, v) = numerics.compute_arrays(x, v)
    _check_same("x", x, "v", v)
    c = _curv(c, x.dtype)
    vs = v[..., 1:]
    s = _pow2_scale(vs)
    sq = _tangent_sqnorm(x[..., 1:], vs / s, c)
    # sqrt with gradient 0 (not inf * 0) at v = 0.
    n = s * jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)
    if not keepdims:
        n = n[..., 0]
    return n.astype(out)


# ----------------------------------------------------------------------------------------------
# Distances
# ----------------------------------------------------------------------------------------------


def dist(x: ArrayLike, y: ArrayLike, *, c: ArrayLike) -> jax.Array:
    r"""Geodesic distance on the hyperboloid, cancellation-free.

    .. math:: d_c(x, y) = \frac{1}{\sqrt c}\operatorname{arcosh}\!\big(-c\langle x,y\rangle_L\big)
              = \frac{1}{\sqrt c}\operatorname{arcosh}(1 + t),\qquad
              t = \frac{c\|x_s - y_s\|^2 + c^2\|x_s \wedge y_s\|^2}
                       {1 + c\,(x_0 y_0 + \langle x_s, y_s\rangle)}

    The textbook form ``arcosh(-c<x, y>_L)`` subtracts two numbers of size ``c x_0 y_0`` to get
    ``1 + t``: for nearly coincident points ``t`` is lost entirely (``arcosh`` near 1 then
    turns a rounding of ``eps c x_0^2`` into a distance error ``~ sqrt(eps) x_0``, i.e. 3e-4 /
    sqrt(c) already at the origin in float32). The second form has a numerator of
    non-negative terms (the wedge :math:`\|a \wedge b\|^2 = \|a\|^2\|b\|^2 - \langle a,b\rangle^2`
    is formed as ``|a|^2 |(b - a)_perp|^2``) and a denominator of positive terms (rewritten by
    its conjugate when ``<x_s, y_s> < 0``), and ``arcosh(1 + t)`` is
    :func:`hamjax.poincare.arcosh1p`. The relative error of ``t`` is then
    ``~ eps (1 + sqrt(c)|x_s|)``, which is the error the float inputs already carry, and
    ``dist(x, x) = 0`` exactly with gradient 0 (not NaN).

    Symmetric up to rounding, equals :func:`hamjax.poincare.dist` of the ball images, and
    ``-> |x_s - y_s|`` as ``c -> 0``. Only the space coordinates are read (see the module
    docstring).

    Args:
      x: ``[..., D + 1]`` points.
      y: ``[..., D + 1]`` points (broadcast against ``x``).
      c: curvature > 0.

    Returns:
      ``[...]`` distances.
    """
    out, (x, y) = numerics.compute_arrays(x, y)
    _check_same("x", x, "y", y)
    c = _curv(c, x.dtype)
    t = _t(x[..., 1:], y[..., 1:], c)
    return (poincare.arcosh1p(t) / jnp.sqrt(c))[..., 0].astype(out)


def dist0(x: ArrayLike, *, c: ArrayLike) -> jax.Array:
    r"""Distance from the origin.

    .. math:: d_c(o, x) = \frac{1}{\sqrt c}\operatorname{arcosh}(\sqrt c\, x_0)
              = \frac{1}{\sqrt c}\operatorname{arsinh}(\sqrt c\,\|x_s\|)

    The ``arsinh`` form is used (no cancellation near the origin); gradient 0 at ``x = o``.

    Args:
      x: ``[..., D + 1]`` points.
      c: curvature > 0.

    Returns:
      ``[...]`` distances.
    """
    out, (x,) = numerics.compute_arrays(x)
    _check_ambient("x", x)
    c = _curv(c, x.dtype)
    sc = jnp.sqrt(c)
    return (jnp.arcsinh(sc * _safe_norm(x[..., 1:])) / sc)[..., 0].astype(out)


# ----------------------------------------------------------------------------------------------
# Exponential and logarithmic maps, transport, gradients
# ----------------------------------------------------------------------------------------------


def _expmap(xs: jax.Array, vs: jax.Array, c: jax.Array) -> jax.Array:
    """Space coordinates of exp_x(v) (x and v given by their space parts)."""
    sc = jnp.sqrt(c)
    s = _pow2_scale(vs)
    vs = vs / s
    n = jnp.sqrt(jnp.maximum(_tangent_sqnorm(xs, vs, c), _MIN_NORM * _MIN_NORM))
    # The geodesic length, clamped so that the result's coordinates (~ e^(r_x + theta)) stay
    # below the range bound: theta <= theta_max - r_x, with r_x = arsinh(sqrt(c)|x_s|).
    limit = jnp.maximum(_max_theta(c) - jnp.arcsinh(sc * _safe_norm(xs)), 1.0)
    theta = jnp.minimum(sc * n * s, limit)
    return jnp.cosh(theta) * xs + (jnp.sinh(theta) / (sc * n)) * vs


def expmap(x: ArrayLike, v: ArrayLike, *, c: ArrayLike) -> jax.Array:
    r"""Exponential map at ``x``: follows the geodesic from ``x`` with initial velocity ``v``.

    .. math:: \exp^c_x(v) = \cosh(\sqrt c\|v\|_L)\, x
              + \frac{\sinh(\sqrt c\|v\|_L)}{\sqrt c\|v\|_L}\, v

    ``|v|_L`` is :func:`tangent_norm`; the geodesic length ``sqrt(c)|v|_L`` is clamped at
    ``(log(dtype max) + log(c))/2 - 1`` (~43 in float32 at ``c = 1``) so that the result's
    squared coordinates stay finite. The time coordinate
    of the result is recomputed from its space coordinates (on the sheet to rounding). Inverse
    of :func:`logmap`; ``dist(x, expmap(x, v)) = |v|_L``.

    Args:
      x: ``[..., D + 1]`` base points.
      v: ``[..., D + 1]`` tangent vectors at ``x`` (only ``v_s`` is read).
      c: curvature > 0.

    Returns:
      ``[..., D + 1]`` points.
    """
    out, (x, v) = numerics.compute_arrays(x, v)
    _check_same("x", x, "v", v)
    c = _curv(c, x.dtype)
    return _with_time(_expmap(x[..., 1:], v[..., 1:], c), c).astype(out)


def expmap0(v: ArrayLike, *, c: ArrayLike) -> jax.Array:
    r"""Exponential map at the origin.

    .. math:: \exp^c_o(v) = \Big(\frac{\cosh(\sqrt c\|v_s\|)}{\sqrt c},\
              \frac{\sinh(\sqrt c\|v_s\|)}{\sqrt c\|v_s\|}\, v_s\Big)

    Tangent vectors at ``o`` have ``v_0 = 0``; ``v_0`` is ignored. Inverse of :func:`logmap0`;
    ``dist0(expmap0(v)) = |v_s|``; ``to_poincare(expmap0(v)) = poincare.expmap0(v_s / 2)``
    (the ball's metric at 0 is 4x Euclidean).

    Args:
      v: ``[..., D + 1]`` tangent vectors at the origin.
      c: curvature > 0.

    Returns:
      ``[..., D + 1]`` points.
    """
    out, (v,) = numerics.compute_arrays(v)
    _check_ambient("v", v)
    c = _curv(c, v.dtype)
    vs = v[..., 1:]
    return _with_time(_expmap(jnp.zeros_like(vs), vs, c), c).astype(out)


def logmap(x: ArrayLike, y: ArrayLike, *, c: ArrayLike) -> jax.Array:
    r"""Logarithmic map at ``x``: the tangent vector at ``x`` pointing to ``y``.

    .. math:: \log^c_x(y) = \frac{\operatorname{arcosh}(1 + t)}{\sqrt{t(t + 2)}}
              \big((y - x) - t\,x\big),\qquad t = -c\langle x, y\rangle_L - 1

    (the textbook :math:`d\,\frac{y + c\langle x,y\rangle_L x}{\|y + c\langle x,y\rangle_L x\|_L}`
    with :math:`\|y + c\langle x, y\rangle_L x\|_L = \sqrt{t(t+2)/c}`). ``t`` is computed as in
    :func:`dist`, the ratio from its series ``1 - t/3 + 2t^2/15`` near 0, so ``log_x(x) = 0``
    with finite gradients and ``log_x(y) ~ y - x`` for close points. Inverse of :func:`expmap`;
    ``tangent_norm(x, log_x(y)) = dist(x, y)``.

    Args:
      x: ``[..., D + 1]`` base points.
      y: ``[..., D + 1]`` target points.
      c: curvature > 0.

    Returns:
      ``[..., D + 1]`` tangent vectors at ``x``.
    """
    out, (x, y) = numerics.compute_arrays(x, y)
    _check_same("x", x, "y", y)
    c = _curv(c, x.dtype)
    a, b = x[..., 1:], y[..., 1:]
    t = _t(a, b, c)
    g = _arcosh_ratio(t)
    # (g t) a rather than g (t a): g t grows like log t, while t a alone overflows float32 for
    # far-apart far points (t ~ e^(2r), |a| ~ e^r).
    vs = g * (b - a) - (g * t) * a
    x0 = _time(a, c)
    return jnp.concatenate([_tangent_time(a, x0, vs), vs], axis=-1).astype(out)


def logmap0(y: ArrayLike, *, c: ArrayLike) -> jax.Array:
    r"""Logarithmic map at the origin.

    .. math:: \log^c_o(y) = \Big(0,\ \frac{\operatorname{arsinh}(\sqrt c\|y_s\|)}
              {\sqrt c\|y_s\|}\, y_s\Big)

    Inverse of :func:`expmap0`.

    Args:
      y: ``[..., D + 1]`` points.
      c: curvature > 0.

    Returns:
      ``[..., D + 1]`` tangent vectors at the origin (time coordinate 0).
    """
    out, (y,) = numerics.compute_arrays(y)
    _check_ambient("y", y)
    c = _curv(c, y.dtype)
    sc = jnp.sqrt(c)
    ys = y[..., 1:]
    n = _safe_norm(ys)
    vs = jnp.arcsinh(sc * n) / (sc * n) * ys
    return jnp.concatenate([jnp.zeros_like(n), vs], axis=-1).astype(out)


def parallel_transport(x: ArrayLike, y: ArrayLike, v: ArrayLike, *, c: ArrayLike) -> jax.Array:
    r"""Parallel transport of a tangent vector ``v`` from ``x`` to ``y`` along the geodesic.

    .. math:: P_{x \to y}(v) = v + \frac{c\,\langle y, v\rangle_L}{1 - c\langle x, y\rangle_L}
              \,(x + y) = v + \frac{c\,\langle y - x, v\rangle_L}{2 + t}\,(x + y)

    (``<x, v>_L = 0`` gives the second form, which uses the accurate ``y - x``; ``t`` as in
    :func:`dist`, so the denominator is ``>= 2``). Preserves ``<u, v>_L``, is the identity for
    ``x == y`` and maps ``logmap(x, y)`` to ``-logmap(y, x)``. The time coordinate of the
    result is taken from the tangency condition at ``y``.

    Args:
      x: ``[..., D + 1]`` source points.
      y: ``[..., D + 1]`` destination points.
      v: ``[..., D + 1]`` tangent vectors at ``x`` (only ``v_s`` is read).
      c: curvature > 0.

    Returns:
      ``[..., D + 1]`` tangent vectors at ``y``.
    """
    out, (x, y, v) = numerics.compute_arrays(x, y, v)
    _check_same("x", x, "y", y)
    _check_same("x", x, "v", v)
    c = _curv(c, x.dtype)
    a, b, vs = x[..., 1:], y[..., 1:], v[..., 1:]
    x0, y0 = _time(a, c), _time(b, c)
    v0 = _tangent_time(a, x0, vs)
    d = b - a
    # y_0 - x_0 = (|b|^2 - |a|^2) / (x_0 + y_0) = <b - a, b + a> / (x_0 + y_0), no cancellation.
    d0 = _dot(d, b + a) / (x0 + y0)
    coef = c * (_dot(d, vs) - d0 * v0) / (2.0 + _t(a, b, c))
    ws = vs + coef * (a + b)
    return jnp.concatenate([_tangent_time(b, y0, ws), ws], axis=-1).astype(out)


def egrad2rgrad(x: ArrayLike, grad: ArrayLike, *, c: ArrayLike) -> jax.Array:
    r"""Converts a Euclidean gradient at ``x`` into the Riemannian gradient.

    .. math:: \operatorname{grad}^R f(x) = \operatorname{proj}_x(J\,\nabla^E f(x)),\qquad
              J = \operatorname{diag}(-1, 1, \dots, 1)

    (raise the index with the Minkowski metric, then :func:`project_tangent`). Any extension
    of ``f`` off the sheet gives the same result, including functions of this module, which
    read only ``x_s`` (``d f / d x_0 = 0``). For ``f = dist(., y)`` the result has unit
    :func:`tangent_norm` and equals ``-logmap(x, y) / dist(x, y)``.

    Args:
      x: ``[..., D + 1]`` points.
      grad: ``[..., D + 1]`` Euclidean gradients at ``x``.
      c: curvature > 0.

    Returns:
      ``[..., D + 1]`` Riemannian gradients (tangent at ``x``).
    """
    out, (x, grad) = numerics.compute_arrays(x, grad)
    _check_same("x", x, "grad", grad)
    c = _curv(c, x.dtype)
    flipped = jnp.concatenate([-grad[..., :1], grad[..., 1:]], axis=-1)
    return _proj_tangent(_with_time(x[..., 1:], c), flipped, c).astype(out)


# ----------------------------------------------------------------------------------------------
# Maps to and from the Poincaré ball
# ----------------------------------------------------------------------------------------------


def from_poincare(x: ArrayLike, *, c: ArrayLike) -> jax.Array:
    r"""Maps ball points to the hyperboloid (the isometry; :func:`hamjax.poincare.to_lorentz`).

    .. math:: p = \Big(\frac{1 + c\|x\|^2}{\sqrt c\,(1 - c\|x\|^2)},\
              \frac{2x}{1 - c\|x\|^2}\Big)

    ``dist(from_poincare(x), from_poincare(y)) = poincare.dist(x, y)``; inverse of
    :func:`to_poincare`. ``1 - c|x|^2`` is clamped at the dtype's eps as in the ball (a float32
    ball point cannot be farther than ``r ~ 17`` from the origin anyway).

    Args:
      x: ``[..., D]`` ball points.
      c: curvature > 0.

    Returns:
      ``[..., D + 1]`` hyperboloid points (time coordinate first).
    """
    return poincare.to_lorentz(x, c=c)


def to_poincare(p: ArrayLike, *, c: ArrayLike) -> jax.Array:
    r"""Maps hyperboloid points to the ball (:func:`hamjax.poincare.from_lorentz`).

    .. math:: x = \frac{p_s}{1 + \sqrt c\,p_0} = \frac{p_s}{1 + \sqrt{1 + c\|p_s\|^2}}

    Reads only ``p_s`` (the second form), like every function here. Far points
    (``sqrt(c) d(o, p) > ~17`` in float32) round onto the ball's boundary.

    Args:
      p: ``[..., D + 1]`` hyperboloid points (time coordinate first).
      c: curvature > 0.

    Returns:
      ``[..., D]`` ball points.
    """
    return poincare.from_lorentz(p, c=c)
