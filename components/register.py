"""Registration component: the MLflow model version, its aliases and the evaluation gate."""

from kfp.dsl import Artifact, Dataset, Input, Model, Output


def register_model(
    params: dict,
    overrides: list,
    model: Input[Model],
    thresholds: Input[Artifact],
    evaluation: Input[Artifact],
    data: Input[Dataset],
    registration: Output[Artifact],
    tracking_uri: str = "",
    pipeline_run_id: str = "",
) -> str:
    """Register a ``pyfunc`` doing real dynamic inference; ``champion`` moves only if the gate
    passes. Returns the model URI."""
    from dyn_adapter import steps

    with steps.user_errors("register"):
        result = steps.register(
            params,
            overrides,
            model.path,
            thresholds.path,
            evaluation.path,
            data.path,
            registration.path,
            tracking_uri,
            pipeline_run_id,
        )
        registration.metadata.update({k: v for k, v in result.items() if isinstance(v, (str, int))})
        return result["model_uri"]
