"""The ``vtab`` stage: the VTAB-1k table of per-task results, the three group means, the mean of tasks.

Two averages are in use in the literature and they differ (the mean of the 19 tasks is lower
than the mean of the three group means): the table reports both, by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..artifacts import METRICS_FILE, VTAB_MARKDOWN, VTAB_TABLE, Evaluation
from ..errors import ConfigError
from ..files import write_json
from ..reporting.tables import vtab_table

# Task directory names of the usual VTAB-1k layout.
GROUPS: dict[str, tuple[str, ...]] = {
    "natural": (
        "cifar",
        "caltech101",
        "dtd",
        "oxford_flowers102",
        "oxford_iiit_pet",
        "svhn",
        "sun397",
    ),
    "specialized": ("patch_camelyon", "eurosat", "resisc45", "diabetic_retinopathy"),
    "structured": (
        "clevr_count",
        "clevr_dist",
        "dmlab",
        "kitti",
        "dsprites_loc",
        "dsprites_ori",
        "smallnorb_azi",
        "smallnorb_ele",
    ),
}


def group_of(task: str) -> str:
    for group, tasks in GROUPS.items():
        if task in tasks:
            return group
    return "other"


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def task_row(evaluation: Evaluation) -> dict[str, Any]:
    """One task's line of the table: Dyn-Adapter against its two baselines, with intervals."""
    r = evaluation.report
    half, comparisons = r.half_gflops, r.comparisons
    versus_probe = [b.vs_frozen_probe for b in r.budgets if b.vs_frozen_probe]
    return {
        "task": evaluation.task,
        "group": group_of(evaluation.task),
        "test_images": r.test_images,
        "accuracy": r.full.accuracy,
        "accuracy_interval": r.full.accuracy_interval,
        "balanced_accuracy": r.full.balanced_accuracy,
        "gflops": r.full.gflops,
        "static_petl_accuracy": r.static_petl.accuracy,
        "static_petl_interval": r.static_petl.accuracy_interval,
        "frozen_probe_exits": [e.accuracy for e in r.frozen_probe.exits or []],
        "dynamic_accuracy": r.iso_accuracy.accuracy,
        "dynamic_interval": r.iso_accuracy.accuracy_interval,
        "dynamic_gflops_ratio": r.iso_accuracy.gflops_ratio,
        "half_gflops_accuracy": half.accuracy,
        "half_gflops_interval": half.accuracy_interval,
        "half_gflops_ratio": half.gflops_ratio,
        "half_gflops_vs_static_petl": comparisons.get("half_gflops_vs_static_petl"),
        "last_exit_vs_static_petl": comparisons.get("last_exit_vs_static_petl"),
        # Above the frozen-probe exits at every budget: by how much, at the least, and whether
        # every one of those differences is resolved.
        "min_margin_over_frozen_probe": min((d["difference"] for d in versus_probe), default=None),
        "above_frozen_probe_resolved": (
            all(d["resolved"] and d["difference"] > 0 for d in versus_probe)
            if versus_probe
            else None
        ),
    }


def run(tasks: Sequence[str], evaluation_dirs: Sequence[str], out: str | Path) -> dict[str, Any]:
    """Read each task's ``evaluate`` output (labelled by its ``task.txt``) into the table:
    ``vtab.json``, ``vtab.md`` and the headline means in ``metrics.json``."""
    rows = [task_row(Evaluation(d)) for d in evaluation_dirs]
    missing = sorted(set(tasks) - {r["task"] for r in rows})
    if missing:
        raise ConfigError(f"VTAB table: no evaluation for task(s) {', '.join(missing)}")
    rows.sort(key=lambda r: list(tasks).index(r["task"]))
    groups = {
        g: _mean([r["accuracy"] for r in rows if r["group"] == g])
        for g in [*GROUPS, "other"]
        if any(r["group"] == g for r in rows)
    }
    result = {
        "tasks": rows,
        "group_means": groups,
        "mean_of_group_means": _mean(
            [v for g, v in groups.items() if g != "other" and v is not None]
        ),
        "mean_of_tasks": _mean([r["accuracy"] for r in rows]),
        "mean_dynamic_gflops_ratio": _mean(
            [r["dynamic_gflops_ratio"] for r in rows if r["dynamic_gflops_ratio"] is not None]
        ),
        "mean_static_petl": _mean(
            [r["static_petl_accuracy"] for r in rows if r["static_petl_accuracy"] is not None]
        ),
        "mean_half_gflops_accuracy": _mean(
            [r["half_gflops_accuracy"] for r in rows if r["half_gflops_accuracy"] is not None]
        ),
    }
    Path(out).mkdir(parents=True, exist_ok=True)
    write_json(Path(out) / VTAB_TABLE, result)
    (Path(out) / VTAB_MARKDOWN).write_text(vtab_table(result))
    write_json(Path(out) / METRICS_FILE, headline(result))
    return result


def headline(result: dict[str, Any]) -> dict[str, float]:
    out = {f"{g}_mean": v for g, v in result["group_means"].items() if v is not None}
    for key in (
        "mean_of_group_means",
        "mean_of_tasks",
        "mean_dynamic_gflops_ratio",
        "mean_static_petl",
        "mean_half_gflops_accuracy",
    ):
        if result.get(key) is not None:
            out[key] = result[key]
    return out
