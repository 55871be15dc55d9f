"""The request guard of `dyn-adapter serve`, driven as ASGI with a stand-in for MLflow's app.

The served model itself answers through it in tests/test_register.py (the real server).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from dyn_adapter.mlops.serving_app import RequestGuard

ECHOED = "Failed to predict data '      image\n0  @@not base64@@'. \nError: row 0: not base64"


class Recorder:
    """MLflow's app stand-in: keeps the body it read; answers 200, or ``status`` with ``message``."""

    def __init__(self, status: int = 200, message: str = "") -> None:
        self.bodies: list[bytes] = []
        self.status, self.message = status, message

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        self.bodies.append(body)
        answer = json.dumps({"error_code": "BAD_REQUEST", "message": self.message}).encode()
        if self.status == 200:
            answer = b'{"predictions": []}'
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": answer})


def call(
    guard: RequestGuard,
    body: bytes,
    *,
    path: str = "/invocations",
    chunks: int = 1,
    length: int | None = None,
) -> tuple[int, dict[str, Any]]:
    """POST ``body`` (in ``chunks`` pieces); the status and the decoded JSON answer."""
    size = -(-len(body) // chunks) or 1
    pieces = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    messages = [
        {"type": "http.request", "body": p, "more_body": i < len(pieces) - 1}
        for i, p in enumerate(pieces)
    ]
    headers = [(b"content-type", b"application/json")]
    headers.append((b"content-length", str(len(body) if length is None else length).encode()))
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
    asyncio.run(guard(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    answer = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(answer)


def request(rows: int, **params: Any) -> bytes:
    split = {"columns": ["image"], "data": [["aGk="]] * rows}
    return json.dumps({"dataframe_split": split, "params": params}).encode()


def guard(app: Recorder, max_bytes: int = 10_000, max_rows: int = 8) -> RequestGuard:
    return RequestGuard(app, ["budget", "max_disagreement"], max_bytes, max_rows)


def test_a_good_request_reaches_the_model_as_sent():
    app = Recorder()
    body = request(3, budget=0.5)
    assert call(guard(app), body, chunks=4) == (200, {"predictions": []})
    assert app.bodies == [body]


def test_an_unknown_parameter_is_refused_by_name():
    app = Recorder()
    status, answer = call(guard(app), request(2, bugdet=0.5, budget=0.5))
    assert status == 400 and app.bodies == []
    assert answer["message"].startswith("unknown parameter(s) bugdet: this model takes budget or")


@pytest.mark.parametrize(
    "rows, chunks, length, says",
    [
        (9, 1, None, "9 images in one request, over this server's limit of 8"),
        (3, 5, 10**9, "request body is 1000.0 MB, over this server's limit of 1,000 bytes"),
        (150, 7, 0, "over this server's limit of 1,000 bytes"),  # grows over it while streamed
    ],
)
def test_an_oversized_request_gets_413_with_the_largest_batch(rows, chunks, length, says):
    """Too many images; a declared length over the limit (nothing read); a body that grows
    over the limit while streamed (a wrong declared length does not let it through)."""
    app = Recorder()
    max_rows = 8 if rows == 9 else 100
    status, answer = call(guard(app, 1_000, max_rows), request(rows), chunks=chunks, length=length)
    assert status == 413 and app.bodies == []
    assert says in answer["message"] and f"at most {max_rows}" in answer["message"]


def test_the_request_is_not_echoed_in_errors():
    app = Recorder(400, ECHOED)
    status, answer = call(guard(app), request(1))
    assert status == 400 and answer["message"] == "row 0: not base64"


def test_bad_json_is_a_400_without_the_body_and_other_paths_pass():
    app = Recorder()
    status, answer = call(guard(app), b"{not json")
    assert status == 400 and "not valid JSON" in answer["message"] and "not json" not in answer
    assert app.bodies == []
    assert call(guard(app), request(50), path="/ping")[0] == 200  # not /invocations: no limits
