"""What every component body shares: KFP's conventions on one side, the stages on the other.

A component receives the pipeline's ``params`` (a dict whose numbers arrive as doubles) and its
``overrides``; :func:`load` turns them into :class:`~dyn_adapter.params.Params` for the stage
functions (``dyn_adapter.stages``), which every component calls and nothing here re-derives.
:func:`user_errors` ends a task with the CLI's one-line message, :func:`track` logs a finished
stage to MLflow. Nothing here imports KFP, so it runs and is tested without it.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dyn_adapter.errors import USER_ERRORS, ConfigError
from dyn_adapter.params import Params, params_from_dict

_started: float | None = None  # when the component's body began (its stage's start)


@contextmanager
def user_errors(stage: str) -> Iterator[None]:
    """A component's body: an error the user can fix ends the task with the CLI's one-line
    message and exit status 2, not a traceback. Notes when the stage started (``track``)."""
    global _started
    _started = time.time()
    try:
        yield
    except USER_ERRORS as e:
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


def track(
    stage: str,
    out: str,
    params: Params,
    tracking_uri: str,
    pipeline_run_id: str,
    data: str | None = None,
    last: bool = False,
) -> None:
    """Log a finished stage's output to the pipeline's MLflow run (``tracking_uri`` empty: not
    logged), with ``data``, the prepared data it read, as its dataset input; ``last`` ends the
    run."""
    if _started is not None:
        from dyn_adapter.manifest import write_timing

        write_timing(out, _started)
    if tracking_uri:
        from dyn_adapter.config import to_dict
        from dyn_adapter.mlops.runs import track_stage
        from dyn_adapter.stage_table import stage_params

        read = stage_params(to_dict(params), stage)
        experiment = params.register.experiment
        track_stage(stage, out, experiment, read, tracking_uri, pipeline_run_id, last, data)


def plot_html(png: str | Path, title: str = "Accuracy vs GFLOPs") -> str:
    """A PNG plot as a self-contained HTML page (the KFP UI's HTML viewer)."""
    img = base64.b64encode(Path(png).read_bytes()).decode("ascii")
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"</head><body><img alt='{title}' src='data:image/png;base64,{img}'></body></html>"
    )
