r"""Hyperbolic neural-network layers on the Poincaré ball (Flax Linen), and their formulas.

Pure functions (the formulas, testable on their own) and thin Linen modules that hold the
parameters. Every layer takes the curvature at call time, keyword-only, so one learned
:class:`Curvature` can be shared by a whole network::

    c = Curvature(1.0)()                              # softplus-parameterised, learnable
    h = MobiusLinear(64)(poincare.expmap0(x, c=c), c=c)
    h = PoincareFC(64)(h, c=c)
    logits = PoincareMLR(num_classes)(h, c=c)         # [B, num_classes]

========================  ====================================================================
:class:`MobiusLinear`     ``(M ⊗_c x) ⊕_c b`` (Ganea et al. 2018, eqs. 25-28)
:class:`MobiusBias`       ``x ⊕_c b`` (Möbius translation by a learned point)
:class:`MobiusConcat`     ``(M_1 ⊗ x_1) ⊕ ... ⊕ (M_n ⊗ x_n) ⊕ b``: Ganea's concatenation layer
:func:`beta_concat`       HNN++'s Poincaré β-concatenation (Shimizu et al. 2021, sec. 3.3)
:class:`PoincareFC`       HNN++ Poincaré fully-connected layer (Shimizu et al. 2021, eq. 7)
:class:`PoincareMLR`      HNN++ Poincaré multinomial logistic regression (eq. 6)
:class:`GyroplaneMLR`     Ganea et al. 2018 hyperbolic MLR over gyroplanes (eq. 25)
:class:`Curvature`        a learnable ``c = softplus(raw) + min_c``
========================  ====================================================================

Conventions: points ``[..., D]`` in the ball of radius ``1/sqrt(c)`` (:mod:`hamjax.poincare`),
Flax kernel layout ``[D_in, D_out]``. Hyperbolic biases and gyroplane offsets are stored as
tangent vectors at the origin and mapped with :func:`hamjax.poincare.expmap0` (hyptorch's and
HNN++'s choice), so every parameter is Euclidean and any optax optimiser trains them; the
layers' outputs are projected into the ball with :func:`hamjax.poincare.project`'s default
margin. Inputs on or beyond the boundary give finite values and gradients (``1 - c|x|^2`` is
clamped at the dtype's eps, as in :mod:`hamjax.poincare`); half-precision inputs are computed
in float32 and cast back.

References: Ganea, Bécigneul & Hofmann, "Hyperbolic Neural Networks", NeurIPS 2018; Shimizu,
Mukuta & Harada, "Hyperbolic Neural Networks++", ICLR 2021.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from hamjax import numerics, poincare

__all__ = [
    "Curvature",
    "GyroplaneMLR",
    "MobiusBias",
    "MobiusConcat",
    "MobiusLinear",
    "PoincareFC",
    "PoincareMLR",
    "beta_concat",
    "gyroplane_mlr",
    "mobius_fn",
    "poincare_fc",
    "poincare_mlr",
]

_HI = jax.lax.Precision.HIGHEST  # float32 matmuls in TF32 / bf16 passes would cost ~1e-3


def _sqnorm(x: jax.Array) -> jax.Array:
    return jnp.sum(x * x, axis=-1, keepdims=True)


def _one_minus(cx2: jax.Array) -> jax.Array:
    # 1 - c|x|^2 clamped at the dtype's eps, as in hamjax.poincare: a point on or beyond the
    # boundary gives large but finite values and gradients.
    return jnp.maximum(1.0 - cx2, float(jnp.finfo(cx2.dtype).eps))


def _unit_columns(z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(|z_k|, z_k / |z_k|) for the columns of ``z [D, K]``; the norm floored (gradient 0 at 0)."""
    n = jnp.sqrt(jnp.maximum(jnp.sum(z * z, axis=0), 1e-30))
    return n, z / n


