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
    from components import shim
    from dyn_adapter.stages import prepare

    with shim.user_errors("prepare"):
        p = shim.load(params, overrides)
        for name, value in prepare.metrics(prepare.run(p, data.path)).items():
            metrics.log_metric(name, value)
        shim.track("prepare", data.path, p, tracking_uri, pipeline_run_id, data.path)
