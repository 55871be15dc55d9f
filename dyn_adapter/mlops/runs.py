"""MLflow tracking of pipeline runs, read from the stages' output directories.

Stages are pure functions that write output directories; tracking reads those directories after
the fact, so the same logging works whether a stage was run by the CLI, DVC or a KFP component.
A pipeline run is one MLflow run (found again by its ``pipeline_run_id`` tag); each stage is a
nested child run (found again by its ``pipeline_stage`` tag), so logging twice reuses the runs
instead of duplicating them.

Nothing that looks like a credential is logged: values of credential-like environment variables
and passwords in URLs are replaced by ``***`` in params, tags, metric names and text artifacts,
and binary artifacts containing one are left out (see :func:`redact`).

``mlflow`` is imported only inside the functions here: the rest of the package imports without it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..manifest import read_timing
from .names import (
    DEFAULT_EXPERIMENT,
    PARENT_TAG,
    PIPELINE_ROLE,
    PIPELINE_RUN_TAG,
    ROLE_TAG,
    RUN_NAME_TAG,
    STAGE_TAG,
)
from .redaction import redact, redact_items, secret_values
from .stage_outputs import (
    artifact_files,
    dataset_input,
    flatten_params,
    manifest_tags,
    stage_artifacts,
    stage_metrics,
)
from .store import experiment_id, mlflow_client, resolve_tracking_uri

if TYPE_CHECKING:
    from mlflow.entities import Metric, Run
    from mlflow.tracking import MlflowClient

logger = logging.getLogger(__name__)


def _entity_key(name: str, secrets: Sequence[str]) -> str:
    """A valid MLflow metric or param name (alphanumerics, ``_-. /``), redacted."""
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", redact(name, secrets))[:250]


# -- MLflow ---------------------------------------------------------------------------------


def _filter_value(value: str, what: str) -> str:
    if not value or "'" in value or "\\" in value:
        raise ConfigError(f"{what} {value!r}: must be non-empty, without quotes or backslashes")
    return value


def _find_runs(client: MlflowClient, experiment_id: str, match: Mapping[str, str]) -> list[Run]:
    """Active runs carrying all tags in ``match``, oldest first."""
    query = " and ".join(f"tags.`{k}` = '{_filter_value(v, k)}'" for k, v in match.items())
    runs = list(client.search_runs([experiment_id], filter_string=query, max_results=1000))
    return sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))


def _get_or_create_run(
    client: MlflowClient,
    experiment_id: str,
    match: Mapping[str, str],
    tags: Mapping[str, str],
    start_time: int | None = None,
) -> tuple[Run, bool]:
    """The oldest active run with the ``match`` tags, or a new one; ``(run, created)``.

    Two processes creating it at once both see both runs afterwards: the younger is deleted.
    """
    found = _find_runs(client, experiment_id, match)
    if found:
        return found[0], False
    run = client.create_run(experiment_id, start_time=start_time, tags={**tags, **match})
    found = _find_runs(client, experiment_id, match)
    if found and found[0].info.run_id != run.info.run_id:
        client.delete_run(run.info.run_id)
        return found[0], False
    return run, True


def _log_batch(
    client: MlflowClient,
    run_id: str,
    metrics: Sequence[Metric] = (),
    params: Mapping[str, str] | None = None,
    tags: Mapping[str, str] | None = None,
) -> None:
    """``log_batch`` within MLflow's per-request limits."""
    from mlflow.entities import Param, RunTag
    from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH

    p = [Param(k, v) for k, v in (params or {}).items()]
    t = [RunTag(k, v) for k, v in (tags or {}).items()]
    n = MAX_PARAMS_TAGS_PER_BATCH
    for i in range(0, len(p), n):
        client.log_batch(run_id, params=p[i : i + n], synchronous=True)
    for i in range(0, len(t), n):
        client.log_batch(run_id, tags=t[i : i + n], synchronous=True)
    m = list(metrics)
    for i in range(0, len(m), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=m[i : i + MAX_METRICS_PER_BATCH], synchronous=True)


def _new_metrics(client: MlflowClient, run: Run, metrics: Iterable[Metric]) -> list[Metric]:
    """Leave out ``(key, step, value)`` points the run already has: re-logging adds nothing."""
    wanted = list(metrics)
    logged = set(run.data.metrics)
    have: dict[str, set[tuple[int, float]]] = {}
    for key in {m.key for m in wanted} & logged:
        have[key] = {(h.step, h.value) for h in client.get_metric_history(run.info.run_id, key)}
    return [m for m in wanted if (m.step, m.value) not in have.get(m.key, set())]


def _new_params(run: Run, params: Mapping[str, str], what: str) -> dict[str, str]:
    """Params the run does not have yet; a changed value is an error (MLflow params are fixed)."""
    old = run.data.params
    changed = sorted(k for k, v in params.items() if k in old and old[k] != v)
    if changed:
        k = changed[0]
        raise ConfigError(
            f"{what} (MLflow run {run.info.run_id}) was logged with {k}={old[k]!r}, now "
            f"{params[k]!r}: a pipeline run's params cannot change; use a new pipeline_run_id"
        )
    return {k: v for k, v in params.items() if k not in old}


