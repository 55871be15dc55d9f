"""The iso-accuracy budget and the operating point the registry gates on, on constructed curves."""

from __future__ import annotations

import json

import pytest
from conftest import evaluation_metrics

from dyn_adapter.artifacts import Evaluation
from dyn_adapter.errors import ConfigError
from dyn_adapter.evaluation.iso import iso_accuracy_point


def curve(*points):
    """Budget rows as ``evaluate`` writes them, from ``(budget, accuracy, gflops)``."""
    return [
        {"budget": b, "accuracy": a, "gflops": g, "gflops_ratio": g / 2.0} for b, a, g in points
    ]


def test_the_cheapest_budget_within_the_tolerance_is_chosen():
    rows = curve((0.3, 0.80, 0.6), (0.5, 0.846, 1.0), (0.7, 0.851, 1.4), (1.0, 0.852, 2.0))
    assert iso_accuracy_point(rows, reference=0.85, tolerance=0.005)["budget"] == 0.5


def test_a_budget_just_outside_the_tolerance_does_not_qualify():
    rows = curve((0.5, 0.8449, 1.0), (0.7, 0.851, 1.4))
    assert iso_accuracy_point(rows, reference=0.85, tolerance=0.005)["budget"] == 0.7


def test_cheapest_wins_even_if_listed_after_a_dearer_one():
    rows = curve((0.7, 0.86, 1.4), (0.4, 0.86, 0.8), (0.5, 0.86, 1.0))
    assert iso_accuracy_point(rows, reference=0.85, tolerance=0.0)["budget"] == 0.4


def test_no_budget_qualifies():
    rows = curve((0.5, 0.80, 1.0), (1.0, 0.83, 2.0))
    assert iso_accuracy_point(rows, reference=0.85, tolerance=0.005) is None
    assert iso_accuracy_point([], reference=0.85, tolerance=0.005) is None


def _evaluation(tmp_path, iso, budgets):
    """An evaluate output with ``budgets`` as (budget, accuracy, gflops_ratio) and the iso
    point as one such triple (None: no budget qualified)."""
    metrics = evaluation_metrics(0.85, 2.0, budgets, iso, static_accuracy=0.85)
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    return Evaluation(tmp_path)


def test_gate_reads_the_iso_point_when_there_is_one(tmp_path):
    rows = [(0.5, 0.846, 0.5), (1.0, 0.852, 1.0)]
    point = _evaluation(tmp_path, (0.5, 0.846, 0.5), rows).operating_point()
    assert (point.accuracy, point.budget, point.gflops_ratio) == (0.846, 0.5, 0.5)


def test_without_an_iso_point_the_gate_reads_the_largest_budget(tmp_path):
    rows = [(1.0, 0.83, 1.0), (0.5, 0.80, 0.5)]
    point = _evaluation(tmp_path, None, rows).operating_point()
    assert (point.accuracy, point.budget, point.gflops_ratio) == (0.83, 1.0, None)


def test_headline_leaves_out_what_is_not_a_finite_number(tmp_path):
    headline = _evaluation(tmp_path, None, [(1.0, 0.83, 1.0)]).headline()
    assert "iso_gflops_ratio" not in headline
    assert headline["accuracy_budget_1"] == 0.83


def test_a_foreign_metrics_file_names_the_command_to_run(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"val_accuracy": [0.8]}))
    with pytest.raises(ConfigError, match="run `dyn-adapter evaluate` again"):
        Evaluation(tmp_path)


def test_the_choice_reads_the_validation_columns_when_told_to():
    """Validation and test disagree: validation says 0.5 is the cheapest budget that keeps the
    reference, test would say 0.3; the validation keys decide."""
    rows = [
        {
            "budget": 0.3,
            "accuracy": 0.86,
            "gflops_ratio": 0.3,
            "val_accuracy": 0.70,
            "val_gflops_ratio": 0.3,
        },
        {
            "budget": 0.5,
            "accuracy": 0.80,
            "gflops_ratio": 0.5,
            "val_accuracy": 0.85,
            "val_gflops_ratio": 0.5,
        },
        {
            "budget": 1.0,
            "accuracy": 0.86,
            "gflops_ratio": 1.0,
            "val_accuracy": 0.86,
            "val_gflops_ratio": 0.2,
        },
    ]
    # (budget 1.0's validation cost is made the lowest so that reading either column alone fails)
    point = iso_accuracy_point(rows, 0.85, 0.0, accuracy="val_accuracy", cost="val_gflops_ratio")
    assert point["budget"] == 1.0
    rows[2]["val_accuracy"] = 0.84
    point = iso_accuracy_point(rows, 0.85, 0.0, accuracy="val_accuracy", cost="val_gflops_ratio")
    assert point["budget"] == 0.5
