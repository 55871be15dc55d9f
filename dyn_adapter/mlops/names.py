"""What the project calls things in MLflow, its KFP experiment and its image: names only, no
MLflow or KFP import, so that configs and the CLI's parsers read them without loading those."""

DEFAULT_EXPERIMENT = "dyn-adapter"
DEFAULT_MODEL_NAME = "dyn-adapter"

PIPELINE_RUN_TAG = "pipeline_run_id"
STAGE_TAG = "pipeline_stage"
# Stage runs and the registration run carry the pipeline run id too: this tag marks the one
# run that stands for the whole pipeline run.
ROLE_TAG = "pipeline_role"
PIPELINE_ROLE = "pipeline"
PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
HISTORY_TAG = "champion_history"  # on the registered model: the champions, oldest first

# What `mlflow ui` serves when started without a port, for a store that is a file.
LOCAL_UI = "http://127.0.0.1:5000"
# `dyn-adapter serve`'s port: not the UI's, since a user looks at the runs while serving.
SERVE_PORT = 5001


def ui_url(server: str, experiment_id: str, run_id: str | None = None) -> str:
    """The MLflow UI's page of an experiment's runs (or of one run). MLflow 3 opens an
    experiment on its GenAI overview unless the page asks for model training."""
    page = f"runs/{run_id}" if run_id else "runs"
    return (
        f"{server.rstrip('/')}/#/experiments/{experiment_id}/{page}?workflowType=machine_learning"
    )


DEFAULT_IMAGE = (
    "dyn-adapter:0.1.0"  # `make image` builds it; compile with --image REGISTRY/...@sha256:...
)
