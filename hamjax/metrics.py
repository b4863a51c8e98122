r"""Speaker-verification metrics: EER, minDCF and the DET curve (pure, vectorised numpy).

Conventions used throughout:

- ``labels``: 1 = target trial (same speaker), 0 = non-target trial.
- A trial is *accepted* at threshold ``t`` when ``score >= t``; higher scores mean "more likely
  the same speaker".
- ``p_miss(t)`` = fraction of target trials with ``score < t`` (rejected targets);
  ``p_fa(t)`` = fraction of non-target trials with ``score >= t`` (accepted impostors).

Operating points. The scores are sorted once; the candidate thresholds are the *distinct*
score values ``u_1 < ... < u_K`` plus ``+inf`` (reject everything). Tied scores therefore form a
single threshold and are never split between accept and reject: a decision rule cannot tell
two equal scores apart. ``t = u_1`` accepts every trial (``p_miss = 0, p_fa = 1``) and
``t = +inf`` rejects every trial (``p_miss = 1, p_fa = 0``). Counts come from cumulative sums
of the sorted labels, so each metric costs one ``O(N log N)`` sort and ``O(N)`` arithmetic.

EER definition. The ROC (equivalently DET, in linear axes) is taken as the piecewise-linear
curve through the ``K + 1`` operating points, as in scikit-learn's ``roc_curve``-based EER
recipes (``brentq(lambda x: 1 - x - interp1d(fpr, tpr)(x), 0, 1)``). A segment between two
consecutive points is the set of rates reachable by randomising the decision on the trials
whose score equals the threshold. The EER is the rate at which that curve crosses the line
``p_miss = p_fa``: with ``d = p_miss - p_fa`` (non-decreasing in ``t``, from -1 to +1), take the
first point ``k`` with ``d_k >= 0`` and interpolate linearly on the segment ``[k-1, k]``:

.. math::

    \alpha = \frac{d_{k-1}}{d_{k-1} - d_k}, \qquad
    \mathrm{EER} = p_{fa,k-1} + \alpha\,(p_{fa,k} - p_{fa,k-1})
                  = p_{miss,k-1} + \alpha\,(p_{miss,k} - p_{miss,k-1}).

The reported EER threshold is that of the operating point on the segment closest to the
crossing (the smaller ``|p_miss - p_fa|``; ties go to the lower threshold). Separable scores
give EER 0, identical scores for both classes give EER 0.5.

minDCF definition (NIST SRE):

.. math::

    \mathrm{DCF}(t) = c_{miss}\, p_{miss}(t)\, P_{tar} + c_{fa}\, p_{fa}(t)\,(1 - P_{tar}),
    \qquad
    \mathrm{minDCF} = \frac{\min_t \mathrm{DCF}(t)}
                            {\min(c_{miss} P_{tar},\, c_{fa}(1 - P_{tar}))},

minimised over the ``K + 1`` operating points (no interpolation: a randomised decision is never
better than the better of its two end points because DCF is linear along a segment). The
normaliser is the cost of the best trivial system (accept all or reject all), so minDCF <= 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "OperatingPoints",
    "VerificationMetrics",
    "compute_metrics",
    "det_curve",
    "eer",
    "min_dcf",
    "operating_points",
]


class OperatingPoints(NamedTuple):
    """Error rates at every distinct threshold, thresholds increasing.

    Attributes:
      p_miss: ``[K + 1]`` float64, non-decreasing, from 0 to 1.
      p_fa: ``[K + 1]`` float64, non-increasing, from 1 to 0.
      thresholds: ``[K + 1]`` float64, the distinct scores ascending, then ``+inf``.
      num_target: number of target trials.
      num_nontarget: number of non-target trials.
    """

    p_miss: np.ndarray
    p_fa: np.ndarray
    thresholds: np.ndarray
    num_target: int
    num_nontarget: int


class VerificationMetrics(NamedTuple):
    """The standard report for one trial list (see :func:`compute_metrics`).

    Attributes:
      eer: equal error rate, a fraction in [0, 1].
      eer_threshold: the threshold of the operating point nearest the EER.
      min_dcf: ``{p_target: (min_dcf, threshold)}``.
      num_target: number of target trials.
      num_nontarget: number of non-target trials.
    """

    eer: float
    eer_threshold: float
    min_dcf: dict[float, tuple[float, float]]
    num_target: int
    num_nontarget: int


def _validate(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Checks and converts ``scores`` / ``labels`` to float32/64 ``[N]`` and bool ``[N]``."""
    s = np.asarray(scores)
    y = np.asarray(labels)
    if s.ndim != 1:
        raise ValueError(f"scores: expected a 1-D array [num_trials], got shape {s.shape}")
    if y.shape != s.shape:
        raise ValueError(
            f"labels: shape {y.shape} does not match scores' shape {s.shape}; expected one "
            "label per score"
        )
    if s.size == 0:
        raise ValueError("scores: empty; expected at least one target and one non-target trial")
    if not (np.issubdtype(s.dtype, np.number) or s.dtype == np.bool_):
        raise ValueError(f"scores: expected a numeric array, got dtype {s.dtype}")
    if s.dtype not in (np.float32, np.float64):
        # float32/64 are sorted as they are (float32 sorts faster; widening is exact and
        # monotone, so the order and the ties are the same); anything else becomes float64.
        s = s.astype(np.float64)
    bad = ~np.isfinite(s)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"scores: {int(bad.sum())} non-finite value(s) (first at index {first}: "
            f"{s[first].item()}); expected finite scores"
        )
    if y.dtype == np.bool_:
        yb = y
    else:
        if not np.issubdtype(y.dtype, np.number):
            raise ValueError(f"labels: expected 0/1 values, got dtype {y.dtype}")
        invalid = (y != 0) & (y != 1)
        if invalid.any():
            first = int(np.flatnonzero(invalid)[0])
            raise ValueError(
                f"labels: expected values in {{0, 1}} (1 = target, 0 = non-target), got "
                f"{y[first].item()!r} at index {first} ({int(invalid.sum())} invalid)"
            )
        yb = y == 1
    n_tar = int(yb.sum())
    if n_tar == 0 or n_tar == yb.size:
        have, lack = ("target", "non-target") if n_tar else ("non-target", "target")
        raise ValueError(
            f"labels: all {yb.size} trials are {have} (no {lack} trial); expected both target "
            "(1) and non-target (0) trials"
        )
    return s, yb


