"""The HTTP app ``dyn-adapter serve`` runs: MLflow's scoring server behind a request guard.

MLflow's server lets three things through that a served model should refuse or keep quiet:
it drops a parameter the signature does not name (``bugdet``) with only a log line and answers
with the default; it reads a request of any size, so ten thousand images end in a 504 after a
minute while a worker keeps computing them; and its error text starts with the whole request
(``Failed to predict data '<the DataFrame>'``). The guard, in front of ``/invocations``:

- answers **413** for a body over ``max_bytes`` or more than ``max_rows`` images, naming the
  largest batch accepted;
- answers **400** for a parameter the model does not take, naming it and the ones it takes;
- strips the echoed request from MLflow's error messages.

Everything else passes to MLflow's app unchanged. ``create_app`` is uvicorn's factory
(``uvicorn --factory``); the model and the limits come from the environment that
``dyn-adapter serve`` sets.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from ..files import cache_dir

MODEL_PATH_ENV = "DYN_ADAPTER_SERVE_MODEL"
MAX_BYTES_ENV = "DYN_ADAPTER_SERVE_MAX_BYTES"
MAX_ROWS_ENV = "DYN_ADAPTER_SERVE_MAX_ROWS"
DEFAULT_MAX_MB = 16
DEFAULT_MAX_ROWS = 1024
# MLflow's scoring server accepts these JSON keys for the rows of a request.
ROW_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_ECHO = re.compile(r"^Failed to predict data '.*'\. \nError: ", re.DOTALL)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class RequestGuard:
    """ASGI middleware over ``app`` for ``POST /invocations`` (see the module's docstring)."""

    def __init__(self, app: App, params: Sequence[str], max_bytes: int, max_rows: int) -> None:
        self.app = app
        self.params = tuple(params)
        self.max_bytes = max_bytes
        self.max_rows = max_rows

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") != "/invocations":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _error(send, 413, self._too_large(int(declared)))
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await _error(send, 413, self._too_large(len(body)))
                return
            if not message.get("more_body", False):
                break
        refusal = self._check(bytes(body), _header(scope, b"content-type") or "")
        if refusal is not None:
            await _error(send, *refusal)
            return

        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, _without_echo(send))

    def _too_large(self, size: int) -> str:
        return (
            f"the request body is {_size(size)}, over this server's limit of "
            f"{_size(self.max_bytes)}: send at most {self.max_rows} images per request "
            "(dyn-adapter serve --max-request-mb and --max-batch set the limits)"
        )

    def _check(self, body: bytes, content_type: str) -> tuple[int, str] | None:
        """(status, message) refusing the request, or None to let MLflow answer it."""
        if not content_type.startswith("application/json"):
            return None
        try:
            request = json.loads(body)
        except json.JSONDecodeError as e:
            return 400, f"the request body is not valid JSON ({e.msg} at character {e.pos})"
        except ValueError:
            return 400, "the request body is not UTF-8 text"
        if not isinstance(request, dict):
            return None
        params = request.get("params") or {}
        if isinstance(params, dict):
            unknown = sorted(str(k) for k in params if k not in self.params)
            if unknown:
                return 400, (
                    f"unknown parameter(s) {', '.join(unknown)}: this model takes "
                    f"{' or '.join(self.params)} (see the README's serving section)"
                )
        rows = _row_count(request)
        if rows > self.max_rows:
            return 413, (
                f"{rows} images in one request, over this server's limit of {self.max_rows}: "
                f"send them in batches of at most {self.max_rows} (dyn-adapter serve --max-batch)"
            )
        return None


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n:,} bytes"


def _row_count(request: dict[str, Any]) -> int:
    for key in ROW_KEYS:
        rows = request.get(key)
        if isinstance(rows, dict):  # dataframe_split: {"columns": [...], "data": [...]}
            rows = rows.get("data", next(iter(rows.values()), []))
        if isinstance(rows, list):
            return len(rows)
    return 0


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


async def _error(send: Send, status: int, message: str) -> None:
    """An error answered as MLflow answers its own: JSON with ``error_code`` and ``message``."""
    code = "BAD_REQUEST" if status == 400 else "RESOURCE_LIMIT_EXCEEDED"
    body = json.dumps({"error_code": code, "message": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _without_echo(send: Send) -> Send:
    """``send`` for MLflow's answer, with the request cut out of an error's message."""
    start: Message | None = None
    chunks: list[bytes] = []

    async def wrapped(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start" and message["status"] >= 400:
            start = message  # held until the body is complete
            return
        if start is None:
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = _strip_echo(b"".join(chunks))
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return wrapped


def _strip_echo(body: bytes) -> bytes:
    try:
        answer = json.loads(body)
    except ValueError:
        return body
    if isinstance(answer, dict) and isinstance(answer.get("message"), str):
        answer["message"] = _ECHO.sub("", answer["message"])
        return json.dumps(answer).encode()
    return body


def create_app() -> RequestGuard:
    """uvicorn's factory: MLflow's scoring app for the model at ``$DYN_ADAPTER_SERVE_MODEL``
    (a local copy), behind the guard, with the limits ``dyn-adapter serve`` passed."""
    from mlflow.pyfunc import scoring_server

    model = scoring_server.load_model_with_mlflow_config(os.environ[MODEL_PATH_ENV])
    schema = model.metadata.get_params_schema()
    params = [p.name for p in schema.params] if schema is not None else []
    return RequestGuard(
        scoring_server.init(model),
        params,
        max_bytes=int(os.environ.get(MAX_BYTES_ENV, DEFAULT_MAX_MB * 10**6)),
        max_rows=int(os.environ.get(MAX_ROWS_ENV, DEFAULT_MAX_ROWS)),
    )


def local_copy(version: Any, tracking_uri: str) -> Path:
    """A registered model version's files (an MLflow ``ModelVersion``), downloaded once into
    the cache and moved into place whole. Keyed by the store, the version and when it was
    created: a version's files never change, but another store can reuse its number."""
    import hashlib

    import mlflow

    key = f"{tracking_uri}|{version.name}|{version.version}|{version.creation_timestamp}"
    target = cache_dir() / "served" / hashlib.sha256(key.encode()).hexdigest()[:16]
    found = sorted(target.rglob("MLmodel"))
    if found:
        return found[0].parent
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    client = mlflow.MlflowClient(tracking_uri, registry_uri=tracking_uri)
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=client.get_model_version_download_uri(version.name, version.version),
        dst_path=str(staging),
        tracking_uri=tracking_uri,
    )
    staging.rename(target)
    return target / Path(local).resolve().relative_to(staging.resolve())
