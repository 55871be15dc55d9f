"""The iso-accuracy operating point: the cheapest budget that keeps the reference accuracy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def iso_accuracy_point(
    budgets: Sequence[dict[str, Any]], reference: float, tolerance: float
) -> dict[str, Any] | None:
    """The budget row with the fewest GFLOPs whose accuracy is at least ``reference -
    tolerance``; ``None`` when no budget qualifies. Rows need ``accuracy`` and ``gflops``; of
    equally cheap rows the first is taken."""
    qualifying = [b for b in budgets if b["accuracy"] >= reference - tolerance]
    return min(qualifying, key=lambda b: b["gflops"]) if qualifying else None
