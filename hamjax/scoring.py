r"""Trial scoring: cosine or Poincaré scores between embeddings (:mod:`hamjax.embeddings`).

Scores between an enrolment utterance ``e`` and a test utterance ``t``:

- ``cosine`` on L2-normalised embeddings:

  .. math::
     s_{full} = \hat f_e \cdot \hat f_t, \qquad
     s_{authors} = \tfrac12\Big(\hat f_e\cdot\hat f_t + \tfrac1{25}\sum_{i,j=1}^{5}
         \hat c_{e,i}\cdot\hat c_{t,j}\Big)
         = \tfrac12\big(\hat f_e\cdot\hat f_t + \bar c_e\cdot\bar c_t\big),

  with :math:`\bar c = \frac15\sum_i \hat c_i` (the 5x5 mean of dot products is the dot product
  of the means, so no ``[N, 5, 5]`` tensor is built).
- ``poincare``: the negative distance in the trained hyperbolic head's geometry, i.e. after the
  head's own map into the ball (``clip``: rescale to radius ``(1 - 1e-5)/sqrt(c)`` and the
  authors' unit-curvature distance with their clamps; ``expmap``: ``expmap0_c`` and ``d_c``),
  computed by :func:`hamjax.losses.hyperbolic_logits` with ``scale = 1``, ``margin = 0``;
  ``authors`` averages the full-utterance score and the mean of the 25 crop-pair scores.
  A head with ``feature_clip`` / ``feature_scale`` (issue 16) maps ``e`` to
  ``expmap0_c(clip_r(alpha e))`` (:func:`hamjax.losses.tangent_features`, the trained
  ``alpha``): the points keep their radii below the boundary, and the distance

  .. math::
     d_c(x, y) = \frac{1}{\sqrt c}\operatorname{arcosh}\Bigl(1 + \frac{2c\|x - y\|^2}
         {(1 - c\|x\|^2)(1 - c\|y\|^2)}\Bigr)

  weighs a difference of radii, not only the angle (a ball whose points all share one radius
  ranks trials exactly as cosine does).

AS-norm lives in :mod:`hamjax.asnorm`, the embedding cache in :mod:`hamjax.embedding_cache`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hamjax.embeddings import Embeddings, check_choice

__all__ = [
    "SCORES",
    "BallGeometry",
    "ball_geometry",
    "l2_normalise",
    "score_trials",
]

SCORES = ("cosine", "poincare")
#: Trials scored per device call (fixed, so one compilation serves every chunk).
TRIAL_CHUNK = 8192


@dataclasses.dataclass(frozen=True)
class BallGeometry:
    """A hyperbolic head's map into the ball and distance (see :func:`ball_geometry`).

    Attributes:
      c: the head's curvature (learnt value when ``learn_c``).
      mode: ``"clip"`` or ``"expmap"`` (see :func:`hamjax.losses.to_ball`).
      head_name: the config's head name, for messages and reports.
      feature_clip: the head's ``feature_clip`` ``r`` (0 = none).
      feature_scale: the head's trained embedding scale ``alpha`` (None = none).
    """

    c: float
    mode: str
    head_name: str = ""
    feature_clip: float = 0.0
    feature_scale: float | None = None

    def pairwise_dist(self, x: jax.Array, y: jax.Array) -> jax.Array:
        """``[N, E] x [M, E] -> [N, M]`` distances between raw embeddings in the head's ball.

        Both sides go through the head's map: ``tangent_features`` (when the head has one),
        then the ``mode``'s way into the ball, as :meth:`hamjax.heads.HyperbolicHead.ball_embed`.
        """
        from hamjax import losses

        if self.feature_clip > 0 or self.feature_scale is not None:
            fmap = dict(c=self.c, clip=self.feature_clip, scale=self.feature_scale)
            x, y = losses.tangent_features(x, **fmap), losses.tangent_features(y, **fmap)
        return -losses.hyperbolic_logits(x, y, None, c=self.c, scale=1.0, mode=self.mode)


def ball_geometry(head: Any, head_params: Any, head_name: str = "") -> BallGeometry:
    """The geometry of a trained hyperbolic head for ``poincare`` scoring.

    Reads the curvature, the map into the ball (``mode``) and the embedding map
    (``feature_clip``, and the trained ``alpha`` of ``feature_scale``) of the head.

    Args:
      head: the head module (``Inference.head``).
      head_params: its parameters (``variables["params"]["head"]``).
      head_name: the config's head name (for the error message).

    Returns:
      A :class:`BallGeometry`.

    Raises:
      ValueError: the head has no ball (a Euclidean head such as ``softmax``, ``am``, ``aam``).
    """
    if not (hasattr(head, "ball_embed") and hasattr(head, "curvature")):
        raise ValueError(
            "score='poincare' needs a hyperbolic head (h_softmax, ham_softmax, h_mlr or "
            "combined); "
            f"this model's head is {head_name or type(head).__name__!r}, which has no Poincaré "
            "ball. Use score='cosine'."
        )
    variables = {"params": head_params}
    c = float(head.apply(variables, method="curvature"))
    clip = float(getattr(head, "feature_clip", 0.0) or 0.0)
    scale = None
    if float(getattr(head, "feature_scale", 0.0) or 0.0) > 0:
        scale = float(head.apply(variables, method="embedding_scale"))
    return BallGeometry(
        c=c, mode=str(head.mode), head_name=head_name, feature_clip=clip, feature_scale=scale
    )


# ------------------------------------------------------------------------------ scoring


def l2_normalise(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """``x / |x|`` along ``axis`` (a zero vector stays zero), float64 for scoring."""
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(norm, np.finfo(np.float64).tiny)


def _cosine_vectors(emb: Embeddings) -> np.ndarray:
    """Per-utterance vectors whose dot products are the cosine protocol scores, ``[U, E or 2E]``.

    ``full``: ``f^``; ``authors``: ``[f^, c_bar] / sqrt(2)`` so that the dot product is
    ``(f^_e.f^_t + c_bar_e.c_bar_t) / 2``.
    """
    full = l2_normalise(emb.full)
    if emb.crops is None:
        return full
    crop_mean = l2_normalise(emb.crops).mean(axis=1)
    return np.concatenate([full, crop_mean], axis=-1) / np.sqrt(2.0)


@functools.lru_cache(maxsize=8)
def pairwise_fn(geometry: BallGeometry) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """Jitted ``[N, E] x [M, E] -> [N, M]`` ball distances of ``geometry`` (one per geometry)."""
    return jax.jit(geometry.pairwise_dist)


@functools.lru_cache(maxsize=8)
def _poincare_pair_fn(geometry: BallGeometry, authors: bool) -> Callable[..., jax.Array]:
    """Jitted ``(full_e, full_t[, crops_e, crops_t]) -> [chunk]`` negative distances."""

    def one(fe, ft, ce=None, ct=None):
        s = -geometry.pairwise_dist(fe[None], ft[None])[0, 0]
        if authors:
            s = 0.5 * (s - jnp.mean(geometry.pairwise_dist(ce, ct)))
        return s

    return jax.jit(jax.vmap(one))


def chunk_ranges(n: int, size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of consecutive chunks of ``size`` covering ``range(n)``."""
    for start in range(0, n, size):
        yield start, min(n, start + size)


