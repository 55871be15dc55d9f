"""Sparsity tuning components: the candidate grid, one candidate, and the selection."""

from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output


def sparsity_grid(params: dict, overrides: list) -> list:
    """The (forward rate, backward keep) candidates the pipeline fans out over, each item with
    the run's overrides beside it: the KFP local runner replaces every task output passed into
    a ParallelFor with the loop's item, so the loop reads them from the item instead."""
    from dyn_adapter import steps

    with steps.user_errors("sparsify"):
        grid = steps.sparsity_grid(params, overrides)
        return [{"candidate": c, "overrides": list(overrides)} for c in grid]


def sparsify_candidate(
    params: dict,
    overrides: list,
    candidate: dict,
    data: Input[Dataset],
    init_model: Input[Model],
    candidate_model: Output[Model],
):
    """Fine-tune the multi-exit model with one candidate's bidirectional sparsity."""
    from dyn_adapter import steps

    with steps.user_errors("sparsify"):
        score = steps.sparsify_candidate(
            params, overrides, candidate, data.path, init_model.path, candidate_model.path
        )
        candidate_model.metadata.update({**candidate, **score})


def sparsify_select(
    params: dict,
    overrides: list,
    data: Input[Dataset],
    init_model: Input[Model],
    candidates: Input[list[Model]],
    model: Output[Model],
    metrics: Output[Metrics],
    table: Output[Markdown],
    tracking_uri: str = "",
    pipeline_run_id: str = "",
):
    """Keep the best of the input model and the candidates, on validation accuracy."""
    import shutil

    from dyn_adapter import steps

    with steps.user_errors("sparsify"):
        result = steps.sparsify_select(
            params, overrides, data.path, init_model.path, [c.path for c in candidates], model.path
        )
        for name, value in result.items():
            metrics.log_metric(name, value)
        shutil.copyfile(f"{model.path}/candidates.md", table.path)
        steps.track("sparsify", model.path, params, overrides, tracking_uri, pipeline_run_id)
