"""Does early exit turn FLOPs into time? Dynamic against static inference, engine by engine.

For every backbone and input size, precision (fp32, bf16 autocast) and batch size, each
engine (``eager``: the model's own ``forward_dynamic``; ``compiled``: exit segments as CUDA
graphs per batch bucket on CUDA) times:

- ``static``: all blocks and the last head, no early head (the static model);
- ``halving``: early exit with thresholds that let about half of the samples still in flight
  leave at each early exit (set on a separate pool of images);
- ``none_leave``: early exit with no sample leaving before the last exit (what the exits cost);
- ``all_first``: every sample leaving at the first exit;

and timm's own forward of the plain backbone (``timm`` engine: ``plain``, its weights as timm
made them, and ``plain_cast``, linear weights stored in the autocast dtype), under the same
autocast. Each dynamic row's ``flops_ratio`` is the GFLOPs of the exits its samples took
over the static forward's GFLOPs (all blocks, the last head; torch's counter, fp32 on the CPU);
``time_ratio`` is its time over the same engine's static time (medians of alternating passes);
``time_over_flops`` their quotient. Weights are random unless ``--weights`` says otherwise
(speed depends on shapes and on which exit each sample takes, which the thresholds fix),
images random tensors.

Needs only torch, timm, numpy and this package. One JSON file out (default
``bench/results/dynamic_speed.json``); ``--preset gpu`` is the full matrix for a GPU.
"""

from __future__ import annotations

import argparse
import copy
import gc
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import timm
import torch

from dyn_adapter.evaluation.speed import cpu_name
from dyn_adapter.files import write_json
from dyn_adapter.inference import CompiledEngine, EagerEngine, Engine, autocast
from dyn_adapter.inference.precision import cast_matmul_weights
from dyn_adapter.models import BackboneConfig, ModelConfig, create_dyn_adapter
from dyn_adapter.models.flops import count_gflops, unfused_attention

RESULTS = Path(__file__).parent / "results" / "dynamic_speed.json"
TINY = {"patch_size": 7, "embed_dim": 64, "depth": 6, "num_heads": 4}
PRESETS = {
    # The full matrix on a GPU.
    "gpu": {
        "models": [
            "vit_small_patch14_dinov2@112",
            "vit_small_patch14_dinov2@224",
            "vit_base_patch16_224@224",
        ],
        "amps": ["fp32", "bf16"],
        "batches": [1, 8, 64, 256],
    },
    # The demo's model on the CPU (the no-regression check).
    "cpu": {"models": ["vit_small_patch14_dinov2@112"], "amps": ["fp32"], "batches": [1, 64]},
    # Seconds on a CPU: a tiny ViT (the test).
    "smoke": {"models": ["tiny@28"], "amps": ["fp32", "bf16"], "batches": [1, 4]},
}
DTYPES = {"fp32": None, "bf16": torch.bfloat16}


def model_config(spec: str, weights: str = "none") -> ModelConfig:
    name, _, size = spec.partition("@")
    if name == "tiny":
        backbone = BackboneConfig(
            name="vit_tiny_patch16_224", weights="none", img_size=int(size), model_kwargs=TINY
        )
        return ModelConfig(backbone=backbone, num_classes=10)
    return ModelConfig(
        backbone=BackboneConfig(name=name, weights=weights, img_size=int(size)), num_classes=10
    )


def halving_thresholds(engine: Engine, images: torch.Tensor) -> list[float]:
    """Per early exit, the median confidence of the samples still in flight: half of them leave."""
    conf = torch.stack([t.softmax(-1).max(-1).values for t in engine.exits(images)])
    remaining = torch.ones(images.shape[0], dtype=torch.bool, device=conf.device)
    thresholds = []
    for k in range(engine.num_exits - 1):
        t = float(conf[k][remaining].median())
        thresholds.append(t)
        remaining &= conf[k] < t
    return [*thresholds, 0.0]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def measure(
    passes: dict[str, Callable[[], object]],
    device: torch.device,
    repeats: int,
    warmup: int,
) -> dict[str, list[float]]:
    """Seconds of every pass per repeat, the passes alternating within a repeat."""
    for _ in range(warmup):
        for fn in passes.values():
            fn()
    seconds: dict[str, list[float]] = {name: [] for name in passes}
    for _ in range(repeats):
        for name, fn in passes.items():
            seconds[name].append(timed(fn, device))
    return seconds


