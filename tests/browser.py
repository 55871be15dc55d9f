"""A real headless browser for UI checks: Debian's Chromium, as `make test` installs it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

# No sync, updates or other background traffic: this machine has no way out, and each
# refused connection slows the page.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def rendered_dom(url: str, profile: Path, wait_ms: int = 15_000) -> str:
    """The page's DOM after its scripts ran for ``wait_ms`` of virtual time."""
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is missing: `make test` installs it (make browser)")
    done = subprocess.run(
        [binary, *FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={wait_ms}",
         "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def visible_text(dom: str) -> str:
    """The page's text, its elements' texts joined by ``|``."""
    return re.sub(r"\s*\|[\s|]*", "|", re.sub(r"<[^>]+>", "|", dom))


def opens_on_model_training(text: str) -> bool:
    """MLflow 3's sidebar of an experiment's model training (Runs, Models, Model registry),
    not its GenAI one (Overview, Observability, ...), which a link without
    ``workflowType=machine_learning`` opens on, even on the runs table."""
    return "|Model registry|" in text and "|Observability|" not in text
