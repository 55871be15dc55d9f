"""Where MLflow runs and models go: the tracking store, decided in one place.

:func:`resolve_tracking_uri` is the rule every command follows: the URI given (``--tracking-uri``, then
``register.tracking_uri``), else ``$MLFLOW_TRACKING_URI``, else the embedded SQLite store
``outputs/mlflow/mlflow.db`` with its artifacts beside it in ``outputs/mlflow/artifacts``
(no server to set up). Credentials reach MLflow only through its environment variables
(``MLFLOW_TRACKING_TOKEN``, ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``, ``AWS_*``); a URI that
carries them is refused.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError, ServiceUnavailable
from ..urls import check_no_credentials, redact_uri
from .config import MLFLOW_CREDENTIALS

if TYPE_CHECKING:
    from mlflow import MlflowClient

DEFAULT_ROOT = Path("outputs/mlflow")


DB_FILE = "mlflow.db"


ARTIFACTS_DIR = "artifacts"


def embedded_tracking_uri(root: str | os.PathLike[str] = DEFAULT_ROOT) -> str:
    """The embedded tracking store: ``sqlite:///<abs root>/mlflow.db`` (the directory is created).

    Its artifacts go to ``<abs root>/artifacts`` (see :func:`default_artifact_location`), not to
    MLflow's default ``./mlruns`` relative to whatever the working directory is.
    """
    path = Path(root).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / DB_FILE}"


def default_artifact_location(tracking_uri: str) -> str | None:
    """Where new experiments keep artifacts: beside the database for a ``sqlite:///`` store.

    None for anything else: a tracking server decides itself (``--artifacts-destination``).
    """
    db = sqlite_path(tracking_uri)
    return None if db is None else (db.resolve().parent / ARTIFACTS_DIR).as_uri()


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI; None for other stores and ``:memory:``."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    db = tracking_uri[len("sqlite:///") :].split("?", 1)[0]
    return Path(db) if db and db != ":memory:" else None


def mlflow_client(tracking_uri: str, registry_uri: str | None = None) -> MlflowClient:
    """An ``MlflowClient`` whose store is ready: tasks running side by side (a ``ParallelFor``)
    may be the first to open a new SQLite store, and two processes creating its schema at once
    fail, so one creates it under a file lock while the others wait."""
    # Offline by design: no telemetry from the client.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    db = sqlite_path(tracking_uri)
    if db is None:
        return MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)
    db.parent.mkdir(parents=True, exist_ok=True)  # SQLite does not create directories
    with open(db.with_name(db.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        # The client opens its tracking store here: every table, migrated (once per process).
        return MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)


# MLflow retries a failed request 7 times, 2 * 2**n s apart (~4 minutes), and waits 120 s for
# each answer: a tracking server that is down would hang registration for minutes per request.
# Unless set in the environment, these apply while registering: ~6-9 s of retries in all.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


def resolve_tracking_uri(
    flag: str | None = None, configured: str | None = None, root: str | Path = "."
) -> str:
    """The tracking store: ``flag`` (``--tracking-uri``), else ``configured``
    (``register.tracking_uri``), else ``$MLFLOW_TRACKING_URI``, else the embedded store under
    ``root`` (``outputs/mlflow``). The only place this rule is written.

    Raises:
        ConfigError: ``flag`` or ``configured`` carries credentials (the message names which).
    """
    for value, where in ((flag, "--tracking-uri"), (configured, "register.tracking_uri")):
        if value:
            check_no_credentials(value, where, MLFLOW_CREDENTIALS)
    uri = (
        flag
        or configured
        or os.environ.get("MLFLOW_TRACKING_URI")
        or embedded_tracking_uri(Path(root) / DEFAULT_ROOT)
    )
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)  # SQLite does not create directories
    return uri


@contextmanager
def fluent_api(tracking_uri: str) -> Iterator[MlflowClient]:
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
        yield mlflow_client(tracking_uri, registry_uri=tracking_uri)
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
def server_errors(tracking_uri: str) -> Iterator[None]:
    """Bounded HTTP retries (:data:`HTTP_DEFAULTS` for variables the user has not set) for a
    block, and a ServiceUnavailable naming the server when it cannot be reached at all."""
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
        raise ServiceUnavailable(
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


# MLflow 3 opens an experiment on a GenAI overview unless it says it holds model training.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"


def experiment_id(
    client: MlflowClient, name: str, tracking_uri: str, where: str = "register.experiment"
) -> str:
    """Get or create the experiment (another stage may be creating it at the same moment),
    marked as one of model training; artifacts of a new one go beside an embedded store.

    Raises:
        ConfigError: The experiment is deleted (``where`` names the setting to change).
    """
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(
                name,
                artifact_location=default_artifact_location(tracking_uri),
                tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING},
            )
        except MlflowException:
            exp = client.get_experiment_by_name(name)  # created concurrently
            if exp is None:
                raise
    if exp.lifecycle_stage != "active":
        raise ConfigError(
            f"{where}: MLflow experiment {name!r} is deleted; restore it (mlflow experiments "
            f"restore --experiment-id {exp.experiment_id}) or choose another name"
        )
    if EXPERIMENT_KIND_TAG not in exp.tags:
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
    return str(exp.experiment_id)
