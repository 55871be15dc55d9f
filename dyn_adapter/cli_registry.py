"""The ``dyn-adapter`` sub-commands on registered models: promote, rollback and serve (the
``register`` and ``track`` stages are rows of :mod:`dyn_adapter.stage_table`)."""

from __future__ import annotations

import argparse

from . import commands
from .cli_options import TRACKING_HELP, add_params_args
from .mlops.names import SERVE_PORT


def add_registry_parsers(sub: argparse._SubParsersAction) -> None:
    """``promote`` / ``rollback`` of the champion alias by hand, and ``serve``."""
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
