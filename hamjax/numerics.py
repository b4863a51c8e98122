"""Dtype promotion and curvature checks shared by the hyperbolic modules (lorentz, nn).

Half-precision inputs compute in float32 and come back in their own dtype (bfloat16's 8-bit
mantissa cannot hold the cancellations of hyperbolic formulas); integers promote to the
default float. A concrete curvature is checked at trace time; a traced one (learned, or swept)
cannot be, and is only required to be a scalar.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

__all__ = ["compute_arrays", "curvature"]


def compute_arrays(*xs: ArrayLike) -> tuple[np.dtype, list[jax.Array]]:
    """``(output dtype, arrays in the compute dtype)``; half types compute in float32."""
    arrs = [jnp.asarray(x) for x in xs]
    out = jnp.result_type(*arrs)
    if not jnp.issubdtype(out, jnp.floating):
        out = jnp.result_type(float)  # ints / bools promote to the default float (f32 or f64)
    out = np.dtype(out)
    compute = out if out.itemsize >= 4 else np.dtype(np.float32)
    return out, [a.astype(compute) for a in arrs]


def curvature(c: ArrayLike, dtype: np.dtype, meaning: str = "") -> jax.Array:
    """``c`` as a scalar of ``dtype``; a concrete ``c`` must be a finite number > 0.

    Args:
      c: the curvature (a Python number, an array, or a tracer).
      dtype: the compute dtype.
      meaning: what ``c`` sets, for the error message (e.g. "sheet <x, x>_L = -1/c").

    Raises:
      ValueError: a non-scalar, non-finite or non-positive concrete ``c`` (the value named).
    """
    if not isinstance(c, jax.core.Tracer):
        value = np.asarray(c)
        if value.ndim != 0:
            raise ValueError(f"c must be a scalar curvature, got an array of shape {value.shape}")
        if not np.issubdtype(value.dtype, np.number) or not np.isfinite(value) or value <= 0:
            suffix = f" ({meaning})" if meaning else ""
            raise ValueError(f"c must be a finite curvature > 0{suffix}, got c={c!r}")
    c = jnp.asarray(c)
    if c.ndim != 0:
        raise ValueError(f"c must be a scalar curvature, got shape {c.shape}")
    return c.astype(dtype)
