"""Tests for hamjax.metrics: EER against scikit-learn's ROC, minDCF against the raw formula."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.interpolate import interp1d
from scipy.optimize import brentq
from sklearn.metrics import roc_curve

from hamjax import metrics


def sklearn_eer(scores: np.ndarray, labels: np.ndarray) -> float:
    """The widely copied ROC-based EER: where 1 - tpr crosses fpr on the interpolated ROC."""
    fpr, tpr, _ = roc_curve(labels, scores, pos_label=1)
    return brentq(lambda x: 1.0 - x - interp1d(fpr, tpr)(x), 0.0, 1.0, xtol=1e-12)


def direct_min_dcf(scores, labels, p_target, c_miss=1.0, c_fa=1.0):
    """minDCF by evaluating the formula at every candidate threshold with plain comparisons."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    tar, non = scores[labels == 1], scores[labels == 0]
    best, best_t = np.inf, None
    for t in [*np.unique(scores), np.inf]:
        p_miss = np.mean(tar < t)
        p_fa = np.mean(non >= t)
        dcf = c_miss * p_miss * p_target + c_fa * p_fa * (1 - p_target)
        if dcf < best - 1e-15:
            best, best_t = dcf, t
    return best / min(c_miss * p_target, c_fa * (1 - p_target)), best_t


def random_trials(seed: int, n: int, *, ties: bool, shift: float = 1.0):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.3).astype(np.int64)
    labels[:2] = [0, 1]  # both classes always present
    scores = rng.normal(size=n) + shift * labels
    if ties:
        # Coarse rounding makes many trials of both classes share a score.
        scores = np.round(scores, 1)
    return scores, labels


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_eer_matches_sklearn_roc(seed, ties):
    scores, labels = random_trials(seed, 2000, ties=ties)
    value, _ = metrics.eer(scores, labels)
    assert value == pytest.approx(sklearn_eer(scores, labels), abs=1e-9)
    assert 0.05 < value < 0.5


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(-3, 3), st.integers(0, 1)), min_size=2, max_size=40).filter(
        lambda t: len({lab for _, lab in t}) == 2
    )
)
def test_eer_matches_sklearn_on_heavily_tied_small_lists(trials):
    scores = np.array([s for s, _ in trials], dtype=np.float64)
    labels = np.array([lab for _, lab in trials])
    assert metrics.eer(scores, labels)[0] == pytest.approx(sklearn_eer(scores, labels), abs=1e-9)


def test_eer_separable_is_zero_with_threshold_between_classes():
    rng = np.random.default_rng(0)
    tar = rng.uniform(2, 3, 100)
    non = rng.uniform(-1, 1, 300)
    scores = np.concatenate([non, tar])
    labels = np.concatenate([np.zeros(300), np.ones(100)])
    value, threshold = metrics.eer(scores, labels)
    assert value == 0.0
    # Accepting score >= threshold separates the classes perfectly.
    assert np.all(tar >= threshold) and np.all(non < threshold)


def test_eer_identical_distributions_is_half():
    scores = np.full(500, 0.7)
    labels = np.arange(500) % 3 == 0
    assert metrics.eer(scores, labels)[0] == pytest.approx(0.5)
    # Same scores for the two classes, interleaved: EER still 0.5 (ties never split).
    values = np.repeat(np.linspace(-1, 1, 50), 2)
    assert metrics.eer(values, np.tile([0, 1], 50))[0] == pytest.approx(0.5)


def test_eer_inverted_scores_is_one():
    assert metrics.eer([0.0, 0.1, 0.9, 1.0], [1, 1, 0, 0])[0] == pytest.approx(1.0)


def test_eer_hand_computed_crossing_and_threshold():
    # Sorted: 0.1(n) 0.2(t) 0.3(n) 0.4(t): operating points at t=0.1,0.2,0.3,0.4,inf:
    # p_miss 0,0,.5,.5,1 and p_fa 1,.5,.5,0,0 -> crossing exactly at (0.5, 0.5), t = 0.3.
    value, threshold = metrics.eer([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1])
    assert value == pytest.approx(0.5)
    assert threshold == pytest.approx(0.3)


def test_tied_scores_form_one_threshold():
    # Three tied trials (two targets, one non-target) must be accepted or rejected together.
    p_miss, p_fa, thresholds = metrics.det_curve([0.5, 0.5, 0.5, 0.1, 0.9], [1, 1, 0, 0, 1])
    np.testing.assert_array_equal(thresholds, [0.1, 0.5, 0.9, np.inf])
    np.testing.assert_allclose(p_miss, [0, 0, 2 / 3, 1])
    np.testing.assert_allclose(p_fa, [1, 0.5, 0, 0])


