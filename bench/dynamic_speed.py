"""Does early exit turn FLOPs into time? Dynamic vs full inference, batch 1 and batch 64.

On the packaged DINOv2 ViT-S/14 (112 px, default Adapter and heads), thresholds are set from
the model's own confidences so that about half of the samples still in flight leave at each
early exit. One run then times ``forward_dynamic`` (batch compaction on) against the static
full forward (all blocks, final head only) and writes medians over repeats, warm-up excluded,
to ``bench/results/dynamic_speed.json``.

The images are random tensors: speed depends on shapes and on which exit each sample takes,
which the thresholds fix, not on pixel content.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from dyn_adapter.evaluation.speed import machine_info, time_ratios
from dyn_adapter.files import write_json
from dyn_adapter.models import BackboneConfig, ModelConfig, create_dyn_adapter
from dyn_adapter.models.flops import count_gflops, unfused_attention

RESULTS = Path(__file__).parent / "results" / "dynamic_speed.json"


def halving_thresholds(model, images: torch.Tensor) -> list[float]:
    """Per early exit, the median confidence of the samples still in flight: half of them leave."""
    with torch.no_grad():
        conf = torch.stack([t.softmax(-1).max(-1).values for t in model.forward_exits(images)])
    remaining = torch.ones(images.shape[0], dtype=torch.bool)
    thresholds = []
    for k in range(model.num_exits - 1):
        t = float(conf[k][remaining].median())
        thresholds.append(t)
        remaining &= conf[k] < t
    return [*thresholds, 0.0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--img-size", type=int, default=112)
    parser.add_argument("--weights", default="packaged", help="packaged, hub, none or a file")
    parser.add_argument("--batches", type=int, default=4, help="batches of 64 timed per repeat")
    parser.add_argument("--b1-samples", type=int, default=64, help="single images timed per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    torch.manual_seed(0)
    device = torch.device(args.device)
    cfg = ModelConfig(backbone=BackboneConfig(weights=args.weights, img_size=args.img_size))
    model = create_dyn_adapter(cfg).eval().to(device)
    images = torch.randn(64 * args.batches, 3, args.img_size, args.img_size, device=device)
    thresholds = halving_thresholds(model, images)

    with torch.no_grad():
        exits = model.forward_dynamic(images, thresholds).exit_index.cpu()
        with unfused_attention(model):
            static_gflops, _ = count_gflops(lambda: model.forward_final(images[:1]))
    fractions = [float((exits == k).float().mean()) for k in range(model.num_exits)]
    cumulative = [e.gflops_cumulative for e in model.exit_info]
    dynamic_gflops = sum(f * c for f, c in zip(fractions, cumulative, strict=True))

    times = time_ratios(
        model,
        images,
        thresholds,
        b1_samples=args.b1_samples,
        repeats=args.repeats,
        warmup=args.warmup,
    )
    flops_ratio = dynamic_gflops / static_gflops
    result = {
        "flops_ratio": flops_ratio,
        "time_ratio_b1": times["time_ratio_b1"],
        "time_ratio_b64": times["time_ratio_b64"],
        "time_ratio_b64_over_flops_ratio": times["time_ratio_b64"] / flops_ratio,
        "exit_fractions": fractions,
        "thresholds": thresholds,
        "gflops_dynamic": dynamic_gflops,
        "gflops_full": static_gflops,
        "seconds_median": {k: v for k, v in times.items() if k.startswith("seconds_")},
        "images_b64": len(images),
        "images_b1": min(args.b1_samples, len(images)),
        "repeats": args.repeats,
        "warmup": args.warmup,
        "backbone": cfg.backbone.name,
        "weights": cfg.backbone.weights,
        "img_size": args.img_size,
        "device": str(device),
        "machine": machine_info(device),
    }
    write_json(args.out, result)
    print(
        f"flops ratio {flops_ratio:.3f}  time ratio b64 {result['time_ratio_b64']:.3f}  "
        f"b1 {result['time_ratio_b1']:.3f}  (exits {[round(f, 3) for f in fractions]}) -> {args.out}"
    )


if __name__ == "__main__":
    main()
