"""Every command but ``pipeline`` starts where only the library's own needs are installed
(a GPU host or a serving node without kfp, boto3, mlflow, optuna or dvc)."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Runs the CLI with the orchestration and storage packages made unimportable.
BLOCKED = """
import importlib.abc, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        top = name.split(".")[0]
        if top in {"kfp", "boto3", "botocore", "mlflow", "optuna", "dvc"}:
            raise ModuleNotFoundError(f"No module named {top!r}", name=top)
sys.meta_path.insert(0, Blocked())
from dyn_adapter.cli import main
sys.exit(main(sys.argv[1:]))
"""


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKED, *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "command", ["model-info", "prepare", "train", "search", "calibrate", "evaluate", "ablate"]
)
def test_commands_start_without_kfp_or_boto3(command):
    proc = cli(command, "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage: dyn-adapter" in proc.stdout


def test_the_pipeline_command_says_what_it_needs():
    listing = cli("--help")
    assert listing.returncode == 0 and "unavailable here: needs kfp" in listing.stdout
    proc = cli("pipeline", "run", "--pipeline-root", "x")
    assert proc.returncode == 2
    assert "needs the Python package 'kfp'" in proc.stderr and "make setup" in proc.stderr


def test_help_loads_no_heavy_package():
    """`dyn-adapter --help` answers in well under a second: building every parser (the
    pipeline's included) imports neither torch, timm, kfp nor mlflow."""
    code = (
        "import sys; from dyn_adapter.cli import build_parser; build_parser(); "
        "print(sorted({'torch', 'timm', 'kfp', 'mlflow', 'optuna'} & set(sys.modules)))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"