def test_det_curve_is_monotone_and_spans_the_square():
    scores, labels = random_trials(7, 3000, ties=True)
    p_miss, p_fa, thresholds = metrics.det_curve(scores, labels)
    assert p_miss[0] == 0 and p_fa[0] == 1 and p_miss[-1] == 1 and p_fa[-1] == 0
    assert np.all(np.diff(p_miss) >= 0) and np.all(np.diff(p_fa) <= 0)
    assert np.all(np.diff(thresholds) > 0)
    assert len(thresholds) == len(np.unique(scores)) + 1


@pytest.mark.parametrize("p_target", [0.01, 0.05, 0.5])
@pytest.mark.parametrize("ties", [False, True])
def test_min_dcf_matches_direct_formula(p_target, ties):
    scores, labels = random_trials(3, 1500, ties=ties, shift=2.0)
    value, threshold = metrics.min_dcf(scores, labels, p_target)
    ref_value, ref_threshold = direct_min_dcf(scores, labels, p_target)
    assert value == pytest.approx(ref_value, abs=1e-12)
    assert threshold == ref_threshold
    assert 0.0 <= value <= 1.0


def test_min_dcf_with_unequal_costs():
    scores, labels = random_trials(11, 1000, ties=False, shift=1.5)
    value, _ = metrics.min_dcf(scores, labels, 0.05, c_miss=10.0, c_fa=1.0)
    assert value == pytest.approx(direct_min_dcf(scores, labels, 0.05, 10.0, 1.0)[0], abs=1e-12)


def test_min_dcf_separable_is_zero_and_useless_is_one():
    assert metrics.min_dcf([0.0, 0.1, 0.8, 0.9], [0, 0, 1, 1], 0.01)[0] == 0.0
    assert metrics.min_dcf(np.zeros(10), np.arange(10) % 2, 0.01)[0] == pytest.approx(1.0)


def test_compute_metrics_agrees_with_individual_functions():
    scores, labels = random_trials(5, 4000, ties=True)
    report = metrics.compute_metrics(scores, labels)
    assert (report.eer, report.eer_threshold) == metrics.eer(scores, labels)
    for p in (0.01, 0.05):
        assert report.min_dcf[p] == metrics.min_dcf(scores, labels, p)
    assert report.num_target == labels.sum()
    assert report.num_nontarget == (labels == 0).sum()


def test_float32_scores_give_the_float64_result():
    scores, labels = random_trials(9, 3000, ties=True)
    s32 = scores.astype(np.float32)
    assert metrics.eer(s32, labels) == metrics.eer(s32.astype(np.float64), labels)
    assert metrics.min_dcf(s32, labels, 0.01) == metrics.min_dcf(
        s32.astype(np.float64), labels, 0.01
    )


def test_accepts_bool_and_float_labels_and_int_scores():
    ref = metrics.eer([3, 1, 2, 0], [1, 0, 1, 0])
    assert metrics.eer([3, 1, 2, 0], np.array([True, False, True, False])) == ref
    assert metrics.eer(np.array([3, 1, 2, 0], np.int32), [1.0, 0.0, 1.0, 0.0]) == ref


@pytest.mark.parametrize(
    "scores, labels, match",
    [
        ([], [], "empty"),
        ([0.1, 0.2], [1], r"labels: shape \(1,\) does not match scores' shape \(2,\)"),
        ([[0.1, 0.2]], [[1, 0]], "1-D"),
        ([0.1, np.nan, 0.3], [1, 0, 1], r"non-finite value\(s\) \(first at index 1"),
        ([0.1, np.inf], [1, 0], "non-finite"),
        ([0.1, 0.2], [1, 2], r"labels: expected values in \{0, 1\}.*got 2 at index 1"),
        ([0.1, 0.2], [1, 1], "all 2 trials are target .no non-target trial"),
        ([0.1, 0.2, 0.3], [0, 0, 0], "all 3 trials are non-target .no target trial"),
        (["a", "b"], [1, 0], "numeric"),
    ],
)
def test_bad_input_raises_clear_errors(scores, labels, match):
    with pytest.raises(ValueError, match=match):
        metrics.eer(scores, labels)
    with pytest.raises(ValueError, match=match):
        metrics.min_dcf(scores, labels, 0.01)


@pytest.mark.parametrize("p_target", [0.0, 1.0, -0.1, 2.0])
def test_min_dcf_rejects_bad_prior(p_target):
    with pytest.raises(ValueError, match="p_target: expected a prior in"):
        metrics.min_dcf([0.1, 0.2], [0, 1], p_target)


def test_min_dcf_rejects_bad_costs():
    with pytest.raises(ValueError, match="positive costs"):
        metrics.min_dcf([0.1, 0.2], [0, 1], 0.01, c_miss=0.0)
