"""Every report the project writes: how a number reads (here), the stages' Markdown tables
(:mod:`.tables`) and the model card (:mod:`.card`); one place, so that a value and its
interval look the same everywhere."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

NA = "n/a"


def fraction(value: float | None, interval: Sequence[float] | None = None) -> str:
    """An accuracy as a fraction: ``0.8370 [0.8266, 0.8472]`` (``n/a`` without a value)."""
    if value is None:
        return NA
    text = f"{value:.4f}"
    if interval:
        text += f" [{interval[0]:.4f}, {interval[1]:.4f}]"
    return text


def percent(
    value: float | None, interval: Sequence[float] | None = None, interval_digits: int = 2
) -> str:
    """An accuracy in %: ``83.70 [82.66, 84.72]`` (``n/a`` without a value)."""
    if value is None:
        return NA
    text = f"{100 * value:.2f}"
    if interval:
        low, high = (f"{100 * v:.{interval_digits}f}" for v in interval)
        text += f" [{low}, {high}]"
    return text


def points(difference: float, interval: Sequence[float], unit: str = "") -> str:
    """A difference of accuracies in percentage points, signed: ``+0.12 [-0.30, +0.55]``
    (``unit`` after the value: ``+0.12 points [...]``)."""
    low, high = (f"{100 * v:+.2f}" for v in interval)
    return f"{100 * difference:+.2f}{unit} [{low}, {high}]"


def difference_cell(c: dict[str, Any] | None) -> str:
    """A paired difference in points, ``(n.s.)`` where not resolved."""
    if not c:
        return NA
    return points(c["difference"], c["interval"]) + ("" if c["resolved"] else " (n.s.)")


def header(*columns: str) -> list[str]:
    """A Markdown table's first two lines."""
    return [f"| {' | '.join(columns)} |", "|---" * len(columns) + "|"]


def shares(values: Sequence[float]) -> str:
    """Fractions side by side (the images leaving at each exit): ``0.62 / 0.30 / 0.08``."""
    return " / ".join(f"{v:.2f}" for v in values)
