"""A smoke run of the real-data VTAB benchmark command: a tiny model on the UCI digits, two
training seeds, through the real VTAB pipeline; the long runs are not in CI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pipelines import tiny_pipeline_params

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.integration
@pytest.mark.slow
def test_the_benchmark_command_writes_its_table(tmp_path):
    params = tiny_pipeline_params(tmp_path, "vtab", tmp_path / "vtab" / "digits")
    out = tmp_path / "vtab_real.json"
    cmd = [
        sys.executable,
        str(REPO / "bench" / "vtab_real.py"),
        "--tasks",
        "digits",
        "--seeds",
        "0,1",
        "--seed-tasks",
        "digits",
        "--max-test",
        "60",
        "--data-root",
        str(tmp_path / "vtab"),
        "--params",
        str(params),
        "--pipeline-root",
        str(tmp_path / "kfp"),
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--out",
        str(out),
        "--set",
        "train.head_warmup.epochs=1",
        "--set",
        "train.head_warmup.views=1",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [(r["task"], r["seed"]) for r in result["tasks"]] == [("digits", 0), ("digits", 1)]
    row = result["tasks"][0]
    assert row["test_images"] == 60 and row["static_petl_accuracy"] is not None
    assert (
        row["half_gflops_vs_static_petl"]["interval"][0]
        <= row["half_gflops_vs_static_petl"]["difference"]
    )
    assert "CC BY 4.0" in result["sources"]["digits"]["licence"]
    assert result["seed_spread"]["digits"]["seeds"] == [0, 1]
    assert result["seconds"] > 0 and result["machine"]["cpus"]
    assert "| digits | 1 | 60 |" in out.with_suffix(".md").read_text()
