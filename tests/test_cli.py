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
    # both named head settings, the configured one as the report's own model
    settings = {h["name"]: h for h in report["head_settings"]}
    assert set(settings) == {"balanced", "compact"} and report["heads"] == "balanced"
    assert settings["balanced"]["head_params"] == report["head_params"]
    assert settings["balanced"]["head_overhead"] == pytest.approx(report["head_overhead"])
    assert settings["compact"]["head_params"] < settings["balanced"]["head_params"]


@pytest.mark.parametrize("petl", ["adapter", "lora", "repadapter"])
def test_model_info_table(capsys, petl):
    assert main(["model-info", *TINY, "--petl", petl]) == 0
    out = capsys.readouterr().out
    assert f"PETL: {petl}" in out and "GFLOPs" in out and "head overhead" in out


def test_model_info_builds_the_chosen_head_setting(capsys):
    assert main(["model-info", *TINY, "--heads", "compact", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["heads"] == "compact"
    assert [e["head_depth"] for e in report["exits"]] == [1, 1, 1, 0]
    compact = next(h for h in report["head_settings"] if h["name"] == "compact")
    assert compact["head_params"] == report["head_params"]


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
    # The compact setting keeps the paper's trainable-parameter budget (Table 1: +59..+75% over
    # the base PETL method) on ViT-B/16 with 4 exits; the default setting does not.
    overhead = {h["name"]: h["head_overhead"] for h in report["head_settings"]}
    assert 0.59 <= overhead["compact"] <= 0.75 < overhead["balanced"]


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