def operating_points(scores: ArrayLike, labels: ArrayLike) -> OperatingPoints:
    """Miss and false-alarm rates at every distinct threshold (one sort, cumulative sums).

    Args:
      scores: ``[N]`` trial scores (higher = more likely target). Any real dtype.
      labels: ``[N]`` 1 = target, 0 = non-target (int, float or bool).

    Returns:
      :class:`OperatingPoints` with ``K + 1`` points for ``K`` distinct scores.

    Raises:
      ValueError: empty input, shape mismatch, non-finite scores, labels not in {0, 1}, or a
        single class.
    """
    s, y = _validate(scores, labels)
    # No stable sort needed (and introsort is ~2.5x faster than the stable one here): tied
    # scores are collapsed into one threshold below, so their relative order never matters.
    order = np.argsort(s)
    s_sorted = s[order]
    y_sorted = y[order]
    n_tar = int(y_sorted.sum())
    n_non = y_sorted.size - n_tar
    # Index where each run of equal scores starts: a threshold equal to that score accepts the
    # whole run, so only run boundaries are valid cut points (ties never split).
    starts = np.concatenate(([0], np.flatnonzero(np.diff(s_sorted)) + 1))
    cum_tar = np.concatenate(([0], np.cumsum(y_sorted, dtype=np.int64)))
    # Targets strictly below each distinct score = rejected targets at that threshold.
    miss = cum_tar[starts]
    # Non-targets at or above each distinct score = accepted impostors.
    below_non = starts - miss
    fa = n_non - below_non
    p_miss = np.append(miss, n_tar) / n_tar
    p_fa = np.append(fa, 0) / n_non
    thresholds = np.append(s_sorted[starts].astype(np.float64), np.inf)
    return OperatingPoints(p_miss, p_fa, thresholds, n_tar, n_non)


def _eer_from_points(points: OperatingPoints) -> tuple[float, float]:
    d = points.p_miss - points.p_fa  # non-decreasing, d[0] = -1, d[-1] = +1
    k = int(np.searchsorted(d, 0.0, side="left"))  # first index with d >= 0; k >= 1
    d0, d1 = d[k - 1], d[k]
    alpha = d0 / (d0 - d1)  # in (0, 1]; d0 < 0 <= d1 so the denominator is > 0
    fa0, fa1 = points.p_fa[k - 1], points.p_fa[k]
    value = float(fa0 + alpha * (fa1 - fa0))
    nearest = k - 1 if -d0 <= d1 else k
    threshold = float(points.thresholds[nearest])
    if not np.isfinite(threshold):
        # The reject-all point is only nearest when the crossing sits at it; the last finite
        # score is the tightest real threshold there.
        threshold = float(points.thresholds[nearest - 1])
    return min(max(value, 0.0), 1.0), threshold


