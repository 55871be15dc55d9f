"""Threshold search component (Optuna on cached validation logits)."""

from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output


def search_thresholds(
    params: dict,
    overrides: list,
    model: Input[Model],
    data: Input[Dataset],
    thresholds: Output[Artifact],
    metrics: Output[Metrics],
    stage_name: str = "search",
    tracking_uri: str = "",
    pipeline_run_id: str = "",
):
    """Per-exit thresholds for every FLOPs budget, the geometric baseline and the oracle."""
    from dyn_adapter import steps

    with steps.user_errors("search"):
        result = steps.search(params, overrides, model.path, data.path, thresholds.path)
        for name, value in result.items():
            metrics.log_metric(name, value)
        steps.track(stage_name, thresholds.path, params, overrides, tracking_uri, pipeline_run_id)