def _check_kernel(name: str, x: jax.Array, z: jax.Array, r: jax.Array | None = None) -> None:
    if x.ndim == 0 or z.ndim != 2 or z.shape[0] != x.shape[-1]:
        raise ValueError(
            f"{name}: expected x [..., D] and z [D, K] with the same D, got shapes {x.shape} "
            f"and {z.shape}"
        )
    if r is not None and r.shape != (z.shape[1],):
        raise ValueError(f"{name}: expected r [K] with K = {z.shape[1]}, got shape {r.shape}")


# ----------------------------------------------------------------------------------------------
# Formulas
# ----------------------------------------------------------------------------------------------


def _max_offset(dtype: np.dtype) -> float:
    # Bound on sqrt(c) |r| (the plane's distance from the origin, in ball units) so that
    # cosh(2 sqrt(c) r) / (1 - c|x|^2) <= cosh(2 bound) / eps stays finite. No ball point of
    # the dtype lies farther out than ~17 (float32) / ~37 (float64) ball units, so planes beyond
    # the bound separate nothing that a nearer plane does not.
    return 20.0 if np.dtype(dtype).itemsize <= 4 else 40.0


def _mlr(x: jax.Array, z: jax.Array, r: jax.Array, c: jax.Array) -> jax.Array:
    sc = jnp.sqrt(c)
    zn, zu = _unit_columns(z)
    cx2 = c * _sqnorm(x)
    bound = _max_offset(x.dtype)
    two_r = 2.0 * jnp.clip(sc * r, -bound, bound)
    arg = (
        2.0 * sc * jnp.matmul(x, zu, precision=_HI) * jnp.cosh(two_r)
        - (1.0 + cx2) * jnp.sinh(two_r)
    ) / _one_minus(cx2)
    return 2.0 * zn / sc * jnp.arcsinh(arg)


def poincare_mlr(x: ArrayLike, z: ArrayLike, r: ArrayLike, *, c: ArrayLike) -> jax.Array:
    r"""HNN++ Poincaré multinomial logistic regression (Shimizu et al. 2021, eq. 6).

    .. math:: v_k(x) = \frac{2\|z_k\|}{\sqrt c}\operatorname{arsinh}\!\Big(
              \lambda^c_x\langle\sqrt c\,x, \hat z_k\rangle\cosh(2\sqrt c\,r_k)
              - (\lambda^c_x - 1)\sinh(2\sqrt c\,r_k)\Big)

    with :math:`\lambda^c_x = 2/(1 - c\|x\|^2)` and :math:`\hat z_k = z_k/\|z_k\|`: the signed
    distance from ``x`` to the gyroplane with normal ``z_k`` at signed distance ``r_k`` from the
    origin, times ``2|z_k|`` (the "unidirectional" reparameterisation of Ganea's MLR: ``K (D +
    1)`` parameters instead of ``2 K D``). With ``r = 0`` it equals :func:`gyroplane_mlr` with
    ``p = 0``, ``a = z``.

    Args:
      x: ``[..., D]`` points in the ball.
      z: ``[D, K]`` class normals (tangent vectors at the origin).
      r: ``[K]`` class offsets (signed distances from the origin); ``sqrt(c) |r|`` is clamped
        at 20 (float32) / 40 (float64), beyond any representable point, so that ``cosh`` and
        ``sinh`` stay finite.
      c: curvature > 0.

    Returns:
      ``[..., K]`` logits.
    """
    out, (x, z, r) = numerics.compute_arrays(x, z, r)
    _check_kernel("poincare_mlr", x, z, r)
    return _mlr(x, z, r, numerics.curvature(c, x.dtype)).astype(out)


