"""The ``champion`` alias: what serving loads, moved by the gate at registration, by hand
(:func:`promote`) or back (:func:`rollback`).

Champions are kept as a history (a JSON list of versions in the registered model's tag
``champion_history``), so :func:`rollback` can move ``champion`` back to the previous one.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .names import HISTORY_TAG
from .store import mlflow_client, resolve_tracking_uri, server_errors

if TYPE_CHECKING:
    from mlflow import MlflowClient

logger = logging.getLogger(__name__)

CHAMPION = "champion"
CANDIDATE = "candidate"
HISTORY_LIMIT = 100  # registered-model tag values are bounded (5000 characters)


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


def is_not_found(e: Exception) -> bool:
    return getattr(e, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


def _registered_model(client: MlflowClient, name: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as e:
        if is_not_found(e):
            raise ConfigError(
                f"no registered model {name!r} in this tracking store; check --name and "
                "--tracking-uri (or register.model_name / register.tracking_uri)"
            ) from None
        raise


def alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    version = (_registered_model(client, name).aliases or {}).get(alias)
    return None if version is None else str(version)


def model_version(client: MlflowClient, name: str, version: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, str(version))
    except MlflowException as e:
        if not is_not_found(e):
            raise
        raise ConfigError(
            f"registered model {name!r} has no version {version!r}; list its versions in the "
            "MLflow UI or with `mlflow.search_model_versions`"
        ) from None


def current_champion(
    client: MlflowClient, name: str, metric: str = "accuracy"
) -> tuple[str, float | None] | None:
    """The champion's version and its ``metric`` tag."""
    version = alias_version(client, name, CHAMPION)
    if version is None:
        return None
    tag = client.get_model_version(name, version).tags.get(metric)
    try:
        return version, float(tag) if tag is not None else None
    except ValueError:
        return version, None


def set_champion(client: MlflowClient, name: str, version: str) -> dict[str, Any]:
    previous = alias_version(client, name, CHAMPION)
    client.set_registered_model_alias(name, CHAMPION, version)
    history = _history(client, name)
    if not history or history[-1] != version:
        history.append(version)
    _set_history(client, name, history)
    client.set_model_version_tag(name, version, "promoted_at", _now())
    logger.info("%s: champion v%s (was %s)", name, version, f"v{previous}" if previous else "none")
    return {"name": name, "version": version, "previous": previous, "history": history}


def promote(
    name: str,
    version: str | int,
    tracking_uri: str | None = None,
    configured: str | None = None,
) -> dict[str, Any]:
    """Make ``version`` the champion by hand (no gate), recording it in the champion history.
    The store: :func:`~dyn_adapter.mlops.store.resolve_tracking_uri` of ``tracking_uri``
    (``--tracking-uri``) and ``configured`` (``register.tracking_uri``).

    Returns:
        ``name``, ``version`` (the new champion), ``previous`` (the old one or ``None``) and
        ``history``.

    Raises:
        ConfigError: No such registered model or version.
    """
    uri = resolve_tracking_uri(tracking_uri, configured)
    with server_errors(uri):
        client = mlflow_client(uri, registry_uri=uri)
        model_version(client, name, str(version))
        return set_champion(client, name, str(version))


def rollback(
    name: str, tracking_uri: str | None = None, configured: str | None = None
) -> dict[str, Any]:
    """Move ``champion`` back to the champion before the current one (the store as for
    :func:`promote`).

    The current champion is dropped from the end of the history; versions deleted since are
    skipped.

    Returns:
        ``name``, ``version`` (the champion now), ``previous`` (the one rolled back) and
        ``history``.

    Raises:
        ConfigError: No champion, or no earlier champion to go back to.
    """
    uri = resolve_tracking_uri(tracking_uri, configured)
    with server_errors(uri):
        return _rollback(mlflow_client(uri, registry_uri=uri), name)


def _rollback(client: MlflowClient, name: str) -> dict[str, Any]:
    current = alias_version(client, name, CHAMPION)
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
        if is_not_found(e):
            return False
        raise


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
