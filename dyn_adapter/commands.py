"""What each ``dyn-adapter`` command does: parse nothing, call one stage or registry function,
print what it produced. The parsers are :mod:`dyn_adapter.cli`'s."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .console import show_report


def model_config(args: argparse.Namespace):  # -> ModelConfig
    from .models import BackboneConfig, ExitsConfig, ModelConfig, PetlConfig

    return ModelConfig(
        backbone=BackboneConfig(name=args.backbone, weights=args.weights, img_size=args.img_size),
        petl=PetlConfig(method=args.petl, dim=args.petl_dim),
        exits=ExitsConfig(blocks=args.exits, heads=args.heads),
        num_classes=args.num_classes,
    )


def cmd_model_info(args: argparse.Namespace) -> int:
    from .models.info import describe, format_table

    report = describe(model_config(args))
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


def cmd_convert_weights(args: argparse.Namespace) -> int:
    from .files import sha256_file
    from .models import dinov2_onnx

    path = dinov2_onnx.packaged_weights()
    print(f"packaged DINOv2 ViT-S/14 weights: {path} (sha256 {sha256_file(path)[:16]}…)")
    return 0


def params(args: argparse.Namespace):  # -> Params
    from .params import load_params

    return load_params(args.params, args.overrides)


def cmd_vtab_data(args: argparse.Namespace) -> int:
    from .data.packaged import write_tasks
    from .errors import ConfigError

    if args.max_test < 1:
        raise ConfigError(f"--max-test {args.max_test}: must be >= 1")
    if args.selection < 0:
        raise ConfigError(f"--selection {args.selection}: must be >= 0")
    written = write_tasks(
        args.out,
        args.tasks,
        args.seed,
        args.max_test,
        fashion_mnist_dir=args.fashion_mnist,
        openclipart_dir=args.openclipart,
        selection_size=args.selection,
    )
    for name, record in written.items():
        counts = ", ".join(f"{k} {v}" for k, v in record["counts"].items())
        print(f"{args.out}/{name}: {counts} ({record['licence']})")
    tasks = ", ".join(written)
    print(
        f"run them: dyn-adapter pipeline run --kind vtab --arg 'tasks=[{tasks}]' "
        f"--arg data_root={args.out}"
    )
    return 0


def cmd_stage(args: argparse.Namespace) -> int:
    """Run the stage ``args.stage`` with the options of its table row, show its report (if it
    writes one) and its one-line result."""
    from importlib import import_module

    from .stage_table import BY_NAME

    stage = BY_NAME[args.stage]
    module = import_module(stage.module)
    kwargs = {o.param: getattr(args, o.dest) for o in (*stage.inputs, *stage.options)}
    if stage.variants:
        kwargs["variant"] = args.variant
    result = module.run(params(args), out_dir=args.out, **kwargs)
    if hasattr(module, "report"):  # the Markdown file it wrote for people to read
        show_report(*module.report(result, Path(args.out)))
    print(module.describe(result, Path(args.out)))
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from .mlops import champion

    p = params(args)
    name = args.name or p.register.model_name
    result = champion.promote(name, args.version, args.tracking_uri, p.register.tracking_uri)
    was = f"v{result['previous']}" if result["previous"] else "none"
    print(f"{name}: champion is v{result['version']} (was {was})")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from .mlops import champion

    p = params(args)
    name = args.name or p.register.model_name
    result = champion.rollback(name, args.tracking_uri, p.register.tracking_uri)
    print(f"{name}: champion rolled back from v{result['previous']} to v{result['version']}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Check the version exists (a clear error here, not a scoring server's traceback), copy it
    into the cache once, then become uvicorn serving MLflow's scoring app behind the project's
    request guard (``mlops.serving_app``), with the resolved store in its environment."""
    import os
    import sys

    from .errors import ConfigError
    from .mlops import champion, serving_app
    from .mlops.store import mlflow_client, resolve_tracking_uri, server_errors

    p = params(args)
    name = args.name or p.register.model_name
    uri = resolve_tracking_uri(args.tracking_uri, p.register.tracking_uri)
    with server_errors(uri):
        client = mlflow_client(uri, registry_uri=uri)
        version = args.version or champion.alias_version(client, name, champion.CHAMPION)
        if version is None:
            raise ConfigError(
                f"registered model {name!r} has no {champion.CHAMPION}: pass --version, or "
                "promote one (`dyn-adapter promote --version N`)"
            )
        local = serving_app.local_copy(champion.model_version(client, name, str(version)), uri)
    model = f"models:/{name}/{version}"
    which = "as asked" if args.version else f"the {champion.CHAMPION}"
    print(f"serving {model} ({which}) at http://{args.host}:{args.port}/invocations", flush=True)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        serving_app.MODEL_PATH_ENV: str(local),
        serving_app.MAX_BYTES_ENV: str(int(args.max_request_mb * 10**6)),
        serving_app.MAX_ROWS_ENV: str(args.max_batch),
    }
    command = [sys.executable, "-m", "uvicorn", "--factory", f"{serving_app.__name__}:create_app"]
    command += ["--host", args.host, "--port", str(args.port), "--workers", "1"]
    os.execve(sys.executable, command, env)
