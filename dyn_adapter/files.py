"""Atomic file output and content hashing."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` only on success.

    Readers never see a half-written file, and a failure leaves the old file (if any) in place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name keeps the extension: some writers (the KFP compiler) check it.
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent
    )
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_replaceable(out_dir: Path, marker: str, what: str) -> None:
    """Refuse to replace anything but an empty directory or an earlier ``what`` (a directory
    holding the file ``marker``)."""
    from .errors import ConfigError

    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ConfigError(f"{out_dir}: exists and is not a directory; choose another output")
    if any(out_dir.iterdir()) and not (out_dir / marker).is_file():
        raise ConfigError(
            f"{out_dir}: exists and is not {what} (no {marker}); it would be replaced, so "
            "choose another output directory or remove it yourself"
        )


def replace_dir(tmp: Path, out_dir: Path, marker: str, what: str) -> None:
    """Rename the complete directory ``tmp`` onto ``out_dir`` (see :func:`check_replaceable`);
    the old one is moved aside first and put back on failure."""
    check_replaceable(out_dir, marker, what)
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{secrets.token_hex(4)}"
        os.replace(out_dir, old)
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        if old is not None:
            os.replace(old, out_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def cache_dir() -> Path:
    """Where the project keeps what it can make again (converted weights, mirrored S3 data,
    served models): ``$DYN_ADAPTER_CACHE``, default ``~/.cache/dyn-adapter``."""
    return Path(os.environ.get("DYN_ADAPTER_CACHE", Path.home() / ".cache" / "dyn-adapter"))
