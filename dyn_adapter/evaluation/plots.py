"""Figures of the evaluation, built with matplotlib's object API (no pyplot, no global backend).

Each figure function returns a ``Figure``; :func:`write_plots` saves them (PNG, and JSON for
``dvc plots``) from the curves :func:`curves` gathers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..artifacts import PLOTS_DIR
from ..evaluation_report import Budget, EvaluationReport
from ..files import atomic_path, write_json
from ..models import DynAdapterViT
from ..policies.thresholds import ExitScores, exit_indices, simulate


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


def exit_distribution(budgets: Sequence[Budget], exit_blocks: Sequence[int]) -> Figure:
    """Stacked fractions of test images leaving at each exit, per budget."""
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(budgets))  # positions, not strings: matplotlib would log about them
    bottom = np.zeros(len(budgets))
    for k, block in enumerate(exit_blocks):
        frac = np.array([b.exit_fractions[k] for b in budgets])
        ax.bar(x, frac, bottom=bottom, label=f"exit after block {block}")
        bottom += frac
    ax.set_xticks(x, [f"{b.budget:g}" for b in budgets])
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


def curves(
    report: EvaluationReport,
    search: dict[str, Any],
    scores: ExitScores,
    probe_scores: ExitScores | None,
    probe_rows: dict[float, Any],
) -> dict[str, list[dict[str, float]]]:
    geometric = [simulate(scores, g["thresholds"]) for g in search["geometric_curve"]]
    curves = {
        "Dyn-Adapter (searched)": [
            {"gflops": b.gflops, "accuracy": b.accuracy} for b in report.budgets
        ],
        "geometric thresholds": [{"gflops": g.gflops, "accuracy": g.accuracy} for g in geometric],
        "oracle": [{"gflops": report.oracle.gflops, "accuracy": report.oracle.accuracy}],
        "static exits": [
            {"gflops": e.gflops_cumulative, "accuracy": e.accuracy} for e in report.exits
        ],
    }
    if probe_scores is not None:
        curves["frozen probe (searched)"] = [
            {"gflops": b.frozen_probe_gflops, "accuracy": b.frozen_probe_accuracy}
            for b in report.budgets
            if b.frozen_probe_accuracy is not None and b.frozen_probe_gflops is not None
        ]
    if report.static_petl.accuracy is not None:
        curves["static PETL"] = [
            {"gflops": report.full.gflops, "accuracy": report.static_petl.accuracy}
        ]
    return curves


def write_plots(
    out: Path,
    report: EvaluationReport,
    curves: dict[str, list[dict[str, float]]],
    model: DynAdapterViT,
    scores: ExitScores,
    labels: np.ndarray,
    classes: list[str],
    iso_best: dict[str, Any] | None,
) -> None:
    d = out / PLOTS_DIR
    d.mkdir(parents=True, exist_ok=True)
    figures = {
        "accuracy_vs_gflops.png": accuracy_vs_gflops(curves, report.full.gflops),
        "exit_distribution.png": exit_distribution(report.budgets, model.exit_blocks),
    }
    # Confusion matrix of the iso-accuracy policy (the most generous budget if none qualifies).
    thr = iso_best["thresholds"] if iso_best else report.budgets[-1].thresholds
    chosen = exit_indices(scores, thr)
    pred = scores.prediction[chosen, np.arange(len(labels))]
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(matrix, (labels, pred), 1)
    figures["confusion_matrix.png"] = confusion_matrix(matrix, classes)
    for name, fig in figures.items():
        with atomic_path(d / name) as tmp:
            fig.savefig(tmp, format="png", dpi=120)
    rows = [{"curve": name, **p} for name, pts in curves.items() for p in pts]
    write_json(d / "accuracy_vs_gflops.json", rows)
    write_json(d / "confusion_matrix.json", {"classes": classes, "matrix": matrix.tolist()})