def score_trials(
    emb: Embeddings,
    enroll_idx: np.ndarray,
    test_idx: np.ndarray,
    *,
    score: str = "cosine",
    geometry: BallGeometry | None = None,
) -> np.ndarray:
    """Scores trials ``(emb[enroll_idx[n]], emb[test_idx[n]])`` (see the module docstring).

    Args:
      emb: the utterances' embeddings (its protocol decides full vs. authors scoring).
      enroll_idx: ``[N]`` row of each trial's enrolment utterance.
      test_idx: ``[N]`` row of each trial's test utterance.
      score: ``"cosine"`` or ``"poincare"``.
      geometry: the head's ball (:func:`ball_geometry`), required for ``poincare``.

    Returns:
      ``[N]`` float64 scores, higher = more likely the same speaker.
    """
    check_choice("score", score, SCORES)
    enroll_idx = np.asarray(enroll_idx, dtype=np.int64)
    test_idx = np.asarray(test_idx, dtype=np.int64)
    if enroll_idx.shape != test_idx.shape or enroll_idx.ndim != 1:
        raise ValueError(
            f"enroll_idx {enroll_idx.shape} and test_idx {test_idx.shape}: expected two [N] arrays"
        )
    n = enroll_idx.size
    out = np.empty(n, np.float64)
    if score == "cosine":
        vec = _cosine_vectors(emb)
        # float64 on the host: the dot products are cheap and exact ties stay ties.
        for a, b in chunk_ranges(n, 65536):
            out[a:b] = np.einsum("nd,nd->n", vec[enroll_idx[a:b]], vec[test_idx[a:b]])
        return out
    if geometry is None:
        raise ValueError("score='poincare' needs geometry=ball_geometry(head, head_params)")
    authors = emb.crops is not None
    fn = _poincare_pair_fn(geometry, authors)
    # Every chunk is padded to the same size so that one compilation serves them all.
    size = min(TRIAL_CHUNK, 1 << max(0, n - 1).bit_length())
    for a, b in chunk_ranges(n, size):
        e = np.zeros(size, np.int64)
        t = np.zeros(size, np.int64)
        e[: b - a], t[: b - a] = enroll_idx[a:b], test_idx[a:b]
        args = [emb.full[e], emb.full[t]]
        if authors:
            args += [emb.crops[e], emb.crops[t]]  # type: ignore[index]
        out[a:b] = np.asarray(fn(*args), np.float64)[: b - a]
    return out
