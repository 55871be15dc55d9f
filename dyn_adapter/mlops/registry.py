"""The model registry: versions, the promotion gate, the ``candidate`` and ``champion`` aliases.

Every registration becomes a new model version with the alias ``candidate``. The alias
``champion`` (what serving loads, ``models:/<name>@champion``) moves to it only when the gate
passes (:mod:`dyn_adapter.mlops.gate`); the decision and its numbers go into the version's
description and tags. Registering the same
pipeline run id again finds that version by its tag instead of registering a duplicate.

Moving ``champion`` (the gate's promotion, by hand, back) is :mod:`dyn_adapter.mlops.champion`.
"""

from __future__ import annotations

import logging
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..artifacts import OperatingPoint
from .champion import (
    CANDIDATE,
    CHAMPION,
    alias_version,
    current_champion,
    is_not_found,
    set_champion,
)
from .config import RegisterConfig
from .gate import GateDecision, gate
from .names import PIPELINE_RUN_TAG
from .store import (
    fluent_api,
    server_errors,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

logger = logging.getLogger(__name__)

# Libraries the pyfunc model needs, pinned to what is installed: MLflow's own inference loads
# the model once more in a subprocess (slow). dyn_adapter itself must be installed where the
# model is served (the project image); it is not on a package index.
_SERVING_LIBRARIES = ("mlflow", "torch", "timm", "safetensors", "numpy", "pandas", "pillow")


# -- registry helpers ---------------------------------------------------------------------


def _find_version(client: MlflowClient, name: str, pipeline_run_id: str) -> Any | None:
    found = client.search_model_versions(
        f"name = '{_quote(name)}' and tags.{PIPELINE_RUN_TAG} = '{_quote(pipeline_run_id)}'"
    )
    return min(found, key=lambda v: int(v.version)) if found else None


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
        return
    except MlflowException as e:
        if not is_not_found(e):
            raise
    try:
        client.create_registered_model(
            name,
            description="Dyn-Adapter early-exit ViT (pyfunc; predict-time param `budget`). "
            f"Aliases: `{CHAMPION}` is served, `{CANDIDATE}` is the latest registration.",
        )
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":  # else a concurrent registration won
            raise


def _pip_requirements() -> list[str]:
    reqs = []
    for lib in _SERVING_LIBRARIES:
        try:
            reqs.append(f"{lib}=={metadata.version(lib)}")
        except metadata.PackageNotFoundError:
            reqs.append(lib)
    return reqs


# -- registering a version ---------------------------------------------------------------


def _input_example(data: Any, count: int = 2) -> Any:
    import numpy as np
    import pandas as pd

    from .pyfunc import IMAGE_COLUMN, encode_image

    images, _ = data.split("test")
    return pd.DataFrame({IMAGE_COLUMN: [encode_image(np.asarray(im)) for im in images[:count]]})


def _log_and_register(
    client: MlflowClient,
    cfg: RegisterConfig,
    paths: dict[str, Path],
    data: Any,
    tracking_uri: str,
    tags: dict[str, str],
    decision: GateDecision,
) -> tuple[Any, str]:
    """Log the pyfunc model in the pipeline's MLflow run (beside its params, dataset and stage
    runs) and register it; returns the version and that run's id."""
    import mlflow

    from .pyfunc import (
        MODEL_ARTIFACT,
        PREPROCESS_ARTIFACT,
        RISK_ARTIFACT,
        THRESHOLDS_ARTIFACT,
        model_signature,
    )
    from .runs import pipeline_run

    parent = pipeline_run(tracking_uri, cfg.experiment, tags[PIPELINE_RUN_TAG])
    status = client.get_run(parent).info.status
    with mlflow.start_run(run_id=parent, nested=mlflow.active_run() is not None) as run:
        mlflow.log_metrics(
            {
                k: float(tags[k])
                for k in ("accuracy", "balanced_accuracy", "gflops_ratio", "full_gflops")
                if tags[k]
            }
        )
        for path in (paths["metrics"], paths["card"]):
            if path.is_file():
                mlflow.log_artifact(str(path), artifact_path="evaluate")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(paths["code"]),
            artifacts={
                MODEL_ARTIFACT: str(paths["model"]),
                THRESHOLDS_ARTIFACT: str(paths["thresholds"]),
                PREPROCESS_ARTIFACT: str(paths["preprocess"]),
                **({RISK_ARTIFACT: str(paths["risk_points"])} if "risk_points" in paths else {}),
            },
            signature=model_signature(),
            input_example=_input_example(data),
            pip_requirements=_pip_requirements(),
        )
        version = client.create_model_version(
            cfg.model_name,
            source=info.model_uri,
            run_id=run.info.run_id,
            tags=tags,  # with the version, atomically: a re-run finds it by pipeline_run_id
            description=decision.reason,
            model_id=info.model_id,
        )
    if status == "RUNNING":  # leaving the run ended it: the pipeline's last stage ends it
        client.update_run(parent, status="RUNNING")
    return version, run.info.run_id


