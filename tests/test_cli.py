"""The dyn-adapter command line: model-info output and clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dyn_adapter.cli import main

TINY = ["--backbone", "vit_tiny_patch16_224", "--img-size", "32"]


def test_model_info_json(capsys):
    assert main(["model-info", *TINY, "--exits", "3,6,9,12", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"full_gflops", "flops_unit", "petl_params", "head_params", "exits"} <= report.keys()
    assert [e["block"] for e in report["exits"]] == [3, 6, 9, 12]
    assert {"block", "gflops_cumulative", "head_params"} <= report["exits"][0].keys()
    assert report["exits"][-1]["gflops_cumulative"] == report["full_gflops"]
    assert report["head_params"] == sum(e["head_params"] for e in report["exits"])
    assert "multiply-add" in report["flops_unit"]


@pytest.mark.parametrize("petl", ["adapter", "lora", "repadapter"])
def test_model_info_table(capsys, petl):
    assert main(["model-info", *TINY, "--petl", petl]) == 0
    out = capsys.readouterr().out
    assert f"PETL: {petl}" in out and "GFLOPs" in out and "head overhead" in out


def test_vit_b16_full_model_flops(capsys):
    assert (
        main(["model-info", "--backbone", "vit_base_patch16_224", "--img-size", "224", "--json"])
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    # ViT-B/16 at 224 px: 17.58 G multiply-adds for the blocks; the exit heads come on top.
    heads = sum(e["head_gflops"] for e in report["exits"])
    assert 0 < heads < 0.01 * report["full_gflops"]
    assert report["full_gflops"] - heads == pytest.approx(17.58, abs=0.03)


def test_bad_exit_is_a_clear_error():
    proc = subprocess.run(
        [sys.executable, "-m", "dyn_adapter.cli", "model-info", *TINY, "--exits", "3,13"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "exits.blocks: block 13 is out of range" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_help_lists_model_info():
    proc = subprocess.run(
        [sys.executable, "-m", "dyn_adapter.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and "model-info" in proc.stdout
