"""The VTAB profile's own components: each task's overrides, and the VTAB table."""

from kfp.dsl import Artifact, Input, Markdown, Metrics, Output


def vtab_table(
    params: dict,
    overrides: list,
    tasks: list,
    evaluations: Input[list[Artifact]],
    table: Output[Artifact],
    report: Output[Markdown],
    metrics: Output[Metrics],
    tracking_uri: str = "",
    pipeline_run_id: str = "",
):
    """Collect every task's evaluation into the VTAB-1k table."""
    import shutil

    from components import shim
    from dyn_adapter.artifacts import VTAB_MARKDOWN
    from dyn_adapter.stages import vtab

    with shim.user_errors("vtab"):
        p = shim.load(params, overrides)
        result = vtab.run(tasks, [e.path for e in evaluations], table.path)
        shutil.copyfile(f"{table.path}/{VTAB_MARKDOWN}", report.path)
        for name, value in vtab.headline(result).items():
            metrics.log_metric(name, value)
        shim.track("vtab", table.path, p, tracking_uri, pipeline_run_id, last=True)


def task_overrides(overrides: list, data_root: str, task: str) -> list:
    """This task's overrides: the VTAB-1k protocol's whole test split unless the pipeline's
    overrides say otherwise, then the task's data source (whose fixed splits leave no training
    images to calibrate on)."""
    return (
        ["data.test_size=null"]
        + list(overrides)
        + [
            "data.source=vtab",
            f"data.path={data_root.rstrip('/')}/{task}",
            "data.calibration_size=0",
        ]
    )
