"""Risk-controlled thresholds on constructed exit scores, where the true risk is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dyn_adapter.errors import ConfigError
from dyn_adapter.policies import risk
from dyn_adapter.policies.thresholds import ExitScores


def two_exits(n: int, seed: int = 0) -> ExitScores:
    """The first exit's confidence is uniform on [0.1, 1]; it agrees with the last exit
    exactly when that confidence is >= 0.5, and is then right. The disagreement risk of
    threshold λ < 0.5 is therefore (0.5 - λ) / 0.9, and 0 from 0.5 on."""
    rng = np.random.default_rng(seed)
    conf = rng.uniform(0.1, 1.0, n)
    labels = rng.integers(0, 10, n)
    first = np.where(conf >= 0.5, labels, (labels + 1) % 10)
    return ExitScores(
        confidence=np.stack([conf, np.ones(n)]),
        prediction=np.stack([first, labels]),
        labels=labels,
        gflops=np.array([0.4, 1.0]),
    )


def true_disagreement(lam: float) -> float:
    return max(0.0, 0.5 - max(lam, 0.1)) / 0.9


def smooth(n: int, seed: int = 0) -> ExitScores:
    """Three exits whose chance of disagreeing with the last falls with their confidence."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    conf = rng.beta(5, 2, (2, n))
    wrong = rng.uniform(size=(2, n)) < 0.6 * (1 - conf) ** 1.5
    pred = np.where(wrong, (labels + 1 + rng.integers(0, 9, (2, n))) % 10, labels)
    return ExitScores(
        confidence=np.vstack([conf, np.ones(n)]),
        prediction=np.vstack([pred, labels]),
        labels=labels,
        gflops=np.array([0.3, 0.6, 1.0]),
    )


def test_the_threshold_lands_just_on_the_safe_side_of_the_known_one():
    point = risk.calibrate(two_exits(20_000), epsilon=0.05, delta=0.05, risk="disagreement")
    # the exact answer is λ* = 0.5 - 0.9 * 0.05 = 0.455; the bound keeps a little margin
    assert 0.455 < point.threshold < 0.47
    assert true_disagreement(point.threshold) <= 0.05
    assert point.empirical_risk <= point.risk_bound <= 0.05  # rejected: the bound is below ε
    assert point.thresholds == [point.threshold, 0.0] and point.p_value <= 0.05
    # images leave the first exit where they can: the saving follows the threshold
    assert point.exit_fractions[0] == pytest.approx((1 - point.threshold) / 0.9, abs=0.02)
    assert point.gflops_ratio == pytest.approx(1 - 0.6 * point.exit_fractions[0])


def test_accuracy_drop_counts_only_what_the_full_model_got_right():
    scores = two_exits(20_000)
    scores.prediction[-1, :5000] = (scores.labels[:5000] + 3) % 10  # the full model errs here
    lam = 0.3
    drop = risk.losses(scores, [lam, 0.0], "accuracy_drop")
    disagree = risk.losses(scores, [lam, 0.0], "disagreement")
    assert not drop[:5000].any() and drop.sum() < disagree.sum()


def test_the_guarantee_holds_over_random_splits():
    result = risk.violation_frequency(
        smooth(6000), 0.05, 0.1, "disagreement", calibration_size=2000, splits=100
    )
    assert result["violation_frequency"] <= 0.1 + 2 * result["standard_error"]
    assert result["pool_violation_frequency"] <= 0.1 + 2 * result["standard_error"]
    assert result["mean_realised_risk"] <= 0.05
    assert result["mean_gflops_ratio"] < 0.9  # and it still saves compute


def test_a_calibration_set_too_small_says_how_many_images_it_needs():
    assert risk.min_calibration_size(0.01, 0.05) == 299
    with pytest.raises(ConfigError, match="needs at least 299"):
        risk.calibrate(two_exits(100), 0.01, 0.05, "disagreement")
    with pytest.raises(ConfigError, match="epsilon 0: must be strictly between 0 and 1"):
        risk.calibrate(two_exits(100), 0, 0.05, "disagreement")


