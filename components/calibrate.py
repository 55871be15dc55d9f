"""Risk-control component: exit thresholds certified on the calibration split (Learn then Test)."""

from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output


def calibrate_thresholds(
    params: dict,
    overrides: list,
    model: Input[Model],
    data: Input[Dataset],
    risk_points: Output[Artifact],
    metrics: Output[Metrics],
    report: Output[Markdown],
    tracking_uri: str = "",
    pipeline_run_id: str = "",
):
    """For each calibrate.epsilons: the lowest shared exit threshold whose risk is <= epsilon
    with probability >= 1 - delta, on images that need no labels."""
    import shutil

    from components import shim
    from dyn_adapter.artifacts import MODEL_DIR, RISK_MARKDOWN
    from dyn_adapter.stages import calibrate

    with shim.user_errors("calibrate"):
        p = shim.load(params, overrides)
        result = calibrate.run(p, f"{model.path}/{MODEL_DIR}", data.path, risk_points.path)
        for name, value in result.metrics().items():
            metrics.log_metric(name, value)
        shutil.copyfile(f"{risk_points.path}/{RISK_MARKDOWN}", report.path)
        shim.track("calibrate", risk_points.path, p, tracking_uri, pipeline_run_id, data.path)
