"""The run summary a finished local run prints: every figure names its split, exits are
numbered one way, and the run's outputs are named."""

from pipeline.summary import format_summary

DIFFERENCE = {"difference": 0.0123, "interval": [-0.003, 0.0251], "resolved": False}
SUMMARY = {
    "kind": "demo",
    "seconds": 12.0,
    "exits": [
        {"block": 3, "accuracy": 0.5, "gflops_cumulative": 1.0},
        {"block": 12, "accuracy": 0.8, "gflops_cumulative": 4.0},
    ],
    "static_petl": {"accuracy": 0.79, "accuracy_interval": [0.78, 0.8]},
    "frozen_probe_exits": [{"accuracy": 0.4}, {"accuracy": 0.7}],
    "iso_accuracy": {
        "accuracy": 0.8,
        "accuracy_interval": [0.79, 0.81],
        "budget": 0.5,
        "gflops_ratio": 0.4,
    },
    "half_gflops": {"accuracy": 0.8, "accuracy_interval": [0.79, 0.81], "gflops_ratio": 0.45,
                    "budget": 0.5},
    "comparisons": {"iso_vs_static_petl": DIFFERENCE},
    "risk_points": [],
    "registered": {"name": "m", "version": "1", "aliases": ["champion"], "reason": "r"},
    "tracking_uri": "sqlite:///x",
    "log": "outputs/kfp/logs/run.log",
    "evaluation_dir": "outputs/kfp/evaluate",
    "registration_dir": "outputs/kfp/register",
}  # fmt: skip


def test_each_figure_names_its_split_and_exits_count_from_zero():
    text = format_summary(SUMMARY)
    assert "exit 0 (block 3): 0.5000" in text and "exit 1 (block 12): 0.8000" in text
    for line in text.splitlines():
        if "accuracy" in line or "points" in line:
            assert "test" in line, line
    assert "budget chosen on validation" in text


def test_the_run_outputs_are_named():
    text = format_summary(SUMMARY)
    assert "model card outputs/kfp/evaluate/model_card.md" in text
    assert "plots outputs/kfp/evaluate/plots/" in text
    assert "registration outputs/kfp/register" in text
    assert "full task logs: outputs/kfp/logs/run.log" in text


def test_the_run_page_is_linked_for_a_file_store_and_a_server():
    from pipeline.summary import _ui

    local = _ui("sqlite:///outputs/mlflow/mlflow.db", "1", "abc")
    assert local == (
        "`mlflow ui --backend-store-uri sqlite:///outputs/mlflow/mlflow.db`, then "
        "http://127.0.0.1:5000/#/experiments/1/runs/abc?workflowType=machine_learning"
    )
    assert _ui("http://mlflow:5000/", "2", None) == (
        "http://mlflow:5000/#/experiments/2/runs?workflowType=machine_learning"
    )
    assert _ui("sqlite:///x", None, None) is None
    assert f"see the run: {local}" in format_summary({**SUMMARY, "mlflow_ui": local})
