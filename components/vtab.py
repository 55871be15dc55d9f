"""The VTAB table component: per-task results, group means and the mean of tasks."""

from kfp.dsl import Artifact, Input, Markdown, Metrics, Output


def vtab_table(
    tasks: list,
    evaluations: Input[list[Artifact]],
    table: Output[Artifact],
    report: Output[Markdown],
    metrics: Output[Metrics],
):
    """Collect every task's evaluation into the VTAB-1k table."""
    from dyn_adapter import vtab

    result = vtab.collect(tasks, [e.path for e in evaluations], table.path)
    with open(report.path, "w") as f:
        f.write(vtab.markdown(result))
    for name, value in vtab.headline(result).items():
        metrics.log_metric(name, value)


def task_overrides(overrides: list, data_root: str, task: str) -> list:
    """The pipeline's overrides plus this task's VTAB-1k data source."""
    return list(overrides) + [
        "data.source=vtab",
        f"data.path={data_root.rstrip('/')}/{task}",
    ]
