"""Data preparation component."""

from kfp.dsl import Dataset, Metrics, Output


def prepare_data(
    params: dict,
    overrides: list,
    data: Output[Dataset],
    metrics: Output[Metrics],
    tracking_uri: str = "",
    pipeline_run_id: str = "",
):
    """Read the configured source into seeded, checksummed train/val/test splits."""
    from dyn_adapter import steps

    with steps.user_errors("prepare"):
        for name, value in steps.prepare(params, overrides, data.path).items():
            metrics.log_metric(name, value)
        steps.track("prepare", data.path, params, overrides, tracking_uri, pipeline_run_id)
