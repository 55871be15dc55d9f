"""The last-exit criterion as bench/last_exit_criterion.py reads it from ablation tables."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location(
    "last_exit_criterion", REPO / "bench" / "last_exit_criterion.py"
)
criterion = importlib.util.module_from_spec(spec)
spec.loader.exec_module(criterion)


def _diff(d: float, half: float = 0.003) -> dict:
    return {"difference": d, "interval": [d - half, d + half], "resolved": abs(d) > half}


def _summary(variant: str, exits: list[float], last_vs_static: float, seeds=(0, 1)) -> dict:
    return {
        "variant": variant,
        "seeds": list(seeds),
        "averaged": [_diff(d) for d in exits],
        "last_vs_static": _diff(last_vs_static),
    }


def _table(*rows: dict) -> dict:
    joint = _summary("joint", [0, 0, 0, 0], -0.003)
    return {"reference": "joint", "static": "static", "summary": [joint, *rows]}


def test_a_candidate_qualifies_only_when_every_check_holds_pooled_over_tasks():
    tables = {
        "a": _table(
            _summary("exit gradient 0", [-0.001, 0, 0, 0.001], -0.001),
            _summary("exit gradient 0.3", [0, 0, 0, -0.008], -0.009),  # last below joint
            _summary("last-exit weight 3", [-0.01, -0.01, -0.01, 0.004], 0.002),  # early lose 1
            _summary("exit gradient 0, distill", [0, 0, 0, 0], 0.0, seeds=(0,)),  # one seed
        ),
        "b": _table(
            _summary("exit gradient 0", [0, 0, 0, 0.0], -0.002),
            _summary("exit gradient 0.3", [0, 0, 0, -0.008], -0.009),
            _summary("last-exit weight 3", [-0.01, -0.01, -0.01, 0.004], 0.002),
            _summary("exit gradient 0, distill", [0, 0, 0, 0], 0.0),
        ),
    }
    result = criterion.read(tables)
    rows = {c["variant"]: c for c in result["candidates"]}
    assert rows["exit gradient 0"]["qualifies"]
    assert rows["exit gradient 0"]["last_vs_static"]["difference"] == pytest.approx(-0.0015)
    assert not rows["exit gradient 0.3"]["checks"]["b_last_not_below_reference"]
    assert not rows["exit gradient 0.3"]["checks"]["a_last_vs_static"]
    assert not rows["last-exit weight 3"]["checks"]["c_early_loss"]
    assert not rows["exit gradient 0, distill"]["complete"]
    assert result["winner"] == "exit gradient 0"
    assert "Winner: `exit gradient 0`" in criterion.markdown(result)


def test_pooled_interval_narrows_as_independent_tasks_add():
    one = criterion.pooled([_diff(0.0, 0.004)])
    two = criterion.pooled([_diff(0.0, 0.004), _diff(0.0, 0.004)])
    assert one["interval"] == pytest.approx([-0.004, 0.004])
    assert two["interval"][1] == pytest.approx(0.004 / 2**0.5)