def test_accuracy_drop_needs_labels():
    scores = two_exits(1000)
    scores.labels[:] = -1  # unlabeled
    with pytest.raises(ConfigError, match="needs labelled calibration images"):
        risk.calibrate(scores, 0.05, 0.05, "accuracy_drop")
    assert risk.calibrate(scores, 0.05, 0.05, "disagreement").threshold < 1


@pytest.mark.parametrize(("k", "n", "eps"), [(0, 300, 0.01), (10, 1000, 0.02), (3, 50, 0.2)])
def test_the_binomial_tail_and_its_bound_are_exact(k, n, eps):
    exact = sum(math.comb(n, i) * eps**i * (1 - eps) ** (n - i) for i in range(k + 1))
    assert risk.p_value(k, n, eps) == pytest.approx(exact, rel=1e-9)
    bound = risk.upper_bound(k, n, 0.05)  # the risk at which k or fewer losses become rare
    assert risk.p_value(k, n, bound) == pytest.approx(0.05, rel=1e-6)


def test_a_window_bounds_the_realised_risk_of_that_many_images():
    """Calibration and test parts of equal size: certified for the expected risk, the test
    part's own binomial noise carries it over ε in more than δ of the splits; certified for
    a window of the test part's size, it stays within δ."""
    scores, kw = smooth(4000), dict(calibration_size=2000, splits=200)
    window = risk.violation_frequency(scores, 0.05, 0.05, "disagreement", window_images=2000, **kw)
    expected = risk.violation_frequency(scores, 0.05, 0.05, "disagreement", **kw)
    assert window["violation_frequency"] <= 0.05 + 2 * window["standard_error"]
    assert expected["violation_frequency"] > 0.05 + expected["standard_error"]  # 0.08 of 200
    # the price: the window is certified below ε, so fewer images leave early
    assert window["mean_realised_risk"] < expected["mean_realised_risk"]
    assert window["mean_gflops_ratio"] > expected["mean_gflops_ratio"]


def test_the_window_level_is_the_binomial_quantile_below_epsilon():
    level = risk.window_level(0.05, 0.025, 5000)
    sd = math.sqrt(0.05 * 0.95 / 5000)
    assert 0.05 - 2.2 * sd < level < 0.05 - 1.7 * sd  # about z(0.025) = 1.96 spreads below ε
    # 5000 fresh images at that risk lose more than 250 with probability 0.025
    assert 1 - risk.p_value(250, 5000, level) == pytest.approx(0.025, abs=1e-6)
    point = risk.calibrate(two_exits(20_000), 0.05, 0.05, "disagreement", window_images=5000)
    assert point.certified_level == pytest.approx(level) and point.window_images == 5000
    assert point.risk_bound <= level and true_disagreement(point.threshold) <= level
    assert risk.min_calibration_size(0.05, 0.05, 5000) > risk.min_calibration_size(0.05, 0.05)
    with pytest.raises(ConfigError, match="window_images 0: must be a whole number"):
        risk.CalibrateConfig(epsilons=[0.05], window_images=0)


def test_the_search_stops_at_the_first_level_it_cannot_certify():
    """Fixed-sequence testing: thresholds are tried from the safest down and the first one
    that fails ends the search. Here the risk curve is not monotone: the middle exit is
    confident (0.7) and wrong on 30% of the images, the first exit barely confident (0.3) and
    always right, so thresholds in (0.3, 0.7] fail and those below pass again on these images.
    Skipping the failed levels would test a thousand hypotheses at level delta each and lose
    the guarantee; the certified threshold stays above 0.7."""
    n = 10_000
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, n)
    confident_and_wrong = np.arange(n) < 3 * n // 10
    scores = ExitScores(
        confidence=np.stack([np.full(n, 0.3), np.where(confident_and_wrong, 0.7, 0.0), np.ones(n)]),
        prediction=np.stack(
            [labels, np.where(confident_and_wrong, (labels + 1) % 10, labels), labels]
        ),
        labels=labels,
        gflops=np.array([0.3, 0.6, 1.0]),
    )
    assert risk.losses(scores, [0.2, 0.2, 0.0], "disagreement").sum() == 0  # passes again
    point = risk.calibrate(scores, epsilon=0.05, delta=0.05, risk="disagreement")
    assert point.threshold > 0.7 and point.empirical_risk == 0.0
    assert point.exit_fractions == [0.0, 0.0, 1.0]
