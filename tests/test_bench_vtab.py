"""A smoke run of the real-data VTAB benchmark command: a tiny model on the UCI digits, two
training seeds, through the real VTAB pipeline; the long runs are not in CI."""

from __future__ import annotations

import importlib.util
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
    assert [r["seed"] for r in result["runs"]] == [0, 1]
    assert result["runs"][0]["mean_static_petl"] == row["static_petl_accuracy"]
    table = out.with_suffix(".md").read_text()
    assert "| digits | 1 | 60 |" in table and "seed 1, mean of 1 task(s): static PETL" in table


def _bench():
    spec = importlib.util.spec_from_file_location("vtab_real", REPO / "bench" / "vtab_real.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _table(rows, seconds=60.0, sha="a" * 64):
    return {
        "command": "python bench/vtab_real.py",
        "config_sha256": sha,
        "overrides": [],
        "max_test": 5000,
        "seconds": seconds,
        "runs": [{"seed": s, "tasks": [t], "seconds": seconds} for t, s, _ in rows],
        "sources": {t: {} for t, _, _ in rows},
        "tasks": [
            {"task": t, "seed": s, **{k: acc for k in ("static_petl_accuracy", "accuracy")}}
            for t, s, acc in rows
        ],
    }


def test_update_replaces_the_rows_run_again_and_keeps_the_others():
    bench = _bench()
    before = _table([("digits", 0, 0.9), ("mnist_5k", 0, 0.8)])
    before["config_sha256_history"] = [{"config_sha256": "c" * 64}]
    merged = bench.merge(before, _table([("digits", 0, 0.95), ("digits", 1, 0.93)]))
    assert merged["config_sha256_history"] == before["config_sha256_history"]  # kept
    assert [(r["task"], r["seed"], r["accuracy"]) for r in merged["tasks"]] == [
        ("digits", 0, 0.95),
        ("digits", 1, 0.93),
        ("mnist_5k", 0, 0.8),
    ]
    assert len(merged["runs"]) == 4 and merged["seconds"] == 120.0
    assert merged["seed_spread"]["digits"]["seeds"] == [0, 1]
    # the mean weighs each task once, its seeds averaged first: (0.94 + 0.8) / 2
    assert merged["mean_over_tasks"]["accuracy"] == pytest.approx(0.87)
    assert merged["mean_over_tasks"]["tasks"] == ["digits", "mnist_5k"]


def _paired(a_right: int, b_right: int, n: int) -> dict:
    return {"difference": (a_right - b_right) / n, "only_a_right": a_right, "only_b_right": b_right}


def test_pooled_differences_average_seeds_as_correlated_and_tasks_as_independent():
    bench = _bench()
    n = 1000
    rows = [  # digits: two seeds on the same images; mnist_5k: one seed
        {"task": "digits", "seed": 0, "test_images": n, "last_exit_vs_static_petl": _paired(30, 50, n)},
        {"task": "digits", "seed": 1, "test_images": n, "last_exit_vs_static_petl": _paired(40, 40, n)},
        {"task": "mnist_5k", "seed": 0, "test_images": n, "last_exit_vs_static_petl": _paired(20, 10, n)},
    ]  # fmt: skip
    pooled = bench.pooled_differences(rows)
    # digits: mean of -0.02 and 0 = -0.01; mnist_5k: +0.01; over the tasks: 0
    assert pooled["last_exit"]["difference"] == pytest.approx(0.0)
    sd = [
        ((80 / n - 0.02**2) / n) ** 0.5,
        (80 / n) ** 0.5 / n**0.5,
        ((30 / n - 0.01**2) / n) ** 0.5,
    ]
    digits_sd = (sd[0] + sd[1]) / 2  # fully correlated seeds: the mean of the deviations
    half = 1.96 * (digits_sd**2 + sd[2] ** 2) ** 0.5 / 2
    assert pooled["last_exit"]["interval"] == pytest.approx([-half, half])
    assert not pooled["last_exit"]["resolved"]
    assert "half_gflops" not in pooled  # no row has that comparison: no pooled number


def test_update_refuses_a_table_of_another_configuration():
    bench = _bench()
    with pytest.raises(SystemExit, match="config_sha256"):
        bench.merge(_table([("digits", 0, 0.9)]), _table([("digits", 1, 0.9)], sha="b" * 64))


def test_the_configuration_is_what_runs_not_the_file_bytes(tmp_path):
    bench = _bench()
    params = REPO / "params.yaml"
    base = bench.configuration_sha256(params, [])
    edited = tmp_path / "params.yaml"
    text = params.read_text()
    # a comment and a key spelled out at its default leave the configuration as it was
    edited.write_text("# reworded\n" + text.replace("heads: balanced", "heads: balanced  # !"))
    assert bench.configuration_sha256(edited, []) == base
    assert bench.configuration_sha256(params, ["train.epochs=16"]) == base
    assert bench.configuration_sha256(params, ["register.model_name=other"]) == base
    # the pipeline sets the data source, path and calibration split of every task itself
    assert bench.configuration_sha256(params, ["data.calibration_size=5"]) == base
    assert bench.configuration_sha256(params, ["data.selection_size=5"]) == base
    assert bench.configuration_sha256(params, ["data.test_size=100"]) != base  # a user override
    assert bench.configuration_sha256(params, ["train.epochs=8"]) != base
    assert bench.configuration_sha256(params, ["model.exits.heads=compact"]) != base


def test_update_refuses_before_running_anything(tmp_path):
    bench = _bench()
    out = tmp_path / "table.json"
    out.write_text(json.dumps(_table([("digits", 0, 0.9)])))
    args = ["--tasks", "digits", "--update", "--out", str(out), "--data-root", str(tmp_path / "d")]
    args += ["--params", str(REPO / "params.yaml")]
    with pytest.raises(SystemExit, match="config_sha256"):
        bench.main(args)
    assert not (tmp_path / "d").exists()  # no task was written, no pipeline started