def poincare_fc(x: ArrayLike, z: ArrayLike, r: ArrayLike, *, c: ArrayLike) -> jax.Array:
    r"""HNN++ Poincaré fully-connected layer (Shimizu et al. 2021, eq. 7).

    .. math:: y = \frac{w}{1 + \sqrt{1 + c\|w\|^2}},\qquad
              w_k = \frac{1}{\sqrt c}\sinh\!\big(\sqrt c\, v_k(x)\big)

    with ``v`` the logits of :func:`poincare_mlr`: the point of the ball whose signed distances
    to the ``K`` coordinate gyroplanes through the origin are the ``v_k``. ``w`` itself
    overflows float32 once ``sqrt(c) v_k > 89``; it is evaluated as
    ``sinh(s) e^{-m} / (e^{-m} + sqrt(e^{-2m} + |sinh(s) e^{-m}|^2))`` with ``s = sqrt(c) v``
    and ``m = max_k |s_k|`` (exact for any constant ``m``), so the result is finite and
    projected into the ball with :func:`hamjax.poincare.project`'s default margin.

    Args:
      x: ``[..., D]`` points in the ball.
      z: ``[D, K]`` weights.
      r: ``[K]`` biases.
      c: curvature > 0.

    Returns:
      ``[..., K]`` points in the ball.
    """
    out, (x, z, r) = numerics.compute_arrays(x, z, r)
    _check_kernel("poincare_fc", x, z, r)
    c = numerics.curvature(c, x.dtype)
    sc = jnp.sqrt(c)
    s = sc * _mlr(x, z, r, c)
    m = jax.lax.stop_gradient(jnp.max(jnp.abs(s), axis=-1, keepdims=True))
    big = m > 10.0
    # Two forms of sinh(s) e^{-m}: direct while sinh cannot overflow (and accurate for small s),
    # from exponentials <= 1 otherwise; each branch sees safe inputs only (no NaN gradients).
    s_small = jnp.where(big, 0.0, s)
    s_big = jnp.where(big, s, 0.0)
    m_big = jnp.where(big, m, 0.0)
    u = jnp.where(
        big,
        0.5 * (jnp.exp(s_big - m_big) - jnp.exp(-s_big - m_big)),
        jnp.sinh(s_small) * jnp.exp(-jnp.where(big, 0.0, m)),
    )
    em = jnp.exp(-m)
    y = u / (em + jnp.sqrt(em * em + _sqnorm(u))) / sc
    # Projected in the output dtype (with its margin): rounding a float32 point on the float32
    # margin to bfloat16 could carry it out of the ball.
    return poincare.project(y.astype(out), c=c)


def gyroplane_mlr(x: ArrayLike, p: ArrayLike, a: ArrayLike, *, c: ArrayLike) -> jax.Array:
    r"""Hyperbolic MLR over gyroplanes (Ganea et al. 2018, eq. 25), without a ``[B, K, D]``.

    .. math:: \zeta_k(x) = \frac{\lambda^c_{p_k}\|a_k\|}{\sqrt c}\operatorname{arsinh}\!\Big(
              \frac{2\sqrt c\,\langle (-p_k)\oplus_c x,\ a_k\rangle}
              {(1 - c\|(-p_k)\oplus_c x\|^2)\,\|a_k\|}\Big)

    the signed distance from ``x`` to the gyroplane through ``p_k`` with normal ``a_k`` (a
    tangent vector at ``p_k``), times :math:`\lambda^c_{p_k}\|a_k\|`. With
    :math:`(-p)\oplus_c x = (\beta x - \alpha p)/\gamma`, :math:`\alpha = 1 - 2c\langle p,
    x\rangle + c\|x\|^2`, :math:`\beta = 1 - c\|p\|^2`, :math:`\gamma = 1 - 2c\langle p,
    x\rangle + c^2\|p\|^2\|x\|^2` and the identity :math:`1 - c\|(-p)\oplus_c x\|^2 =
    \beta(1 - c\|x\|^2)/\gamma` the argument is

    .. math:: \frac{2\sqrt c\,(\beta\langle x, \hat a\rangle - \alpha\langle p, \hat a\rangle)}
              {\beta\,(1 - c\|x\|^2)}

    which needs only the ``[B, K]`` products ``<x, p_k>`` and ``<x, a_k>`` (memory
    ``O(BK + (B + K) D)``) and no difference of nearly equal terms in the denominator.

    Args:
      x: ``[..., D]`` points in the ball.
      p: ``[K, D]`` gyroplane base points (in the ball).
      a: ``[K, D]`` gyroplane normals (tangent vectors at ``p``).
      c: curvature > 0.

    Returns:
      ``[..., K]`` logits.
    """
    out, (x, p, a) = numerics.compute_arrays(x, p, a)
    if x.ndim == 0 or p.ndim != 2 or a.shape != p.shape or p.shape[1] != x.shape[-1]:
        raise ValueError(
            f"gyroplane_mlr: expected x [..., D], p [K, D] and a [K, D], got shapes {x.shape}, "
            f"{p.shape} and {a.shape}"
        )
    c = numerics.curvature(c, x.dtype)
    sc = jnp.sqrt(c)
    an, au = _unit_columns(a.T)
    beta = _one_minus(c * jnp.sum(p * p, axis=-1))  # [K]
    px = jnp.matmul(x, p.T, precision=_HI)  # [..., K]
    alpha = 1.0 - 2.0 * c * px + c * _sqnorm(x)
    num = beta * jnp.matmul(x, au, precision=_HI) - alpha * jnp.sum(p * au.T, axis=-1)
    arg = 2.0 * sc * num / (beta * _one_minus(c * _sqnorm(x)))
    return (2.0 / beta * an / sc * jnp.arcsinh(arg)).astype(out)


