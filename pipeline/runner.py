"""Compile, run locally (KFP local runner, embedded defaults) or submit to a Kubeflow cluster."""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from components import DEFAULT_IMAGE
from dyn_adapter.errors import ConfigError
from dyn_adapter.params import params_from_dict

from . import demo, vtab

PipelineKind = Literal["demo", "vtab"]
COMPILED = {
    "demo": Path("pipeline/dyn_adapter_pipeline.yaml"),
    "vtab": Path("pipeline/vtab_pipeline.yaml"),
}


def load_defaults(params_path: str | Path = "params.yaml") -> dict[str, Any]:
    """``params.yaml`` as the pipelines' default ``params`` (validated first)."""
    path = Path(params_path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such parameters file (pass --params PATH)")
    raw = yaml.safe_load(path.read_text()) or {}
    pruned = _drop_nulls(raw)
    # KFP parameters cannot hold null: a dropped key must mean the same as its null.
    if params_from_dict(pruned) != params_from_dict(raw):
        raise ConfigError(f"{path}: a null value differs from its default; write the value out")
    return pruned


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    return value


def build(kind: PipelineKind, defaults: dict[str, Any], image: str = DEFAULT_IMAGE) -> Any:
    if kind == "demo":
        return demo.build_pipeline(defaults, image)
    if kind == "vtab":
        return vtab.build_pipeline(defaults, image)
    raise ConfigError(f"pipeline {kind!r}: expected demo or vtab")


def compile_pipeline(
    kind: PipelineKind = "demo",
    out: str | Path | None = None,
    params_path: str | Path = "params.yaml",
    image: str = DEFAULT_IMAGE,
) -> Path:
    """Write the pipeline package (YAML) that the KFP UI uploads."""
    from kfp import compiler

    from dyn_adapter.io import atomic_path

    path = Path(out) if out is not None else COMPILED[kind]
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        compiler.Compiler().compile(build(kind, load_defaults(params_path), image), str(tmp))
    return path


def run_local(
    params_path: str | Path = "params.yaml",
    overrides: Sequence[str] = (),
    pipeline_root: str | Path = "outputs/kfp",
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Run the whole demo DAG with the KFP local runner; returns the run's summary.

    Tasks run as subprocesses of this Python (the project's venv) and artifacts land under
    ``pipeline_root``. MLflow: ``tracking_uri``, else ``register.tracking_uri``, else
    ``$MLFLOW_TRACKING_URI``, else the embedded SQLite store in ``outputs/mlflow``.
    """
    from kfp import local

    from dyn_adapter.register import resolve_tracking_uri

    defaults = load_defaults(params_path)
    params = params_from_dict(defaults, overrides)  # fail before any task starts
    root = Path(pipeline_root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri or resolve_tracking_uri(params.register.tracking_uri)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    # Tasks run in this venv, which holds what the project image holds: say so once, not per task.
    warnings.filterwarnings("ignore", "You may be attemping to run a task", RuntimeWarning)
    warnings.filterwarnings("ignore", ".*have no effect in the current local runner", UserWarning)
    # On a few cores, candidates training side by side only slow each other down.
    parallelism = 1 if (os.cpu_count() or 1) < 4 else 0
    pipeline = demo.build_pipeline(defaults, candidate_parallelism=parallelism)
    tic = time.perf_counter()
    task = pipeline(params=defaults, overrides=list(overrides), tracking_uri=uri)
    seconds = time.perf_counter() - tic
    return summarize(
        Path(task.outputs["evaluation"].path), Path(task.outputs["registration"].path), seconds, uri
    )


def summarize(
    evaluation_dir: Path, registration_dir: Path, seconds: float, tracking_uri: str
) -> dict[str, Any]:
    """Headline numbers of a finished run, from its evaluation and registration outputs."""
    reg = json.loads((registration_dir / "registration.json").read_text())
    metrics = json.loads((evaluation_dir / "metrics.json").read_text())
    return {
        "evaluation_dir": str(evaluation_dir),
        "registration_dir": str(registration_dir),
        "seconds": round(seconds, 1),
        "exits": metrics["exits"],
        "full_accuracy": metrics["full"]["accuracy"],
        "static_petl_accuracy": metrics["static_petl"]["accuracy"],
        "frozen_probe_exits": (metrics.get("frozen_probe") or {}).get("exits"),
        "iso_accuracy": metrics["iso_accuracy"],
        "registered": {k: reg.get(k) for k in ("name", "version", "aliases", "reason")},
        "tracking_uri": tracking_uri,
    }


def format_summary(s: dict[str, Any]) -> str:
    iso = s["iso_accuracy"]
    lines = [
        f"pipeline finished in {s['seconds'] / 60:.1f} min",
        "test accuracy per exit: "
        + ", ".join(
            f"block {e['block']}: {e['accuracy']:.4f} ({e['gflops_cumulative']:.3f} GFLOPs)"
            for e in s["exits"]
        ),
    ]
    if s.get("frozen_probe_exits"):
        lines.append(
            "frozen-probe baseline per exit: "
            + ", ".join(f"{e['accuracy']:.4f}" for e in s["frozen_probe_exits"])
        )
    lines.append(f"static PETL baseline: {s['static_petl_accuracy']:.4f}")
    if iso["gflops_ratio"] is not None:
        lines.append(
            f"iso-accuracy: {iso['accuracy']:.4f} at {iso['gflops_ratio']:.3f} of the full "
            f"GFLOPs ({1 - iso['gflops_ratio']:.1%} saved; budget {iso['budget']:g})"
        )
    else:
        lines.append("iso-accuracy: no searched budget reached the static PETL accuracy")
    r = s["registered"]
    lines.append(
        f"registered {r['name']} version {r['version']} aliases {', '.join(r['aliases'])}: "
        f"{r['reason']}"
    )
    lines.append(f"MLflow: {s['tracking_uri']}")
    return "\n".join(lines)


def submit(
    host: str,
    package: str | Path = COMPILED["demo"],
    arguments: dict[str, Any] | None = None,
    experiment: str = "dyn-adapter",
    run_name: str | None = None,
    namespace: str | None = None,
    existing_token: str | None = None,
    pipeline_root: str | None = None,
) -> str:
    """Submit a compiled package to a Kubeflow Pipelines endpoint; returns the run id.

    ``pipeline_root`` (e.g. ``s3://bucket/kfp``) overrides where the run's artifacts go;
    the cluster's object-store credentials apply, none are sent from here.
    """
    import kfp

    path = Path(package)
    if not path.is_file():
        raise ConfigError(f"{path}: no pipeline package; run `dyn-adapter pipeline compile`")
    client = kfp.Client(host=host, namespace=namespace, existing_token=existing_token)
    run = client.create_run_from_pipeline_package(
        str(path),
        arguments=arguments or {},
        run_name=run_name,
        experiment_name=experiment,
        namespace=namespace,
        pipeline_root=pipeline_root,
    )
    return str(run.run_id)