def _version_tags(
    candidate: OperatingPoint,
    decision: GateDecision,
    pipeline_run_id: str,
    model_meta: dict[str, Any],
) -> dict[str, str]:
    """Tags of a new model version: what produced it, its numbers and the gate's verdict."""
    ratio = candidate.gflops_ratio
    return {
        PIPELINE_RUN_TAG: pipeline_run_id,
        "accuracy": f"{candidate.accuracy:.6f}",
        "balanced_accuracy": (
            "" if candidate.balanced_accuracy is None else f"{candidate.balanced_accuracy:.6f}"
        ),
        "accuracy_budget": f"{candidate.budget:g}",
        "gflops_ratio": "" if ratio is None else f"{ratio:.6f}",
        "full_gflops": f"{candidate.full_gflops:.6f}",  # measured as served (merged)
        "backbone_sha256": str(model_meta.get("backbone_sha256", "")),
        "gate": "pass" if decision.passed else "fail",
    }


def _float_tag(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _apply_aliases(
    client: MlflowClient, name: str, version: Any, passed: bool, reused: bool
) -> bool:
    """Set ``candidate`` and (gate passed) ``champion``; returns whether champion moved.

    A re-run only finishes what an interrupted first run left undone: ``candidate`` is not
    moved back from a newer version, and a version promoted once (maybe rolled back since) is
    not promoted again.
    """
    v = str(version.version)
    current = alias_version(client, name, CANDIDATE)
    if not reused or current is None or int(current) < int(v):
        client.set_registered_model_alias(name, CANDIDATE, v)
    if passed and "promoted_at" not in (version.tags or {}):
        set_champion(client, name, v)
        return True
    return False


def register_version(
    cfg: RegisterConfig,
    paths: dict[str, Path],
    data: Any,
    point: OperatingPoint,
    model_meta: dict[str, Any],
    pipeline_run_id: str,
    uri: str,
) -> dict[str, Any]:
    """Log the pyfunc model, register it as a version (or find this pipeline run's version
    again), gate the champion alias; returns what ``registration.json`` records.

    Args:
        cfg: Registry, experiment and gate settings.
        paths: ``model`` (directory), ``thresholds``, ``preprocess``, ``code`` and optionally
            ``risk_points`` (the pyfunc's files), ``metrics`` and ``card`` (logged beside it).
        data: The prepared data (the input example's images).
        point: The evaluated operating point the gate reads.
        model_meta: The model directory's config (its backbone hash becomes a tag).
        pipeline_run_id: Identifies the pipeline run; registering it again reuses its version.
        uri: The tracking store (:func:`~dyn_adapter.mlops.store.resolve_tracking_uri`).
    """
    name = cfg.model_name
    with server_errors(uri), fluent_api(uri) as client:
        _ensure_registered_model(client, name)
        existing = _find_version(client, name, pipeline_run_id)
        if existing is None:
            decision = gate(point, current_champion(client, name, cfg.gate_metric), cfg)
            tags = _version_tags(point, decision, pipeline_run_id, model_meta)
            version, run_id = _log_and_register(client, cfg, paths, data, uri, tags, decision)
            reused = False
        else:  # the same pipeline run again: its recorded decision and numbers stand
            version, run_id, reused = existing, existing.run_id, True
            decision = GateDecision(
                existing.tags.get("gate") == "pass", existing.description or "gate: not recorded"
            )
            logger.info(
                "%s: pipeline run %s is already v%s", name, pipeline_run_id, version.version
            )
        promoted = _apply_aliases(client, name, version, decision.passed, reused)
        v = str(version.version)
        aliases = sorted(client.get_model_version(name, v).aliases or [])
        recorded = dict(version.tags or {})
        experiment = client.get_run(run_id).info.experiment_id if run_id else None
    return {
        "name": name,
        "version": v,
        "aliases": aliases,
        "gate": "pass" if decision.passed else "fail",
        "promoted": promoted,
        "reason": decision.reason,
        "model_uri": f"models:/{name}/{v}",
        "champion_uri": f"models:/{name}@{CHAMPION}",
        "pipeline_run_id": pipeline_run_id,
        "run_id": run_id,
        "experiment_id": experiment,
        "reused": reused,
        "accuracy": _float_tag(recorded.get("accuracy")),
        "gflops_ratio": _float_tag(recorded.get("gflops_ratio")),
    }
