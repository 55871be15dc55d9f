"""The ``pipeline`` sub-command of ``dyn-adapter``: compile, run locally, build the image, submit.

It lives with the Kubeflow layer and reaches the CLI as an entry point
(``dyn_adapter.commands``), so the library never imports the pipeline code.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path
from typing import Any

from dyn_adapter.cli_options import add_params_args
from dyn_adapter.errors import ConfigError
from dyn_adapter.files import write_json
from dyn_adapter.mlops.names import DEFAULT_EXPERIMENT, DEFAULT_IMAGE
from dyn_adapter.params import parse_assignment

# Every pipeline command needs kfp: where it is not installed, `dyn-adapter` lists this command
# as unavailable (found, not imported: kfp takes half a second, the CLI's help far less).
if importlib.util.find_spec("kfp") is None:
    raise ModuleNotFoundError("No module named 'kfp'", name="kfp")


def cmd_pipeline_compile(args: argparse.Namespace) -> int:
    from .runner import compile_pipeline

    kinds = args.kind or ["demo", "vtab"]
    if args.out and len(kinds) != 1:
        raise ConfigError("--out names one file: choose the pipeline with --kind demo or vtab")
    for kind in kinds:
        path = compile_pipeline(kind, args.out, args.params, args.image)
        print(f"compiled the {kind} pipeline -> {path}")
    return 0


def cmd_pipeline_run(args: argparse.Namespace) -> int:
    from .runner import run_local
    from .summary import SUMMARY_FILES, format_summary

    summary = run_local(
        args.params,
        args.overrides,
        args.pipeline_root,
        args.tracking_uri,
        runner=args.runner,
        image=args.image,
        kind=args.kind,
        arguments=_pipeline_arguments(args.arguments),
    )
    write_json(Path(args.pipeline_root) / SUMMARY_FILES[args.kind], summary)
    print(format_summary(summary))
    return 0


def cmd_pipeline_image(args: argparse.Namespace) -> int:
    from .docker_engine import docker_engine
    from .image import build_image, push_image, write_record

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
    from .runner import submit

    arguments = _pipeline_arguments(args.arguments)
    if args.overrides:
        arguments["overrides"] = list(args.overrides)
    if args.tracking_uri:
        arguments["tracking_uri"] = args.tracking_uri
    run_id = submit(
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
    expected = "NAME=VALUE, e.g. data_root=s3://b/vtab"
    return dict(parse_assignment(item, "--arg", expected) for item in items)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``pipeline`` sub-command of ``dyn-adapter`` (registered as an entry point)."""

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
        description="Run the demo (or the VTAB) pipeline with the KFP local runner: every task "
        "in this Python environment (--runner subprocess), or each in its own container of the "
        "project image as on Kubeflow (--runner docker: uid 1000, host network, the Docker "
        "engine started if none runs). Artifacts go under --pipeline-root, MLflow to a local "
        "SQLite store unless --tracking-uri says otherwise. The terminal shows one line per "
        "step; everything the tasks print goes to one file, <pipeline-root>/logs/run-<time>.log. "
        "Ends with a summary (also "
        "written to <pipeline-root>/summary.json, or vtab-summary.json).",
    )
    add_params_args(r)
    r.add_argument(
        "--kind",
        choices=["demo", "vtab"],
        default="demo",
        help="which pipeline (default: %(default)s); vtab needs --arg tasks=[...] and "
        "--arg data_root=DIR",
    )
    r.add_argument(
        "--arg",
        dest="arguments",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a pipeline argument, the value as YAML (repeatable): for --kind vtab, "
        "tasks=[fashion_mnist, digits] and data_root=DIR",
    )
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
        "--experiment", default=DEFAULT_EXPERIMENT, help="KFP experiment (default: %(default)s)"
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
