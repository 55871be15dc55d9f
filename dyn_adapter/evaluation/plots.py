"""Figures of the evaluation, built with matplotlib's object API (no pyplot, no global backend).

Each function returns a ``Figure``; the caller saves or logs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure


def accuracy_vs_gflops(curves: dict[str, list[dict[str, float]]], full_gflops: float) -> Figure:
    """Test accuracy against GFLOPs per image, one line or marker set per policy."""
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.subplots()
    styles: dict[str, dict[str, Any]] = {
        "Dyn-Adapter (searched)": dict(marker="o", lw=2),
        "geometric thresholds": dict(marker=".", lw=1, ls="--"),
        "oracle": dict(marker="*", lw=0, ms=12),
        "static exits": dict(marker="s", lw=0),
        "frozen probe (searched)": dict(marker="^", lw=1, ls=":"),
        "static PETL": dict(marker="D", lw=0, ms=8),
    }
    for name, points in curves.items():
        if not points:
            continue
        pts = sorted(points, key=lambda p: p["gflops"])
        ax.plot(
            [p["gflops"] for p in pts],
            [100 * p["accuracy"] for p in pts],
            label=name,
            **styles.get(name, {}),
        )
    ax.axvline(full_gflops, color="grey", lw=0.5)
    ax.set_xlabel("GFLOPs per image (1 multiply-add = 1 FLOP)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def exit_distribution(budgets: Sequence[dict[str, Any]], exit_blocks: Sequence[int]) -> Figure:
    """Stacked fractions of test images leaving at each exit, per budget."""
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(budgets))  # positions, not strings: matplotlib would log about them
    bottom = np.zeros(len(budgets))
    for k, block in enumerate(exit_blocks):
        frac = np.array([b["exit_fractions"][k] for b in budgets])
        ax.bar(x, frac, bottom=bottom, label=f"exit after block {block}")
        bottom += frac
    ax.set_xticks(x, [f"{b['budget']:g}" for b in budgets])
    ax.set_xlabel("GFLOPs budget (fraction of the full model)")
    ax.set_ylabel("fraction of test images")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
    return fig


def confusion_matrix(matrix: np.ndarray, classes: Sequence[str]) -> Figure:
    """Row-normalised confusion matrix (true class by row)."""
    fig = Figure(figsize=(6.0, 5.4), layout="constrained")
    ax = fig.subplots()
    norm = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig
