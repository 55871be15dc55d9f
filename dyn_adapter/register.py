"""The ``register`` stage: log the searched model as an MLflow pyfunc, register it, gate promotion.

Every registration becomes a new model version with the alias ``candidate``. The alias
``champion`` (what serving loads, ``models:/<name>@champion``) moves to it only when the gate
passes: its test accuracy is not below the current champion's by more than
``accuracy_tolerance``, and its iso-accuracy GFLOPs ratio is at most ``max_gflops_ratio``. The
decision and its numbers go into the version's description and tags, and into
``registration.json``. Re-running for the same pipeline run id finds that version by its tag
instead of registering a duplicate.

Champions are kept as a history (a JSON list of versions in the registered model's tag
``champion_history``), so :func:`rollback` can move ``champion`` back to the previous one.

MLflow is imported inside the functions: the package imports without it. Credentials reach
MLflow through its environment variables only (``MLFLOW_TRACKING_TOKEN``,
``MLFLOW_TRACKING_USERNAME``/``PASSWORD``, ``AWS_*``); they are never written to params, tags,
descriptions or outputs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .config import to_dict
from .errors import ConfigError
from .io import sha256_file, write_json
from .manifest import stage_manifest
from .tracking import default_artifact_location, embedded_tracking_uri, mlflow_client, sqlite_path

if TYPE_CHECKING:
    from mlflow import MlflowClient

logger = logging.getLogger(__name__)

REGISTRATION_FILE = "registration.json"
CHAMPION = "champion"
CANDIDATE = "candidate"
HISTORY_TAG = "champion_history"
RUN_ID_TAG = "pipeline_run_id"
HISTORY_LIMIT = 100  # registered-model tag values are bounded (5000 characters)
EMBEDDED_DIR = Path("outputs") / "mlflow"
# Libraries the pyfunc model needs, pinned to what is installed: MLflow's own inference loads
# the model once more in a subprocess (slow). dyn_adapter itself must be installed where the
# model is served (the project image); it is not on a package index.
_SERVING_LIBRARIES = ("mlflow", "torch", "timm", "safetensors", "numpy", "pandas", "pillow")
# MLflow retries a failed request 7 times, 2 * 2**n s apart (~4 minutes), and waits 120 s for
# each answer: a tracking server that is down would hang registration for minutes per request.
# Unless set in the environment, these apply while registering: ~6-9 s of retries in all.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


@dataclass
class RegisterConfig:
    """Model registration and the promotion gate.

    Attributes:
        model_name: Registered model name in the MLflow registry.
        tracking_uri: MLflow tracking (and registry) URI. ``None``: ``$MLFLOW_TRACKING_URI``
            if set, else an embedded SQLite store ``outputs/mlflow/mlflow.db`` with artifacts
            under ``outputs/mlflow/artifacts`` (:func:`embedded_tracking_uri`). Never put
            credentials here: MLflow reads them from its environment variables.
        experiment: Experiment the registration runs are logged to.
        accuracy_tolerance: A candidate may not be below the current champion's test accuracy
            by more than this (absolute) to become champion. The accuracy compared is the test
            accuracy at the iso-accuracy budget, or at the largest budget when none reaches it.
        max_gflops_ratio: The candidate's ``iso_accuracy.gflops_ratio`` (GFLOPs over the full
            model's at iso accuracy) must be at most this to become champion; ``None`` disables
            the condition.
    """

    model_name: str = "dyn-adapter"
    tracking_uri: str | None = None
    experiment: str = "dyn-adapter"
    accuracy_tolerance: float = 0.005
    max_gflops_ratio: float | None = 0.6

    def __post_init__(self) -> None:
        if not self.model_name.strip():
            raise ConfigError("register.model_name: must not be empty")
        if not self.experiment.strip():
            raise ConfigError("register.experiment: must not be empty")
        if not (math.isfinite(self.accuracy_tolerance) and self.accuracy_tolerance >= 0):
            raise ConfigError(
                f"register.accuracy_tolerance: must be a number >= 0, got {self.accuracy_tolerance}"
            )
        if self.max_gflops_ratio is not None and not 0 < self.max_gflops_ratio <= 1:
            raise ConfigError(
                f"register.max_gflops_ratio: must be in (0, 1] or null, got {self.max_gflops_ratio}"
            )
        if self.tracking_uri is not None:
            check_no_credentials(self.tracking_uri, "register.tracking_uri")


# -- tracking URIs ------------------------------------------------------------------------


def resolve_tracking_uri(configured: str | None = None, root: str | Path = ".") -> str:
    """``configured``, else ``$MLFLOW_TRACKING_URI``, else the embedded store under ``root``."""
    uri = (
        configured
        or os.environ.get("MLFLOW_TRACKING_URI")
        or embedded_tracking_uri(Path(root) / EMBEDDED_DIR)
    )
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)  # SQLite does not create directories
    return uri


def check_no_credentials(uri: str, where: str) -> None:
    """Refuse a URI that carries a user name or password (it would end up in files and logs).

    Raises:
        ConfigError: ``user:password@`` in the URI.
    """
    if urlsplit(uri).username is not None or urlsplit(uri).password is not None:
        raise ConfigError(
            f"{where}: the URI carries credentials; remove them and set MLFLOW_TRACKING_USERNAME/"
            "MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN in the environment instead"
        )


def redact_uri(uri: str) -> str:
    """``uri`` without user info and query string: safe to write down."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc and not parts.query:
        return uri
    host = parts.netloc.rsplit("@", 1)[-1]
    return f"{parts.scheme}://{host}{parts.path}"