def beta_concat(xs: Sequence[ArrayLike], *, c: ArrayLike) -> jax.Array:
    r"""HNN++'s Poincaré β-concatenation (Shimizu et al. 2021, sec. 3.3).

    .. math:: y = \exp^c_0\Big(\big[\tfrac{B(n/2, 1/2)}{B(n_1/2, 1/2)}\log^c_0(x_1), \dots,
              \tfrac{B(n/2, 1/2)}{B(n_N/2, 1/2)}\log^c_0(x_N)\big]\Big),\qquad n = \sum_i n_i

    (``B`` the beta function): concatenating in the tangent space at the origin, each block
    rescaled so that the expected norm of a ``n_i``-dimensional unit-variance block matches
    that of the ``n``-dimensional result.

    Args:
      xs: points ``[..., n_i]`` (leading axes broadcast).
      c: curvature > 0.

    Returns:
      ``[..., sum n_i]`` points.
    """
    if not xs:
        raise ValueError("beta_concat: expected at least one input")
    out, arrs = numerics.compute_arrays(*xs)
    if any(a.ndim == 0 for a in arrs):
        raise ValueError("beta_concat: every input needs a vector (last) axis")
    dims = [a.shape[-1] for a in arrs]
    n = sum(dims)
    log_beta = lambda a, b: math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    scales = [math.exp(log_beta(n / 2, 0.5) - log_beta(d / 2, 0.5)) for d in dims]
    shape = jnp.broadcast_shapes(*(a.shape[:-1] for a in arrs))
    parts = [
        jnp.broadcast_to(s * poincare.logmap0(a, c=c), shape + (a.shape[-1],))
        for s, a in zip(scales, arrs, strict=True)
    ]
    return poincare.expmap0(jnp.concatenate(parts, axis=-1), c=c).astype(out)


def mobius_fn(f: Callable[[jax.Array], jax.Array], x: ArrayLike, *, c: ArrayLike) -> jax.Array:
    r"""The Möbius version of a function, :math:`f^{\otimes_c}(x) = \exp^c_0(f(\log^c_0(x)))`
    (Ganea et al. 2018, eq. 26): e.g. a pointwise nonlinearity between hyperbolic layers."""
    return poincare.expmap0(f(poincare.logmap0(x, c=c)), c=c)


# ----------------------------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------------------------


