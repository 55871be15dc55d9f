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
    from components import shim
    from dyn_adapter.artifacts import MODEL_DIR
    from dyn_adapter.stages import search

    with shim.user_errors("search"):
        p = shim.load(params, overrides)
        result = search.run(p, f"{model.path}/{MODEL_DIR}", data.path, thresholds.path)
        for name, value in result.metrics().items():
            metrics.log_metric(name, value)
        shim.track(stage_name, thresholds.path, p, tracking_uri, pipeline_run_id, data.path)
