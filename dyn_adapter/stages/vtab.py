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
    return {
        "task": evaluation.task,
        "group": group_of(evaluation.task),
        "accuracy": evaluation.full_accuracy,
        "gflops": evaluation.full_gflops,
        "dynamic_accuracy": evaluation.iso["accuracy"],
        "dynamic_gflops_ratio": evaluation.iso["gflops_ratio"],
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
    }
    Path(out).mkdir(parents=True, exist_ok=True)
    write_json(Path(out) / VTAB_TABLE, result)
    (Path(out) / VTAB_MARKDOWN).write_text(markdown(result))
    write_json(Path(out) / METRICS_FILE, headline(result))
    return result


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}"


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| task | group | accuracy (full) | GFLOPs | accuracy (dynamic, iso) | GFLOPs ratio |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["tasks"]:
        ratio = r["dynamic_gflops_ratio"]
        lines.append(
            f"| {r['task']} | {r['group']} | {_pct(r['accuracy'])} | {r['gflops']:.2f} | "
            f"{_pct(r['dynamic_accuracy'])} | {'n/a' if ratio is None else f'{ratio:.3f}'} |"
        )
    lines.append("")
    for g, v in result["group_means"].items():
        lines.append(f"- {g} mean: {_pct(v)}")
    lines.append(f"- mean of group means: {_pct(result['mean_of_group_means'])}")
    lines.append(f"- mean of tasks: {_pct(result['mean_of_tasks'])}")
    return "\n".join(lines) + "\n"


def headline(result: dict[str, Any]) -> dict[str, float]:
    out = {f"{g}_mean": v for g, v in result["group_means"].items() if v is not None}
    for key in ("mean_of_group_means", "mean_of_tasks", "mean_dynamic_gflops_ratio"):
        if result[key] is not None:
            out[key] = result[key]
    return out
