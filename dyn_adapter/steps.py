"""Pipeline steps: each stage called with a parsed ``params.yaml`` and directories.

The KFP components (``components/``) are thin shells around these functions: they pass the
pipeline's ``params`` dict and their artifacts' paths, and publish what comes back (finite
floats for ``Metrics``, a confusion matrix, an HTML plot). Nothing here imports KFP, so the
steps run and are tested without it. Every step optionally logs its output directory to
MLflow (``tracking_uri`` empty: no tracking).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .params import Params, params_from_dict

Variant = str  # "dyn" (Dyn-Adapter), "probe" (frozen linear probes), "static" (final exit only)
VARIANTS = ("dyn", "probe", "static")
TASK_FILE = "task.txt"


@contextmanager
def user_errors(stage: str) -> Iterator[None]:
    """A component's body: an error the user can fix ends the task with the CLI's one-line
    message and exit status 2, not a traceback."""
    try:
        yield
    except ConfigError as e:
        print(f"dyn-adapter {stage}: error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


# The run form of the compiled pipeline: top-level parameters the KFP UI shows, each setting
# one params.yaml key (they apply over ``params``, under ``overrides``).
RUN_FORM = {
    "data_source": "data.source",
    "data_path": "data.path",
    "petl_method": "model.petl.method",
    "epochs": "train.epochs",
    "budgets": "search.budgets",
    "model_name": "register.model_name",
}


def run_form_overrides(
    params: dict[str, Any], overrides: Sequence[str], form: dict[str, Any]
) -> list[str]:
    """The overrides every task of a run applies: the run form's fields (``RUN_FORM``), then
    the run's own ``overrides``. Validated here, so bad input stops the run at its first task."""
    unknown = sorted(set(form) - set(RUN_FORM))
    if unknown:
        raise ConfigError(f"run form: unknown field(s) {', '.join(unknown)}")
    merged = [f"{RUN_FORM[name]}={json.dumps(_restore_ints(v))}" for name, v in form.items()]
    merged += list(overrides)
    load(params, merged)
    return merged


def load(params: dict[str, Any], overrides: Sequence[str] = ()) -> Params:
    """Validate the pipeline's ``params``.

    KFP carries parameters as protobuf values, where every number is a double: ``20`` arrives
    as ``20.0``. Integral numbers become ints again; float fields turn them back into floats.
    """
    return params_from_dict(_restore_ints(params), overrides)


