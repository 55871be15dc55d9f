"""Metrics that survive class imbalance, and the uncertainty of every accuracy.

Intervals are percentile bootstraps over the test images (Efron & Tibshirani 1993, ch. 13).
A difference between two models is bootstrapped *paired*: both are scored on the same
resampled images, so the interval reflects how often they disagree, not the sum of their
separate noises. A difference is *resolved* when its interval excludes zero.
"""

from __future__ import annotations

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


def _resampled_means(values: np.ndarray, rounds: int, seed: int) -> np.ndarray:
    """The mean of ``values`` (images along the last axis) over ``rounds`` bootstrap samples."""
    rng = np.random.default_rng(seed)
    n = values.shape[-1]
    means = []
    for start in range(0, rounds, _CHUNK):
        idx = rng.integers(0, n, size=(min(_CHUNK, rounds - start), n))
        means.append(values[..., idx].mean(axis=-1))
    return np.concatenate(means, axis=-1)


def accuracy_interval(
    correct: np.ndarray, rounds: int = ROUNDS, level: float = LEVEL, seed: int = 0
) -> list[float]:
    """``[low, high]``: the bootstrap interval of the accuracy of per-image ``correct``."""
    means = _resampled_means(np.asarray(correct, dtype=np.float64), rounds, seed)
    tail = (1 - level) / 2
    return [float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))]


def paired_difference(
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    rounds: int = ROUNDS,
    level: float = LEVEL,
    seed: int = 0,
) -> dict[str, Any]:
    """Accuracy of ``a`` minus that of ``b`` on the same images, with its paired interval."""
    a = np.asarray(correct_a, dtype=np.float64)
    b = np.asarray(correct_b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired difference: {a.shape} images against {b.shape}")
    means = _resampled_means(a - b, rounds, seed)
    tail = (1 - level) / 2
    low, high = float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))
    return {
        "difference": float((a - b).mean()),
        "interval": [low, high],
        "level": level,
        "resolved": bool(low > 0 or high < 0),
    }


def classification_summary(labels: np.ndarray, pred: np.ndarray, num_classes: int) -> dict:
    """Accuracy with its interval, balanced accuracy and per-class recall of one model."""
    correct = pred == labels
    return {
        "accuracy": float(correct.mean()),
        "accuracy_interval": accuracy_interval(correct),
        "balanced_accuracy": balanced_accuracy(labels, pred, num_classes),
        "per_class_recall": per_class_recall(labels, pred, num_classes),
    }
