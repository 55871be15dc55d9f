"""Risk-controlled early exit: the most aggressive exit threshold whose risk stays at most ε
with probability at least 1 − δ over the draw of the calibration images.

This is Learn then Test (Angelopoulos, Bates, Candès, Jordan, Lei, 2021) with fixed-sequence
testing, in the form early-exit models use it (CALM, Schuster et al., NeurIPS 2022; "Fast yet
Safe: Early-Exiting with Risk Control", Jazbec et al., NeurIPS 2024): one confidence threshold
``λ`` shared by the early exits (an image leaves at the first exit whose max softmax
probability reaches ``λ``), and a risk per image that is 0 or 1:

- ``disagreement``: the exit that answers predicts another class than the last exit. Needs no
  labels, so unlabeled images (the unused training pool, production traffic) calibrate it.
- ``accuracy_drop``: the exit that answers is wrong where the last exit is right (labels
  needed). Its mean bounds from above the accuracy lost against the full model.

For each ``λ`` on a grid fixed in advance, from "never exit early" down to 0, the null
hypothesis "risk(λ) > ε" is tested with the exact binomial tail of the calibration losses;
testing stops at the first ``λ`` it cannot reject, and the last rejected one is returned.
Fixed-sequence testing controls the family-wise error at δ without a correction, so the
guarantee P(risk(λ̂) ≤ ε) ≥ 1 − δ holds distribution-free, under one assumption: the
calibration images and the images served later are exchangeable (drawn from the same
distribution). ``risk(λ)`` is the expected loss over new images; the realised risk on a
finite test set scatters around it, so with ``window_images`` = m the certificate covers the
realised risk of m fresh images instead: the expected risk is certified at the level
``window_level(ε, δ/2, m)`` below ε, at which m images exceed ε with probability at most δ/2,
and P(realised risk of m images > ε) <= δ/2 + δ/2 (a union bound over the two draws).
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from .config import RISKS, CalibrateConfig, Risk, check_level, check_window
from .thresholds import ExitScores, exit_indices

NEVER = 1.0 + 1e-6  # above any probability: no image leaves early

# Fixed before any data is seen (the guarantee needs it): 0.001 steps over [0, 1], refined
# towards 1 where confident exits crowd, from the safest threshold down.
LAMBDA_GRID: np.ndarray = np.unique(
    np.concatenate([np.linspace(0.0, 1.0, 1001), 1.0 - np.logspace(-6, -3, 61), [NEVER]])
)[::-1]


def needed_images(cfg: CalibrateConfig) -> int:
    """The fewest calibration images every level ``cfg`` asks for can be certified with."""
    return max(
        (min_calibration_size(e, cfg.delta, cfg.window_images) for e in cfg.epsilons),
        default=0,
    )


def min_calibration_size(epsilon: float, delta: float, window_images: int | None = None) -> int:
    """The fewest images that can certify risk <= ``epsilon`` at ``delta`` (for a window of
    ``window_images``, the level and probability it is certified at): even with no loss at
    all, ``(1 - epsilon) ** n <= delta`` needs this many."""
    _check_levels(epsilon, delta)
    epsilon, delta = certified_level(epsilon, delta, window_images)
    return math.ceil(math.log(delta) / math.log1p(-epsilon))


def window_level(epsilon: float, delta: float, window_images: int) -> float:
    """The largest expected risk at which ``window_images`` fresh images lose more than
    ``epsilon`` of them with probability at most ``delta``:
    ``P(Binomial(m, r) > floor(epsilon * m)) <= delta``, found by bisection (the tail rises
    with ``r``). A small window leaves a small level, which needs many calibration images."""
    _check_levels(epsilon, delta)
    check_window(window_images, "window_images")
    allowed = math.floor(epsilon * window_images + 1e-9)
    return _tail_crossing(allowed, window_images, 1 - delta, 0.0, epsilon)[0]


def certified_level(epsilon: float, delta: float, window_images: int | None) -> tuple[float, float]:
    """The (expected-risk level, probability) Learn then Test certifies so that the risk the
    user asked for holds at (``epsilon``, ``delta``): itself, or for a window of m images
    ``window_level(epsilon, delta / 2, m)`` at ``delta / 2``."""
    if window_images is None:
        return epsilon, delta
    return window_level(epsilon, delta / 2, window_images), delta / 2


def guaranteed_risk(window_images: int | None) -> str:
    """What a certificate bounds, in words: the expected risk, or that of a window of images."""
    if window_images is None:
        return "the expected risk"
    return f"the realised risk of any {window_images} fresh images"


def losses(scores: ExitScores, thresholds: list[float], risk: Risk) -> np.ndarray:
    """Per image, 0 or 1: the ``risk`` of answering with ``thresholds``."""
    k = exit_indices(scores, thresholds)
    n = scores.confidence.shape[1]
    answer = scores.prediction[k, np.arange(n)]
    last = scores.prediction[-1]
    if risk == "disagreement":
        return answer != last
    if risk == "accuracy_drop":
        _check_labels(scores)
        return (answer != scores.labels) & (last == scores.labels)
    raise ConfigError(f"risk {risk!r}: expected one of {list(RISKS)}")


def p_value(loss_count: int, n: int, epsilon: float) -> float:
    """Exact binomial p-value of "risk > epsilon" given ``loss_count`` losses in ``n``:
    ``P(Binomial(n, epsilon) <= loss_count)``, summed in log space."""
    if loss_count >= n:
        return 1.0
    log_fact = _log_factorials(n)
    i = np.arange(loss_count + 1)
    log_pmf = (
        log_fact[n]
        - log_fact[i]
        - log_fact[n - i]
        + i * math.log(epsilon)
        + (n - i) * math.log1p(-epsilon)
    )
    return float(min(1.0, np.exp(np.logaddexp.reduce(log_pmf))))


def upper_bound(loss_count: int, n: int, delta: float) -> float:
    """One-sided Clopper-Pearson bound: the risk is below it with probability >= 1 - delta.
    The ``p`` at which ``P(Binomial(n, p) <= loss_count) = delta``, found by bisection."""
    if loss_count >= n:
        return 1.0
    return _tail_crossing(loss_count, n, delta, loss_count / n, 1.0)[1]


def _tail_crossing(k: int, n: int, level: float, low: float, high: float) -> tuple[float, float]:
    """Where ``P(Binomial(n, p) <= k)``, which falls as ``p`` rises, crosses ``level`` in
    ``[low, high]``: a bracket 2^-60 wide, so each caller takes its conservative side."""
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if p_value(k, n, mid) > level else (low, mid)
    return low, high


@dataclass
class RiskPoint:
    """An operating point certified on a calibration set.

    Attributes:
        risk: Which risk (``disagreement`` or ``accuracy_drop``).
        epsilon: The risk level certified.
        delta: The probability the certificate may fail.
        window_images: ``None``: ``epsilon`` bounds the expected risk; m: the realised risk
            of m fresh images.
        certified_level: The expected-risk level Learn then Test tested (``epsilon``, or
            below it for a window).
        threshold: ``λ``, shared by the early exits (above 1: none answers).
        thresholds: Per exit (the last exit takes the rest: 0).
        calibration_images: ``n``.
        empirical_risk: Mean loss on the calibration images at ``λ``.
        risk_bound: Clopper-Pearson bound at ``1 - delta`` on the risk at ``λ``.
        p_value: Of "risk(λ) > ε" on the calibration images.
        gflops: Expected GFLOPs per image on the calibration images.
        gflops_ratio: ``gflops`` over the full model's.
        exit_fractions: Share of calibration images answered by each exit.
    """

    risk: str
    epsilon: float
    delta: float
    window_images: int | None
    certified_level: float
    threshold: float
    thresholds: list[float]
    calibration_images: int
    empirical_risk: float
    risk_bound: float
    p_value: float
    gflops: float
    gflops_ratio: float
    exit_fractions: list[float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibrate(
    scores: ExitScores,
    epsilon: float,
    delta: float,
    risk: Risk,
    window_images: int | None = None,
) -> RiskPoint:
    """The lowest threshold of :data:`LAMBDA_GRID` certified at (``epsilon``, ``delta``),
    for the expected risk or, with ``window_images``, the realised risk of that many images.

    Raises:
        ConfigError: Too few calibration images for (``epsilon``, ``delta``), or labels
            missing for ``accuracy_drop``.
    """
    n = scores.confidence.shape[1]
    need = min_calibration_size(epsilon, delta, window_images)
    if n < need:
        window = "" if window_images is None else f" over {window_images} images"
        raise ConfigError(
            f"{n} calibration images cannot certify {risk} <= {epsilon:g}{window} at delta "
            f"{delta:g}: that needs at least {need} (and more the more the exits err); give "
            "more images, or ask for a larger epsilon or delta"
        )
    level, level_delta = certified_level(epsilon, delta, window_images)
    if risk == "accuracy_drop":
        _check_labels(scores)
    chosen = None
    for lam in LAMBDA_GRID:
        count = int(losses(scores, _per_exit(lam, scores.num_exits), risk).sum())
        p = p_value(count, n, level)
        if p > level_delta:
            break
        chosen = (float(lam), count, p)
    assert chosen is not None  # n >= need: the safest threshold (no loss at all) is rejected
    lam, count, p = chosen
    thresholds = _per_exit(lam, scores.num_exits)
    k = exit_indices(scores, thresholds)
    gflops = float(scores.gflops[k].mean())
    return RiskPoint(
        risk=risk,
        epsilon=epsilon,
        delta=delta,
        window_images=window_images,
        certified_level=level,
        threshold=lam,
        thresholds=thresholds,
        calibration_images=n,
        empirical_risk=count / n,
        risk_bound=upper_bound(count, n, level_delta),
        p_value=p,
        gflops=gflops,
        gflops_ratio=gflops / scores.full_gflops,
        exit_fractions=(np.bincount(k, minlength=scores.num_exits) / n).tolist(),
    )


def subset(scores: ExitScores, rows: np.ndarray) -> ExitScores:
    return ExitScores(
        scores.confidence[:, rows], scores.prediction[:, rows], scores.labels[rows], scores.gflops
    )


def violation_frequency(
    scores: ExitScores,
    epsilon: float,
    delta: float,
    risk: Risk,
    calibration_size: int,
    splits: int = 100,
    seed: int = 0,
    window_images: int | None = None,
) -> dict[str, Any]:
    """Over ``splits`` random calibration/test splits of ``scores``: how often the realised
    risk on the test part exceeds ``epsilon`` (the guarantee says at most about ``delta``),
    with the binomial standard error of that frequency.

    Certified for the expected risk (``window_images`` None), the realised risk of a finite
    test part scatters around it by about ``test_noise_sd`` (the binomial standard deviation
    at ``epsilon``), so a point whose expected risk sits just below ``epsilon`` exceeds it in
    more than ``delta`` of the splits: with a test part as large as the calibration part and
    a tight bound, in about Φ(-z_δ/√2) ≈ 12% at δ = 0.05. ``pool_violation_frequency`` reads
    that guarantee itself: the calibration part is a draw from the pooled images, so the risk
    it bounds is the pool's, which each split's thresholds are scored on (no test noise).
    Certified for a window of the test part's size, ``violation_frequency`` is the one the
    guarantee bounds."""
    n = scores.confidence.shape[1]
    if not 0 < calibration_size < n:
        raise ConfigError(f"calibration_size {calibration_size}: must be in 1..{n - 1}")
    rng = np.random.default_rng(seed)
    realised, pooled, ratios = [], [], []
    for _ in range(splits):
        order = rng.permutation(n)
        point = calibrate(
            subset(scores, order[:calibration_size]), epsilon, delta, risk, window_images
        )
        lost = losses(scores, point.thresholds, risk)
        realised.append(float(lost[order[calibration_size:]].mean()))
        pooled.append(float(lost.mean()))
        ratios.append(point.gflops_ratio)
    frequency = float(np.mean(np.asarray(realised) > epsilon))
    return {
        "splits": splits,
        "window_images": window_images,
        "calibration_images": calibration_size,
        "test_images": n - calibration_size,
        "violation_frequency": frequency,
        "pool_violation_frequency": float(np.mean(np.asarray(pooled) > epsilon)),
        "standard_error": math.sqrt(delta * (1 - delta) / splits),
        "test_noise_sd": math.sqrt(epsilon * (1 - epsilon) / (n - calibration_size)),
        "mean_realised_risk": float(np.mean(realised)),
        "max_realised_risk": float(np.max(realised)),
        "mean_gflops_ratio": float(np.mean(ratios)),
    }


@functools.lru_cache(maxsize=8)
def _log_factorials(n: int) -> np.ndarray:
    """``log(i!)`` for ``i = 0..n``."""
    return np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1, dtype=np.float64)))])


def _per_exit(lam: float, num_exits: int) -> list[float]:
    return [float(lam)] * (num_exits - 1) + [0.0]


def _check_levels(epsilon: float, delta: float) -> None:
    check_level("epsilon", epsilon)
    check_level("delta", delta)


def _check_labels(scores: ExitScores) -> None:
    if scores.labels is None or (np.asarray(scores.labels) < 0).any():
        raise ConfigError(
            "the accuracy_drop risk needs labelled calibration images; unlabeled images "
            "calibrate the disagreement risk"
        )
