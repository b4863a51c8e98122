r"""Measuring the "hierarchy" claim: Gromov delta-hyperbolicity, tree statistics, disk pictures.

Pure functions over host arrays (numpy in, numpy / plain Python out). They take either points
``[N, D]`` with a ``metric`` or, with ``metric="precomputed"``, a distance matrix ``[N, N]``:

* ``"euclidean"``: :math:`\|x - y\|`.
* ``"cosine"``: the *angular* distance :math:`\arccos\langle\hat x, \hat y\rangle` between
  L2-normalised vectors (the geodesic distance on the unit sphere). ``1 - cos`` is not a metric
  (it breaks the triangle inequality), so it has no meaningful Gromov delta; the angle is a
  monotone function of the cosine score, so rank statistics are the same as with the score.
* ``"poincare"``: :math:`d_c(x, y)` of the curvature-``c`` Poincaré ball, through
  :func:`hamjax.poincare.pairwise_dist` / :func:`hamjax.poincare.dist`. For a trained
  hyperbolic head pass the head's ball points (its ``ball_embed``) and the curvature *of its
  distance*: ``c`` for ``mode="expmap"``; ``1`` for the authors' ``mode="clip"``, whose distance
  is the unit-curvature one (``c`` only sets their clipping radius).
* ``"precomputed"``: the input is already a symmetric distance matrix.

Gromov delta-hyperbolicity (Gromov 1987; the estimator of Khrulkov et al., "Hyperbolic Image
Embeddings", CVPR 2020). With the Gromov product w.r.t. a base point :math:`w`,

.. math::
   (x, y)_w = \tfrac12\big(d(x, w) + d(y, w) - d(x, y)\big),

a metric space is :math:`\delta`-hyperbolic when
:math:`(x, y)_w \ge \min\{(x, z)_w, (z, y)_w\} - \delta` for all :math:`x, y, z, w` (the
four-point condition). For a fixed :math:`w` and the Gromov-product matrix :math:`A`,

.. math::
   \delta_w = \max_{x, y}\big[(A \otimes A)_{xy} - A_{xy}\big], \qquad
   (A \otimes A)_{xy} = \max_z \min(A_{xz}, A_{zy}),

the max-min matrix product; :math:`\delta_w \le \delta \le 2\delta_w` (Gromov), and trees
(0-hyperbolic) give :math:`\delta_w = 0` exactly. Khrulkov et al. report the scale-free
:math:`\delta_{rel} = 2\delta / \operatorname{diam}` in :math:`[0, 1]`, estimated on random
subsets of the data (their ``batched_delta_hyp``: subsets of 1500 points, base point = the
subset's first point, mean over tries). :func:`delta_hyperbolicity` evaluates a batch of subsets
in one vectorised JAX computation (no ``[T, n, n, n]`` tensor: rows are processed in blocks).

Tree statistics use hierarchy labels given finest level first, e.g.
``{"speaker": ..., "base": ..., "family": ...}``; the *tree distance* of two points is the index
of the finest level at which they share a label (0 same speaker, 1 same base voice, 2 same
family), or the number of levels when they share none (3 different families).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.spatial.distance
import scipy.stats
from jax.typing import ArrayLike

from hamjax import poincare

__all__ = [
    "METRICS",
    "centre_norms_by_group",
    "delta_hyperbolicity",
    "distance_matrix",
    "geometry_report",
    "hierarchy_distances",
    "poincare_disk_projection",
    "tree_correlation",
    "tree_distance_codes",
]

METRICS = ("euclidean", "cosine", "poincare", "precomputed")
#: Khrulkov et al. sample 1500 points; the max-min product is O(n^3) per subset, so the default
#: is smaller (500: ~1.3e8 min/max per subset, well under a second on 2 CPU cores).
DEFAULT_DELTA_SAMPLES = 500
DEFAULT_DELTA_TRIALS = 10
#: Elements of one ``[T, b, n, n]`` block of the max-min product (bounds memory at ~128 MiB in
#: float32 if XLA does not fuse the broadcast into the reduction).
_MAXMIN_BLOCK_ELEMENTS = 1 << 25
#: Distance-matrix rows computed at a time by the blocked statistics (bounds host memory).
_ROW_BLOCK_ELEMENTS = 1 << 22


# ------------------------------------------------------------------------------ validation


def _check_metric(metric: str, c: float | None) -> float | None:
    """Validates ``metric`` and ``c``; returns ``c`` as a float (or None)."""
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r}: expected one of {', '.join(METRICS)}")
    if metric == "poincare":
        if c is None:
            raise ValueError("metric='poincare' needs the curvature c > 0 (got c=None)")
        if not (isinstance(c, (int, float, np.floating, np.integer)) and math.isfinite(c)):
            raise ValueError(f"c={c!r}: expected a finite number > 0")
        if c <= 0:
            raise ValueError(f"c={c!r}: expected a curvature > 0 (ball radius 1/sqrt(c))")
        return float(c)
    if c is not None:
        raise ValueError(f"c={c!r} is only used with metric='poincare' (metric={metric!r})")
    return None


def _as_points(x: ArrayLike, metric: str, c: float | None, name: str = "points") -> np.ndarray:
    """``[N, D]`` finite float64 points (or an ``[N, N]`` distance matrix when precomputed)."""
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"{name}: expected a real numeric array, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.ndim != 2 or arr.shape[0] < 2 or arr.shape[1] < 1:
        raise ValueError(f"{name}: expected a [N, D] array with N >= 2, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: {int(np.sum(~np.isfinite(arr)))} non-finite value(s)")
    if metric == "precomputed":
        n = arr.shape[0]
        if arr.shape != (n, n):
            raise ValueError(
                f"{name}: metric='precomputed' expects a square [N, N] distance matrix, got "
                f"shape {arr.shape}"
            )
        scale = max(float(np.max(np.abs(arr))), 1e-300)
        if np.min(arr) < 0:
            raise ValueError(f"{name}: distances must be >= 0, got min {np.min(arr):.3g}")
        if not np.allclose(arr, arr.T, rtol=1e-5, atol=1e-6 * scale):
            raise ValueError(f"{name}: the distance matrix is not symmetric")
        if np.max(np.abs(np.diag(arr))) > 1e-6 * scale:
            raise ValueError(f"{name}: the distance matrix has a non-zero diagonal")
    elif metric == "cosine":
        if np.any(np.linalg.norm(arr, axis=1) == 0):
            raise ValueError(f"{name}: metric='cosine' needs non-zero vectors; found a zero row")
    elif metric == "poincare":
        sq = np.sum(arr * arr, axis=1) * c
        if np.any(sq >= 1.0):
            raise ValueError(
                f"{name}: metric='poincare' needs points inside the ball c|x|^2 < 1 (c={c}); "
                f"max c|x|^2 = {np.max(sq):.6g}. Map vectors in first (e.g. the head's ball_embed "
                "or hamjax.poincare.project)"
            )
    return arr


def _check_count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}={value!r}: expected an integer >= {minimum}")
    return int(value)


# ------------------------------------------------------------------------------ distances


# Jitted once per shape: op-by-op dispatch of the geometry's many small operations is slow, and
# the delta estimator calls the distance once per sampled subset. ``c`` stays a traced argument,
# so one compilation serves every curvature.
_poincare_pairwise = jax.jit(lambda x, y, c: poincare.pairwise_dist(x, y, c=c))
_poincare_paired = jax.jit(lambda x, y, c: poincare.dist(x, y, c=c))
_poincare_dist0 = jax.jit(lambda x, c: poincare.dist0(x, c=c))
_poincare_logmap0 = jax.jit(lambda x, c: poincare.logmap0(x, c=c))


def _cross(x: np.ndarray, y: np.ndarray, metric: str, c: float | None) -> np.ndarray:
    """``[n, D] x [m, D] -> [n, m]`` float64 distances (points already validated)."""
    if metric == "euclidean":
        # cdist takes exact differences: no |x|^2 + |y|^2 - 2xy cancellation for close points.
        return scipy.spatial.distance.cdist(x, y)
    if metric == "cosine":
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        yn = y / np.linalg.norm(y, axis=1, keepdims=True)
        # angle = 2 arcsin(chord / 2): accurate for nearly parallel vectors, where arccos(cos)
        # loses half the digits.
        chord = scipy.spatial.distance.cdist(xn, yn)
        return 2.0 * np.arcsin(np.clip(chord / 2.0, 0.0, 1.0))
    d = _poincare_pairwise(jnp.asarray(x), jnp.asarray(y), c)
    return np.asarray(jax.device_get(d), dtype=np.float64)


def _paired(x: np.ndarray, y: np.ndarray, metric: str, c: float | None) -> np.ndarray:
    """Row-wise distances ``[P, D], [P, D] -> [P]`` float64."""
    if metric == "euclidean":
        return np.linalg.norm(x - y, axis=1)
    if metric == "cosine":
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        yn = y / np.linalg.norm(y, axis=1, keepdims=True)
        return 2.0 * np.arcsin(np.clip(np.linalg.norm(xn - yn, axis=1) / 2.0, 0.0, 1.0))
    d = _poincare_paired(jnp.asarray(x), jnp.asarray(y), c)
    return np.asarray(jax.device_get(d), dtype=np.float64)


def distance_matrix(
    points: ArrayLike, *, metric: str = "euclidean", c: float | None = None
) -> np.ndarray:
    """All pairwise distances of ``points`` in ``metric`` (see the module docstring).

    Args:
      points: ``[N, D]`` points (``[N, N]`` distances for ``"precomputed"``, returned as is).
      metric: ``"euclidean"``, ``"cosine"`` (angular), ``"poincare"`` or ``"precomputed"``.
      c: the ball's curvature, for ``"poincare"`` only.

    Returns:
      ``[N, N]`` float64 distances with a zero diagonal.

    Raises:
      ValueError: bad ``metric`` / ``c``, non-finite points, points outside the ball.
    """
    c = _check_metric(metric, c)
    x = _as_points(points, metric, c)
    if metric == "precomputed":
        return x
    d = _cross(x, x, metric, c)
    np.fill_diagonal(d, 0.0)  # float32 Poincaré distances leave ~1e-4 on the diagonal
    return d


# ------------------------------------------------------------------------------ delta


@functools.partial(jax.jit, static_argnames=("block",))
def _delta_batch(dists: jax.Array, block: int) -> jax.Array:
    """``delta_w`` of each ``[n, n]`` matrix of a batch ``[T, n, n]``, base point index 0."""
    t, n, _ = dists.shape
    # Gromov products w.r.t. point 0: A_xy = (d(x, 0) + d(y, 0) - d(x, y)) / 2.
    d0 = dists[:, 0, :]
    a = 0.5 * (d0[:, :, None] + d0[:, None, :] - dists)
    # Rows in blocks of `block`; pad with copies of row 0, which only repeat a candidate.
    pad = (-n) % block
    rows = jnp.concatenate([a, jnp.broadcast_to(a[:, :1], (t, pad, n))], axis=1)
    rows = rows.reshape(t, (n + pad) // block, block, n).transpose(1, 0, 2, 3)

    def one(ax: jax.Array) -> jax.Array:  # ax: [T, b, n], A's rows x of this block
        maxmin = jnp.max(jnp.minimum(ax[:, :, :, None], a[:, None, :, :]), axis=2)  # [T, b, n]
        return jnp.max(maxmin - ax, axis=(1, 2))

    return jnp.max(jax.lax.map(one, rows), axis=0)


def delta_hyperbolicity(
    points: ArrayLike,
    *,
    metric: str = "euclidean",
    c: float | None = None,
    num_samples: int = DEFAULT_DELTA_SAMPLES,
    num_trials: int = DEFAULT_DELTA_TRIALS,
    seed: int = 0,
) -> dict[str, Any]:
    r"""Gromov delta-hyperbolicity by the sampling estimator of Khrulkov et al. (2020).

    For each of ``num_trials`` random subsets of ``min(num_samples, N)`` distinct points
    (drawn without replacement; the subset's first point is the base point :math:`w`):

    .. math::
       \delta_w = \max_{x,y}\big[\max_z \min((x,z)_w, (z,y)_w) - (x,y)_w\big],\qquad
       \delta_{rel} = \frac{2\,\delta_w}{\operatorname{diam}},

    with :math:`(x, y)_w` the Gromov product (module docstring). ``delta_rel`` lies in
    :math:`[0, 1]`: 0 for a tree metric, ~0.1-0.3 for the image embeddings of Khrulkov et al.,
    and larger for sphere-like or grid-like point clouds. When ``num_samples >= N`` every trial
    uses all points (only the base point differs).

    Args:
      points: ``[N, D]`` points, or an ``[N, N]`` distance matrix with ``"precomputed"``.
      metric: ``"euclidean"``, ``"cosine"`` (angular), ``"poincare"`` or ``"precomputed"``.
      c: curvature of the ball for ``"poincare"`` (None otherwise).
      num_samples: subset size ``n`` (>= 4); the cost is ``O(num_trials * n^3)``.
      num_trials: number of random subsets (>= 1).
      seed: seed of the subset draws.

    Returns:
      ``{"delta": mean delta_w, "relative_delta": mean 2 delta_w / diam, "relative_delta_std":
      its std over trials, "diameter": mean subset diameter, "num_samples": n, "num_trials":
      T, "metric": metric}`` (plain floats / ints).

    Raises:
      ValueError: bad metric / ``c`` / sizes, non-finite input, a zero diameter.
    """
    c = _check_metric(metric, c)
    x = _as_points(points, metric, c)
    num_samples = _check_count("num_samples", num_samples, 4)
    num_trials = _check_count("num_trials", num_trials, 1)
    n_points = x.shape[0]
    if n_points < 4:
        raise ValueError(f"points: the four-point condition needs N >= 4 points, got {n_points}")
    n = min(num_samples, n_points)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x6D0F]))
    # One permutation prefix per trial: distinct points within a subset.
    idx = np.stack([rng.permutation(n_points)[:n] for _ in range(num_trials)])  # [T, n]
    if metric == "precomputed":
        dists = x[idx[:, :, None], idx[:, None, :]]
    else:
        dists = np.stack([_cross(x[i], x[i], metric, c) for i in idx])
        dists[:, np.arange(n), np.arange(n)] = 0.0
    diam = dists.max(axis=(1, 2))
    if np.any(diam <= 0):
        raise ValueError("points: a sampled subset has diameter 0 (all points coincide)")
    block = max(1, min(n, _MAXMIN_BLOCK_ELEMENTS // (num_trials * n * n)))
    delta = np.asarray(jax.device_get(_delta_batch(jnp.asarray(dists), block)), np.float64)
    # Rounding in the Gromov products can leave -1e-7 for a tree metric; delta >= 0 by z = y.
    delta = np.maximum(delta, 0.0)
    rel = 2.0 * delta / diam
    return {
        "delta": float(delta.mean()),
        "relative_delta": float(rel.mean()),
        "relative_delta_std": float(rel.std()),
        "diameter": float(diam.mean()),
        "num_samples": int(n),
        "num_trials": int(num_trials),
        "metric": metric,
    }


# ------------------------------------------------------------------------------ hierarchy


def tree_distance_codes(
    labels: Mapping[str, ArrayLike], num_points: int | None = None
) -> tuple[list[str], np.ndarray]:
    """Integer codes per level, finest first, after checking that the levels nest.

    Args:
      labels: ``{level name: [N] ids}``, finest level first (e.g. speaker, base, family).
      num_points: expected ``N`` (None: taken from the first level).

    Returns:
      ``(names, codes [L, N] int64)``.

    Raises:
      ValueError: no levels, wrong lengths, or a finer group spanning two coarser groups.
    """
    if not isinstance(labels, Mapping) or not labels:
        raise ValueError("labels: expected a non-empty {level: [N] ids} mapping, finest first")
    names = list(labels)
    codes = []
    for name in names:
        ids = np.asarray(labels[name])
        if ids.ndim != 1:
            raise ValueError(f"labels[{name!r}]: expected a [N] array, got shape {ids.shape}")
        if num_points is None:
            num_points = ids.shape[0]
        if ids.shape[0] != num_points:
            raise ValueError(
                f"labels[{name!r}]: {ids.shape[0]} ids for {num_points} points; expected one "
                "per point"
            )
        codes.append(np.unique(ids, return_inverse=True)[1].reshape(-1).astype(np.int64))
    codes_arr = np.stack(codes)
    for k in range(len(names) - 1):
        fine, coarse = codes_arr[k], codes_arr[k + 1]
        pairs = np.unique(np.stack([fine, coarse], axis=1), axis=0)
        if pairs.shape[0] != np.unique(fine).size:
            bad = pairs[np.flatnonzero(np.diff(pairs[:, 0]) == 0)[0], 0]
            member = np.flatnonzero(fine == bad)[0]
            raise ValueError(
                f"labels: level {names[k]!r} does not nest in {names[k + 1]!r}: "
                f"{names[k]} {np.asarray(labels[names[k]])[member]!r} has several "
                f"{names[k + 1]} ids"
            )
    return names, codes_arr


def _tree_dist(codes: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Tree distance of index arrays ``i``, ``j`` (broadcasting): finest shared level, or L."""
    num_levels = codes.shape[0]
    t = np.full(np.broadcast(i, j).shape, num_levels, dtype=np.int64)
    # Coarsest to finest: the last level written is the finest one shared (levels nest).
    for k in range(num_levels - 1, -1, -1):
        t = np.where(codes[k][i] == codes[k][j], k, t)
    return t


def _level_keys(names: Sequence[str]) -> list[str]:
    return [f"within_{n}" for n in names] + [f"across_{names[-1]}"]


def hierarchy_distances(
    embeddings: ArrayLike,
    labels: Mapping[str, ArrayLike],
    *,
    metric: str = "euclidean",
    c: float | None = None,
) -> dict[str, Any]:
    """Mean distance of all point pairs, grouped by their tree distance.

    With levels ``speaker, base, family`` the groups are: same speaker (``within_speaker``);
    same base voice, different speaker (``within_base``); same family, different base
    (``within_family``); different families (``across_family``). A hierarchy-preserving
    embedding has means increasing in that order. Every pair ``i < j`` is used, in blocks of
    rows (``O(N^2)`` time, ``O(N)`` rows of memory at a time).

    Args:
      embeddings: ``[N, D]`` points (``[N, N]`` distances with ``"precomputed"``).
      labels: ``{level: [N] ids}``, finest level first; levels must nest.
      metric: ``"euclidean"``, ``"cosine"`` (angular), ``"poincare"`` or ``"precomputed"``.
      c: curvature for ``"poincare"``.

    Returns:
      ``{"levels": {key: {"mean", "std", "count", "relative"}}, "order": [keys finest
      first], "monotone": bool, "metric": metric}``; ``relative`` is the mean divided by the
      across-top-level mean (scale-free, comparable across geometries). A group without pairs
      has ``mean = std = relative = None`` and is skipped by ``monotone``.

    Raises:
      ValueError: bad input (see :func:`tree_distance_codes`, :func:`distance_matrix`).
    """
    c = _check_metric(metric, c)
    x = _as_points(embeddings, metric, c, name="embeddings")
    n = x.shape[0]
    names, codes = tree_distance_codes(labels, n)
    num_groups = len(names) + 1
    sums = np.zeros(num_groups)
    sq_sums = np.zeros(num_groups)
    counts = np.zeros(num_groups, dtype=np.int64)
    rows = max(1, _ROW_BLOCK_ELEMENTS // n)
    cols = np.arange(n)
    for start in range(0, n, rows):
        i = np.arange(start, min(n, start + rows))
        d = x[i] if metric == "precomputed" else _cross(x[i], x, metric, c)
        upper = cols[None, :] > i[:, None]  # each unordered pair once, no self-pairs
        t = _tree_dist(codes, i[:, None], cols[None, :])[upper]
        d = d[upper]
        sums += np.bincount(t, weights=d, minlength=num_groups)
        sq_sums += np.bincount(t, weights=d * d, minlength=num_groups)
        counts += np.bincount(t, minlength=num_groups)
    keys = _level_keys(names)
    top = sums[-1] / counts[-1] if counts[-1] else math.nan
    levels: dict[str, dict[str, Any]] = {}
    means = []
    for k, key in enumerate(keys):
        if counts[k] == 0:
            levels[key] = {"mean": None, "std": None, "count": 0, "relative": None}
            continue
        mean = sums[k] / counts[k]
        std = math.sqrt(max(sq_sums[k] / counts[k] - mean * mean, 0.0))
        rel = mean / top if top and math.isfinite(top) else None
        levels[key] = {"mean": mean, "std": std, "count": int(counts[k]), "relative": rel}
        means.append(mean)
    return {
        "levels": levels,
        "order": keys,
        "monotone": bool(np.all(np.diff(means) > 0)) if len(means) > 1 else None,
        "metric": metric,
    }


def tree_correlation(
    embeddings: ArrayLike,
    labels: Mapping[str, ArrayLike],
    *,
    metric: str = "euclidean",
    c: float | None = None,
    num_pairs: int = 20_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Spearman rank correlation between embedding distances and tree distances.

    Pairs ``(i, j)``, ``i != j``, are drawn uniformly with ``seed`` (so each tree level is
    represented in proportion to its number of pairs); the tree distance is the finest shared
    level's index, or the number of levels (module docstring). ``rho = 1`` when distances are
    a strictly increasing function of the tree distance (e.g. an embedding made of the tree's
    own coordinates), ``~0`` when they ignore the hierarchy. Ties (the tree distance takes only
    ``L + 1`` values) get average ranks, as in :func:`scipy.stats.spearmanr`.

    Args:
      embeddings: ``[N, D]`` points (``[N, N]`` distances with ``"precomputed"``).
      labels: ``{level: [N] ids}``, finest first; levels must nest.
      metric: ``"euclidean"``, ``"cosine"`` (angular), ``"poincare"`` or ``"precomputed"``.
      c: curvature for ``"poincare"``.
      num_pairs: pairs to sample (>= 2).
      seed: seed of the pair draws.

    Returns:
      ``{"spearman": rho, "pvalue": p, "num_pairs": P, "pairs_per_level": {key: count},
      "metric": metric}``.

    Raises:
      ValueError: bad input, or sampled pairs that all have the same tree distance (no
        hierarchy to correlate with).
    """
    c = _check_metric(metric, c)
    x = _as_points(embeddings, metric, c, name="embeddings")
    n = x.shape[0]
    names, codes = tree_distance_codes(labels, n)
    num_pairs = _check_count("num_pairs", num_pairs, 2)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x7EE]))
    i = rng.integers(0, n, size=num_pairs)
    j = (i + rng.integers(1, n, size=num_pairs)) % n  # uniform over j != i
    t = _tree_dist(codes, i, j)
    if np.unique(t).size < 2:
        raise ValueError(
            f"labels: every sampled pair has tree distance {int(t[0])}; the hierarchy needs "
            "pairs at two or more levels to correlate with"
        )
    d = x[i, j] if metric == "precomputed" else _paired(x[i], x[j], metric, c)
    res = scipy.stats.spearmanr(d, t)
    keys = _level_keys(names)
    per_level = np.bincount(t, minlength=len(keys))
    return {
        "spearman": float(res.statistic),
        "pvalue": float(res.pvalue),
        "num_pairs": int(num_pairs),
        "pairs_per_level": {k: int(v) for k, v in zip(keys, per_level, strict=True)},
        "metric": metric,
    }


def _stats(v: np.ndarray) -> dict[str, float]:
    return {
        "mean": float(v.mean()),
        "std": float(v.std()),
        "min": float(v.min()),
        "max": float(v.max()),
    }


def centre_norms_by_group(
    centres: ArrayLike,
    group_ids: ArrayLike,
    *,
    metric: str = "euclidean",
    c: float | None = None,
) -> dict[str, Any]:
    r"""Per-group statistics of class-centre norms (are some groups nearer the origin?).

    In a hyperbolic embedding of a tree the root sits near the origin and leaves near the
    boundary, so centre norms per speaker group test whether the head uses the radial
    direction for the hierarchy. Always reports the Euclidean norm :math:`\|w\|`; with
    ``metric="poincare"`` also the hyperbolic distance to the origin
    :math:`d_c(0, w) = \tfrac{2}{\sqrt c}\operatorname{artanh}(\sqrt c\|w\|)` (pass the head's
    ball points). A Kruskal-Wallis H-test says whether the groups' norm distributions differ.

    Args:
      centres: ``[C, D]`` class centres (or ball points for ``"poincare"``).
      group_ids: ``[C]`` group of each centre (e.g. its family).
      metric: ``"euclidean"`` / ``"cosine"`` (Euclidean norm only) or ``"poincare"``.
      c: curvature for ``"poincare"``.

    Returns:
      ``{"groups": {group: {"count", "norm": {mean, std, min, max}[, "dist0": {...}]}},
      "overall": {...}, "kruskal_pvalue": p or None (fewer than two groups with two or more
      centres), "norms": [C] float64, "dist0": [C] float64 or None}``. ``norms`` and ``dist0``
      are arrays for plotting (drop them before writing JSON).

    Raises:
      ValueError: bad shapes, ``metric="precomputed"``, points outside the ball.
    """
    if metric == "precomputed":
        raise ValueError("metric='precomputed': centre norms need the centres' coordinates")
    c = _check_metric(metric, c)
    w = _as_points(centres, metric if metric == "poincare" else "euclidean", c, name="centres")
    groups = np.asarray(group_ids)
    if groups.shape != (w.shape[0],):
        raise ValueError(
            f"group_ids: expected shape ({w.shape[0]},) (one per centre), got {groups.shape}"
        )
    norms = np.linalg.norm(w, axis=1)
    dist0 = None
    if metric == "poincare":
        dist0 = np.asarray(jax.device_get(_poincare_dist0(jnp.asarray(w), c)), np.float64)
    uniq, inv = np.unique(groups, return_inverse=True)
    out_groups: dict[str, Any] = {}
    samples = []
    for g, name in enumerate(uniq):  # a loop over groups (few), not over centres
        sel = inv == g
        entry: dict[str, Any] = {"count": int(sel.sum()), "norm": _stats(norms[sel])}
        if dist0 is not None:
            entry["dist0"] = _stats(dist0[sel])
        out_groups[str(name)] = entry
        if sel.sum() >= 2:
            samples.append(norms[sel] if dist0 is None else dist0[sel])
    overall: dict[str, Any] = {"count": int(w.shape[0]), "norm": _stats(norms)}
    if dist0 is not None:
        overall["dist0"] = _stats(dist0)
    pvalue = None
    values = np.concatenate(samples) if samples else np.zeros(0)
    # Norms equal up to rounding (e.g. every centre clipped onto the same sphere) have no
    # ranks to compare.
    if len(samples) >= 2 and np.ptp(values) > 1e-9 * np.max(np.abs(values)):
        pvalue = float(scipy.stats.kruskal(*samples).pvalue)
    return {
        "groups": out_groups,
        "overall": overall,
        "kruskal_pvalue": pvalue,
        "norms": norms,
        "dist0": dist0,
        "metric": metric,
    }


# ------------------------------------------------------------------------------ pictures


def poincare_disk_projection(points: ArrayLike, *, c: float) -> np.ndarray:
    r"""Maps ball points to the unit Poincaré disk: ``logmap0 -> PCA to 2-D -> expmap0``.

    .. math::
       v = \log^c_0(x), \qquad u = v P, \qquad
       y = \sqrt c\,\exp^c_0(u) = \tanh(\sqrt c\|u\|)\,\frac{u}{\|u\|},

    where :math:`P` ``[D, 2]`` holds the top two right-singular vectors of the *uncentred*
    tangent vectors ``[N, D]``: centring would move the origin, whose distance to a point is its
    depth in a hyperbolic hierarchy, so the origin stays at the disk's centre and radial order
    is kept as far as a linear projection allows. The result is rescaled by :math:`\sqrt c` to
    the unit disk, so pictures of different curvatures compare. Singular-vector signs are fixed
    (largest-magnitude loading positive), so the picture is deterministic.

    Args:
      points: ``[N, D]`` points of the curvature-``c`` ball (``D >= 2``).
      c: curvature > 0.

    Returns:
      ``[N, 2]`` float64 points with norm < 1.

    Raises:
      ValueError: bad ``c``, shapes, or points outside the ball.
    """
    c = _check_metric("poincare", c)
    x = _as_points(points, "poincare", c)
    if x.shape[1] < 2:
        raise ValueError(f"points: need D >= 2 for a 2-D projection, got shape {x.shape}")
    v = np.asarray(jax.device_get(_poincare_logmap0(jnp.asarray(x), c)), np.float64)
    _, _, vt = np.linalg.svd(v, full_matrices=False)
    comps = vt[:2]  # [2, D]
    signs = np.sign(comps[np.arange(2), np.argmax(np.abs(comps), axis=1)])
    u = v @ (comps * signs[:, None]).T  # [N, 2]
    un = np.linalg.norm(u, axis=1, keepdims=True)
    # tanh(s) rounds to 1 for s > ~19 in float64: cap just inside the unit circle.
    r = np.minimum(np.tanh(np.sqrt(c) * un), 1.0 - 1e-9)
    return np.where(un > 0, r * u / np.where(un > 0, un, 1.0), 0.0)


# ------------------------------------------------------------------------------ one geometry


def geometry_report(
    points: ArrayLike,
    labels: Mapping[str, ArrayLike],
    *,
    metric: str = "euclidean",
    c: float | None = None,
    num_samples: int = DEFAULT_DELTA_SAMPLES,
    num_trials: int = DEFAULT_DELTA_TRIALS,
    num_pairs: int = 20_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Delta-hyperbolicity, hierarchy distances and tree correlation of one point set.

    The three hierarchy measurements of ``scripts/analyze.py`` for one geometry (e.g. cosine,
    or a hyperbolic head's ball), JSON-ready. ``tree_correlation`` is None (with the reason in
    ``tree_correlation_error``) when the labels give every pair the same tree distance.

    Args:
      points: ``[N, D]`` points (``[N, N]`` distances with ``"precomputed"``).
      labels: ``{level: [N] ids}``, finest level first.
      metric, c: the geometry (module docstring).
      num_samples, num_trials: :func:`delta_hyperbolicity`'s subset size and count.
      num_pairs: :func:`tree_correlation`'s sampled pairs.
      seed: seed of every random draw.

    Returns:
      ``{"delta": ..., "hierarchy": ..., "tree_correlation": ... | None}``.
    """
    report: dict[str, Any] = {
        "delta": delta_hyperbolicity(
            points, metric=metric, c=c, num_samples=num_samples, num_trials=num_trials, seed=seed
        ),
        "hierarchy": hierarchy_distances(points, labels, metric=metric, c=c),
    }
    try:
        report["tree_correlation"] = tree_correlation(
            points, labels, metric=metric, c=c, num_pairs=num_pairs, seed=seed
        )
    except ValueError as err:
        if "two or more levels" not in str(err):
            raise
        report["tree_correlation"] = None
        report["tree_correlation_error"] = str(err)
    return report
