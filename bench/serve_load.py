"""Load on ``mlflow models serve``: latency and throughput of a registered model under concurrency.

Starts ``mlflow models serve --env-manager local`` for a registered model on a free loopback
port (in its own process group, always stopped at the end), waits for ``/ping``, sends a few
warm-up requests (not counted), then ``--requests`` requests of ``--images-per-request``
images each from ``--concurrency`` threads, over a fixed cycle of budgets (request ``i`` asks
for ``budgets[i % len(budgets)]``). Every request's latency and HTTP status are recorded; a
request fails on any status but 200 or on a connection error. The summary (p50/p90/p99
latency, throughput, failures, per-budget latency, the machine) goes to
``bench/results/serve_load.json``.

Images: a directory of image files (``*.png``, ``*.jpg``; sent as they are) or a prepared-data
directory (its ``test_images.npy``, encoded as PNG).

Example (the registered champion, 2,000 requests, 8 threads)::

    python bench/serve_load.py --model-uri models:/dyn-adapter@champion \\
        --tracking-uri http://127.0.0.1:5000 --images outputs/prepared
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "serve_load.json"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def load_images(path: Path, limit: int = 64) -> list[str]:
    """Up to ``limit`` base64 image files from an image directory or a prepared-data directory."""
    if (path / "test_images.npy").is_file():
        import numpy as np

        from dyn_adapter.mlops.pyfunc import encode_image

        return [encode_image(im) for im in np.load(path / "test_images.npy")[:limit]]
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not files:
        raise SystemExit(f"{path}: no test_images.npy and no {'/'.join(IMAGE_SUFFIXES)} files")
    return [base64.b64encode(p.read_bytes()).decode() for p in files]


def request_body(images: Sequence[str], budget: float) -> bytes:
    return json.dumps(
        {
            "dataframe_split": {"columns": ["image"], "data": [[im] for im in images]},
            "params": {"budget": budget},
        }
    ).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def model_server(
    model_uri: str,
    tracking_uri: str | None,
    port: int,
    log: Path,
    workers: int,
    threads: int | None,
    timeout: float,
) -> Iterator[subprocess.Popen]:
    """``mlflow models serve`` in its own process group; the whole group is stopped afterwards
    (SIGTERM, then SIGKILL for whatever is left)."""
    env = dict(os.environ)
    # `mlflow models serve` runs uvicorn from PATH: this interpreter's bin/ must be on it.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [
        *(sys.executable, "-m", "mlflow", "models", "serve"),
        *("-m", model_uri, "--env-manager", "local"),
        *("-h", "127.0.0.1", "-p", str(port), "-w", str(workers)),
    ]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        wait_for_ping(proc, port, log, timeout)
        yield proc
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_for_ping(proc: subprocess.Popen, port: int, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"the model server exited ({proc.returncode}):\n{tail(log)}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/ping")
            if conn.getresponse().status == 200:
                return
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()
        if time.monotonic() > deadline:
            raise SystemExit(
                f"the model server did not answer /ping in {timeout:g} s:\n{tail(log)}"
            )
        time.sleep(0.5)


def tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.is_file() else ""


class Client:
    """One keep-alive HTTP connection per thread; reconnects after an error."""

    def __init__(self, port: int, timeout: float) -> None:
        self.port, self.timeout = port, timeout
        self.local = threading.local()

    def post(self, body: bytes) -> tuple[int, str]:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection(
                "127.0.0.1", self.port, timeout=self.timeout
            )
        try:
            conn.request(
                "POST", "/invocations", body=body, headers={"Content-Type": "application/json"}
            )
            response = conn.getresponse()
            text = response.read().decode(errors="replace")
            return response.status, "" if response.status == 200 else text[:300]
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            self.local.conn = None
            return 0, f"{type(e).__name__}: {e}"


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile ``q`` (0-100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize(latencies_ms: Sequence[float]) -> dict[str, float | None]:
    return {f"p{q}_ms": percentile(latencies_ms, q) for q in (50, 90, 99)} | {
        "mean_ms": sum(latencies_ms) / len(latencies_ms) if latencies_ms else None,
        "max_ms": max(latencies_ms) if latencies_ms else None,
    }


def run_load(
    port: int,
    images: Sequence[str],
    budgets: Sequence[float],
    requests: int,
    concurrency: int,
    per_request: int,
    timeout: float,
) -> tuple[list[dict[str, Any]], float]:
    """Send ``requests`` requests from ``concurrency`` threads; each one's record and the wall
    time of the whole run."""
    client = Client(port, timeout)
    bodies: dict[tuple[int, float], bytes] = {}  # (first image, budget): built before timing
    for i in range(requests):
        key = ((i * per_request) % len(images), budgets[i % len(budgets)])
        if key not in bodies:
            chosen = [images[(key[0] + j) % len(images)] for j in range(per_request)]
            bodies[key] = request_body(chosen, key[1])

    def one(i: int) -> dict[str, Any]:
        budget = budgets[i % len(budgets)]
        body = bodies[((i * per_request) % len(images), budget)]
        tic = time.perf_counter()
        status, error = client.post(body)
        record = {
            "i": i,
            "budget": budget,
            "status": status,
            "ms": (time.perf_counter() - tic) * 1e3,
        }
        return record | ({"error": error} if error else {})

    tic = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        records = list(pool.map(one, range(requests)))
    return records, time.perf_counter() - tic


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }
    try:
        import torch

        from dyn_adapter.evaluation.speed import machine_info

        info |= machine_info(torch.device("cpu"))
        info.pop("torch_threads", None)  # this process's, not the server's
    except ImportError:
        pass
    return info


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-uri", required=True, help="models:/NAME@ALIAS or models:/NAME/N")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI)")
    parser.add_argument("--images", type=Path, required=True, help="image dir or prepared dir")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--budgets", default="0.3,0.5,0.7,1.0", help="cycled, comma-separated")
    parser.add_argument("--images-per-request", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=8, help="requests sent first, not counted")
    parser.add_argument("--server-workers", type=int, default=1, help="uvicorn workers")
    parser.add_argument(
        "--server-threads", type=int, help="OMP_NUM_THREADS of the server (default: inherited)"
    )
    parser.add_argument("--port", type=int, help="default: a free loopback port")
    parser.add_argument("--startup-timeout", type=float, default=300)
    parser.add_argument("--request-timeout", type=float, default=120)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--server-log", type=Path, help="default: serve_load-PORT.log in $TMPDIR")
    args = parser.parse_args(argv)
    budgets = [float(b) for b in args.budgets.split(",") if b.strip()]
    if args.requests < 1 or args.concurrency < 1 or args.images_per_request < 1 or not budgets:
        parser.error("--requests, --concurrency, --images-per-request and --budgets must be >= 1")

    # SIGTERM (a CI timeout, kill): leave through the `finally` that stops the server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    images = load_images(args.images)
    port = args.port or free_port()
    log = args.server_log or Path(tempfile.gettempdir()) / f"serve_load-{port}.log"
    started = time.perf_counter()
    with model_server(
        args.model_uri,
        args.tracking_uri,
        port,
        log,
        args.server_workers,
        args.server_threads,
        args.startup_timeout,
    ):
        startup_s = time.perf_counter() - started
        if args.warmup:
            run_load(port, images, budgets, args.warmup, 1, args.images_per_request, 300)
        records, wall = run_load(
            port,
            images,
            budgets,
            args.requests,
            args.concurrency,
            args.images_per_request,
            args.request_timeout,
        )

    ok = [r["ms"] for r in records if r["status"] == 200]
    failed = [r for r in records if r["status"] != 200]
    statuses: dict[str, int] = {}
    for r in records:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
    result = {
        "model_uri": args.model_uri,
        "requests": len(records),
        "failures": len(failed),
        "concurrency": args.concurrency,
        "images_per_request": args.images_per_request,
        "budgets": budgets,
        "latency_ms": summarize(ok),
        "throughput_rps": len(records) / wall,
        "images_per_s": len(ok) * args.images_per_request / wall,
        "wall_s": wall,
        "server_startup_s": startup_s,
        "warmup_requests": args.warmup,
        "status_counts": statuses,
        "per_budget": {
            f"{b:g}": summarize(
                [r["ms"] for r in records if r["budget"] == b and r["status"] == 200]
            )
            for b in budgets
        },
        "first_errors": [{k: r[k] for k in ("i", "status", "error") if k in r} for r in failed[:5]],
        "server": {
            "command": "mlflow models serve --env-manager local",
            "port": port,
            "log": str(log),
            "workers": args.server_workers,
            "omp_num_threads": str(args.server_threads or os.environ.get("OMP_NUM_THREADS", "")),
        },
        "machine": machine(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    lat = result["latency_ms"]
    print(
        f"{len(records)} requests, {len(failed)} failed, {args.concurrency} concurrent: "
        f"p50 {fmt(lat['p50_ms'])} ms, p90 {fmt(lat['p90_ms'])} ms, p99 {fmt(lat['p99_ms'])} ms, "
        f"{result['throughput_rps']:.1f} req/s -> {args.out}"
    )
    return 1 if failed else 0


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


if __name__ == "__main__":
    sys.exit(main())
