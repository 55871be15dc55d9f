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
    from components import shim
    from dyn_adapter.stages import train

    with shim.user_errors("train"):
        p = shim.load(params, overrides)
        result = train.run(p, variant, data.path, model.path)
        for name, value in train.metrics(result).items():
            metrics.log_metric(name, value)
        model.metadata["variant"] = variant
        shim.track(f"train-{variant}", model.path, p, tracking_uri, pipeline_run_id, data.path)