def _min_dcf_from_points(
    points: OperatingPoints, p_target: float, c_miss: float, c_fa: float
) -> tuple[float, float]:
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target: expected a prior in (0, 1), got {p_target}")
    if not (c_miss > 0 and c_fa > 0):
        raise ValueError(f"c_miss, c_fa: expected positive costs, got {c_miss}, {c_fa}")
    dcf = c_miss * points.p_miss * p_target + c_fa * points.p_fa * (1.0 - p_target)
    i = int(np.argmin(dcf))  # first minimum = lowest threshold achieving it
    norm = min(c_miss * p_target, c_fa * (1.0 - p_target))
    return float(dcf[i] / norm), float(points.thresholds[i])


def eer(scores: ArrayLike, labels: ArrayLike) -> tuple[float, float]:
    """Equal error rate, a fraction in [0, 1] (see the module docstring for the definition).

    Args:
      scores: ``[N]`` trial scores, higher = more likely the same speaker.
      labels: ``[N]`` 1 = target, 0 = non-target.

    Returns:
      ``(eer, threshold)``: the rate where the piecewise-linear DET curve crosses
      ``p_miss = p_fa``, and the threshold (accept ``score >= threshold``) of the operating
      point nearest to that crossing.

    Raises:
      ValueError: empty input, shape mismatch, non-finite scores, labels not in {0, 1}, or a
        single class.

    Example:
      >>> eer([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0])
      (0.0, 0.8)
    """
    return _eer_from_points(operating_points(scores, labels))


def min_dcf(
    scores: ArrayLike,
    labels: ArrayLike,
    p_target: float,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> tuple[float, float]:
    r"""Normalised minimum detection cost (NIST SRE), see the module docstring.

    .. math::

        \mathrm{minDCF} = \min_t \frac{c_{miss} p_{miss}(t) P_{tar}
            + c_{fa} p_{fa}(t) (1 - P_{tar})}{\min(c_{miss} P_{tar}, c_{fa}(1 - P_{tar}))}

    Args:
      scores: ``[N]`` trial scores, higher = more likely the same speaker.
      labels: ``[N]`` 1 = target, 0 = non-target.
      p_target: prior probability of a target trial, in (0, 1) (0.01 and 0.05 are standard).
      c_miss: cost of a miss (> 0).
      c_fa: cost of a false alarm (> 0).

    Returns:
      ``(min_dcf, threshold)``; the threshold is ``+inf`` when rejecting every trial is optimal.

    Raises:
      ValueError: bad scores/labels (as :func:`eer`), ``p_target`` outside (0, 1), or a
        non-positive cost.
    """
    return _min_dcf_from_points(operating_points(scores, labels), p_target, c_miss, c_fa)


def det_curve(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The DET curve's operating points, thresholds increasing.

    Args:
      scores: ``[N]`` trial scores.
      labels: ``[N]`` 1 = target, 0 = non-target.

    Returns:
      ``(p_miss [K + 1], p_fa [K + 1], thresholds [K + 1])`` for ``K`` distinct scores; the last
      threshold is ``+inf`` (reject all). Plot ``p_fa`` against ``p_miss`` on normal-deviate
      axes (``scipy.stats.norm.ppf``) for a DET plot.
    """
    points = operating_points(scores, labels)
    return points.p_miss, points.p_fa, points.thresholds


def compute_metrics(
    scores: ArrayLike,
    labels: ArrayLike,
    p_targets: Sequence[float] = (0.01, 0.05),
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> VerificationMetrics:
    """EER and minDCF at several priors from a single sort.

    Args:
      scores: ``[N]`` trial scores.
      labels: ``[N]`` 1 = target, 0 = non-target.
      p_targets: the priors at which to report minDCF.
      c_miss: cost of a miss.
      c_fa: cost of a false alarm.

    Returns:
      :class:`VerificationMetrics`.
    """
    points = operating_points(scores, labels)
    e, t = _eer_from_points(points)
    dcfs = {float(p): _min_dcf_from_points(points, float(p), c_miss, c_fa) for p in p_targets}
    return VerificationMetrics(e, t, dcfs, points.num_target, points.num_nontarget)
