"""Balanced accuracy, per-class recall and bootstrap intervals on constructed predictions."""

from __future__ import annotations

import numpy as np
import pytest

from dyn_adapter.evaluation.stats import (
    accuracy_interval,
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
    """Over 200 samples of 400 Bernoulli(0.8) trials the 95% interval holds 0.8 about 95% of
    the time (a too-narrow interval, e.g. one that ignored the sample size, fails)."""
    rng = np.random.default_rng(0)
    hits = 0
    for k in range(200):
        low, high = accuracy_interval(rng.random(400) < 0.8, rounds=500, seed=k)
        hits += low <= 0.8 <= high
    assert 0.90 <= hits / 200 <= 0.99


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


def test_no_difference_is_not_resolved():
    rng = np.random.default_rng(3)
    a = rng.random(500) < 0.8
    d = paired_difference(a, np.roll(a, 1))
    assert d["interval"][0] < d["difference"] < d["interval"][1]
    assert d["resolved"] == (d["interval"][0] > 0 or d["interval"][1] < 0)
    assert not paired_difference(a, a)["resolved"]


def test_unpaired_inputs_are_refused():
    with pytest.raises(ValueError, match="paired difference"):
        paired_difference(np.ones(3), np.ones(4))
