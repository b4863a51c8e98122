"""Pure logit functions for speaker classification: cosine (AM/AAM/RAM) and hyperbolic (H/HAM).

Every function here maps embeddings ``[B, D]`` and class parameters ``[C, D]`` to logits
``[B, C]``; the loss is then ``optax.softmax_cross_entropy_with_integer_labels(logits, labels)``
and accuracy is the argmax of the *margin-free* logits (call with ``labels=None``).

Hyperbolic logits (Fang & He, "Hyperbolic Additive Margin Softmax with Hierarchical Information
for Speaker Verification", ICASSP 2026):

.. math::

   z_{ij} = -s\\,\\bigl(d(x_i, w_j) + m\\,[j = y_i]\\bigr)

with two ways into the Poincaré ball (see :func:`to_ball`):

* ``mode="clip"`` reproduces the authors' code: points are rescaled onto the sphere of radius
  ``(1 - 1e-5)/sqrt(c)`` when outside it, and the distance is the *unit-curvature* one
  ``arcosh(1 + 2|x-w|^2 / ((1-|x|^2)(1-|w|^2)))`` with the authors' clamps (squared norms at
  most ``1 - 1e-5``, denominator at least ``1e-5``); ``c`` only sets the clipping radius.
* ``mode="expmap"`` is the curvature-consistent ball: ``x = expmap0_c(e)``, ``w = expmap0_c(v)``
  (class centres are tangent vectors at the origin, so plain Adam stays a valid optimiser) and
  ``d = d_c`` from :mod:`hamjax.poincare`. With ``centres_in_ball=True`` the centres are points
  of the ball already (trained by :func:`hamjax.optim.riemannian_adam`) and are only projected.

Two more pieces for the hyperbolic heads (issue 16, ``docs/GEOMETRY.md``):

* :func:`tangent_features`: an optional learned scale and Guo et al.'s feature clipping of the
  embedding in the tangent space at 0, *before* ``expmap0``, so that ball points keep a radius
  below the boundary and the radius can carry information;
* :func:`mlr_logits`: hyperbolic multinomial logistic regression (HNN++, Shimizu et al. 2021)
  with unit normals and an additive margin on the signed distance to the class gyroplanes.

The ``[B, C, D]`` difference tensor of the authors' code is never built: ``|x - w|^2 = |x|^2 +
|w|^2 - 2 x.w`` is one matmul. Its cancellation when ``x ~ w`` is harmless for the non-target
classes (far apart) and is removed for the target class and for the nearest class, whose
distances are recomputed directly from ``x_i - w_j`` (``[B, D]`` memory): those are the entries the
loss and the prediction are most sensitive to.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from hamjax import nn as hyperbolic_nn
from hamjax import poincare

__all__ = [
    "AUTHORS_EPS",
    "COSINE_KINDS",
    "MODES",
    "cosine_logits",
    "hyperbolic_logits",
    "mlr_logits",
    "tangent_features",
    "to_ball",
]

#: The authors' single epsilon: clipping radius ``(1 - eps)/sqrt(c)``, the squared-norm clamp
#: ``|x|^2 <= 1 - eps`` and the denominator clamp ``(1-|x|^2)(1-|w|^2) >= eps``.
AUTHORS_EPS = 1e-5
#: Ways into the Poincaré ball understood by :func:`to_ball` / :func:`hyperbolic_logits`.
MODES = ("clip", "expmap")
#: Margin kinds understood by :func:`cosine_logits`.
COSINE_KINDS = ("am", "aam", "ram")


# ---------------------------------------------------------------------------------------------
# Input checking. Hyper-parameters may be traced (a learnable curvature, a scheduled margin), so
# they are checked only when their value is known at trace time.
# ---------------------------------------------------------------------------------------------
def _static_value(name: str, value: ArrayLike) -> float | None:
    """Returns ``value`` as a Python float if it is known at trace time, else ``None``."""
    if np.ndim(value) != 0:
        raise ValueError(f"{name} must be a scalar, got an array of shape {np.shape(value)}")
    try:
        return float(value)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None


def _check_positive(name: str, value: ArrayLike) -> None:
    v = _static_value(name, value)
    if v is not None and not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {v}")


def _check_non_negative(name: str, value: ArrayLike) -> None:
    v = _static_value(name, value)
    if v is not None and not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {v}")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _check_matrices(embeddings: jax.Array, params: jax.Array, params_name: str) -> None:
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must have shape [B, D], got shape {embeddings.shape}")
    if params.ndim != 2:
        raise ValueError(f"{params_name} must have shape [C, D], got shape {params.shape}")
    if embeddings.shape[1] != params.shape[1]:
        raise ValueError(
            f"embeddings [B, D] and {params_name} [C, D] must share D, got shapes "
            f"{embeddings.shape} and {params.shape}"
        )


def _check_labels(labels: jax.Array, batch: int) -> None:
    if labels.shape != (batch,):
        raise ValueError(f"labels must have shape [B] = ({batch},), got shape {labels.shape}")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"labels must be integers (class indices), got dtype {labels.dtype}")


def _compute_dtype(*arrays: jax.Array) -> jnp.dtype:
    # Low-precision inputs (bf16 embeddings from a mixed-precision encoder) are promoted: the
    # distances near the ball's boundary need at least float32.
    return jnp.promote_types(jnp.result_type(*arrays), jnp.float32)


def _target_mask(labels: jax.Array, num_classes: int) -> jax.Array:
    """Boolean ``[B, C]`` mask, True at ``[i, labels[i]]``."""
    return labels[:, None] == jnp.arange(num_classes, dtype=labels.dtype)[None, :]


def _matmul_t(a: jax.Array, b: jax.Array) -> jax.Array:
    # HIGHEST: on GPUs/TPUs the default f32 matmul may run in TF32/bf16 passes, whose ~1e-3
    # relative error would dominate |x|^2 + |w|^2 - 2 x.w near the boundary.
    return jnp.matmul(a, b.T, precision=lax.Precision.HIGHEST)


# ---------------------------------------------------------------------------------------------
# Hyperbolic logits.
# ---------------------------------------------------------------------------------------------
def to_ball(embeddings: ArrayLike, *, c: ArrayLike, mode: str = "clip") -> jax.Array:
    """Maps Euclidean vectors into the Poincaré ball the way a hyperbolic head does.

    .. math::

       \\text{clip:}\\quad x = v \\cdot \\min\\!\\Bigl(1, \\frac{(1-10^{-5})/\\sqrt{c}}{|v|}\\Bigr)
       \\qquad
       \\text{expmap:}\\quad x = \\operatorname{proj}_c\\Bigl(\\tanh(\\sqrt{c}|v|)
       \\frac{v}{\\sqrt{c}|v|}\\Bigr)

    In ``clip`` mode (the authors') the result is meant for the *unit-curvature* distance (``c``
    only sets the radius); in ``expmap`` mode it is a point of the curvature-``c`` ball. Note that
    in float32 ``tanh`` saturates for ``sqrt(c)|v| > ~9``: such vectors all land on the projected
    boundary, so ``expmap`` wants embeddings of moderate norm.

    Args:
      embeddings: vectors ``[..., D]`` (embeddings or, for centres, tangent vectors at 0).
      c: curvature ``> 0`` (ball radius ``1/sqrt(c)``); may be traced.
      mode: ``"clip"`` or ``"expmap"``.

    Returns:
      Points in the ball, ``[..., D]``, float32 or wider.

    Raises:
      ValueError: unknown ``mode`` or ``c <= 0``.
    """
    _check_choice("mode", mode, MODES)
    _check_positive("c", c)
    v = jnp.asarray(embeddings)
    v = v.astype(_compute_dtype(v))
    if mode == "clip":
        return poincare.project(v, c=c, eps=AUTHORS_EPS)
    return poincare.project(poincare.expmap0(v, c=c), c=c)


def tangent_features(
    embeddings: ArrayLike,
    *,
    c: ArrayLike,
    clip: float = 0.0,
    scale: ArrayLike | None = None,
) -> jax.Array:
    r"""An embedding's tangent vector at the origin before ``expmap0``: scaled, then clipped.

    .. math::

       v = \alpha\, e, \qquad
       v \leftarrow \min\!\Bigl(1, \frac{r / \sqrt{c}}{\|v\|}\Bigr)\, v

    The clip is Guo et al.'s feature clipping ("Clipped Hyperbolic Classifiers Are
    Super-Hyperbolic Classifiers", CVPR 2022) with the threshold in units of the ball radius:
    ``x = expmap0_c(v)`` then has ``sqrt(c)|x| = tanh(sqrt(c)|v|) <= tanh(r) < 1`` and lies at
    hyperbolic distance ``d_c(0, x) = 2|v| <= 2r/sqrt(c)`` from the origin, whatever ``c``
    (``r = 1``: 76 % of the radius, Guo et al.'s ``r = 1`` at ``c = 1``). Unclipped, a
    192-d BatchNorm output has ``|e| ~ 14`` and ``tanh(sqrt(c)|e|)`` rounds to 1 in float32:
    every embedding lands on the projected boundary, one sphere, and its radius says nothing.
    The learned scale ``alpha`` lets the network place embeddings *inside* the clipping
    sphere, where the radius varies (the clip's radial gradient is 0 on the points it clips).

    Args:
      embeddings: ``[..., D]`` Euclidean embeddings.
      c: curvature ``> 0`` (ball radius ``1/sqrt(c)``); may be traced.
      clip: ``r >= 0`` in units of ``1/sqrt(c)``; 0 = no clipping.
      scale: ``alpha > 0`` (a scalar, may be traced) or None for no scaling.

    Returns:
      ``[..., D]`` tangent vectors, float32 or wider (half-precision inputs are promoted).

    Raises:
      ValueError: ``c <= 0`` or ``clip < 0`` / not finite.
    """
    _check_positive("c", c)
    if not (math.isfinite(float(clip)) and float(clip) >= 0):
        raise ValueError(f"clip must be a finite number >= 0, got {clip!r}")
    v = jnp.asarray(embeddings)
    v = v.astype(_compute_dtype(v))
    if scale is not None:
        v = v * jnp.asarray(scale, v.dtype)
    if clip > 0:
        # project() rescales onto radius (1 - eps)/sqrt(c'), here r/sqrt(c) with c' = c/r^2;
        # points inside are returned bit for bit, and its norm floor keeps the gradient at 0.
        v = poincare.project(v, c=jnp.asarray(c, v.dtype) / float(clip) ** 2, eps=0.0)
    return v


def _clip_points(v: jax.Array, c: ArrayLike) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Authors' clipping, with ``|x|^2`` and ``1 - |x|^2`` computed without cancellation.

    Returns ``(x [N, D], |x|^2 [N], max(1 - |x|^2, eps) [N])``. For a clipped point
    ``|x|^2 = r^2 = (1 - eps)^2/c`` exactly, so ``1 - r^2 = (c - 1 + eps (2 - eps))/c``, where
    ``c - 1`` is exact near 1: at ``c = 1`` this is ``eps (2 - eps)`` to full precision, whereas
    ``1 - sum(x*x)`` in float32 would carry a ~0.3% error (the spacing of float32 near 1 is
    6e-8) that moves the distance by ~3e-3. (No ``sqrt(c)`` either: XLA's float32 sqrt is not
    correctly rounded on every backend, and ``sqrt(1) - 1`` must be exactly 0.)
    """
    eps = AUTHORS_EPS
    x = poincare.project(v, c=c, eps=eps)
    c = jnp.asarray(c, v.dtype)
    sq_radius = (1.0 - eps) ** 2 / c
    sq_v = jnp.sum(v * v, axis=-1)
    clipped = sq_v > sq_radius
    sq_x = jnp.where(clipped, sq_radius, sq_v)
    # The barrier stops XLA from folding the two constants of (c - 1) + eps (2 - eps) into
    # c - 0.99998, which would reintroduce exactly the cancellation avoided here.
    c_minus_1 = lax.optimization_barrier(c - 1.0)
    one_minus_sq = jnp.where(clipped, (c_minus_1 + eps * (2.0 - eps)) / c, 1.0 - sq_v)
    # The authors clamp the squared norms at 1 - eps, i.e. 1 - |x|^2 >= eps (binding only for
    # c < 1, where the clipping radius exceeds the unit ball).
    return x, sq_x, jnp.maximum(one_minus_sq, eps)


def _unit_dist_from_parts(sq_diff: jax.Array, den: jax.Array) -> jax.Array:
    """``arcosh(1 + 2 sq_diff / max(den, eps))`` with a finite gradient at ``sq_diff = 0``."""
    return poincare.arcosh1p(2.0 * sq_diff / jnp.maximum(den, AUTHORS_EPS))


def hyperbolic_logits(
    embeddings: ArrayLike,
    centres: ArrayLike,
    labels: ArrayLike | None = None,
    *,
    c: ArrayLike,
    scale: ArrayLike,
    margin: ArrayLike = 0.0,
    mode: str = "clip",
    centres_in_ball: bool = False,
) -> jax.Array:
    """H-Softmax / HAM-Softmax logits: scaled negative Poincaré distances to class centres.

    .. math::

       z_{ij} = -s\\,\\bigl(d(x_i, w_j) + m\\,[j = y_i]\\bigr)

    ``mode="clip"`` (the authors' exact behaviour)::

       x = clip_c(e), w = clip_c(centre)          # radius (1 - 1e-5)/sqrt(c)
       d = arcosh(1 + 2|x - w|^2 / max((1 - min(|x|^2, 1-1e-5)) (1 - min(|w|^2, 1-1e-5)), 1e-5))

    ``mode="expmap"``: ``x = expmap0_c(e)``, ``w = expmap0_c(centre)``, both projected, and
    ``d = poincare.pairwise_dist(x, w, c=c)``. With ``centres_in_ball`` the centres are ball
    points already: ``w = proj_c(centre)`` (no ``expmap0``); in ``clip`` mode centres are points
    either way and the flag changes nothing.

    Memory is ``O(B C + (B + C) D)``: the distance matrix comes from one matmul, never from a
    ``[B, C, D]`` difference tensor. The nearest centre of each row and, with labels, the target
    centre are recomputed directly from ``x_i - w_j`` so that they do not suffer the expansion's
    cancellation (which in ``clip`` mode at ``c <= 1``, where the authors' denominator clamp makes
    ``d ~ arcosh(1 + 2e5 |x - w|^2)``, would otherwise put nearly coincident points ~0.5 apart).

    Args:
      embeddings: ``[B, D]`` Euclidean embeddings (e.g. the encoder's BatchNorm output).
      centres: ``[C, D]`` class centres (points for ``clip``, tangent vectors at 0 for
        ``expmap``).
      labels: ``[B]`` integer class indices in ``[0, C)``, or None for margin-free scores.
        Indices are not range-checked (they may be traced); out-of-range ones get no margin.
      c: curvature ``> 0``; may be traced (learnable).
      scale: ``s > 0``.
      margin: additive distance margin ``m >= 0`` on the target class; may be traced (warm-up).
      mode: ``"clip"`` or ``"expmap"``.
      centres_in_ball: the centres are points of the ball (``head.centres = "ball"``), not
        tangent vectors at the origin.

    Returns:
      Logits ``[B, C]`` (float32, or float64 for float64 inputs).

    Raises:
      ValueError: bad shapes, non-integer labels, ``c <= 0``, ``scale <= 0``, ``margin < 0`` or
        an unknown ``mode``.

    Example:
      >>> import jax.numpy as jnp
      >>> e = jnp.array([[14.0, 0.0], [0.0, -14.0]])
      >>> w = jnp.array([[1e-3, 0.0], [0.0, -1e-3]])
      >>> z = hyperbolic_logits(e, w, None, c=3.0, scale=30.0)  # margin-free scores
      >>> z.shape, z.argmax(-1).tolist()
      ((2, 2), [0, 1])
      >>> zm = hyperbolic_logits(e, w, jnp.array([0, 1]), c=3.0, scale=30.0, margin=0.2)
      >>> bool(jnp.allclose(zm, z - 30.0 * 0.2 * jnp.eye(2), atol=1e-4))
      True
    """
    _check_choice("mode", mode, MODES)
    _check_positive("c", c)
    _check_positive("scale", scale)
    _check_non_negative("margin", margin)
    e = jnp.asarray(embeddings)
    w = jnp.asarray(centres)
    _check_matrices(e, w, "centres")
    if labels is not None:
        labels = jnp.asarray(labels)
        _check_labels(labels, e.shape[0])
    dtype = _compute_dtype(e, w)
    e, w = e.astype(dtype), w.astype(dtype)
    num_classes = w.shape[0]

    if mode == "clip":
        x, x2, ax = _clip_points(e, c)
        p, p2, ap = _clip_points(w, c)
        sq = jnp.maximum(x2[:, None] + p2[None, :] - 2.0 * _matmul_t(x, p), 0.0)
        dist = _unit_dist_from_parts(sq, ax[:, None] * ap[None, :])

        def direct(idx: jax.Array) -> jax.Array:  # d(x_i, w_idx[i]) from x_i - w_idx[i], [B]
            p_sel = jnp.take(p, idx, axis=0, mode="clip")
            sq_sel = jnp.sum(jnp.square(x - p_sel), axis=-1)
            return _unit_dist_from_parts(sq_sel, ax * jnp.take(ap, idx, mode="clip"))

    else:
        x = to_ball(e, c=c, mode=mode)
        p = poincare.project(w, c=c) if centres_in_ball else to_ball(w, c=c, mode=mode)
        dist = poincare.pairwise_dist(x, p, c=c)

        def direct(idx: jax.Array) -> jax.Array:
            return poincare.dist(x, jnp.take(p, idx, axis=0, mode="clip"), c=c)

    # The nearest centre (the predicted class) and, with labels, the target centre are the
    # entries that matter most and the ones most exposed to the expansion's cancellation, so
    # both are recomputed from the direct difference ([B, D] work each). Indices are gathered
    # with mode="clip" so that an out-of-range label cannot read garbage; its row has no
    # matching column, so the gathered value is unused.
    columns = jnp.arange(num_classes)[None, :]
    nearest = jnp.argmin(lax.stop_gradient(dist), axis=-1)
    dist = jnp.where(columns == nearest[:, None], direct(nearest)[:, None], dist)
    if labels is None:
        return -scale * dist

    target = _target_mask(labels, num_classes)
    dist = jnp.where(target, direct(labels)[:, None], dist)
    return -scale * (dist + margin * target.astype(dist.dtype))


def mlr_logits(
    embeddings: ArrayLike,
    normals: ArrayLike,
    offsets: ArrayLike,
    labels: ArrayLike | None = None,
    *,
    c: ArrayLike,
    scale: ArrayLike,
    margin: ArrayLike = 0.0,
) -> jax.Array:
    r"""Poincaré MLR logits with an additive margin: scaled signed distances to class gyroplanes.

    .. math::

       z_{ik} = s\,\bigl(\bar d(x_i, H_k) - m\,[k = y_i]\bigr),\qquad
       \bar d(x, H_k) = \frac{1}{\sqrt c}\operatorname{arsinh}\!\Bigl(
       \lambda^c_x \langle\sqrt c\,x, \hat n_k\rangle\cosh(2\sqrt c\,r_k)
       - (\lambda^c_x - 1)\sinh(2\sqrt c\,r_k)\Bigr)

    with ``x = proj_c(expmap0_c(e))``, ``n_hat_k = n_k / |n_k|`` and ``lambda_x = 2/(1 -
    c|x|^2)``. ``d_bar(x, H_k)`` is the signed hyperbolic distance from ``x`` to the gyroplane
    ``H_k`` through ``expmap0_c(r_k n_hat_k)`` orthogonal to ``n_hat_k`` (at distance ``2 r_k``
    from the origin), i.e. HNN++'s MLR logit (Shimizu, Mukuta & Harada, ICLR 2021, eq. 6;
    :func:`hamjax.nn.poincare_mlr`) divided by its per-class factor ``2|n_k|``. Normalising the
    normals is what AM-Softmax does to the class weights: with a free ``|n_k|`` the network
    could scale any margin away, while here ``m`` is a distance (the units of HAM's margin) and
    ``s`` the logit scale. ``m = 0`` is the plain (normalised, scaled) hyperbolic MLR.

    Args:
      embeddings: ``[B, D]`` tangent vectors at the origin (e.g. :func:`tangent_features`).
      normals: ``[C, D]`` class normals ``n_k`` (any non-zero norm; only the direction counts).
      offsets: ``[C]`` offsets ``r_k``; ``sqrt(c)|r_k|`` is clamped at 20 (float32).
      labels: ``[B]`` integer class indices, or None for margin-free scores.
      c: curvature ``> 0``; may be traced.
      scale: ``s > 0``.
      margin: ``m >= 0`` subtracted from the target's signed distance; may be traced.

    Returns:
      Logits ``[B, C]`` (float32, or float64 for float64 inputs).

    Raises:
      ValueError: bad shapes, non-integer labels, ``c <= 0``, ``scale <= 0`` or ``margin < 0``.
    """
    _check_positive("c", c)
    _check_positive("scale", scale)
    _check_non_negative("margin", margin)
    e = jnp.asarray(embeddings)
    n = jnp.asarray(normals)
    r = jnp.asarray(offsets)
    _check_matrices(e, n, "normals")
    if r.shape != (n.shape[0],):
        raise ValueError(f"offsets must have shape [C] = ({n.shape[0]},), got shape {r.shape}")
    if labels is not None:
        labels = jnp.asarray(labels)
        _check_labels(labels, e.shape[0])
    dtype = _compute_dtype(e, n, r)
    x = to_ball(e.astype(dtype), c=c, mode="expmap")
    unit = _l2_normalise(n.astype(dtype))
    dist = 0.5 * hyperbolic_nn.poincare_mlr(x, unit.T, r.astype(dtype), c=c)
    if labels is None:
        return scale * dist
    target = _target_mask(labels, n.shape[0])
    return scale * (dist - margin * target.astype(dist.dtype))


# ---------------------------------------------------------------------------------------------
# Cosine logits.
# ---------------------------------------------------------------------------------------------
def _l2_normalise(v: jax.Array) -> jax.Array:
    # The floor on |v|^2 (eps^2 of the dtype, i.e. |v| >= 1.2e-7 in float32) keeps the gradient
    # finite for an all-zero row, whose cosines are then 0: rsqrt's derivative -y^3/2 must not
    # overflow, as the dtype's smallest normal (y ~ 1e19) would make it, giving 0 * inf = NaN.
    floor = jnp.finfo(v.dtype).eps ** 2
    return v * lax.rsqrt(jnp.maximum(jnp.sum(v * v, axis=-1, keepdims=True), floor))


def _safe_sine(cos: jax.Array) -> jax.Array:
    """``sqrt(1 - cos^2)`` whose gradient is 0 (not inf/NaN) at ``cos = +-1``."""
    s2 = 1.0 - cos * cos
    positive = s2 > 0
    # Double `where`: the sqrt never sees 0, so its derivative is never evaluated at 0.
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, s2, 1.0)), 0.0)


