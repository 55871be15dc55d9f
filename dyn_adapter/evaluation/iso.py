"""The iso-accuracy operating point: the cheapest budget that keeps the reference accuracy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def iso_accuracy_point(
    budgets: Sequence[dict[str, Any]],
    reference: float,
    tolerance: float,
    accuracy: str = "accuracy",
    cost: str = "gflops",
) -> dict[str, Any] | None:
    """The budget row with the lowest ``cost`` whose ``accuracy`` is at least ``reference -
    tolerance``; ``None`` when no budget qualifies. Of equally cheap rows the first is taken.
    The keys name the split the choice is made on (``val_accuracy``, ``val_gflops_ratio``)."""
    qualifying = [b for b in budgets if b[accuracy] >= reference - tolerance]
    return min(qualifying, key=lambda b: b[cost]) if qualifying else None