@contextmanager
def _using(tracking_uri: str) -> Iterator[MlflowClient]:
    """Point MLflow's fluent API (runs, ``log_model``) at ``tracking_uri`` for a block.

    ``mlflow.set_tracking_uri`` also exports ``MLFLOW_TRACKING_URI``; the previous URIs and
    environment are put back afterwards, so library callers see no lasting change.
    """
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    old_tracking = getattr(tracking_utils, "_tracking_uri", None)
    old_registry = getattr(registry_utils, "_registry_uri", None)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        yield _client(tracking_uri)
    finally:
        # None (nothing set before) is what MLflow itself restores to; its stubs say str only.
        mlflow.set_tracking_uri(old_tracking)  # type: ignore[arg-type]
        registry_utils._registry_uri = old_registry
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def _tracking_server(tracking_uri: str) -> Iterator[None]:
    """Bounded HTTP retries (:data:`HTTP_DEFAULTS` for variables the user has not set) for a
    block, and a ConfigError naming the server when it cannot be reached at all."""
    from mlflow.exceptions import MlflowException

    added = [key for key in HTTP_DEFAULTS if key not in os.environ]
    os.environ.update({key: HTTP_DEFAULTS[key] for key in added})
    try:
        yield
    except MlflowException as e:
        if not _unreachable(e):
            raise
        retries, timeout = (
            os.environ.get(k)
            for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")
        )
        raise ConfigError(
            f"cannot reach the MLflow tracking server at {redact_uri(tracking_uri)} "
            f"({retries} retries, {timeout} s timeout each): {e.message}; start the server or fix "
            "register.tracking_uri / --tracking-uri / $MLFLOW_TRACKING_URI "
            "(MLFLOW_HTTP_REQUEST_MAX_RETRIES and MLFLOW_HTTP_REQUEST_TIMEOUT set how long to wait)"
        ) from None
    finally:
        for key in added:
            os.environ.pop(key, None)


def _unreachable(e: BaseException) -> bool:
    """Whether an MLflow error is a connection failure or a timeout (after its retries)."""
    import requests

    cause = e.__cause__ or e.__context__
    return isinstance(cause, requests.exceptions.ConnectionError | requests.exceptions.Timeout)


# -- the gate -----------------------------------------------------------------------------


