"""A smoke run of the risk-control benchmark command on a tiny trained model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import tiny_params, write_prepared

from dyn_adapter.policies import risk
from dyn_adapter.stages import train

REPO = Path(__file__).resolve().parents[1]


def test_the_benchmark_command_writes_a_row_per_task(tmp_path):
    data = write_prepared(tmp_path / "prepared", sizes={"train": 64, "val": 32, "test": 400})
    train.run(
        tiny_params(tmp_path, "train.epochs=1", "train.evaluate_test=false"),
        "dyn",
        data,
        tmp_path / "train",
    )
    out = tmp_path / "risk.json"
    for task, window in (("a", "test"), ("b", "none"), ("b", "test"), ("a", "test")):
        cmd = [
            sys.executable,
            str(REPO / "bench" / "risk_control.py"),
            *("--task", task, "--model", str(tmp_path / "train" / "model"), "--data", str(data)),
            *("--epsilons", "0.01,0.1", "--splits", "10", "--out", str(out)),
            *("--window", window),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["tasks"]
    # a rerun replaces its task's row of the same window
    assert [(r["task"], r["window_images"]) for r in rows] == [("b", None), ("b", 200), ("a", 200)]
    strict, loose = rows[0]["levels"]
    assert strict == {"epsilon": 0.01, "skipped": "needs 299 calibration images"}  # 200 here
    assert loose["splits"] == 10 and (loose["calibration_images"], loose["test_images"]) == (
        200,
        200,
    )
    assert 0 <= loose["violation_frequency"] <= 1 and 0 < loose["mean_gflops_ratio"] <= 1
    # certified for 200 images' realised risk, a level needs more images than for the expected
    need = risk.min_calibration_size(0.01, 0.05, 200)
    assert need > 299 and rows[1]["levels"][0]["skipped"] == f"needs {need} calibration images"
    assert rows[1]["levels"][1]["window_images"] == 200
    table = out.with_suffix(".md").read_text()
    assert "| b | expected risk | 400 | 200 / 200 | 0.1 |" in table
    assert "| b | 200 images | 400 | 200 / 200 | 0.1 |" in table
