"""The DAGs the runner compiles, runs and submits, one row each: everything in which the demo
and the VTAB pipeline differ, so that the runner never branches on which it runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from dyn_adapter.errors import ConfigError
from dyn_adapter.params import Params

from . import demo, vtab
from .summary import summarize, summarize_vtab

PipelineKind = Literal["demo", "vtab"]


@dataclass(frozen=True)
class Pipeline:
    """One DAG.

    Attributes:
        build: ``(defaults, image, parallelism)`` -> the pipeline function; ``parallelism`` caps
            its loop's branches running at once (0: no cap).
        compiled: Where ``pipeline compile`` writes its package by default.
        arguments: Checks the run arguments it takes besides params, overrides and
            tracking_uri (``--arg``), and returns them.
        items: ``(params, arguments)`` -> its loop's items, in order (the run view names each
            loop step by its item).
        data_path: ``(params, arguments)`` -> the data it reads (mounted into Docker tasks).
        summarize: ``(the finished pipeline task, seconds, tracking URI shown)`` -> the run's
            summary.
    """

    build: Callable[[dict[str, Any], str, int], Any]
    compiled: Path
    arguments: Callable[[dict[str, Any]], dict[str, Any]]
    items: Callable[[Params, dict[str, Any]], list[str]]
    data_path: Callable[[Params, dict[str, Any]], str]
    summarize: Callable[[Any, float, str], dict[str, Any]]


def _demo_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    if arguments:
        raise ConfigError(f"--arg {', '.join(arguments)}: the demo pipeline takes none (use --set)")
    return {}


def _vtab_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    unknown = set(arguments) - {"tasks", "data_root"}
    if unknown:
        raise ConfigError(
            f"--arg {', '.join(sorted(unknown))}: the VTAB pipeline takes tasks and data_root"
        )
    tasks, data_root = arguments.get("tasks"), arguments.get("data_root")
    if not (isinstance(tasks, list) and tasks and all(isinstance(t, str) for t in tasks)):
        raise ConfigError(
            f"--arg tasks={tasks!r}: the VTAB pipeline needs a list of task directories, "
            "e.g. --arg 'tasks=[fashion_mnist, digits]'"
        )
    if not isinstance(data_root, str) or not data_root:
        raise ConfigError(
            "--arg data_root=...: the VTAB pipeline needs the directory (or "
            "s3:// prefix) that holds the task directories"
        )
    if not data_root.startswith("s3://"):
        missing = [t for t in tasks if not (Path(data_root) / t).is_dir()]
        if missing:
            raise ConfigError(
                f"--arg data_root={data_root}: no task directory {', '.join(missing)} there "
                "(a VTAB-1k task: images/, train800.txt, val200.txt, test.txt)"
            )
    return {"tasks": tasks, "data_root": data_root}


def _sparsity_candidates(params: Params, arguments: dict[str, Any]) -> list[str]:
    from dyn_adapter.stages import sparsify

    return [c.name for c in sparsify.grid(params)]


def _demo_summary(task: Any, seconds: float, shown_uri: str) -> dict[str, Any]:
    return summarize(
        Path(task.outputs["evaluation"].path),
        Path(task.outputs["registration"].path),
        seconds,
        shown_uri,
    )


PIPELINES: dict[str, Pipeline] = {
    "demo": Pipeline(
        build=demo.build_pipeline,
        compiled=Path("pipeline/dyn_adapter_pipeline.yaml"),
        arguments=_demo_arguments,
        items=_sparsity_candidates,
        data_path=lambda params, arguments: params.data.path,
        summarize=_demo_summary,
    ),
    "vtab": Pipeline(
        build=vtab.build_pipeline,
        compiled=Path("pipeline/vtab_pipeline.yaml"),
        arguments=_vtab_arguments,
        items=lambda params, arguments: list(arguments["tasks"]),
        data_path=lambda params, arguments: arguments["data_root"],
        summarize=lambda task, seconds, uri: summarize_vtab(Path(task.output.path), seconds, uri),
    ),
}


def pipeline_kind(kind: str) -> Pipeline:
    """The row of ``kind``; a clear error for any other name."""
    if kind not in PIPELINES:
        raise ConfigError(f"pipeline {kind!r}: expected {' or '.join(PIPELINES)}")
    return PIPELINES[kind]
