"""The ``track`` stage: the stages' output directories, logged to MLflow as one pipeline run.

What the KFP components log as they go (:func:`~dyn_adapter.mlops.runs.track_stage`), for
stages run by the CLI or ``dvc repro``: one MLflow run with a nested run per stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..artifacts import REGISTRATION_FILE, TRACKING_FILE, read_json
from ..config import to_dict
from ..dvc_stages import TRACKED_OUTPUTS
from ..errors import ConfigError
from ..files import write_json
from ..params import Params
from ..stage_table import stage_params

# Where `dvc repro` and the CLI's defaults put each stage's output, by the stage names the KFP
# pipeline tracks them under.


def track_outputs(
    params: Params,
    stages: dict[str, str],
    tracking_uri: str | None,
    pipeline_run_id: str,
    data_dir: str | None = None,
) -> str:
    """Log finished stages' output directories (``{stage: dir}``, in order) as one pipeline
    run with a child run per stage (``data_dir``, the prepared data they read, as their dataset
    input), then end it. Returns the pipeline's MLflow run id."""
    from ..mlops.runs import track_stage
    from ..mlops.store import resolve_tracking_uri

    missing = [d for d in stages.values() if not Path(d).is_dir()]
    if missing:
        raise ConfigError(
            f"{', '.join(missing)}: no such stage output; run the stages first (dvc repro)"
        )
    if not stages:
        raise ConfigError("track: no stages to log")
    uri = resolve_tracking_uri(tracking_uri)
    parent = None
    for i, (stage, out) in enumerate(stages.items()):
        last = i == len(stages) - 1
        read = stage_params(to_dict(params), stage)
        experiment = params.register.experiment
        parent = track_stage(stage, out, experiment, read, uri, pipeline_run_id, last, data_dir)
    assert parent is not None
    return parent


def run(
    params: Params, out_dir: str | Path, pipeline_run_id: str | None, tracking_uri: str | None
) -> dict[str, Any]:
    """Log :data:`TRACKED_OUTPUTS` into the pipeline run ``pipeline_run_id`` (default: the one
    ``outputs/register`` registered); writes ``tracking.json``."""
    from ..mlops.store import redact_uri, resolve_tracking_uri

    run_id = pipeline_run_id
    if not run_id:
        registration = Path(TRACKED_OUTPUTS["register"]) / REGISTRATION_FILE
        if not registration.is_file():
            raise ConfigError(f"{registration}: missing; run `dyn-adapter register` first")
        run_id = read_json(registration, "register")["pipeline_run_id"]
    uri = resolve_tracking_uri(tracking_uri, params.register.tracking_uri)
    mlflow_run = track_outputs(params, TRACKED_OUTPUTS, uri, run_id, TRACKED_OUTPUTS["prepare"])
    record = {
        "mlflow_run_id": mlflow_run,
        "pipeline_run_id": run_id,
        "experiment": params.register.experiment,
        "tracking_uri": redact_uri(uri),
        "stages": TRACKED_OUTPUTS,
    }
    write_json(Path(out_dir) / TRACKING_FILE, record)
    return record


def describe(record: dict[str, Any], out_dir: Path) -> str:
    """The command's result line."""
    return (
        f"logged {len(record['stages'])} stages as MLflow run {record['mlflow_run_id']} "
        f"({record['tracking_uri']})"
    )
