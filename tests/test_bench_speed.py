"""The speed benchmark's smoke run: a tiny ViT on the CPU, every row of the GPU matrix's shape."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROW_KEYS = {"backbone", "img_size", "amp", "batch", "engine", "variant", "images_per_s"}
RATIO_KEYS = {"flops_ratio", "time_ratio", "time_over_flops"}


@pytest.mark.slow
def test_the_speed_bench_writes_one_row_per_measurement(tmp_path):
    out = tmp_path / "speed.json"
    args = ["--preset", "smoke", "--device", "cpu", "--repeats", "2", "--warmup", "1"]
    args += ["--images", "16", "--images-b1", "8", "--threshold-images", "64", "--out", str(out)]
    subprocess.run([sys.executable, str(REPO / "bench" / "dynamic_speed.py"), *args], check=True)
    result = json.loads(out.read_text())
    env = result["environment"]
    assert env["device"] == "cpu" and env["torch"] and env["timm"]
    rows = result["rows"]
    assert not [r for r in rows if "error" in r]
    cells = {(r["amp"], r["batch"]) for r in rows}
    assert cells == {(amp, b) for amp in ("fp32", "bf16") for b in (1, 4)}
    for amp, batch in cells:
        got = {
            (r["engine"], r["variant"]): r for r in rows if (r["amp"], r["batch"]) == (amp, batch)
        }
        for engine in ("eager", "compiled"):
            for variant in ("static", "halving", "none_leave", "all_first"):
                row = got[(engine, variant)]
                assert set(row) >= ROW_KEYS | RATIO_KEYS
                assert row["time_over_flops"] == pytest.approx(
                    row["time_ratio"] / row["flops_ratio"]
                )
            assert got[(engine, "static")]["time_ratio"] == 1.0
            none_leave, all_first = got[(engine, "none_leave")], got[(engine, "all_first")]
            assert none_leave["exit_fractions"][-1] == 1.0
            assert none_leave["flops_ratio"] > 1  # the early heads ran too
            assert all_first["exit_fractions"][0] == 1.0 and all_first["flops_ratio"] < 1
            halving = got[(engine, "halving")]
            assert 0 < halving["exit_fractions"][0] < 1  # some leave at the first exit, not all
            assert all_first["flops_ratio"] < halving["flops_ratio"] < none_leave["flops_ratio"]
        assert ("timm", "plain") in got
        assert (("timm", "plain_cast") in got) == (amp == "bf16")
