"""Build the project image offline, and push it to a registry by digest.

The build needs no network inside the container: the host gathers the inputs into
``build/image/`` (``wheels/``: every pinned wheel; ``debs/``: Fashion-MNIST's Debian package),
the Dockerfile bind-mounts them, and ``docker build`` runs with ``--network none``. The
inputs are gathered again only when the pinned lists or the torch variant change, and the
engine keeps its layer cache, so a rebuild with nothing changed takes seconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from dyn_adapter.errors import ConfigError
from dyn_adapter.files import write_json

from .docker_engine import INSTALL_HINT, Engine

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
INPUTS = Path("build/image")  # relative to the build context (the repository root)
PINNED = ("requirements/base.txt", "requirements/no-deps.txt")
# Every version the venv has, dependencies included: the wheelhouse takes the same ones.
LOCK = "requirements/lock.txt"
OFFICIAL_BASE = "python:3.11.17-slim-bookworm"
# Made from Debian packages where OFFICIAL_BASE cannot be pulled: the same Debian release and
# Python minor version (3.11.2 in /usr/bin instead of 3.11.17 in /usr/local/bin).
DEBIAN_BASE = "dyn-adapter-base:3.11-bookworm"
DEBIAN_BASE_PACKAGES = (
    "python3,python3-pip,python3-venv,python-is-python3,ca-certificates,netbase,tzdata"
)
CPU_INDEX = "https://download.pytorch.org/whl/cpu"

TorchVariant = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    image_id: str
    size_bytes: int
    base_image: str
    torch_variant: str
    seconds: float

    def describe(self) -> str:
        return (
            f"built {self.tag} ({self.image_id[:19]}, {self.size_bytes / 1e9:.2f} GB, "
            f"{self.torch_variant} torch, base {self.base_image}) in {self.seconds:.0f} s"
        )


def _context() -> Path:
    if not (ROOT / "Dockerfile").is_file():
        raise ConfigError(
            f"{ROOT}: no Dockerfile here; build the image from a checkout of the repository"
        )
    return ROOT


def resolve_variant(variant: TorchVariant) -> Literal["cpu", "cuda"]:
    """``auto``: the CPU build where PyTorch's CPU index answers, else PyPI's CUDA build (it
    runs on the CPU too, at a few GB more)."""
    if variant != "auto":
        return variant
    try:
        urllib.request.urlopen(f"{CPU_INDEX}/torch/", timeout=10).close()
        return "cpu"
    except OSError as e:
        log.warning(
            "PyTorch's CPU wheel index (%s) cannot be reached (%s): the image carries PyPI's "
            "CUDA build of torch, which also runs on the CPU",
            CPU_INDEX,
            getattr(e, "reason", e),
        )
        return "cuda"


def _pins(path: Path, name: str) -> str:
    for line in path.read_text().splitlines():
        if line.split("==")[0].strip().lower() == name:
            return line.split("#")[0].strip()
    raise ConfigError(f"{path}: {name} is not pinned (expected a line `{name}==VERSION`)")


def gather_inputs(variant: Literal["cpu", "cuda"], context: Path | None = None) -> Path:
    """Fill ``build/image/`` with the wheels and the Debian package the build installs.

    Reused as they are while the pinned lists, the build requirements and the variant are
    unchanged (``inputs.json`` records them); otherwise gathered again from scratch, so no
    stale wheel is left for the offline install to pick.
    """
    context = context or _context()
    inputs = context / INPUTS
    build_requires = tomllib.loads((context / "pyproject.toml").read_text())["build-system"][
        "requires"
    ]
    key = hashlib.sha256()
    for name in (*PINNED, LOCK):
        key.update((context / name).read_bytes())
    key.update(json.dumps([variant, build_requires]).encode())
    stamp = {"key": key.hexdigest(), "torch_variant": variant}
    stamp_file = inputs / "inputs.json"
    if stamp_file.is_file() and json.loads(stamp_file.read_text()) == stamp:
        log.info("offline build inputs in %s are up to date", inputs)
        return inputs

    shutil.rmtree(inputs, ignore_errors=True)
    wheels, debs = inputs / "wheels", inputs / "debs"
    wheels.mkdir(parents=True)
    debs.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    started = time.perf_counter()
    log.info("gathering the pinned wheels (%s torch) into %s", variant, wheels)
    if variant == "cpu":
        base = context / "requirements/base.txt"
        torch = [_pins(base, "torch"), _pins(base, "torchvision")]
        _run(
            [
                *pip,
                "download",
                "--quiet",
                "--no-deps",
                "--index-url",
                CPU_INDEX,
                "-d",
                str(wheels),
                *torch,
            ]
        )
    # `pip wheel` also builds the few sdists into wheels, so nothing compiles in the image.
    locked = ["--find-links", str(wheels), "--constraint", str(context / LOCK)]
    _run([*pip, "wheel", "--quiet", *locked, "-w", str(wheels), "-r", str(context / PINNED[0])])
    _run([*pip, "wheel", "--quiet", "--no-deps", "-w", str(wheels), "-r", str(context / PINNED[1])])
    _run([*pip, "wheel", "--quiet", *locked, "-w", str(wheels), *build_requires])
    log.info("downloading the Debian package dataset-fashion-mnist into %s", debs)
    if shutil.which("apt-get") is None:
        raise ConfigError("apt-get is missing: the image takes Fashion-MNIST from Debian's package")
    _run(["apt-get", "download", "-q", "dataset-fashion-mnist"], cwd=debs)
    write_json(stamp_file, stamp)
    log.info("offline build inputs gathered in %.0f s", time.perf_counter() - started)
    return inputs


def _run(command: list[str], cwd: Path | None = None) -> None:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        detail = "\n".join(
            line for line in (done.stderr or done.stdout).splitlines() if "is ignored" not in line
        )
        raise ConfigError(
            f"`{' '.join(command[:5])} ...` failed (exit {done.returncode}):\n{detail[-3000:]}"
        )


def resolve_base(engine: Engine, requested: str | None = None) -> str:
    """The base image: ``requested`` (it must exist or be pullable), else the official Python
    image, else its stand-in made from Debian packages (once; the engine keeps it)."""
    image = requested or OFFICIAL_BASE
    if engine.has_image(image):
        return image
    try:
        engine.docker("pull", "--quiet", image)
        return image
    except ConfigError as e:
        if requested:
            raise ConfigError(
                f"base image {requested}: not present and cannot be pulled ({e})"
            ) from e
        reason = str(e).splitlines()[-1]
    log.warning(
        "%s cannot be pulled (%s): using %s, an equivalent base built from Debian packages",
        OFFICIAL_BASE,
        reason,
        DEBIAN_BASE,
    )
    if not engine.has_image(DEBIAN_BASE):
        build_debian_base(engine)
    return DEBIAN_BASE


def build_debian_base(engine: Engine) -> None:
    """``mmdebstrap`` a minimal Debian bookworm with Python 3.11 and pip, imported as
    ``DEBIAN_BASE`` (about a minute and 150 MB)."""
    if shutil.which("mmdebstrap") is None:
        raise ConfigError(f"mmdebstrap is missing, needed for the local base image: {INSTALL_HINT}")
    log.info("building %s with mmdebstrap (about a minute)", DEBIAN_BASE)
    with tempfile.TemporaryDirectory(prefix="dyn-adapter-base-") as tmp:
        tar = Path(tmp) / "base.tar"
        _run(
            [
                "mmdebstrap",
                "--variant=minbase",
                f"--include={DEBIAN_BASE_PACKAGES}",
                # pip installs into the system Python, as in the official image.
                '--customize-hook=rm -f "$1"/usr/lib/python3.11/EXTERNALLY-MANAGED',
                "bookworm",
                str(tar),
            ]
        )
        engine.docker(
            "import",
            "--change", "ENV LANG=C.UTF-8",
            "--change", 'CMD ["python3"]',
            "--message", f"Debian bookworm minbase + {DEBIAN_BASE_PACKAGES}",
            str(tar),
            DEBIAN_BASE,
        )  # fmt: skip


def build_image(
    engine: Engine,
    tag: str,
    variant: TorchVariant = "auto",
    base_image: str | None = None,
) -> BuiltImage:
    """Build the project image ``tag`` from the repository's own files."""
    context = _context()
    torch_variant = resolve_variant(variant)
    gather_inputs(torch_variant, context)
    base = resolve_base(engine, base_image)
    started = time.perf_counter()
    engine.docker(
        "build",
        "--network", "none",  # the proof that the build needs no network
        "--build-arg", f"BASE_IMAGE={base}",
        "--build-arg", f"TORCH_VARIANT={torch_variant}",
        "--tag", tag,
        str(context),
        capture=False,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    image_id, size = engine.docker("image", "inspect", "--format", "{{.Id}} {{.Size}}", tag).split()
    return BuiltImage(tag, image_id, int(size), base, torch_variant, round(seconds, 1))


def push_image(engine: Engine, tag: str, registry: str) -> str:
    """Push ``tag`` to ``registry`` (``host:port`` or ``host:port/path``); returns the
    reference by digest (``registry/name@sha256:...``) that names exactly this image."""
    name = tag.rsplit("/", 1)[-1]
    remote = f"{registry.rstrip('/')}/{name}"
    engine.docker("tag", tag, remote)
    engine.docker("push", remote, capture=False)
    repository = remote.rsplit(":", 1)[0] if ":" in name else remote
    digests = json.loads(
        engine.docker("image", "inspect", "--format", "{{json .RepoDigests}}", remote)
    )
    found = [d for d in digests if d.startswith(f"{repository}@sha256:")]
    if not found:
        raise ConfigError(f"pushed {remote} but the engine reports no digest for {repository}")
    return str(found[0])


def write_record(path: Path, image: BuiltImage, digest: str | None) -> None:
    """``build/image/image.json``: what was built (``pipeline compile --image`` takes the
    digest)."""
    write_json(path, {**asdict(image), "digest": digest})