def _inverse_softplus(y: float) -> float:
    # softplus(x) = log(1 + e^x)  =>  x = y + log(1 - e^-y), stable for large and small y.
    return float(y + np.log(-np.expm1(-y)))


class Curvature(nn.Module):
    """A curvature ``c = softplus(raw) + min_c`` (learnable) or the constant ``initial``.

    ``raw`` is initialised so that ``c`` starts at ``initial``; ``min_c`` keeps ``c`` away from
    0, where ``1/sqrt(c)`` is infinite (softplus underflows to 0 for ``raw < -100`` in float32).
    Call: ``Curvature(3.0)() -> c`` (a float32 scalar).

    Attributes:
      initial: the initial (or fixed) curvature, > ``min_c``.
      learnable: whether ``raw`` is a parameter (``"c_raw"``).
      min_c: the floor.
    """

    initial: float = 1.0
    learnable: bool = True
    min_c: float = 1e-5

    @nn.compact
    def __call__(self) -> jax.Array:
        if not self.initial > self.min_c:
            raise ValueError(
                f"Curvature: initial must be > min_c = {self.min_c}, got {self.initial!r}"
            )
        if not self.learnable:
            return jnp.asarray(self.initial, jnp.float32)
        start = _inverse_softplus(self.initial - self.min_c)
        raw = self.param("c_raw", lambda _: jnp.asarray(start, jnp.float32))
        return jax.nn.softplus(raw) + self.min_c


class MobiusBias(nn.Module):
    """Möbius translation by a learned point, ``x ⊕_c exp_0(b)``; ``b`` starts at 0.

    Call: ``MobiusBias()(x [..., D], c=c) -> [..., D]`` (projected into the ball).
    """

    bias_init: Callable[..., Any] = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: ArrayLike, *, c: ArrayLike) -> jax.Array:
        x = jnp.asarray(x)
        b = self.param("bias", self.bias_init, (x.shape[-1],), jnp.float32)
        y = poincare.mobius_add(x, poincare.expmap0(b, c=c).astype(x.dtype), c=c)
        return poincare.project(y, c=c)


class MobiusLinear(nn.Module):
    r"""Möbius linear layer (Ganea et al. 2018): :math:`y = (M \otimes_c x) \oplus_c b`.

    ``M ⊗_c x = exp_0(M log_0(x))`` (:func:`hamjax.poincare.mobius_matvec`); the bias is the
    point ``b = exp_0(bias)`` with ``bias`` a Euclidean parameter. Call:
    ``MobiusLinear(features)(x [..., D_in], c=c) -> [..., features]`` (projected).

    Attributes:
      features: output dimension.
      use_bias: add the Möbius bias.
      kernel_init: initialiser of the ``[D_in, features]`` kernel.
      bias_init: initialiser of the ``[features]`` bias (a tangent vector at the origin).
    """

    features: int
    use_bias: bool = True
    kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()
    bias_init: Callable[..., Any] = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: ArrayLike, *, c: ArrayLike) -> jax.Array:
        x = jnp.asarray(x)
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), jnp.float32)
        y = poincare.mobius_matvec(kernel.T.astype(x.dtype), x, c=c)
        if self.use_bias:
            b = self.param("bias", self.bias_init, (self.features,), jnp.float32)
            y = poincare.mobius_add(y, poincare.expmap0(b, c=c).astype(y.dtype), c=c)
        return poincare.project(y, c=c)


