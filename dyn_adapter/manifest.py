"""The small manifest every stage writes next to its outputs: what produced them, from what."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from . import __version__
from .artifacts import TIMING_FILE

_LIBRARIES = ("torch", "timm", "numpy", "safetensors", "mlflow", "kfp", "optuna", "dvc")


def config_hash(config: Any) -> str:
    """sha256 of the canonical JSON of a config (plain data)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def code_version() -> str:
    """The package version, plus the git commit when running from a checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def stage_manifest(stage: str, config: Any, **inputs: Any) -> dict[str, Any]:
    """Manifest of one stage run: stage, config and its hash, inputs, code and library versions."""
    return {
        "stage": stage,
        "config_hash": config_hash(config),
        "config": config,
        "inputs": inputs,
        "code_version": code_version(),
        "libraries": library_versions(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_timing(out_dir: str | Path, started: float) -> None:
    """Record in ``out_dir`` when the stage's command started (``time.time()``) and that it
    ended now: MLflow shows the stage's run with its true duration, however later it is
    logged (``dyn-adapter track`` after ``dvc repro``)."""
    from .files import write_json

    ended = datetime.now(UTC)
    write_json(
        Path(out_dir) / TIMING_FILE,
        {
            "started": datetime.fromtimestamp(started, UTC).isoformat(),
            "ended": ended.isoformat(),
            "seconds": round(ended.timestamp() - started, 3),
        },
    )


def read_timing(out_dir: str | Path) -> tuple[int, int] | None:
    """``(start, end)`` in epoch milliseconds from ``out_dir``'s timing record, if it has one."""
    path = Path(out_dir) / TIMING_FILE
    try:
        record = json.loads(path.read_text())
        start, end = (datetime.fromisoformat(record[k]) for k in ("started", "ended"))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)