def _metrics(values: Iterable[tuple[str, float, int]], secrets: Sequence[str]) -> list[Metric]:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(_entity_key(k, secrets), float(v), now, step) for k, v, step in values]


def start_pipeline_run(
    tracking_uri: str | None,
    experiment: str = DEFAULT_EXPERIMENT,
    run_name: str | None = None,
    tags: Mapping[str, object] | None = None,
    *,
    pipeline_run_id: str | None = None,
) -> str:
    """The MLflow run of one pipeline run, created or found again by its ``pipeline_run_id`` tag.

    Args:
        tracking_uri: ``sqlite:///...`` or a server URL; None: the rule of
            :func:`~dyn_adapter.mlops.store.resolve_tracking_uri`.
        experiment: Experiment name; created when missing.
        run_name: Display name; defaults to the pipeline run id.
        tags: More tags (redacted).
        pipeline_run_id: The id that identifies the pipeline run (a KFP job id, a DVC
            experiment name); defaults to ``tags["pipeline_run_id"]``, then ``run_name``.

    Returns:
        The MLflow run id.
    """
    tags = dict(tags or {})
    run_id = pipeline_run_id or str(tags.pop(PIPELINE_RUN_TAG, "") or "") or run_name
    if not run_id:
        raise ConfigError("start_pipeline_run: pass pipeline_run_id (or a run_name)")
    uri = resolve_tracking_uri(tracking_uri)
    secrets = secret_values()
    client = mlflow_client(uri)
    exp_id = experiment_id(client, experiment, uri, where="register.experiment")
    clean = redact_items(tags, secrets)
    clean[RUN_NAME_TAG] = redact(run_name or run_id, secrets)
    match = {PIPELINE_RUN_TAG: run_id, ROLE_TAG: PIPELINE_ROLE}
    run, created = _get_or_create_run(client, exp_id, match, clean)
    if not created:
        _log_batch(client, run.info.run_id, tags=clean)
    logger.info("MLflow run %s for pipeline run %s", run.info.run_id, run_id)
    return run.info.run_id


def pipeline_run(tracking_uri: str | None, experiment: str, pipeline_run_id: str) -> str:
    """The MLflow run of ``pipeline_run_id``, as every stage and the registration find it."""
    return start_pipeline_run(
        tracking_uri,
        experiment,
        run_name=f"pipeline {pipeline_run_id}",
        pipeline_run_id=pipeline_run_id,
    )


def end_pipeline_run(tracking_uri: str, run_id: str, status: str = "FINISHED") -> None:
    """Mark a pipeline's MLflow run ``FINISHED`` (or ``FAILED``, ``KILLED``)."""
    mlflow_client(tracking_uri).set_terminated(run_id, status=status)