@dataclass
class Candidate:
    """What the gate and the tags need from the evaluate and search outputs.

    Attributes:
        accuracy: Test accuracy at the iso-accuracy budget (at the largest budget if none).
        budget: The budget that accuracy was measured at.
        gflops_ratio: ``iso_accuracy.gflops_ratio``; ``None`` when no budget reaches it.
        full_gflops: GFLOPs of the full model (last exit).
    """

    accuracy: float
    budget: float
    gflops_ratio: float | None
    full_gflops: float


@dataclass
class GateDecision:
    """Whether a candidate becomes champion, and why (with the numbers)."""

    passed: bool
    reason: str


def candidate_from_metrics(metrics: dict[str, Any], where: str = "metrics.json") -> Candidate:
    """The gate's view of the evaluate stage's ``metrics.json``.

    Raises:
        ConfigError: Keys the evaluate stage writes are missing.
    """
    try:
        iso = metrics["iso_accuracy"]
        full_gflops = float(metrics["full"]["gflops"])
        if iso.get("gflops_ratio") is not None:
            return Candidate(
                float(iso["accuracy"]),
                float(iso["budget"]),
                float(iso["gflops_ratio"]),
                full_gflops,
            )
        largest = max(metrics["budgets"], key=lambda b: b["budget"])
        return Candidate(float(largest["accuracy"]), float(largest["budget"]), None, full_gflops)
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(
            f"{where}: not an evaluate stage output (missing {e}); run `dyn-adapter evaluate` again"
        ) from None


def gate(
    candidate: Candidate,
    champion: tuple[str, float | None] | None,
    cfg: RegisterConfig,
) -> GateDecision:
    """Decide whether ``candidate`` replaces the champion.

    Args:
        candidate: The new version's numbers.
        champion: ``(version, test accuracy)`` of the current champion (accuracy ``None`` if
            it has no ``accuracy`` tag), or ``None`` when there is none yet.
        cfg: Tolerance and GFLOPs limit.
    """
    checks: list[tuple[bool, str]] = []
    acc = f"test accuracy {candidate.accuracy:.4f} (budget {candidate.budget:g})"
    if champion is None:
        checks.append((True, f"{acc}; no champion yet"))
    elif champion[1] is None:
        checks.append(
            (False, f"{acc}; champion v{champion[0]} has no accuracy tag: promote by hand")
        )
    else:
        floor = champion[1] - cfg.accuracy_tolerance
        ok = candidate.accuracy >= floor - 1e-12
        checks.append(
            (
                ok,
                f"{acc} {'>=' if ok else '<'} champion v{champion[0]}'s {champion[1]:.4f} - "
                f"tolerance {cfg.accuracy_tolerance:g}",
            )
        )
    limit = cfg.max_gflops_ratio
    ratio = candidate.gflops_ratio
    if limit is None:
        checks.append((True, "GFLOPs ratio not gated"))
    elif ratio is None:
        checks.append(
            (False, f"no budget reaches iso accuracy, so no GFLOPs ratio to check (max {limit:g})")
        )
    else:
        ok = ratio <= limit + 1e-12
        checks.append(
            (ok, f"iso-accuracy GFLOPs ratio {ratio:.3f} {'<=' if ok else '>'} {limit:g}")
        )
    passed = all(ok for ok, _ in checks)
    return GateDecision(
        passed, f"gate {'pass' if passed else 'fail'}: " + "; ".join(t for _, t in checks)
    )


# -- registry helpers ---------------------------------------------------------------------


def _history(client: MlflowClient, name: str) -> list[str]:
    raw = client.get_registered_model(name).tags.get(HISTORY_TAG)
    try:
        history = json.loads(raw) if raw else []
    except json.JSONDecodeError:
        logger.warning(
            "%s: tag %s is not JSON (%r); starting a new history", name, HISTORY_TAG, raw
        )
        return []
    return [str(v) for v in history] if isinstance(history, list) else []


def _set_history(client: MlflowClient, name: str, history: list[str]) -> None:
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history[-HISTORY_LIMIT:]))


def _client(tracking_uri: str) -> MlflowClient:
    return mlflow_client(tracking_uri, registry_uri=tracking_uri)


