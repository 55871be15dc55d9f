"""Metrics that survive class imbalance, and the uncertainty of every accuracy.

An accuracy's interval is Wilson's score interval (Wilson 1927; Brown, Cai & DasGupta 2001):
close to nominal coverage even at a few hundred images, and not collapsed to a point at 0% or
100% as a percentile bootstrap is. A difference between two models scored on the same images
is *paired*: its interval is a percentile bootstrap over the images (both models on the same
resampled images, so it reflects how often they disagree, not the sum of their separate
noises), and it is *resolved* only when that interval excludes zero and the exact two-sided
McNemar test on the disagreements rejects equality at the same level (with a handful of
disagreements the bootstrap alone is too generous).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

ROUNDS = 2000
LEVEL = 0.95
_CHUNK = 200  # resamples drawn at a time: memory stays at CHUNK x images


def per_class_recall(labels: np.ndarray, pred: np.ndarray, num_classes: int) -> list[float | None]:
    """Recall of every class; ``None`` for a class with no test image."""
    out: list[float | None] = []
    for c in range(num_classes):
        mask = labels == c
        out.append(float((pred[mask] == c).mean()) if mask.any() else None)
    return out


def balanced_accuracy(labels: np.ndarray, pred: np.ndarray, num_classes: int) -> float:
    """The mean recall over the classes present in ``labels`` (sklearn's definition)."""
    recalls = [r for r in per_class_recall(labels, pred, num_classes) if r is not None]
    return float(np.mean(recalls))


def _z(level: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(1 - (1 - level) / 2)


def accuracy_interval(correct: np.ndarray, level: float = LEVEL) -> list[float]:
    """``[low, high]``: the Wilson score interval of the accuracy of per-image ``correct``."""
    n = len(correct)
    if n == 0:
        return [0.0, 1.0]
    p, z = float(np.mean(correct)), _z(level)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return [max(0.0, centre - half), min(1.0, centre + half)]


def mcnemar_p(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Exact two-sided McNemar test: of the images only one model gets right, are the two
    sides equally likely? ``2 P(X <= min(only a, only b))``, X ~ Binomial(disagreements, 1/2)."""
    only_a = int(np.sum(correct_a & ~correct_b))
    n = only_a + int(np.sum(correct_b & ~correct_a))
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(only_a, n - only_a) + 1))
    return min(1.0, 2 * tail / 2**n)


def _bootstrap_interval(values: np.ndarray, rounds: int, level: float, seed: int) -> list[float]:
    """``[low, high]``: the percentile interval of the mean of per-image ``values`` over
    ``rounds`` bootstrap samples of the images."""
    rng = np.random.default_rng(seed)
    n = len(values)
    means = []
    for start in range(0, rounds, _CHUNK):
        idx = rng.integers(0, n, size=(min(_CHUNK, rounds - start), n))
        means.append(values[idx].mean(axis=-1))
    tail = (1 - level) / 2
    return [float(np.quantile(np.concatenate(means), q)) for q in (tail, 1 - tail)]


def paired_difference(
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    rounds: int = ROUNDS,
    level: float = LEVEL,
    seed: int = 0,
) -> dict[str, Any]:
    """Accuracy of ``a`` minus that of ``b`` on the same images, with its paired interval, the
    McNemar p-value and how many images each model alone got right."""
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired difference: {a.shape} images against {b.shape}")
    low, high = _bootstrap_interval(a.astype(np.float64) - b, rounds, level, seed)
    p = mcnemar_p(a, b)
    return {
        "difference": float(a.mean() - b.mean()),
        "interval": [low, high],
        "level": level,
        "mcnemar_p": p,
        "only_a_right": int(np.sum(a & ~b)),
        "only_b_right": int(np.sum(b & ~a)),
        "resolved": bool((low > 0 or high < 0) and p < 1 - level),
    }


def averaged_paired_difference(
    pairs: list[tuple[np.ndarray, np.ndarray]],
    rounds: int = ROUNDS,
    level: float = LEVEL,
    seed: int = 0,
) -> dict[str, Any]:
    """The accuracy difference ``a - b`` averaged over several pairs of models scored on the
    same images (training seeds of two recipes), with a bootstrap interval over the images.
    Each image's difference is averaged over the pairs before resampling, so the pairs'
    correlation through the shared images is kept rather than assumed. *Resolved* means the
    interval excludes zero (McNemar's test has no form for an average of pairs)."""
    diffs = [
        np.asarray(a, dtype=bool).astype(np.float64) - np.asarray(b, dtype=bool) for a, b in pairs
    ]
    if not diffs or any(d.shape != diffs[0].shape for d in diffs):
        raise ValueError(f"averaged paired difference: shapes {[d.shape for d in diffs]}")
    per_image = np.mean(diffs, axis=0)
    low, high = _bootstrap_interval(per_image, rounds, level, seed)
    return {
        "difference": float(per_image.mean()),
        "interval": [low, high],
        "level": level,
        "pairs": len(diffs),
        "resolved": bool(low > 0 or high < 0),
    }


def classification_summary(
    labels: np.ndarray, pred: np.ndarray, num_classes: int, per_class: bool = True
) -> dict[str, Any]:
    """Accuracy with its interval and balanced accuracy of one model (and, with
    ``per_class``, every class's recall)."""
    correct = pred == labels
    out: dict[str, Any] = {
        "accuracy": float(correct.mean()),
        "accuracy_interval": accuracy_interval(correct),
        "balanced_accuracy": balanced_accuracy(labels, pred, num_classes),
    }
    if per_class:
        out["per_class_recall"] = per_class_recall(labels, pred, num_classes)
    return out