def bench_model(spec: str, amps: list[str], batches: list[int], args, device) -> list[dict]:
    cfg = model_config(spec, args.weights)
    torch.manual_seed(0)
    model = create_dyn_adapter(cfg).eval()
    # Measured on the CPU in fp32: each exit's cumulative GFLOPs (blocks and every head on the
    # way) and the static forward's (blocks and the last head), the ratios' denominator.
    cumulative = [e.gflops_cumulative for e in model.exit_info]
    with unfused_attention(model), torch.no_grad():
        x1 = torch.zeros(1, 3, cfg.backbone.img_size, cfg.backbone.img_size)
        static_gflops = count_gflops(lambda: model.forward_final(x1))[0]
    model.to(device)
    plain = timm.create_model(
        cfg.backbone.name,
        pretrained=False,
        num_classes=cfg.num_classes,
        img_size=cfg.backbone.img_size,
        **cfg.backbone.model_kwargs,
    )
    plain = plain.eval().to(device)
    rows = []
    for amp in amps:
        dtype = DTYPES[amp]
        served = copy.deepcopy(model)
        cast_matmul_weights(served, dtype)
        plain_cast = copy.deepcopy(plain)
        cast_matmul_weights(plain_cast, dtype)
        engines: list[Engine] = [
            EagerEngine(model, device, dtype),
            CompiledEngine(served, device, dtype, max_batch=max(batches)),
        ]
        pool = torch.randn(
            args.threshold_images, 3, cfg.backbone.img_size, cfg.backbone.img_size, device=device
        )
        thresholds = {
            "halving": halving_thresholds(engines[0], pool),
            "none_leave": [2.0] * (model.num_exits - 1) + [0.0],
            "all_first": [0.0] * model.num_exits,
        }
        for batch in batches:
            n = max(batch, args.images_b1 if batch == 1 else args.images)
            n = -(-n // batch) * batch
            images = torch.randn(n, 3, cfg.backbone.img_size, cfg.backbone.img_size, device=device)
            chunks = list(images.split(batch))
            base = {"backbone": cfg.backbone.name, "img_size": cfg.backbone.img_size}
            base |= {"amp": amp, "batch": batch, "images": n}
            cell: list[dict] = []
            for engine in engines:
                try:
                    cell += bench_engine(
                        engine, chunks, thresholds, cumulative, static_gflops, args, base
                    )
                except Exception as e:  # one broken cell must not lose the others
                    traceback.print_exc()
                    cell.append({**base, "engine": engine.name, "error": repr(e)})
            try:
                cell += bench_timm(plain, plain_cast, chunks, dtype, args, base)
            except Exception as e:
                traceback.print_exc()
                cell.append({**base, "engine": "timm", "error": repr(e)})
            for r in cell:
                print(_line(r), flush=True)
            rows += cell
        del engines, served, plain_cast
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def bench_engine(engine, chunks, thresholds, cumulative, static_gflops, args, base) -> list[dict]:
    device = engine.device

    def static() -> None:
        for x in chunks:
            engine.static(x)

    def dynamic(thr: list[float]) -> Callable[[], None]:
        def go() -> None:
            for x in chunks:
                engine.dynamic(x, thr)

        return go

    passes = {"static": static} | {name: dynamic(thr) for name, thr in thresholds.items()}
    seconds = measure(passes, device, args.repeats, args.warmup)
    n = sum(len(x) for x in chunks)
    rows = []
    for name, secs in seconds.items():
        row = {**base, "engine": engine.name, "variant": name}
        row |= _speed(secs, n)
        if name == "static":
            row |= {"flops_ratio": 1.0, "time_ratio": 1.0, "time_over_flops": 1.0}
        else:
            exits = torch.cat([engine.dynamic(x, thresholds[name]).exit_index for x in chunks])
            fractions = np.bincount(exits.cpu().numpy(), minlength=len(cumulative)) / n
            flops_ratio = float(fractions @ np.asarray(cumulative)) / static_gflops
            ratio = statistics.median(d / s for d, s in zip(secs, seconds["static"], strict=True))
            row |= {
                "flops_ratio": flops_ratio,
                "time_ratio": ratio,
                "time_over_flops": ratio / flops_ratio,
                "exit_fractions": fractions.tolist(),
                "thresholds": thresholds[name],
            }
        if isinstance(engine, CompiledEngine):
            row["graphs_captured"] = engine.captured
        rows.append(row)
    return rows


def bench_timm(plain, plain_cast, chunks, dtype, args, base) -> list[dict]:
    device = chunks[0].device

    def forward(model) -> Callable[[], None]:
        def go() -> None:
            with torch.no_grad(), autocast(device, dtype):
                for x in chunks:
                    model(x)

        return go

    passes = {"plain": forward(plain)}
    if dtype is not None:
        passes["plain_cast"] = forward(plain_cast)
    seconds = measure(passes, device, args.repeats, args.warmup)
    n = sum(len(x) for x in chunks)
    return [
        {**base, "engine": "timm", "variant": name, **_speed(secs, n)}
        for name, secs in seconds.items()
    ]


def _speed(seconds: list[float], images: int) -> dict:
    median = statistics.median(seconds)
    return {
        "seconds_median": median,
        "seconds": seconds,
        "images_per_s": images / median,
        "ms_per_image": 1000 * median / images,
    }


def _line(r: dict) -> str:
    if "error" in r:
        return (
            f"{r['backbone']}@{r['img_size']} {r['amp']} b{r['batch']} {r['engine']}: {r['error']}"
        )
    ratio = (
        f"time {r['time_ratio']:.3f} / flops {r['flops_ratio']:.3f} = {r['time_over_flops']:.2f}"
        if "time_ratio" in r
        else ""
    )
    return (
        f"{r['backbone']}@{r['img_size']} {r['amp']} b{r['batch']:<3} {r['engine']:>8} "
        f"{r['variant']:<10} {r['images_per_s']:10.1f} img/s  {ratio}"
    )


def environment(device: torch.device) -> dict:
    return {
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu": cpu_name(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "timm": timm.__version__,
        "python": sys.version.split()[0],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", default=default_device)
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="models, precisions and batches (default: gpu on CUDA, cpu otherwise)",
    )
    parser.add_argument("--models", nargs="+", help="name@img_size, overriding the preset's")
    parser.add_argument("--amps", nargs="+", choices=sorted(DTYPES))
    parser.add_argument("--batches", nargs="+", type=int)
    parser.add_argument(
        "--weights",
        default="none",
        help="backbone weights: none (random, the default), packaged (the demo's DINOv2) or a file",
    )
    parser.add_argument("--images", type=int, default=256, help="images per timed pass")
    parser.add_argument("--images-b1", type=int, default=32, help="images per pass at batch 1")
    parser.add_argument("--threshold-images", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    args.preset = args.preset or ("gpu" if device.type == "cuda" else "cpu")
    preset = PRESETS[args.preset]
    if args.threads:
        torch.set_num_threads(args.threads)
    models = args.models or preset["models"]
    amps = args.amps or preset["amps"]
    batches = args.batches or preset["batches"]
    result = {
        "environment": environment(device),
        "preset": args.preset,
        "models": models,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "weights": "random" if args.weights == "none" else args.weights,
        "rows": [],
    }
    tic = time.perf_counter()
    for spec in models:
        result["rows"] += bench_model(spec, amps, batches, args, device)
        result["seconds"] = time.perf_counter() - tic
        write_json(args.out, result)  # after every model: a run cut short keeps what it measured
    print(f"{len(result['rows'])} rows -> {args.out}")
    return result


if __name__ == "__main__":
    main()