def _not_found(e: Exception) -> bool:
    return getattr(e, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


def _registered_model(client: MlflowClient, name: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as e:
        if _not_found(e):
            raise ConfigError(
                f"no registered model {name!r} in this tracking store; check --name and "
                "--tracking-uri (or register.model_name / register.tracking_uri)"
            ) from None
        raise


def _alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    version = (_registered_model(client, name).aliases or {}).get(alias)
    return None if version is None else str(version)


def _model_version(client: MlflowClient, name: str, version: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, str(version))
    except MlflowException as e:
        if not _not_found(e):
            raise
        raise ConfigError(
            f"registered model {name!r} has no version {version!r}; list its versions in the "
            "MLflow UI or with `mlflow.search_model_versions`"
        ) from None


def _champion(client: MlflowClient, name: str) -> tuple[str, float | None] | None:
    version = _alias_version(client, name, CHAMPION)
    if version is None:
        return None
    tag = client.get_model_version(name, version).tags.get("accuracy")
    try:
        return version, float(tag) if tag is not None else None
    except ValueError:
        return version, None


def _find_version(client: MlflowClient, name: str, pipeline_run_id: str) -> Any | None:
    found = client.search_model_versions(
        f"name = '{_quote(name)}' and tags.{RUN_ID_TAG} = '{_quote(pipeline_run_id)}'"
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
        if not _not_found(e):
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


def _experiment_id(client: MlflowClient, name: str, tracking_uri: str) -> str:
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(
                name, artifact_location=default_artifact_location(tracking_uri)
            )
        except MlflowException:
            exp = client.get_experiment_by_name(name)  # created concurrently
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        raise ConfigError(
            f"register.experiment: experiment {name!r} is deleted; restore it "
            "(`mlflow experiments restore`) or choose another name"
        )
    return str(exp.experiment_id)


def _pip_requirements() -> list[str]:
    reqs = []
    for lib in _SERVING_LIBRARIES:
        try:
            reqs.append(f"{lib}=={metadata.version(lib)}")
        except metadata.PackageNotFoundError:
            reqs.append(lib)
    return reqs


# -- promote / rollback -------------------------------------------------------------------


def _promote(client: MlflowClient, name: str, version: str) -> dict[str, Any]:
    previous = _alias_version(client, name, CHAMPION)
    client.set_registered_model_alias(name, CHAMPION, version)
    history = _history(client, name)
    if not history or history[-1] != version:
        history.append(version)
    _set_history(client, name, history)
    client.set_model_version_tag(name, version, "promoted_at", _now())
    logger.info("%s: champion v%s (was %s)", name, version, f"v{previous}" if previous else "none")
    return {"name": name, "version": version, "previous": previous, "history": history}


def promote(name: str, version: str | int, tracking_uri: str | None = None) -> dict[str, Any]:
    """Make ``version`` the champion by hand (no gate), recording it in the champion history.

    Returns:
        ``name``, ``version`` (the new champion), ``previous`` (the old one or ``None``) and
        ``history``.

    Raises:
        ConfigError: No such registered model or version.
    """
    if tracking_uri is not None:
        check_no_credentials(tracking_uri, "--tracking-uri")
    uri = resolve_tracking_uri(tracking_uri)
    with _tracking_server(uri):
        client = _client(uri)
        _model_version(client, name, str(version))
        return _promote(client, name, str(version))


def rollback(name: str, tracking_uri: str | None = None) -> dict[str, Any]:
    """Move ``champion`` back to the champion before the current one.

    The current champion is dropped from the end of the history; versions deleted since are
    skipped.

    Returns:
        ``name``, ``version`` (the champion now), ``previous`` (the one rolled back) and
        ``history``.

    Raises:
        ConfigError: No champion, or no earlier champion to go back to.
    """
    if tracking_uri is not None:
        check_no_credentials(tracking_uri, "--tracking-uri")
    uri = resolve_tracking_uri(tracking_uri)
    with _tracking_server(uri):
        return _rollback(_client(uri), name)


def _rollback(client: MlflowClient, name: str) -> dict[str, Any]:
    current = _alias_version(client, name, CHAMPION)
    if current is None:
        raise ConfigError(f"registered model {name!r} has no {CHAMPION}: nothing to roll back")
    history = _history(client, name)
    if history and history[-1] == current:
        history.pop()  # else the alias was moved outside promote(): keep what we know
    while history and (history[-1] == current or not _exists(client, name, history[-1])):
        history.pop()
    if not history:
        raise ConfigError(
            f"registered model {name!r}: no champion before v{current} to roll back to; "
            "use `dyn-adapter promote --name NAME --version N` to pick one"
        )
    target = history[-1]
    client.set_registered_model_alias(name, CHAMPION, target)
    _set_history(client, name, history)
    client.set_model_version_tag(name, current, "rolled_back_at", _now())
    logger.info("%s: champion rolled back from v%s to v%s", name, current, target)
    return {"name": name, "version": target, "previous": current, "history": history}


def _exists(client: MlflowClient, name: str, version: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_model_version(name, version)
        return True
    except MlflowException as e:
        if _not_found(e):
            return False
        raise


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# -- the stage ----------------------------------------------------------------------------


def _read_json(path: Path, stage: str) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: missing; run `dyn-adapter {stage}` first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"{path}: not valid JSON ({e}); run `dyn-adapter {stage}` again"
        ) from None


def default_pipeline_run_id(
    model_dir: str | Path, search_dir: str | Path, evaluate_dir: str | Path
) -> str:
    """A run id that names these inputs: a hash of the weights, thresholds and test metrics.

    The same inputs give the same id, so registering them twice reuses the version.
    """
    from .evaluate import METRICS_FILE
    from .models.checkpoint import CONFIG_FILE, WEIGHTS_FILE
    from .search import THRESHOLDS_FILE

    h = hashlib.sha256()
    for path in (
        Path(model_dir) / WEIGHTS_FILE,
        Path(model_dir) / CONFIG_FILE,
        Path(search_dir) / THRESHOLDS_FILE,
        Path(evaluate_dir) / METRICS_FILE,
    ):
        if not path.is_file():
            raise ConfigError(f"{path}: missing; run the stage that writes it first")
        h.update(sha256_file(path).encode())
    return f"local-{h.hexdigest()[:16]}"


def _input_example(data: Any, count: int = 2) -> Any:
    import numpy as np
    import pandas as pd

    from .serving import IMAGE_COLUMN, encode_image

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
    """Log the pyfunc model in a new run and register it; returns the version and the run id."""
    import mlflow

    from .serving import (
        MODEL_ARTIFACT,
        PREPROCESS_ARTIFACT,
        THRESHOLDS_ARTIFACT,
        model_signature,
    )

    experiment_id = _experiment_id(client, cfg.experiment, tracking_uri)
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=f"register-{tags[RUN_ID_TAG]}",
        tags={RUN_ID_TAG: tags[RUN_ID_TAG]},
        nested=mlflow.active_run() is not None,
    ) as run:
        mlflow.log_params(
            {
                "model_name": cfg.model_name,
                "accuracy_tolerance": cfg.accuracy_tolerance,
                "max_gflops_ratio": cfg.max_gflops_ratio,
            }
        )
        mlflow.log_metrics(
            {k: float(tags[k]) for k in ("accuracy", "gflops_ratio", "full_gflops") if tags[k]}
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
    return version, run.info.run_id


def _version_tags(
    candidate: Candidate, decision: GateDecision, pipeline_run_id: str, model_meta: dict[str, Any]
) -> dict[str, str]:
    """Tags of a new model version: what produced it, its numbers and the gate's verdict."""
    ratio = candidate.gflops_ratio
    return {
        RUN_ID_TAG: pipeline_run_id,
        "accuracy": f"{candidate.accuracy:.6f}",
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
    current = _alias_version(client, name, CANDIDATE)
    if not reused or current is None or int(current) < int(v):
        client.set_registered_model_alias(name, CANDIDATE, v)
    if passed and "promoted_at" not in (version.tags or {}):
        _promote(client, name, v)
        return True
    return False


def run(
    cfg: RegisterConfig,
    model_dir: str | Path,
    search_dir: str | Path,
    evaluate_dir: str | Path,
    data_dir: str | Path,
    out_dir: str | Path,
    pipeline_run_id: str,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Register the searched model, gate its promotion, and write ``registration.json``.

    Args:
        cfg: Registry, experiment and gate settings.
        model_dir: The model directory (``adapter_model.safetensors``, ``model_config.json``).
        search_dir: The search output (``thresholds.json``).
        evaluate_dir: The evaluate output (``metrics.json``; ``model_card.md`` is logged too).
        data_dir: The prepared data (preprocessing, class names, the input example's images).
        out_dir: Where ``registration.json``, ``preprocess.json`` and ``manifest.json`` go.
        pipeline_run_id: Identifies the pipeline run; registering it again reuses its version.
        tracking_uri: Overrides ``cfg.tracking_uri`` (see :func:`resolve_tracking_uri`).

    Returns:
        ``registration.json``'s content: ``name``, ``version``, ``aliases``, ``gate``
        (``pass``/``fail``), ``promoted``, ``reason``, ``model_uri``, ``reused``, ...

    Raises:
        ConfigError: Missing or inconsistent inputs, a deleted experiment.
    """
    from .data.prepared import PreparedData
    from .evaluate import CARD_FILE, METRICS_FILE
    from .models.checkpoint import read_config
    from .search import THRESHOLDS_FILE
    from .serving import MODEL_CODE_FILE, write_model_code, write_preprocess

    if not pipeline_run_id.strip():
        raise ConfigError("register: pipeline_run_id must not be empty")
    if tracking_uri is not None:
        check_no_credentials(tracking_uri, "--tracking-uri")
    out = Path(out_dir)
    paths = {
        "model": Path(model_dir),
        "thresholds": Path(search_dir) / THRESHOLDS_FILE,
        "metrics": Path(evaluate_dir) / METRICS_FILE,
        "card": Path(evaluate_dir) / CARD_FILE,
        "preprocess": out / "preprocess.json",
        "code": out / MODEL_CODE_FILE,
    }
    model_cfg, model_meta = read_config(model_dir)
    if not _read_json(paths["thresholds"], "search").get("budgets"):
        raise ConfigError(f"{paths['thresholds']}: no searched budgets; run `dyn-adapter search`")
    candidate = candidate_from_metrics(
        _read_json(paths["metrics"], "evaluate"), str(paths["metrics"])
    )
    data = PreparedData(data_dir)
    if data.num_classes != model_cfg.num_classes:
        raise ConfigError(
            f"{data_dir}: {data.num_classes} classes, the model {model_dir} has "
            f"{model_cfg.num_classes}; pass the prepared data the model was trained on"
        )
    write_preprocess(data, paths["preprocess"])
    write_model_code(paths["code"])
    uri = resolve_tracking_uri(tracking_uri or cfg.tracking_uri)
    name = cfg.model_name

    with _tracking_server(uri), _using(uri) as client:
        _ensure_registered_model(client, name)
        existing = _find_version(client, name, pipeline_run_id)
        if existing is None:
            decision = gate(candidate, _champion(client, name), cfg)
            tags = _version_tags(candidate, decision, pipeline_run_id, model_meta)
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

    result = {
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
        "reused": reused,
        "accuracy": _float_tag(recorded.get("accuracy")),
        "gflops_ratio": _float_tag(recorded.get("gflops_ratio")),
        "tracking_uri": redact_uri(uri),
    }
    write_json(out / REGISTRATION_FILE, result)
    write_json(
        out / "manifest.json",
        stage_manifest(
            "register",
            {"register": to_dict(cfg)},
            model=str(model_dir),
            search=str(search_dir),
            evaluate=str(evaluate_dir),
            data=str(data_dir),
            pipeline_run_id=pipeline_run_id,
        ),
    )
    return result
