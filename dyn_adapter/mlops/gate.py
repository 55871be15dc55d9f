"""The promotion gate: whether a registered version becomes the champion, and why.

A candidate becomes champion when its test accuracy (or balanced accuracy: ``gate_metric``) is
not below the current champion's by more than ``accuracy_tolerance`` and its iso-accuracy
GFLOPs ratio is at most ``max_gflops_ratio``; with ``gate_risk`` the GFLOPs condition is stated
as a risk level instead: the point certified at disagreement <= ``gate_risk`` must have held on
test and cost at most ``max_gflops_ratio``. The decision carries its numbers in words.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..artifacts import OperatingPoint
from ..errors import ConfigError
from .config import RegisterConfig


@dataclass
class GateDecision:
    """Whether a candidate becomes champion, and why (with the numbers)."""

    passed: bool
    reason: str


def gate(
    candidate: OperatingPoint,
    champion: tuple[str, float | None] | None,
    cfg: RegisterConfig,
) -> GateDecision:
    """Decide whether ``candidate`` replaces the champion.

    Args:
        candidate: The new version's numbers.
        champion: ``(version, value)`` of the current champion, the value its tag named
            ``cfg.gate_metric`` holds (``None`` without one), or ``None`` when there is none.
        cfg: Tolerance and GFLOPs limit.
    """
    checks: list[tuple[bool, str]] = []
    metric = cfg.gate_metric
    value = candidate.accuracy if metric == "accuracy" else candidate.balanced_accuracy
    if value is None:
        raise ConfigError(
            f"register.gate_metric: {metric}: the evaluation has none; run `dyn-adapter "
            "evaluate` again"
        )
    acc = f"test {metric.replace('_', ' ')} {value:.4f} (budget {candidate.budget:g})"
    if champion is None:
        checks.append((True, f"{acc}; no champion yet"))
    elif champion[1] is None:
        checks.append(
            (False, f"{acc}; champion v{champion[0]} has no {metric} tag: promote by hand")
        )
    else:
        floor = champion[1] - cfg.accuracy_tolerance
        ok = value >= floor - 1e-12
        checks.append(
            (
                ok,
                f"{acc} {'>=' if ok else '<'} champion v{champion[0]}'s {champion[1]:.4f} - "
                f"tolerance {cfg.accuracy_tolerance:g}",
            )
        )
    limit = cfg.max_gflops_ratio
    if cfg.gate_risk is not None:
        checks.append(_risk_check(candidate, cfg.gate_risk, limit))
    else:
        checks.append(_gflops_check(candidate.gflops_ratio, limit))
    passed = all(ok for ok, _ in checks)
    return GateDecision(
        passed, f"gate {'pass' if passed else 'fail'}: " + "; ".join(t for _, t in checks)
    )


def _risk_check(candidate: OperatingPoint, level: float, limit: float | None) -> tuple[bool, str]:
    """The point certified at disagreement <= ``level``: kept on test, within the GFLOPs limit."""
    point = next(
        (
            p
            for p in candidate.risk_points
            if p["risk"] == "disagreement" and abs(p["epsilon"] - level) < 1e-12
        ),
        None,
    )
    if point is None:
        return False, (
            f"no point certified at disagreement <= {level:g}: add it to calibrate.epsilons "
            "and pass the calibration to evaluate"
        )
    where = f"disagreement <= {level:g}: test {point['test_risk']:.4f}"
    if not point["holds"]:
        return False, f"{where} > {level:g} (the certificate failed on test)"
    ok = limit is None or point["gflops_ratio"] <= limit + 1e-12
    bound = "not gated" if limit is None else f"{'<=' if ok else '>'} {limit:g}"
    return ok, f"{where}, GFLOPs ratio {point['gflops_ratio']:.3f} {bound}"


def _gflops_check(ratio: float | None, limit: float | None) -> tuple[bool, str]:
    if limit is None:
        return True, "GFLOPs ratio not gated"
    if ratio is None:
        return False, f"no budget reaches iso accuracy, so no GFLOPs ratio to check (max {limit:g})"
    ok = ratio <= limit + 1e-12
    return ok, f"iso-accuracy GFLOPs ratio {ratio:.3f} {'<=' if ok else '>'} {limit:g}"