def log_stage(
    stage: str,
    out_dir: str | os.PathLike[str],
    parent_run_id: str,
    params: Mapping[str, Any] | None = None,
    tracking_uri: str | None = None,
    *,
    tags: Mapping[str, object] | None = None,
    extra_artifacts: Sequence[str] = (),
    data_dir: str | os.PathLike[str] | None = None,
    summary: bool = False,
) -> str:
    """Log one stage's output directory as a child run of the pipeline's run.

    The child run is created, or found again by its ``pipeline_stage`` tag under this parent,
    and gets: ``params`` flattened to dotted keys, plus the settings its result restates;
    per-epoch metrics of every ``train_log.json`` with ``step=epoch``; the result file's
    numbers (``metrics.json``, search's ``thresholds.json``, calibrate's ``risk_points.json``)
    named as :func:`~dyn_adapter.mlops.stage_outputs.stage_numbers` names them; tags from
    ``manifest.json``; ``data_dir`` as its dataset input; and the artifacts
    :func:`artifact_files` picks. The parent gets the params (each key once) and the dataset.
    Points, params and artifacts already logged are not duplicated.

    Args:
        stage: Stage name (``train``, ``train-probe``, ``evaluate``, ...).
        out_dir: The directory the stage wrote.
        parent_run_id: From :func:`start_pipeline_run`.
        params: The params the stage read, nested (see :func:`stage_params`).
        tracking_uri: As for :func:`start_pipeline_run`.
        tags: More tags for the child run (redacted).
        extra_artifacts: Globs of further files to log (``optuna.db``).
        data_dir: The prepared data the stage read: logged as the run's dataset input.
        summary: The stage sums up the pipeline (the VTAB table): its result's metrics go to
            the parent too, prefixed ``<stage>.``.

    Returns:
        The child run's id.
    """
    out = Path(out_dir)
    if not out.is_dir():
        raise ConfigError(f"log_stage {stage}: {out} is not a directory")
    _filter_value(stage, "stage name")
    uri = resolve_tracking_uri(tracking_uri)
    secrets = secret_values()
    client = mlflow_client(uri)
    parent = client.get_run(parent_run_id)

    final, epochs, settings = stage_metrics(out)
    clean_params = {
        _entity_key(k, secrets): v
        for k, v in redact_items(flatten_params(params or {}), secrets).items()
    }
    clean_settings = {
        _entity_key(k, secrets): v for k, v in redact_items(settings, secrets).items()
    }
    child_tags = redact_items({**manifest_tags(out), **(tags or {})}, secrets)
    child_tags[RUN_NAME_TAG] = redact(stage, secrets)
    pipeline_id = parent.data.tags.get(PIPELINE_RUN_TAG)
    if pipeline_id:
        child_tags[PIPELINE_RUN_TAG] = pipeline_id

    # When the stage ran (its command's record), not when it is logged.
    timing = read_timing(out)
    run, _ = _get_or_create_run(
        client,
        parent.info.experiment_id,
        {PARENT_TAG: parent_run_id, STAGE_TAG: stage},
        child_tags,
        start_time=timing[0] if timing else None,
    )
    child_id = run.info.run_id
    try:
        new_params = _new_params(run, clean_params, f"stage {stage}")
        # What the result restates of the configuration (the exits' blocks, the budgets):
        # params too, logged once; unlike the stage's params, a re-run may not change them.
        new_params |= {
            k: v
            for k, v in clean_settings.items()
            if k not in run.data.params and k not in clean_params
        }
        _log_batch(
            client,
            child_id,
            metrics=_new_metrics(
                client,
                run,
                _metrics([*epochs, *((k, v, 0) for k, v in final.items())], secrets),
            ),
            params=new_params,
            tags=child_tags,
        )
        with tempfile.TemporaryDirectory(prefix="dyn-adapter-artifacts-") as staging:
            n = stage_artifacts(out, artifact_files(out, extra_artifacts), Path(staging), secrets)
            if n:
                client.log_artifacts(child_id, staging)
        if data_dir is not None:
            dataset = dataset_input(data_dir, stage)
            if not (run.inputs and run.inputs.dataset_inputs):
                client.log_inputs(child_id, datasets=[dataset])
            _share_dataset(client, parent, dataset)
        _share_params(client, parent, clean_params)
        if summary:
            prefixed = _metrics(((f"{stage}.{k}", v, 0) for k, v in final.items()), secrets)
            _log_batch(client, parent_run_id, metrics=_new_metrics(client, parent, prefixed))
    except BaseException:
        with contextlib.suppress(Exception):  # the logging error is the one to see
            client.set_terminated(child_id, status="FAILED")
        raise
    client.set_terminated(child_id, status="FINISHED", end_time=timing[1] if timing else None)
    logger.info("logged stage %s (%s) to MLflow run %s", stage, out, child_id)
    return child_id


def _share_params(client: MlflowClient, parent: Run, params: Mapping[str, str]) -> None:
    """The pipeline's run holds the params of all its stages: each key once, as the first stage
    that reads it logged it. A key two stages read differently (each VTAB task's data) stays
    on their own runs."""
    from mlflow.exceptions import MlflowException

    new = {k: v for k, v in params.items() if k not in parent.data.params}
    try:
        _log_batch(client, parent.info.run_id, params=new)
    except MlflowException as e:  # a stage beside this one logged a key differently
        logger.info("pipeline run %s keeps its params (%s)", parent.info.run_id, e.message)


def _share_dataset(client: MlflowClient, parent: Run, dataset: Any) -> None:
    """The pipeline's run holds the data its first stage read; stages running side by side
    may both try, and one adding it is enough."""
    from mlflow.exceptions import MlflowException

    if parent.inputs and parent.inputs.dataset_inputs:
        return
    try:
        client.log_inputs(parent.info.run_id, datasets=[dataset])
    except MlflowException as e:
        logger.info("pipeline run %s has its dataset (%s)", parent.info.run_id, e.message)


def track_stage(
    stage: str,
    out_dir: str | os.PathLike[str],
    experiment: str,
    stage_params: Mapping[str, Any],
    tracking_uri: str,
    pipeline_run_id: str,
    last: bool = False,
    data_dir: str | os.PathLike[str] | None = None,
) -> str | None:
    """Log a finished stage's output directory to MLflow, nested under the pipeline's run in
    ``experiment`` (one MLflow run per pipeline run, found again by its id), with
    ``stage_params`` (the params.yaml keys it read: ``params.stage_params``) as its params;
    ``last`` ends that run, which gets the stage's metrics (the pipeline's summary: the VTAB
    table); ``data_dir``: the prepared data it read (its dataset input).

    Returns:
        The pipeline's MLflow run id; ``None`` when ``tracking_uri`` is empty (nothing logged).
    """
    if not tracking_uri:
        return None
    parent = pipeline_run(tracking_uri, experiment, pipeline_run_id)
    log_stage(stage, out_dir, parent, stage_params, tracking_uri, data_dir=data_dir, summary=last)
    if last:
        end_pipeline_run(tracking_uri, parent)
    return parent
