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


def cmd_prepare(args: argparse.Namespace) -> int:
    from .stages import prepare

    result = prepare.run(params(args), args.out)
    print(
        f"prepared {result.counts} ({result.num_classes} classes, {result.skipped} skipped) "
        f"-> {result.out_dir}"
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .stages import train

    variant = "probe" if args.probe else "static" if args.static else "dyn"
    result = train.run(params(args), variant, args.data, args.out, init_from=args.init_from)
    acc = result.test_accuracy or result.val_accuracy
    split = "test" if result.test_accuracy else "val"
    print(
        f"final-epoch {split} accuracy per exit: {' '.join(f'{a:.4f}' for a in acc)} "
        f"-> {result.model_dir}"
    )
    return 0


def cmd_sparsify(args: argparse.Namespace) -> int:
    from .stages import sparsify

    best = sparsify.run(params(args), args.data, args.model, args.out).best
    print(
        f"best candidate {best['name']}: val accuracy per exit "
        f"{' '.join(f'{a:.4f}' for a in best['val_accuracy'])} -> {args.out}"
    )
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from .artifacts import PARETO_FILE
    from .stages import search

    result = search.run(params(args), args.model, args.data, args.out).thresholds
    show_report(Path(args.out) / PARETO_FILE, "thresholds per budget")
    print(
        f"oracle: accuracy {result['oracle']['accuracy']:.4f} at {result['oracle']['gflops']:.3f} GFLOPs"
    )
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from .artifacts import RISK_MARKDOWN
    from .stages import calibrate

    result = calibrate.run(params(args), args.model, args.data, args.out)
    show_report(Path(args.out) / RISK_MARKDOWN, "risk-controlled thresholds")
    points = result.report["points"]
    print(f"{len(points)} operating point(s) certified -> {Path(args.out)}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .artifacts import CARD_FILE
    from .stages import evaluate

    metrics = evaluate.run(
        params(args),
        args.model,
        args.search,
        args.data,
        args.out,
        static_dir=args.static,
        probe_model_dir=args.probe_model,
        probe_search_dir=args.probe_search,
        risk_dir=args.calibrate,
    )
    iso = metrics["iso_accuracy"]
    show_report(Path(args.out) / CARD_FILE, "model card")
    at = (
        f"iso-accuracy {iso['accuracy']:.4f} at {iso['gflops_ratio']:.3f} of the GFLOPs"
        if iso["gflops_ratio"] is not None
        else "no budget reached iso-accuracy"
    )
    print(
        f"test accuracy {metrics['full']['accuracy']:.4f} (last exit); {at}; "
        f"dynamic/full time at batch 64: {metrics['speed']['time_ratio_b64']:.3f}"
    )
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    from .artifacts import ablation_files
    from .stages import ablate

    ablate.run(
        params(args),
        args.data,
        args.out,
        seeds=args.seeds,
        split=args.split,
        study=args.study,
        only=args.variants,
    )
    show_report(Path(args.out) / ablation_files(args.split, args.study)[1], "ablation table")
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    from .artifacts import REGISTRATION_FILE
    from .stages import register

    run_id = args.pipeline_run_id or register.default_pipeline_run_id(
        args.model, args.search, args.evaluate
    )
    result = register.run(
        params(args),
        args.model,
        args.search,
        args.evaluate,
        args.data,
        args.out,
        pipeline_run_id=run_id,
        tracking_uri=args.tracking_uri,
        risk_dir=args.calibrate,
    )
    print(
        f"registered {result['name']} v{result['version']} (aliases: "
        f"{', '.join(result['aliases']) or 'none'}; {result['reason']}) -> "
        f"{Path(args.out) / REGISTRATION_FILE}"
    )
    return 0


def cmd_track(args: argparse.Namespace) -> int:
    from .stages import track

    record = track.run(params(args), args.out, args.pipeline_run_id, args.tracking_uri)
    print(
        f"logged {len(record['stages'])} stages as MLflow run {record['mlflow_run_id']} "
        f"({record['tracking_uri']})"
    )
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
