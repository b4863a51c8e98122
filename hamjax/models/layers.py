"""Building blocks shared by the encoders: PyTorch-style initialisers, masks, masked pooling.

Every encoder in :mod:`hamjax.models` takes features ``[B, T, F]`` and a boolean frame mask
``[B, T]`` (True = valid; valid frames form a prefix). Padded frames must not change the
embedding of an utterance, so three things hold throughout:

1. The input of every convolution whose kernel spans time is exactly zero on padded frames,
   so a padded utterance sees the same zeros beyond its end as the convolution's own zero
   padding gives it when it is alone (:func:`apply_mask` after every BatchNorm).
2. Every reduction over time (SE squeeze, statistics pooling, attention softmax) runs over
   valid frames only (:func:`masked_mean`, :func:`masked_mean_std`, :func:`masked_softmax`).
3. BatchNorm in training mode takes its batch statistics over valid frames only (flax's
   ``BatchNorm(mask=...)``), so the amount of padding in a batch does not shift them.

Parameters are initialised as PyTorch initialises ``nn.Conv1d``/``nn.Conv2d``/``nn.Linear``
(kaiming-uniform with ``a = sqrt(5)``, i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and
biases), so a model trained with hamjax starts where the authors' PyTorch models start.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

# PyTorch's default ``reset_parameters``: kaiming_uniform_(a=sqrt(5)) has gain^2 = 2/(1+5) = 1/3,
# i.e. a uniform distribution with variance 1/(3 fan_in) -> bound 1/sqrt(fan_in).
torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")

# PyTorch BatchNorm defaults: momentum 0.1 on the *new* value == flax momentum 0.9 on the old.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def torch_bias_init(fan_in: int) -> nn.initializers.Initializer:
    """PyTorch's default bias initialiser, U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    Args:
      fan_in: number of inputs feeding one output unit (``in_channels * prod(kernel_size)``).

    Returns:
      A flax initialiser ``(key, shape, dtype) -> array``.
    """
    bound = 1.0 / math.sqrt(fan_in)

    def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def conv(
    x: jax.Array,
    features: int,
    kernel_size: Sequence[int],
    *,
    name: str,
    strides: Sequence[int] | int = 1,
    dilation: int = 1,
    use_bias: bool = True,
    dtype: Any = jnp.float32,
) -> jax.Array:
    """A PyTorch-style convolution (symmetric ``dilation * (k // 2)`` zero padding) in NWC/NHWC.

    Must be called inside a ``@nn.compact`` method; the convolution becomes the submodule
    ``name`` of the caller. The padding equals PyTorch's ``padding=dilation*(k//2)``, which
    for stride 2 differs from flax's ``"SAME"`` (that pads only at the end for even lengths):
    the output length is ``floor((L - 1) / stride) + 1`` as in WeSpeaker's ResNet.

    Args:
      x: input ``[B, *spatial, C_in]``.
      features: output channels ``C_out``.
      kernel_size: one entry per spatial axis.
      name: submodule name (kept equal to the PyTorch attribute name for weight porting).
      strides: stride per spatial axis (int = same for all).
      dilation: kernel dilation (same for all spatial axes).
      use_bias: whether the convolution has a bias.
      dtype: compute dtype; parameters stay float32.

    Returns:
      ``[B, *spatial', C_out]`` in ``dtype``. A 1-D kernel of size 1 is a
      :class:`PointwiseConv` (the same parameters and values, a cheaper weight gradient).
    """
    kernel_size = tuple(kernel_size)
    if kernel_size == (1,) and strides in (1, (1,)):
        return PointwiseConv(features, use_bias=use_bias, dtype=dtype, name=name)(x)
    pads = [(dilation * (k // 2), dilation * (k // 2)) for k in kernel_size]
    fan_in = x.shape[-1] * math.prod(kernel_size)
    return nn.Conv(
        features,
        kernel_size,
        strides=strides,
        padding=pads,
        kernel_dilation=dilation,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=torch_kernel_init,
        bias_init=torch_bias_init(fan_in),
        name=name,
    )(x)


def _conv1x1(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return jax.lax.conv_general_dilated(
        x, kernel, (1,), [(0, 0)], dimension_numbers=("NWC", "WIO", "NWC")
    )


@jax.custom_vjp
def pointwise_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """A kernel-size-1 convolution ``x [B, T, C] * kernel [1, C, D] -> [B, T, D]``.

    The value and the input gradient are XLA's convolutions; the kernel gradient
    ``dW = sum_{b,t} x_bt^T dy_bt`` is one matrix product over the flattened ``[B T]`` rows.
    Left to autodiff, XLA:CPU computes it as a convolution over time whose operands it first
    copies into ``[C, T, B]`` layouts (``transpose_copy`` fusions, ~9 % of the C=1024 training
    step; bench/RESULTS.md, section ``cpu_step``). Same result up to float rounding.
    """
    return _conv1x1(x, kernel)


def _pointwise_fwd(x: jax.Array, kernel: jax.Array) -> tuple[jax.Array, tuple]:
    return _conv1x1(x, kernel), (x, kernel)


def _pointwise_bwd(res: tuple, g: jax.Array) -> tuple[jax.Array, jax.Array]:
    x, kernel = res
    dx = _conv1x1(g, jnp.swapaxes(kernel, 1, 2))
    dw = jax.lax.dot_general(
        x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1]), (((0,), (0,)), ((), ())),
        preferred_element_type=jnp.float32,
    )  # fmt: skip
    return dx, dw[None].astype(kernel.dtype)


pointwise_conv.defvjp(_pointwise_fwd, _pointwise_bwd)


class PointwiseConv(nn.Module):
    """``nn.Conv(features, (1,))`` on ``[B, T, C]`` through :func:`pointwise_conv`.

    Parameters are exactly ``nn.Conv``'s (``kernel [1, C, features]``, ``bias [features]``,
    PyTorch initialisers, created in the same order, hence the same initial values), so
    checkpoints and converted PyTorch weights are interchangeable.

    Attributes:
      features: output channels.
      use_bias: add a bias.
      dtype: compute dtype (input and kernel are cast to it); parameters stay float32.
    """

    features: int
    use_bias: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        kernel = self.param("kernel", torch_kernel_init, (1, c, self.features), jnp.float32)
        y = pointwise_conv(x.astype(self.dtype), kernel.astype(self.dtype))
        if self.use_bias:
            bias = self.param("bias", torch_bias_init(c), (self.features,), jnp.float32)
            y = y + bias.astype(self.dtype)
        return y


def _matmul_rows(x: jax.Array, w: jax.Array) -> jax.Array:
    """``x [..., K] @ w [K, N] -> [..., N]`` as one 2-D product over the flattened leading axes.

    The 2-D product's weight gradient ``x^T dy`` is a transposed-operand matrix product; the
    same contraction written as a 3-D einsum makes XLA:CPU copy the activations into a
    ``[K, B, T]`` layout first. Accumulates in float32.
    """
    y = jnp.dot(x.reshape(-1, x.shape[-1]), w, preferred_element_type=jnp.float32)
    return y.reshape(*x.shape[:-1], w.shape[-1])


class ConcatPointwiseConv(nn.Module):
    """A 1x1 convolution of a channel concatenation, without forming the concatenation.

    ``conv1x1(concat(parts, -1)) = sum_i parts_i @ W_i + b`` where ``W_i`` are the rows of the
    kernel that read part ``i``. Parts broadcast against each other on every axis but the last,
    so a per-utterance part ``[B, 1, D]`` (e.g. a mean over time) costs one ``[B, D]`` product
    instead of ``T`` identical rows. Parameters are exactly ``nn.Conv``'s (``kernel [1, sum D_i,
    features]``, ``bias [features]``, the same initialisers and creation order), so checkpoints
    and :func:`conv` are interchangeable with it; the products accumulate in float32 and the
    sum is rounded once to ``dtype``.

    Attributes:
      features: output channels.
      dtype: compute dtype of the products (inputs and kernel are cast to it).
    """

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, parts: Sequence[jax.Array]) -> jax.Array:
        fan_in = sum(p.shape[-1] for p in parts)
        kernel = self.param("kernel", torch_kernel_init, (1, fan_in, self.features), jnp.float32)
        bias = self.param("bias", torch_bias_init(fan_in), (self.features,), jnp.float32)
        kernel = kernel[0].astype(self.dtype)
        out, start = None, 0
        for p in parts:
            d = p.shape[-1]
            y = _matmul_rows(p.astype(self.dtype), kernel[start : start + d])
            out = y if out is None else out + y
            start += d
        return out.astype(self.dtype) + bias.astype(self.dtype)


def dense(x: jax.Array, features: int, *, name: str, dtype: Any = jnp.float32) -> jax.Array:
    """``nn.Dense`` with PyTorch ``nn.Linear`` initialisation; ``[B, D_in] -> [B, features]``."""
    return nn.Dense(
        features,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=torch_kernel_init,
        bias_init=torch_bias_init(x.shape[-1]),
        name=name,
    )(x)


def batch_norm(
    x: jax.Array,
    *,
    train: bool,
    name: str,
    mask: jax.Array | None = None,
    dtype: Any = jnp.float32,
) -> jax.Array:
    """BatchNorm over every axis but the last, with PyTorch's momentum (0.1) and eps (1e-5).

    In training mode the batch mean and (biased) variance are taken over the positions where
    ``mask`` is True only, so padded frames neither enter the statistics nor the running
    averages. (PyTorch updates ``running_var`` with the *unbiased* batch variance; flax uses the
    biased one. Over ``B * T`` >= thousands of frames the factor ``N / (N - 1)`` is negligible.)
    Statistics are always reduced in float32, also when ``dtype`` is bfloat16.

    Args:
      x: ``[B, ..., C]``.
      train: use batch statistics and update ``batch_stats`` (True) or running averages.
      name: submodule name.
      mask: boolean, broadcastable to ``x`` (e.g. ``[B, T, 1]``); None = all positions.
      dtype: compute dtype of the normalised output.

    Returns:
      ``[B, ..., C]`` in ``dtype``.
    """
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )(x, mask=mask)


def prefix_mask(lengths: ArrayLike | None, max_len: int) -> jax.Array | None:
    """Boolean mask of valid prefixes: ``mask[b, t] = t < lengths[b]``; ``[B] -> [B, max_len]``.

    None (all frames valid) stays None.
    """
    if lengths is None:
        return None
    return jnp.arange(max_len)[None, :] < jnp.asarray(lengths)[:, None]


def downsample_lengths(lengths: jax.Array | None, stride: int) -> jax.Array | None:
    """Valid output length of a stride-``stride`` convolution with PyTorch-style padding.

    For kernel ``k = 2p + 1`` and padding ``p`` (or ``k = 1``, ``p = 0``) the output length is
    ``floor((L + 2p - k) / s) + 1 = floor((L - 1) / s) + 1 = ceil(L / s)``; output frame ``t``
    reads input frames ``s t - p .. s t + p``, so it lies inside the utterance exactly when
    ``t < ceil(L / s)``. None (all valid) stays None.
    """
    if lengths is None:
        return None
    return (lengths + stride - 1) // stride


def check_features(feats: jax.Array, frame_mask: jax.Array | None, where: str) -> jax.Array | None:
    """Validates ``feats [B, T, F]`` / ``frame_mask [B, T]``; returns valid lengths ``[B]``.

    The mask is reduced to per-utterance lengths (valid frames form a prefix by the project's
    convention), and every internal mask is rebuilt from them. Without a mask the result is
    None and the encoders skip all masking work (fixed-length training crops need none).

    Raises:
      ValueError: naming ``where`` and the offending shape when the inputs do not fit.
    """
    if feats.ndim != 3:
        raise ValueError(
            f"{where}: feats must be [batch, frames, features], got shape {tuple(feats.shape)}"
        )
    b, t, _ = feats.shape
    if t < 1:
        raise ValueError(f"{where}: feats has {t} frames; need at least 1")
    if not jnp.issubdtype(feats.dtype, jnp.floating):
        raise ValueError(f"{where}: feats must be floating point, got dtype {feats.dtype}")
    if frame_mask is None:
        return None
    if tuple(frame_mask.shape) != (b, t):
        raise ValueError(
            f"{where}: frame_mask must have shape [batch, frames] = {(b, t)}, "
            f"got {tuple(frame_mask.shape)}"
        )
    if known_all_valid(frame_mask):
        return None
    return jnp.sum(frame_mask.astype(jnp.int32), axis=1)


def known_all_valid(mask: Any) -> bool:
    """True when ``mask`` is a concrete (not traced) array whose entries are all True.

    :func:`hamjax.frontend.compute_features` without a sample mask returns its frame mask as
    such a constant, so a jitted training step on fixed-length crops skips every masking
    operation (mask selects, masked BatchNorm statistics, masked pooling) at trace time; the
    result is the same up to float rounding. A traced mask is never inspected.
    """
    if mask is None or isinstance(mask, jax.core.Tracer):
        return False
    return bool(np.all(np.asarray(mask)))


def apply_mask(x: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Zeroes padded positions: ``x * mask`` with ``mask [B, T]`` broadcast over trailing axes.

    ``mask=None`` (all valid) returns ``x`` unchanged.
    """
    if mask is None:
        return x
    mask = mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim))
    return jnp.where(mask, x, jnp.zeros((), x.dtype))


