"""The ``dyn-adapter`` sub-commands around the MLflow registry: register (a stage), track,
promote, rollback and serve."""

from __future__ import annotations

import argparse

from . import commands
from .cli_options import add_params_args, stage_parser
from .mlops.names import SERVE_PORT

TRACKING_HELP = (
    "MLflow tracking URI (default: register.tracking_uri, else $MLFLOW_TRACKING_URI, else "
    "sqlite outputs/mlflow/mlflow.db); credentials only via MLFLOW_TRACKING_* variables"
)


def add_registry_parsers(sub: argparse._SubParsersAction) -> None:
    """``register`` (a stage), ``track``, ``promote`` / ``rollback`` of the champion alias by
    hand, and ``serve``."""
    p = stage_parser(
        sub,
        "register",
        out="outputs/register",
        model="outputs/sparsify/model",
        help="log the searched model as an MLflow pyfunc, register it, gate the champion alias",
        description="Log model, thresholds and preprocessing as an MLflow pyfunc model, register "
        "a version (alias candidate) and move the champion alias only if the gate passes "
        "(params: register.*). Writes registration.json.",
    )
    p.add_argument(
        "--search", default="outputs/search", help="search output (default: %(default)s)"
    )
    p.add_argument(
        "--evaluate", default="outputs/evaluate", help="evaluate output (default: %(default)s)"
    )
    p.add_argument(
        "--calibrate",
        default=None,
        metavar="DIR",
        help="`calibrate` output: the model carries its risk-controlled points, and requests "
        "can ask for params.max_disagreement",
    )
    p.add_argument(
        "--pipeline-run-id",
        default=None,
        help="identifies this pipeline run; registering it again reuses its version "
        "(default: a hash of the weights, thresholds and test metrics)",
    )
    p.add_argument("--tracking-uri", default=None, help=TRACKING_HELP)
    p.set_defaults(func=commands.cmd_register)

    p = stage_parser(
        sub,
        "track",
        out="outputs/tracking",
        data=False,
        help="log the stages' outputs (dvc repro's layout) to MLflow as one pipeline run",
        description="Log every stage's output directory under outputs/ as one MLflow run with "
        "a nested run per stage (params, per-epoch metrics, plots, model card, manifests), as "
        "the KFP pipeline does while it runs; the last stage of dvc.yaml. Writes tracking.json.",
    )
    p.add_argument(
        "--pipeline-run-id",
        default=None,
        help="the pipeline run to log into (default: the one outputs/register registered)",
    )
    p.add_argument("--tracking-uri", default=None, help=TRACKING_HELP)
    p.set_defaults(func=commands.cmd_track)

    p = sub.add_parser(
        "promote",
        help="move the champion alias to a registered version (no gate)",
        description="Make a model version the champion by hand; it is recorded in the "
        "champion history that rollback uses.",
    )
    _model_args(p)
    p.add_argument("--version", required=True, help="model version to promote")
    p.set_defaults(func=commands.cmd_promote)

    p = sub.add_parser(
        "rollback",
        help="move the champion alias back to the previous champion",
        description="Roll the champion alias back to the version that was champion before.",
    )
    _model_args(p)
    p.set_defaults(func=commands.cmd_rollback)

    p = sub.add_parser(
        "serve",
        help="serve the champion (or a version) over HTTP with MLflow's scoring server",
        description="Serve a registered version with MLflow's scoring server, as `mlflow models "
        "serve` does, in this environment, from the store the pipeline wrote to (no variable to "
        "set, nothing to activate), behind a guard that refuses unknown parameters (400) and "
        "oversized requests (413). POST /invocations with a dataframe_split of base64 images; "
        "params.budget or params.max_disagreement choose the exit policy.",
    )
    _model_args(p)
    p.add_argument("--version", default=None, help="a model version (default: the champion alias)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    p.add_argument(
        "--port",
        type=int,
        default=SERVE_PORT,
        help="port (default: %(default)s; `mlflow ui` takes 5000)",
    )
    p.add_argument(
        "--max-batch",
        type=int,
        default=1024,
        help="most images per request; more get HTTP 413 (default: %(default)s)",
    )
    p.add_argument(
        "--max-request-mb",
        type=float,
        default=16,
        help="largest request body in MB; larger get HTTP 413 (default: %(default)s)",
    )
    p.set_defaults(func=commands.cmd_serve)


def _model_args(p: argparse.ArgumentParser) -> None:
    """What every command on a registered model takes: the params, the model's name and the
    store."""
    add_params_args(p)
    p.add_argument("--name", default=None, help="registered model (default: register.model_name)")
    p.add_argument("--tracking-uri", default=None, help=TRACKING_HELP)
