r"""Score calibration: raw verification scores to log-likelihood ratios, and how good they are.

A raw score (a cosine, minus a distance) ranks trials but means nothing on its own. Linear
logistic-regression calibration (Brümmer & du Preez, "Application-independent evaluation of
speaker detection", CSL 2006) maps it to a log-likelihood ratio

.. math:: \ell(s) = a\,s + b = \log\frac{p(s \mid \text{same})}{p(s \mid \text{different})},

fitted by logistic regression with the two classes weighted equally (an effective target prior
of 0.5), so that the logit *is* the LLR. With an LLR the Bayes decision at target prior
:math:`\pi` is "same" iff :math:`\ell > \log\frac{1-\pi}{\pi}`; no threshold needs tuning.

Metrics of calibrated scores (both 0 for a perfect system):

- :math:`C_{llr} = \tfrac12\big(\overline{\log_2(1 + e^{-\ell})}_{\text{tar}} +
  \overline{\log_2(1 + e^{\ell})}_{\text{non}}\big)` bits; 1 bit is a system that always
  says :math:`\ell = 0`.
- actual DCF at prior :math:`\pi` (costs 1, normalised like minDCF): the detection cost of
  the Bayes decisions above; :math:`\text{actDCF} - \text{minDCF}` is the calibration loss.

The fit uses scikit-learn's ``LogisticRegression``. :func:`fit` on a list and
:func:`apply` to other scores is the intended use; eval.py fits each list on its own scores
(self-calibration, an optimistic estimate that says how well the scores *can* be calibrated).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["Calibration", "act_dcf", "apply", "cllr", "fit"]


@dataclasses.dataclass(frozen=True)
class Calibration:
    """``llr = slope * score + offset`` (natural-log LLR).

    Attributes:
      slope: ``a`` (> 0 for a useful system).
      offset: ``b``.
      eer_threshold: the raw score at the equal-error rate of the list it was fitted on.
      source: what it was fitted on (a trial list name), for messages.
    """

    slope: float
    offset: float
    eer_threshold: float | None = None
    source: str = ""

    def llr(self, scores: ArrayLike) -> np.ndarray:
        """The LLRs of raw ``scores`` (any shape)."""
        return self.slope * np.asarray(scores, np.float64) + self.offset

    def to_dict(self) -> dict[str, float | str | None]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, blob: dict) -> Calibration:
        """Inverse of :meth:`to_dict` (raises ``ValueError`` naming a missing field)."""
        try:
            return cls(
                slope=float(blob["slope"]),
                offset=float(blob["offset"]),
                eer_threshold=None
                if blob.get("eer_threshold") is None
                else float(blob["eer_threshold"]),
                source=str(blob.get("source", "")),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"calibration: expected slope and offset numbers, got {blob!r}"
            ) from err


def _check(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, np.float64).ravel()
    y = np.asarray(labels).ravel().astype(np.int64)
    if s.shape != y.shape:
        raise ValueError(f"scores {s.shape} and labels {y.shape}: expected the same length")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels: expected 0 (different speakers) or 1 (same speaker)")
    if y.min(initial=1) == y.max(initial=0):
        raise ValueError("calibration needs target (1) and non-target (0) trials")
    if not np.isfinite(s).all():
        raise ValueError("scores: expected finite values")
    return s, y


def fit(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    eer_threshold: float | None = None,
    source: str = "",
) -> Calibration:
    """Fits ``llr = a s + b`` by prior-weighted (0.5) logistic regression.

    Args:
      scores: ``[N]`` raw scores.
      labels: ``[N]`` 1 = target, 0 = non-target.
      eer_threshold: recorded with the result.
      source: recorded with the result.

    Raises:
      ValueError: mismatched lengths, labels other than 0/1, one class only, non-finite scores.
    """
    from sklearn.linear_model import LogisticRegression

    s, y = _check(scores, labels)
    # Scores are standardised for a well-conditioned fit and the result mapped back.
    mu, sd = float(s.mean()), float(s.std()) or 1.0
    model = LogisticRegression(C=1e6, class_weight="balanced", max_iter=1000)
    model.fit(((s - mu) / sd)[:, None], y)
    a = float(model.coef_[0, 0]) / sd
    b = float(model.intercept_[0]) - a * mu
    return Calibration(slope=a, offset=b, eer_threshold=eer_threshold, source=source)


def apply(calibration: Calibration, scores: ArrayLike) -> np.ndarray:
    """:meth:`Calibration.llr` as a function."""
    return calibration.llr(scores)


def cllr(llrs: ArrayLike, labels: ArrayLike) -> float:
    """The log-likelihood-ratio cost :math:`C_{llr}` in bits (see the module docstring)."""
    llr, y = _check(llrs, labels)
    tar = np.logaddexp(0.0, -llr[y == 1]).mean()
    non = np.logaddexp(0.0, llr[y == 0]).mean()
    return float(0.5 * (tar + non) / math.log(2.0))


def act_dcf(
    llrs: ArrayLike, labels: ArrayLike, p_targets: Sequence[float] = (0.01, 0.05)
) -> dict[float, float]:
    """Normalised actual detection cost of Bayes decisions on ``llrs`` at each target prior.

    ``DCF = (p P_miss + (1 - p) P_fa) / min(p, 1 - p)`` with the decision "same" iff
    ``llr > log((1 - p) / p)``.
    """
    llr, y = _check(llrs, labels)
    out = {}
    for p in p_targets:
        if not 0.0 < p < 1.0:
            raise ValueError(f"p_target={p}: expected a prior in (0, 1)")
        accept = llr > math.log((1.0 - p) / p)
        p_miss = float(np.mean(~accept[y == 1]))
        p_fa = float(np.mean(accept[y == 0]))
        out[float(p)] = (p * p_miss + (1.0 - p) * p_fa) / min(p, 1.0 - p)
    return out
