"""hamjax.calibration: logistic-regression calibration to LLRs, Cllr and actual DCF."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hamjax import calibration


def _gaussian_scores(n: int, seed: int, mu: float = 2.0):
    rng = np.random.default_rng(seed)
    scores = np.r_[rng.normal(mu, 1.0, n), rng.normal(0.0, 1.0, n)]
    labels = np.r_[np.ones(n, int), np.zeros(n, int)]
    return scores, labels


def test_fit_recovers_the_true_llr_of_gaussian_scores():
    # Equal-variance Gaussians N(mu, 1) vs N(0, 1): the true LLR is mu * s - mu^2 / 2.
    mu = 2.0
    scores, labels = _gaussian_scores(20_000, 0, mu)
    cal = calibration.fit(scores, labels, source="toy")
    assert cal.slope == pytest.approx(mu, rel=0.05)
    assert cal.offset == pytest.approx(-(mu**2) / 2, abs=0.1)
    # A shifted and scaled copy of the scores is calibrated to the same LLRs.
    cal2 = calibration.fit(3.0 * scores - 1.0, labels)
    np.testing.assert_allclose(cal2.llr(3.0 * scores - 1.0), cal.llr(scores), rtol=1e-3, atol=1e-3)


def test_cllr_and_act_dcf_against_direct_formulas():
    scores, labels = _gaussian_scores(500, 1)
    cal = calibration.fit(scores, labels)
    llr = cal.llr(scores)
    tar = np.mean([math.log2(1 + math.exp(-x)) for x in llr[labels == 1]])
    non = np.mean([math.log2(1 + math.exp(x)) for x in llr[labels == 0]])
    assert calibration.cllr(llr, labels) == pytest.approx(0.5 * (tar + non))
    assert calibration.cllr(np.zeros_like(llr), labels) == pytest.approx(1.0)  # no information
    p = 0.01
    accept = llr > math.log((1 - p) / p)
    want = (p * np.mean(~accept[labels == 1]) + (1 - p) * np.mean(accept[labels == 0])) / p
    assert calibration.act_dcf(llr, labels, (p,))[p] == pytest.approx(want)
    # Calibrated LLRs are close to the best achievable cost: far better than uncalibrated ones.
    assert calibration.cllr(llr, labels) < calibration.cllr(10 * scores + 5, labels)


def test_round_trip_and_errors():
    cal = calibration.Calibration(slope=2.0, offset=-1.0, eer_threshold=0.3, source="x")
    assert calibration.Calibration.from_dict(cal.to_dict()) == cal
    with pytest.raises(ValueError, match="slope and offset"):
        calibration.Calibration.from_dict({"slope": 1.0})
    with pytest.raises(ValueError, match="target .* and non-target"):
        calibration.fit([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="same length"):
        calibration.fit([0.1, 0.2], [1])
    with pytest.raises(ValueError, match="finite"):
        calibration.fit([0.1, np.nan], [1, 0])
