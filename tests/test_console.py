"""A stage command in full at the CLI, briefly under ``dvc repro`` (``$DVC_STAGE`` set)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml
from conftest import TINY_PARAMS
from test_prepare import make_fashion_mnist

from dyn_adapter.console import stage_log_path


def prepare(
    tmp_path, env_extra: dict[str, str], data_path: str = "fmnist"
) -> subprocess.CompletedProcess:
    make_fashion_mnist(tmp_path / "fmnist", per_class=3, test_per_class=1)
    params = {**TINY_PARAMS, "data": {"path": data_path, "train_size": 10, "val_size": 10}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {k: v for k, v in os.environ.items() if k != "DVC_STAGE"} | env_extra
    return subprocess.run(
        [sys.executable, "-m", "dyn_adapter.cli", "prepare", "--out", "outputs/prepared"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_at_the_cli_a_stage_logs_to_the_terminal(tmp_path):
    proc = prepare(tmp_path, {})
    assert proc.returncode == 0, proc.stderr
    assert "INFO dyn_adapter.data.prepare: prepared" in proc.stderr
    assert "done in" not in proc.stdout
    assert not (tmp_path / "outputs/logs").exists()
    # When the stage ran, for its MLflow run's duration however late it is logged.
    timing = json.loads((tmp_path / "outputs/prepared/timing.json").read_text())
    assert 0 < timing["seconds"] < 300 and timing["started"] < timing["ended"]


def test_under_dvc_a_stage_says_its_result_and_time_and_logs_to_a_file(tmp_path):
    proc = prepare(tmp_path, {"DVC_STAGE": "prepare"})
    assert proc.returncode == 0, proc.stderr
    log = tmp_path / "outputs/logs/dvc/prepare.log"
    assert "INFO" not in proc.stderr
    assert "INFO dyn_adapter.data.prepare: prepared" in log.read_text()
    result, done = proc.stdout.strip().splitlines()
    assert result.startswith("prepared {'train': 10, 'val': 10, 'test': 10}")
    assert done.startswith("prepare: done in ")
    assert done.endswith("; whole log: outputs/logs/dvc/prepare.log")


def test_stage_log_names_are_file_names():
    assert stage_log_path("dvc.yaml:train").name == "train.log"
    assert stage_log_path("vtab@dtd").name == "vtab_dtd.log"


def test_under_dvc_a_failed_stage_says_where_its_log_is(tmp_path):
    proc = prepare(tmp_path, {"DVC_STAGE": "prepare"}, data_path="nowhere")
    assert proc.returncode == 2
    error, where = proc.stderr.strip().splitlines()
    assert error.startswith("dyn-adapter prepare: error: data.path:")
    assert where.startswith("prepare: failed after ") and where.endswith("prepare.log")
    assert "failed: data.path:" in (tmp_path / "outputs/logs/dvc/prepare.log").read_text()
