"""Multi-exit training component (also trains the two baselines)."""

from kfp.dsl import Dataset, Input, Metrics, Model, Output


def train_model(
    params: dict,
    overrides: list,
    variant: str,
    data: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    tracking_uri: str = "",
    pipeline_run_id: str = "",
):
    """Train Dyn-Adapter (variant ``dyn``), the frozen-probe exits (``probe``) or the static
    PETL model (``static``) with the same recipe."""
    from dyn_adapter import steps

    with steps.user_errors("train"):
        for name, value in steps.train(params, overrides, variant, data.path, model.path).items():
            metrics.log_metric(name, value)
        model.metadata["variant"] = variant
        steps.track(
            f"train-{variant}", model.path, params, overrides, tracking_uri, pipeline_run_id
        )
