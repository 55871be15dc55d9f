"""Exit policies on cached per-exit logits: simulation, geometric calibration, the oracle.

Nothing here runs the network. Given every exit's logits for a split (computed once), a
threshold policy's accuracy, exit distribution and expected GFLOPs are exact functions of the
cached confidences, the same rule ``DynAdapterViT.forward_dynamic`` applies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from ..files import atomic_path


@dataclass
class ExitScores:
    """Cached per-exit predictions of a split.

    Attributes:
        confidence: ``[exits, N]`` max softmax probability at each exit.
        prediction: ``[exits, N]`` argmax class at each exit.
        labels: ``[N]`` true classes.
        gflops: ``[exits]`` cumulative GFLOPs to reach each exit's prediction.
    """

    confidence: np.ndarray
    prediction: np.ndarray
    labels: np.ndarray
    gflops: np.ndarray

    @classmethod
    def from_logits(
        cls,
        logits: Sequence[torch.Tensor],
        labels: np.ndarray,
        gflops: Sequence[float],
    ) -> ExitScores:
        probs = [torch.softmax(t.float(), dim=-1) for t in logits]
        conf, pred = zip(*(p.max(dim=-1) for p in probs), strict=True)
        return cls(
            torch.stack(conf).numpy(),
            torch.stack(pred).numpy(),
            np.asarray(labels),
            np.asarray(gflops, dtype=np.float64),
        )

    def save(self, path: str | Path) -> None:
        """Write the scores to ``path`` (``.npz``), atomically."""
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(
                f,
                confidence=self.confidence,
                prediction=self.prediction,
                labels=self.labels,
                gflops=self.gflops,
            )

    @classmethod
    def load(cls, path: str | Path) -> ExitScores:
        """Scores written by :meth:`save`."""
        try:
            with np.load(path) as saved:
                return cls(*(saved[k] for k in ("confidence", "prediction", "labels", "gflops")))
        except (OSError, KeyError, ValueError) as e:
            raise ConfigError(f"{path}: unreadable exit scores ({e}); write them again") from None

    def concat(self, other: ExitScores) -> ExitScores:
        """The images of both, in order (same exits)."""
        return ExitScores(
            np.concatenate([self.confidence, other.confidence], axis=1),
            np.concatenate([self.prediction, other.prediction], axis=1),
            np.concatenate([self.labels, other.labels]),
            self.gflops,
        )

    @property
    def num_exits(self) -> int:
        return self.confidence.shape[0]

    @property
    def full_gflops(self) -> float:
        return float(self.gflops[-1])


@dataclass
class PolicyResult:
    """What a threshold policy does on a split."""

    thresholds: list[float]
    accuracy: float
    gflops: float
    exit_fractions: list[float]


def exit_indices(scores: ExitScores, thresholds: Sequence[float]) -> np.ndarray:
    """Each sample's exit: the first ``k`` with ``confidence[k] >= thresholds[k]``, else the last."""
    thr = np.asarray(thresholds, dtype=np.float64)[: scores.num_exits - 1, None]
    leaves = scores.confidence[:-1] >= thr
    leaves = np.vstack([leaves, np.ones((1, leaves.shape[1]), dtype=bool)])
    return leaves.argmax(axis=0)


def simulate(scores: ExitScores, thresholds: Sequence[float]) -> PolicyResult:
    """Accuracy, expected GFLOPs and exit fractions of ``thresholds`` (one per exit)."""
    k = exit_indices(scores, thresholds)
    n = len(scores.labels)
    pred = scores.prediction[k, np.arange(n)]
    counts = np.bincount(k, minlength=scores.num_exits)
    return PolicyResult(
        thresholds=[float(t) for t in thresholds],
        accuracy=float((pred == scores.labels).mean()),
        gflops=float(scores.gflops[k].mean()),
        exit_fractions=(counts / n).tolist(),
    )


def correct(scores: ExitScores, thresholds: Sequence[float]) -> np.ndarray:
    """Per sample: is the policy's prediction right?"""
    k = exit_indices(scores, thresholds)
    return scores.prediction[k, np.arange(len(scores.labels))] == scores.labels


def sign_test_p(challenger: np.ndarray, incumbent: np.ndarray) -> float:
    """One-sided exact sign test (McNemar) that ``challenger`` is more often right.

    Only the samples where the two policies disagree count: ``b`` where only the challenger is
    right, ``c`` where only the incumbent is. Returns P(X >= b) for X ~ Binomial(b + c, 1/2).
    """
    b = int(np.sum(challenger & ~incumbent))
    n = b + int(np.sum(incumbent & ~challenger))
    if n == 0:
        return 1.0
    return float(sum(math.comb(n, i) for i in range(b, n + 1)) / 2**n)


def geometric_thresholds(scores: ExitScores, q: float) -> list[float]:
    """MSDNet / Dyn-Perceiver calibration: a fraction ``p_k ∝ q^k`` of all samples leaves at exit k.

    At each exit, of the samples still in flight, the ``n_k`` most confident leave; the
    threshold is the confidence of the last of them.
    """
    s = scores.num_exits
    p = q ** np.arange(s, dtype=np.float64)
    p /= p.sum()
    n = len(scores.labels)
    remaining = np.ones(n, dtype=bool)
    thresholds = []
    for k in range(s - 1):
        take = int(round(p[k] * n))
        conf = np.where(remaining, scores.confidence[k], -np.inf)
        if take <= 0 or not remaining.any():
            thresholds.append(np.inf)
            continue
        order = np.argsort(-conf, kind="stable")[: min(take, int(remaining.sum()))]
        t = float(conf[order[-1]])
        thresholds.append(t)
        remaining &= ~(scores.confidence[k] >= t)
    # inf (never exit) is represented as a value above any probability.
    return [min(t, 1.0 + 1e-6) for t in thresholds] + [0.0]


def geometric_curve(scores: ExitScores, qs: Sequence[float]) -> list[PolicyResult]:
    return [simulate(scores, geometric_thresholds(scores, q)) for q in qs]


def oracle(scores: ExitScores) -> PolicyResult:
    """Each sample exits at the first exit that is right (the last if none is): no threshold
    policy can be more accurate at fewer FLOPs."""
    correct = scores.prediction == scores.labels[None, :]
    correct[-1] = True
    k = correct.argmax(axis=0)
    n = len(scores.labels)
    pred = scores.prediction[k, np.arange(n)]
    counts = np.bincount(k, minlength=scores.num_exits)
    return PolicyResult(
        [],
        float((pred == scores.labels).mean()),
        float(scores.gflops[k].mean()),
        (counts / n).tolist(),
    )