def expand_mask(mask: jax.Array | None, ndim: int) -> jax.Array | None:
    """``[B, T]`` -> ``[B, T, 1, ...]`` with ``ndim`` axes (for broadcasting); None stays None."""
    if mask is None:
        return None
    return mask.reshape(mask.shape + (1,) * (ndim - mask.ndim))


def masked_mean(x: jax.Array, mask: jax.Array | None, axis: int = 1) -> jax.Array:
    """Mean over the valid frames; ``x [B, T, ...]``, ``mask [B, T]`` (None: all) -> ``[B, ...]``.

    .. math:: \\mu_b = \\frac{\\sum_t m_{bt} x_{bt}}{\\max(1, \\sum_t m_{bt})}
    """
    if mask is None:
        return jnp.mean(x, axis=axis)
    m = expand_mask(mask, x.ndim).astype(x.dtype)
    n = jnp.maximum(jnp.sum(m, axis=axis), 1)
    return jnp.sum(x * m, axis=axis) / n


def masked_mean_std(
    x: jax.Array,
    mask: jax.Array,
    *,
    axis: int = 1,
    ddof: int = 1,
    eps: float = 0.0,
    min_var: float = 0.0,
) -> tuple[jax.Array, jax.Array]:
    """Mean and standard deviation over the valid frames, computed in float32.

    ``ddof=1`` reproduces ``torch.var``'s default (unbiased) estimator, which both the authors'
    ECAPA and WeSpeaker's TSTP use. The variance is two-pass (centred) for accuracy.

    .. math::
        \\sigma_b = \\sqrt{\\max\\Big(\\frac{\\sum_t m_{bt}(x_{bt} - \\mu_b)^2}
                    {\\max(1, n_b - \\mathrm{ddof})}, v_{\\min}\\Big) + \\epsilon}

    Args:
      x: ``[B, T, ...]``.
      mask: boolean ``[B, T]``; None = all frames valid.
      axis: the time axis (1).
      ddof: delta degrees of freedom (1 = unbiased, as ``torch.var``).
      eps: added to the variance inside the square root (WeSpeaker: 1e-8).
      min_var: lower clamp of the variance (authors' ECAPA: 1e-4).

    Returns:
      ``(mean, std)``, each ``[B, ...]`` float32.
    """
    x = x.astype(jnp.float32)
    if mask is None:
        n = jnp.asarray(x.shape[axis], jnp.float32)
        mean = jnp.mean(x, axis=axis)
        centred = x - jnp.expand_dims(mean, axis)
    else:
        m = expand_mask(mask, x.ndim).astype(jnp.float32)
        n = jnp.sum(m, axis=axis)
        mean = jnp.sum(x * m, axis=axis) / jnp.maximum(n, 1.0)
        centred = (x - jnp.expand_dims(mean, axis)) * m
    var = jnp.sum(centred * centred, axis=axis) / jnp.maximum(n - ddof, 1.0)
    return mean, jnp.sqrt(jnp.maximum(var, min_var) + eps)


def masked_softmax(logits: jax.Array, mask: jax.Array | None, axis: int = 1) -> jax.Array:
    """Softmax over time restricted to valid frames (weight exactly 0 on padded ones), float32.

    Args:
      logits: ``[B, T, C]``.
      mask: boolean ``[B, T]``; every row needs at least one valid frame. None: all valid.
      axis: the time axis (1).

    Returns:
      ``[B, T, C]`` float32 weights summing to 1 over valid frames.
    """
    logits = logits.astype(jnp.float32)
    return jax.nn.softmax(logits, axis=axis, where=expand_mask(mask, logits.ndim))


def check_positive_ints(where: str, **fields: Any) -> None:
    """Raises ValueError naming the first field that is not a positive int."""
    for key, value in fields.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{where}: {key} must be a positive int, got {value!r}")


def check_dtype(where: str, dtype: Any) -> None:
    """Raises ValueError unless ``dtype`` names a floating-point dtype."""
    try:
        ok = jnp.issubdtype(jnp.dtype(dtype), jnp.floating)
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(
            f"{where}: dtype must be a floating dtype such as float32 or bfloat16, got {dtype!r}"
        )
