"""Balanced accuracy, per-class recall and bootstrap intervals on constructed predictions."""

from __future__ import annotations

import numpy as np
import pytest

from dyn_adapter.evaluation.stats import (
    accuracy_interval,
    averaged_paired_difference,
    balanced_accuracy,
    paired_difference,
    per_class_recall,
)


def test_balanced_accuracy_sees_a_class_that_is_never_predicted():
    # 90 images of class 0, 10 of class 1; the model always says 0
    labels = np.array([0] * 90 + [1] * 10)
    pred = np.zeros(100, dtype=int)
    assert (pred == labels).mean() == 0.9
    assert per_class_recall(labels, pred, 3) == [1.0, 0.0, None]
    assert balanced_accuracy(labels, pred, 3) == 0.5


def test_the_interval_covers_the_truth_as_often_as_it_says():
    """Over 400 samples of 200 Bernoulli(0.8) trials the 95% interval holds 0.8 about 95% of
    the time (a too-narrow interval, e.g. one that ignored the sample size, fails)."""
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(400):
        low, high = accuracy_interval(rng.random(200) < 0.8)
        hits += low <= 0.8 <= high
    assert 0.92 <= hits / 400 <= 0.98


def test_a_perfect_score_still_has_an_interval():
    low, high = accuracy_interval(np.ones(797, dtype=bool))
    assert high == pytest.approx(1.0) and 0.99 < low < 0.999  # a bootstrap would say [1, 1]


def test_the_interval_narrows_with_the_number_of_images():
    rng = np.random.default_rng(1)
    small = np.diff(accuracy_interval(rng.random(100) < 0.8))[0]
    large = np.diff(accuracy_interval(rng.random(10_000) < 0.8))[0]
    # the width falls as 1 / sqrt(n): 10x for 100x the images
    assert small / large == pytest.approx(10, rel=0.25)


def test_a_paired_difference_resolves_what_separate_intervals_cannot():
    """Two models that differ on 3% of 1,000 images, always in a's favour: their separate
    intervals overlap, the paired one excludes zero."""
    rng = np.random.default_rng(2)
    b = rng.random(1000) < 0.80
    a = b.copy()
    a[np.flatnonzero(~b)[:30]] = True
    low_a, _ = accuracy_interval(a)
    _, high_b = accuracy_interval(b)
    assert low_a < high_b  # overlapping
    d = paired_difference(a, b)
    assert d["difference"] == pytest.approx(0.03)
    assert d["resolved"] and d["interval"][0] > 0


def test_a_few_disagreements_do_not_resolve_a_difference():
    """1,000 images; the models disagree on 4, each time in a's favour. The bootstrap
    interval alone excludes zero, the exact McNemar test (p = 0.125) does not: not resolved.
    Three each way is no difference at all."""
    b = np.ones(1000, dtype=bool)
    b[:4] = False
    d = paired_difference(np.ones(1000, dtype=bool), b)
    assert d["interval"][0] > 0 and d["mcnemar_p"] == pytest.approx(0.125)
    assert (d["only_a_right"], d["only_b_right"]) == (4, 0) and not d["resolved"]
    a, b = np.ones(1000, dtype=bool), np.ones(1000, dtype=bool)
    a[:3], b[3:6] = False, False
    d = paired_difference(a, b)
    assert d["difference"] == 0 and d["mcnemar_p"] == 1.0 and not d["resolved"]


def test_unpaired_inputs_are_refused():
    with pytest.raises(ValueError, match="paired difference"):
        paired_difference(np.ones(3), np.ones(4))


def _gains(base, wins, losses, offset):
    """A copy of ``base`` right on ``wins`` more images and wrong on ``losses`` more, picked
    from ``offset`` on among the images ``base`` gets wrong / right."""
    a = base.copy()
    a[np.flatnonzero(~base)[offset : offset + wins]] = True
    a[np.flatnonzero(base)[offset : offset + losses]] = False
    return a


def test_seeds_that_gain_on_different_images_resolve_what_one_cannot():
    """Each of two seeds is +0.5 points over 2,000 images (20 images won, 10 lost): not resolved
    alone. On different images the seed-averaged difference is resolved; the same seed counted
    twice stays exactly as wide as one (treating the seeds as independent would resolve it)."""
    b = np.random.default_rng(3).random(2000) < 0.8
    first, second = _gains(b, 20, 10, 0), _gains(b, 20, 10, 40)
    alone = paired_difference(first, b)
    assert alone["difference"] == pytest.approx(0.005) and not alone["resolved"]
    twice = averaged_paired_difference([(first, b), (first, b)])
    assert twice["interval"] == alone["interval"] and not twice["resolved"]
    both = averaged_paired_difference([(first, b), (second, b)])
    assert both["difference"] == pytest.approx(0.005) and both["resolved"]
    assert both["interval"][0] > 0 and both["pairs"] == 2


def test_averaged_pairs_must_share_their_images():
    with pytest.raises(ValueError, match="averaged paired difference"):
        averaged_paired_difference([(np.ones(3), np.ones(3)), (np.ones(4), np.ones(4))])