def _restore_ints(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _restore_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore_ints(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def prepare(params: dict[str, Any], overrides: Sequence[str], out: str) -> dict[str, float]:
    from .data import prepare as stage

    p = load(params, overrides)
    result = stage.run(p.data, p.model.backbone, out)
    return {f"{split}_images": float(n) for split, n in result.counts.items()} | {
        "classes": float(result.num_classes),
        "skipped": float(result.skipped),
    }


def train(
    params: dict[str, Any], overrides: Sequence[str], variant: Variant, data: str, out: str
) -> dict[str, float]:
    """Train one of the three models; only the static baseline reads the test split here
    (``evaluate`` reads it for the others)."""
    from . import train as stage

    if variant not in VARIANTS:
        raise ValueError(f"train variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    p = load(params, overrides)
    model_cfg = {
        "dyn": lambda m: m,
        "probe": stage.frozen_probe,
        "static": stage.static_petl,
    }[variant](p.model)
    cfg = dataclasses.replace(p.train, evaluate_test=variant == "static")
    result = stage.run(model_cfg, cfg, data, out)
    metrics = {f"val_accuracy_exit{k}": a for k, a in enumerate(result.val_accuracy)}
    for k, a in enumerate(result.test_accuracy or []):
        metrics[f"test_accuracy_exit{k}"] = a
    return metrics


def sparsity_grid(params: dict[str, Any], overrides: Sequence[str]) -> list[dict[str, float]]:
    """The sparsity candidates, as the items a ``ParallelFor`` fans out over."""
    from .sparsify import candidates

    return [dataclasses.asdict(c) for c in candidates(load(params, overrides).sparsify)]


def sparsify_candidate(
    params: dict[str, Any],
    overrides: Sequence[str],
    candidate: dict[str, float],
    data: str,
    init_model: str,
    out: str,
) -> dict[str, float]:
    """Fine-tune one candidate into ``out``; its table row goes to ``out/row.json``."""
    from .io import write_json
    from .sparsify import Candidate, run_candidate

    p = load(params, overrides)
    row = run_candidate(
        p.model,
        p.train,
        p.sparsify,
        Candidate(**candidate),
        data,
        Path(init_model) / "model",
        out,
    )
    write_json(Path(out) / "row.json", row)
    return {"score": row["score"]}


def sparsify_select(
    params: dict[str, Any],
    overrides: Sequence[str],
    data: str,
    init_model: str,
    candidate_dirs: Sequence[str],
    out: str,
) -> dict[str, float]:
    """Pick the best of the input model and the fanned-out candidates."""
    from .sparsify import MODEL_DIR, input_row, select

    p = load(params, overrides)
    rows = [input_row(Path(init_model) / MODEL_DIR, data, p.train)]
    for d in candidate_dirs:
        row = json.loads((Path(d) / "row.json").read_text())
        row["model_dir"] = str(Path(d) / MODEL_DIR)  # artifacts move between tasks
        rows.append(row)
    best = select(rows, out)
    return {"score": best["score"]} | {
        f"val_accuracy_exit{k}": a for k, a in enumerate(best["val_accuracy"])
    }


def search(
    params: dict[str, Any], overrides: Sequence[str], model: str, data: str, out: str
) -> dict[str, float]:
    from . import search as stage

    p = load(params, overrides)
    stage.quiet_optuna()
    result = stage.run(
        p.search,
        Path(model) / "model",
        data,
        out,
        eval_batch_size=p.train.eval_batch_size,
        device=p.train.device,
    )
    metrics = {
        "search_seconds": result["search_seconds"],
        "oracle_accuracy": result["oracle"]["accuracy"],
    }
    for row in result["budgets"]:
        metrics[f"val_accuracy_budget_{row['budget']:g}"] = row["accuracy"]
    return metrics


def evaluate(
    params: dict[str, Any],
    overrides: Sequence[str],
    model: str,
    thresholds: str,
    data: str,
    out: str,
    static_model: str | None = None,
    probe_model: str | None = None,
    probe_thresholds: str | None = None,
    task_name: str = "",
) -> dict[str, float]:
    """Evaluate on the test split; ``task_name`` labels the output (``TASK_FILE``) for tables
    collected over several tasks."""
    from . import evaluate as stage

    p = load(params, overrides)
    metrics = stage.run(
        p.evaluate,
        Path(model) / "model",
        thresholds,
        data,
        out,
        static_dir=static_model,
        probe_model_dir=Path(probe_model) / "model" if probe_model else None,
        probe_search_dir=probe_thresholds,
        device=p.train.device,
    )
    if task_name:
        (Path(out) / TASK_FILE).write_text(task_name + "\n")
    return headline(metrics)


def headline(metrics: dict[str, Any]) -> dict[str, float]:
    """The evaluation numbers worth a glance in the KFP UI."""
    out = {
        "full_accuracy": metrics["full"]["accuracy"],
        "full_gflops": metrics["full"]["gflops"],
        "static_petl_accuracy": metrics["static_petl"]["accuracy"],
        "iso_gflops_ratio": metrics["iso_accuracy"]["gflops_ratio"],
        "time_ratio_b1": metrics["speed"]["time_ratio_b1"],
        "time_ratio_b64": metrics["speed"]["time_ratio_b64"],
    }
    for b in metrics["budgets"]:
        out[f"accuracy_budget_{b['budget']:g}"] = b["accuracy"]
        out[f"gflops_ratio_budget_{b['budget']:g}"] = b["gflops_ratio"]
    return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(v)}


def confusion(evaluation: str) -> tuple[list[str], list[list[int]]]:
    """Class names and the confusion matrix ``evaluate`` wrote (rows: true class)."""
    data = json.loads((Path(evaluation) / "plots" / "confusion_matrix.json").read_text())
    return data["classes"], data["matrix"]


def plot_html(evaluation: str) -> str:
    """The accuracy-vs-GFLOPs plot as a self-contained HTML page (the KFP UI's HTML viewer)."""
    png = (Path(evaluation) / "plots" / "accuracy_vs_gflops.png").read_bytes()
    img = base64.b64encode(png).decode("ascii")
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Accuracy vs GFLOPs</title>"
        "</head><body><img alt='accuracy vs GFLOPs' src='data:image/png;base64,"
        f"{img}'></body></html>"
    )


def register(
    params: dict[str, Any],
    overrides: Sequence[str],
    model: str,
    thresholds: str,
    evaluation: str,
    data: str,
    out: str,
    tracking_uri: str,
    pipeline_run_id: str,
) -> dict[str, Any]:
    """Register the evaluated model in MLflow (see ``dyn_adapter.register``)."""
    from . import register as stage

    p = load(params, overrides)
    result = stage.run(
        p.register,
        Path(model) / "model",
        thresholds,
        evaluation,
        data,
        out,
        pipeline_run_id=pipeline_run_id,
        tracking_uri=tracking_uri or None,
    )
    track("register", out, params, overrides, tracking_uri, pipeline_run_id, last=True)
    return result


def vtab_table(
    params: dict[str, Any],
    overrides: Sequence[str],
    tasks: Sequence[str],
    evaluations: Sequence[str],
    out: str,
    tracking_uri: str = "",
    pipeline_run_id: str = "",
) -> dict[str, Any]:
    """Collect every task's evaluation into the VTAB table (``vtab.json``, ``vtab.md``, the
    headline means in ``metrics.json``); the last step of the VTAB pipeline, so it also ends
    the pipeline's MLflow run."""
    from . import vtab
    from .io import write_json

    result = vtab.collect(tasks, evaluations, out)
    (Path(out) / vtab.TABLE_MARKDOWN).write_text(vtab.markdown(result))
    write_json(Path(out) / "metrics.json", vtab.headline(result))
    track("vtab", out, params, overrides, tracking_uri, pipeline_run_id, last=True)
    return result


def track(
    stage: str,
    out: str,
    params: dict[str, Any],
    overrides: Sequence[str],
    tracking_uri: str,
    pipeline_run_id: str,
    last: bool = False,
) -> str | None:
    """Log a finished stage's output directory to MLflow, nested under the pipeline's run
    (one MLflow run per pipeline run, found again by its id); ``last`` ends that run.
    Returns the pipeline's MLflow run id (None: ``tracking_uri`` empty, nothing logged)."""
    if not tracking_uri:
        return None
    from . import tracking
    from .config import to_dict

    p = load(params, overrides)
    parent = tracking.start_pipeline_run(
        tracking_uri,
        p.register.experiment,
        run_name=f"pipeline {pipeline_run_id}",
        pipeline_run_id=pipeline_run_id,
    )
    tracking.log_stage(stage, out, parent, tracking.stage_params(to_dict(p), stage), tracking_uri)
    if last:
        tracking.end_pipeline_run(tracking_uri, parent)
    return parent


# Where `dvc repro` and the CLI's defaults put each stage's output, by the stage names the KFP
# pipeline tracks them under.
DVC_OUTPUTS = {
    "prepare": "outputs/prepared",
    "train-dyn": "outputs/train",
    "train-static": "outputs/static",
    "train-probe": "outputs/probe",
    "sparsify": "outputs/sparsify",
    "search": "outputs/search",
    "search-probe": "outputs/probe_search",
    "evaluate": "outputs/evaluate",
    "register": "outputs/register",
}


def track_outputs(
    params: dict[str, Any],
    overrides: Sequence[str],
    stages: dict[str, str],
    tracking_uri: str,
    pipeline_run_id: str,
) -> str:
    """Log finished stages' output directories (``{stage: dir}``, in order) as one pipeline
    run with a child run per stage, then end it: what the KFP components log as they go, for
    stages run by the CLI or ``dvc repro``. Returns the pipeline's MLflow run id."""
    missing = [d for d in stages.values() if not Path(d).is_dir()]
    if missing:
        raise ConfigError(
            f"{', '.join(missing)}: no such stage output; run the stages first (dvc repro)"
        )
    parent = None
    for i, (stage, out) in enumerate(stages.items()):
        last = i == len(stages) - 1
        parent = track(stage, out, params, overrides, tracking_uri, pipeline_run_id, last=last)
    if parent is None:
        raise ConfigError("track: no stages to log, or no tracking URI")
    return parent
