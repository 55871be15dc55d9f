"""Sparsity tuning components: the candidate grid, one candidate, and the selection."""

from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output


def sparsity_grid(params: dict, overrides: list) -> list:
    """The (forward rate, backward keep) candidates the pipeline fans out over, each item with
    the run's overrides beside it: the KFP local runner replaces every task output passed into
    a ParallelFor with the loop's item, so the loop reads them from the item instead."""
    import dataclasses

    from components import shim
    from dyn_adapter.stages import sparsify

    with shim.user_errors("sparsify"):
        grid = sparsify.grid(shim.load(params, overrides))
        return [{"candidate": dataclasses.asdict(c), "overrides": list(overrides)} for c in grid]


def sparsify_candidate(
    params: dict,
    overrides: list,
    candidate: dict,
    data: Input[Dataset],
    init_model: Input[Model],
    candidate_model: Output[Model],
):
    """Fine-tune the multi-exit model with one candidate's bidirectional sparsity."""
    from components import shim
    from dyn_adapter.artifacts import MODEL_DIR
    from dyn_adapter.stages import sparsify

    with shim.user_errors("sparsify"):
        p = shim.load(params, overrides)
        row = sparsify.run_candidate(
            p,
            sparsify.SparsityCandidate(**candidate),
            data.path,
            f"{init_model.path}/{MODEL_DIR}",
            candidate_model.path,
        )
        candidate_model.metadata.update({**candidate, "score": row["score"]})


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

    from components import shim
    from dyn_adapter.artifacts import CANDIDATES_MARKDOWN, MODEL_DIR
    from dyn_adapter.stages import sparsify

    with shim.user_errors("sparsify"):
        p = shim.load(params, overrides)
        result = sparsify.select(
            p,
            data.path,
            f"{init_model.path}/{MODEL_DIR}",
            [c.path for c in candidates],
            model.path,
        )
        for name, value in result.metrics().items():
            metrics.log_metric(name, value)
        shutil.copyfile(f"{model.path}/{CANDIDATES_MARKDOWN}", table.path)
        shim.track("sparsify", model.path, p, tracking_uri, pipeline_run_id, data.path)