def cosine_logits(
    embeddings: ArrayLike,
    weights: ArrayLike,
    labels: ArrayLike | None = None,
    *,
    scale: ArrayLike,
    margin: ArrayLike = 0.0,
    kind: str = "am",
) -> jax.Array:
    """Margin softmax logits on the cosine between normalised embeddings and class weights.

    With :math:`\\cos\\theta_{ij} = \\hat e_i \\cdot \\hat w_j` and target :math:`y_i`:

    * ``am`` (AM-Softmax / CosFace, Wang et al. 2018):
      :math:`z_{iy} = s(\\cos\\theta_{iy} - m)`, :math:`z_{ij} = s\\cos\\theta_{ij}`.
    * ``aam`` (AAM-Softmax / ArcFace, Deng et al. 2019): :math:`z_{iy} = s\\cos(\\theta_{iy}+m)`
      computed as :math:`\\cos\\theta\\cos m - \\sin\\theta\\sin m` (no ``arccos``); where
      :math:`\\theta + m > \\pi` (i.e. :math:`\\cos\\theta \\le \\cos(\\pi - m)`) it falls back to
      the monotone :math:`\\cos\\theta - m\\sin(\\pi - m)`, as insightface and WeSpeaker do.
    * ``ram`` (Real AM-Softmax, Li, Nai & Wang, ICASSP 2022): the AM logits shifted so that the
      target logit is 0 (softmax cross-entropy is invariant to that shift), with every non-target
      logit below the target set to 0:
      :math:`z_{iy} = 0`, :math:`z_{ij} = s\\max(0, \\cos\\theta_{ij} + m - \\cos\\theta_{iy})`.
      The cross-entropy is then :math:`\\log(1 + \\sum_{j\\ne y} e^{s\\max(0, \\cos\\theta_j + m -
      \\cos\\theta_y)})`: a class that already respects the margin contributes a constant and
      *no gradient* (a true hinge margin), whereas AM-Softmax keeps pushing it away. The loss
      is continuous and its floor is ``log(C)`` (reached when every margin holds), not 0.

    ``margin = 0`` gives ``s cos`` for ``am`` and ``aam``. Gradients are finite everywhere,
    including at ``cos = +-1`` and for all-zero embeddings.

    Args:
      embeddings: ``[B, D]``.
      weights: ``[C, D]`` class weights (normalised here).
      labels: ``[B]`` integer class indices, or None for margin-free scores ``s cos``.
      scale: ``s > 0``.
      margin: ``m >= 0``; may be traced (warm-up schedule).
      kind: ``"am"``, ``"aam"`` or ``"ram"``.

    Returns:
      Logits ``[B, C]``.

    Raises:
      ValueError: bad shapes, non-integer labels, ``scale <= 0``, ``margin < 0`` or an unknown
        ``kind``.
    """
    _check_choice("kind", kind, COSINE_KINDS)
    _check_positive("scale", scale)
    _check_non_negative("margin", margin)
    e = jnp.asarray(embeddings)
    w = jnp.asarray(weights)
    _check_matrices(e, w, "weights")
    if labels is not None:
        labels = jnp.asarray(labels)
        _check_labels(labels, e.shape[0])
    dtype = _compute_dtype(e, w)
    # Rounding can push |cos| a hair above 1; clip so that sin and the AAM branch stay real.
    cos = jnp.clip(_matmul_t(_l2_normalise(e.astype(dtype)), _l2_normalise(w.astype(dtype))), -1, 1)
    if labels is None:
        return scale * cos

    target = _target_mask(labels, w.shape[0])
    margin = jnp.asarray(margin, dtype)
    if kind == "aam":
        phi = cos * jnp.cos(margin) - _safe_sine(cos) * jnp.sin(margin)
        threshold = jnp.cos(jnp.pi - margin)
        phi = jnp.where(cos > threshold, phi, cos - jnp.sin(jnp.pi - margin) * margin)
    else:
        phi = cos - margin
    logits = scale * jnp.where(target, phi, cos)
    if kind == "ram":
        z_target = jnp.sum(jnp.where(target, logits, 0.0), axis=-1, keepdims=True)
        logits = jnp.where(target, 0.0, jnp.maximum(logits - z_target, 0.0))
    return logits
