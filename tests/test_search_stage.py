"""The search stage end to end on a tiny trained model."""

from __future__ import annotations

import json

import pytest
from test_train import params

from dyn_adapter.stages import search, train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny model, trained once, that every search test reuses."""
    from conftest import write_prepared

    root = tmp_path_factory.mktemp("search")
    data = write_prepared(root / "prepared")
    p = params(root, "train.epochs=1", "train.evaluate_test=false")
    train.run(p, "dyn", data, root / "train")
    return root / "train" / "model", data


def run_search(tmp_path, trained, *overrides):
    model_dir, data = trained
    p = params(tmp_path, *overrides)
    return search.run(p, model_dir, data, tmp_path / "search").thresholds


def test_search_stage_writes_thresholds_for_every_budget(tmp_path, trained, monkeypatch):
    from dyn_adapter.console import PROGRESS_FILE_ENV

    monkeypatch.setenv(PROGRESS_FILE_ENV, str(tmp_path / "progress.jsonl"))
    result = run_search(tmp_path, trained, "search.trials=20", "search.budgets=[0.6, 1.0]")
    records = [json.loads(x) for x in (tmp_path / "progress.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["done"], r["total"], r["unit"]) for r in records] == [
        ("search", 1, 2, "budgets"),
        ("search", 2, 2, "budgets"),
    ]
    saved = json.loads((tmp_path / "search" / "thresholds.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert [r["budget"] for r in saved["budgets"]] == [0.6, 1.0]
    assert saved["search_seconds"] > 0
    for r in saved["budgets"]:
        assert len(r["thresholds"]) == 3 and r["gflops_ratio"] <= r["budget"] + 1e-9
        if r["geometric"] is not None:
            assert r["accuracy"] >= r["geometric"]["accuracy"]
    assert saved["oracle"]["accuracy"] >= max(r["accuracy"] for r in saved["budgets"])
    assert (tmp_path / "search" / "optuna.db").is_file()
    assert "| budget |" in (tmp_path / "search" / "pareto.md").read_text()


def test_search_accuracy_never_falls_with_budget(tmp_path, trained):
    result = run_search(
        tmp_path, trained, "search.trials=10", "search.budgets=[1.0, 0.5, 0.7, 0.9]"
    )
    rows = result["budgets"]
    assert [r["budget"] for r in rows] == [0.5, 0.7, 0.9, 1.0]
    accs = [r["accuracy"] for r in rows]
    assert accs == sorted(accs)