class MobiusConcat(nn.Module):
    r"""Ganea's concatenation layer: :math:`(M_1 \otimes_c x_1) \oplus_c \dots \oplus_c
    (M_n \otimes_c x_n) \oplus_c b` (the hyperbolic ``W h + U x + b`` of their GRU).

    Call: ``MobiusConcat(features)([x_1 [..., n_1], ..., x_N [..., n_N]], c=c) ->
    [..., features]``. See :func:`beta_concat` for HNN++'s parameter-free concatenation.

    Attributes:
      features: output dimension.
      use_bias: add the Möbius bias.
      kernel_init: initialiser of each ``[n_i, features]`` kernel.
    """

    features: int
    use_bias: bool = True
    kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, xs: Sequence[ArrayLike], *, c: ArrayLike) -> jax.Array:
        if not xs:
            raise ValueError("MobiusConcat: expected at least one input")
        y = None
        for i, x in enumerate(xs):
            x = jnp.asarray(x)
            k = self.param(f"kernel_{i}", self.kernel_init, (x.shape[-1], self.features))
            term = poincare.mobius_matvec(k.T.astype(x.dtype), x, c=c)
            y = term if y is None else poincare.mobius_add(y, term, c=c)
        if self.use_bias:
            b = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
            y = poincare.mobius_add(y, poincare.expmap0(b, c=c).astype(y.dtype), c=c)
        return poincare.project(y, c=c)


def _hnnpp_init(key, shape, dtype=jnp.float32):
    # HNN++'s initialisation of the weight direction: N(0, (2 D_in D_out)^-1).
    return jax.random.normal(key, shape, dtype) * (2.0 * shape[0] * shape[1]) ** -0.5


class PoincareMLR(nn.Module):
    """HNN++ Poincaré MLR head (:func:`poincare_mlr`): ``[..., D] -> [..., num_classes]``.

    Parameters ``z [D, num_classes]`` (HNN++'s ``N(0, (2 D K)^-1)``) and ``r [num_classes]``
    (zeros).
    """

    num_classes: int
    kernel_init: Callable[..., Any] = _hnnpp_init

    @nn.compact
    def __call__(self, x: ArrayLike, *, c: ArrayLike) -> jax.Array:
        x = jnp.asarray(x)
        z = self.param("z", self.kernel_init, (x.shape[-1], self.num_classes))
        r = self.param("r", nn.initializers.zeros, (self.num_classes,))
        return poincare_mlr(x, z.astype(x.dtype), r.astype(x.dtype), c=c)


class PoincareFC(nn.Module):
    """HNN++ Poincaré fully-connected layer (:func:`poincare_fc`): ``[..., D] -> [..., features]``.

    Same parameters as :class:`PoincareMLR`; the output is a point of the ball.
    """

    features: int
    kernel_init: Callable[..., Any] = _hnnpp_init

    @nn.compact
    def __call__(self, x: ArrayLike, *, c: ArrayLike) -> jax.Array:
        x = jnp.asarray(x)
        z = self.param("z", self.kernel_init, (x.shape[-1], self.features))
        r = self.param("r", nn.initializers.zeros, (self.features,))
        return poincare_fc(x, z.astype(x.dtype), r.astype(x.dtype), c=c)


class GyroplaneMLR(nn.Module):
    r"""Ganea et al.'s hyperbolic MLR head (:func:`gyroplane_mlr`): ``[..., D] -> [..., K]``.

    Parameters (all Euclidean, hyptorch's parameterisation): ``p_raw [K, D]`` (zeros) with
    gyroplane base points ``p = exp_0(p_raw)``, and ``a_raw [K, D]`` with normals
    ``a = (1 - c|p|^2) a_raw`` (the parallel transport of ``a_raw`` from the origin to ``p``,
    :math:`\lambda_0/\lambda_p`), so that ``lambda_p |a| = 2 |a_raw|``.
    """

    num_classes: int
    normal_init: Callable[..., Any] = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: ArrayLike, *, c: ArrayLike) -> jax.Array:
        x = jnp.asarray(x)
        d = x.shape[-1]
        p_raw = self.param("p_raw", nn.initializers.zeros, (self.num_classes, d))
        a_raw = self.param("a_raw", self.normal_init, (self.num_classes, d))
        p = poincare.expmap0(p_raw, c=c)
        a = a_raw * (1.0 - c * jnp.sum(p * p, axis=-1, keepdims=True))
        return gyroplane_mlr(x, p.astype(x.dtype), a.astype(x.dtype), c=c)
