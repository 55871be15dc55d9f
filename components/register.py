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
    risk_points: Input[Artifact] = None,
    tracking_uri: str = "",
    pipeline_run_id: str = "",
) -> str:
    """Register a ``pyfunc`` doing real dynamic inference; ``champion`` moves only if the gate
    passes. Returns the model URI."""
    from components import shim
    from dyn_adapter.artifacts import MODEL_DIR
    from dyn_adapter.stages import register

    with shim.user_errors("register"):
        p = shim.load(params, overrides)
        result = register.run(
            p,
            f"{model.path}/{MODEL_DIR}",
            thresholds.path,
            evaluation.path,
            data.path,
            registration.path,
            pipeline_run_id=pipeline_run_id,
            tracking_uri=tracking_uri or None,
            risk_dir=risk_points.path if risk_points else None,
        )
        shim.track(
            "register", registration.path, p, tracking_uri, pipeline_run_id, data.path, last=True
        )
        registration.metadata.update({k: v for k, v in result.items() if isinstance(v, (str, int))})
        return result["model_uri"]
