"""The Docker engine that builds and runs the project image.

An engine already running (``$DOCKER_HOST``, else ``/var/run/docker.sock``) is used as it is.
Otherwise the project starts its own ``dockerd``: its own data root (the layer cache, kept
between runs in ``$DYN_ADAPTER_DOCKER_ROOT``, default ``~/.cache/dyn-adapter/docker``), no
bridge network and no firewall rules (containers use the host network). Every project process
using it meanwhile shares it (a shared lock each), and the last one out stops it by its PID.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from dyn_adapter.errors import ConfigError

log = logging.getLogger(__name__)

SYSTEM_SOCKET = "unix:///var/run/docker.sock"
INSTALL_HINT = "run scripts/install-container-tools.sh (Debian's docker.io) or start Docker"


def engine_home() -> Path:
    """Where a project-started engine keeps its images and build cache."""
    return Path(
        os.environ.get("DYN_ADAPTER_DOCKER_ROOT", "~/.cache/dyn-adapter/docker")
    ).expanduser()


def _exec_root() -> Path:
    # Sockets live here: a unix socket path must stay under ~100 characters.
    return Path(f"/tmp/dyn-adapter-docker-{os.getuid()}")


@dataclass(frozen=True)
class Engine:
    """A reachable Docker engine: ``host`` is its ``DOCKER_HOST``; ``cli`` a docker CLI that
    builds with BuildKit (``RUN --mount`` needs it)."""

    host: str
    cli: str
    started_here: bool

    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "1"}

    def docker(self, *args: str, check: bool = True, capture: bool = True) -> str:
        """Run ``docker ARGS`` against this engine; its stdout (stripped) when captured."""
        done = subprocess.run(
            [self.cli, *args], env=self.env(), capture_output=capture, text=True, check=False
        )
        if check and done.returncode != 0:
            detail = (done.stderr or done.stdout or "").strip() if capture else ""
            raise ConfigError(
                f"`docker {' '.join(args[:2])} ...` failed (exit {done.returncode}): {detail}"
            )
        return (done.stdout or "").strip() if capture else ""

    def has_image(self, image: str) -> bool:
        """Whether ``image`` (a tag or a reference by digest) is on this engine."""
        return bool(self.docker("image", "ls", "--quiet", image))


def _answers(host: str) -> bool:
    import docker

    try:
        client = docker.DockerClient(base_url=host, timeout=5)
    except Exception:  # noqa: BLE001 (any failure means: not usable)
        return False
    try:
        return bool(client.ping())
    except Exception:  # noqa: BLE001
        return False
    finally:
        client.close()


def buildkit_cli() -> str:
    """A docker CLI that can build with BuildKit: one with the buildx plugin, or a 20.10 CLI
    (BuildKit built in; Debian's ``docker.io``). A newer CLI without buildx refuses."""
    candidates = [
        os.environ.get("DYN_ADAPTER_DOCKER_CLI"),
        shutil.which("docker"),
        "/usr/bin/docker",
    ]
    seen = []
    for cli in dict.fromkeys(c for c in candidates if c and Path(c).is_file()):
        seen.append(cli)
        version = subprocess.run(
            [cli, "version", "--format", "{{.Client.Version}}"], capture_output=True, text=True
        ).stdout.strip()
        major = int(version.split(".")[0]) if version[:1].isdigit() else 0
        if 0 < major < 23:
            return cli
        if subprocess.run([cli, "buildx", "version"], capture_output=True).returncode == 0:
            return cli
    raise ConfigError(
        f"no docker CLI that builds with BuildKit (tried: {', '.join(seen) or 'none found'}); "
        f"{INSTALL_HINT}, or install the buildx plugin"
    )


@contextmanager
def docker_engine() -> Iterator[Engine]:
    """Yield a running engine. One the project starts is shared by every project process that
    needs it meanwhile (each holds a shared lock on it); the last one out stops it by its PID."""
    for host in (os.environ.get("DOCKER_HOST"), SYSTEM_SOCKET):
        if host and _answers(host):
            yield Engine(host, buildkit_cli(), started_here=False)
            return
    if os.environ.get("DOCKER_HOST"):
        raise ConfigError(f"DOCKER_HOST={os.environ['DOCKER_HOST']}: no Docker engine answers")
    cli = buildkit_cli()
    exec_root = _exec_root()
    exec_root.mkdir(parents=True, exist_ok=True)
    proc = None
    with open(exec_root / "users.lock", "a+") as users:
        with _locked(exec_root / "start.lock"):  # one process starts or stops it at a time
            fcntl.flock(users, fcntl.LOCK_SH)
            if not _answers(_own_socket()):
                proc = _start_dockerd()
        previous = _exit_on_sigterm()
        try:
            yield Engine(_own_socket(), cli, started_here=proc is not None)
        finally:
            fcntl.flock(users, fcntl.LOCK_UN)
            with _locked(exec_root / "start.lock"):
                try:
                    fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    log.info("the Docker engine stays up: another process is using it")
                else:
                    _stop(proc, _pid(exec_root / "dockerd.pid"))
                    fcntl.flock(users, fcntl.LOCK_UN)
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def _exit_on_sigterm():  # -> the previous handler, or None where it cannot be set
    """A SIGTERM (a CI timeout, ``kill``) unwinds the stack, so the engine is still stopped."""

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        return None


def _own_socket() -> str:
    return f"unix://{_exec_root() / 'docker.sock'}"


def _start_dockerd(timeout: float = 60) -> subprocess.Popen:
    dockerd = shutil.which("dockerd") or (
        "/usr/sbin/dockerd" if Path("/usr/sbin/dockerd").is_file() else None
    )
    if dockerd is None:
        raise ConfigError(
            f"no Docker engine is running and dockerd is not installed: {INSTALL_HINT}"
        )
    if os.geteuid() != 0:
        raise ConfigError(
            "no Docker engine is running, and starting one needs root: start Docker "
            "(or set DOCKER_HOST), or run as root"
        )
    home, exec_root = engine_home(), _exec_root()
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "dockerd.log"
    command = [
        dockerd,
        f"--data-root={home / 'data'}",
        f"--exec-root={exec_root / 'exec'}",
        f"--pidfile={exec_root / 'dockerd.pid'}",
        f"--host={_own_socket()}",
        "--containerd-namespace=dyn-adapter",
        "--bridge=none",
        "--iptables=false",
        "--ip6tables=false",
        "--ip-masq=false",
    ]
    log.info("starting a Docker engine (data root %s)", home / "data")
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + timeout
    while not _answers(_own_socket()):
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc, None)
            tail = log_path.read_text(errors="replace")[-2000:]
            raise ConfigError(f"dockerd did not start (log {log_path}):\n{tail}")
        time.sleep(0.3)
    return proc


def _stop(proc: subprocess.Popen | None, pid: int | None, grace: float = 30) -> None:
    """SIGTERM dockerd (it stops its containers and its containerd), then SIGKILL whatever is
    left of its process group. ``proc`` when this process started it (to reap it), else the
    PID from its pidfile."""
    pid = proc.pid if proc is not None else pid
    if pid is None:
        return
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _alive(pid, proc) and time.monotonic() < deadline:
        time.sleep(0.2)
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    if proc is not None:
        proc.wait()


def _alive(pid: int, proc: subprocess.Popen | None) -> bool:
    if proc is not None:
        return proc.poll() is None
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
