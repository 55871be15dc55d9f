"""What do the early exits cost in training? A multi-exit step against a single-exit step.

Same backbone (packaged DINOv2 ViT-S/14, 112 px), same PETL method, batch 64: one model with the
default four exits and balanced heads, trained on the weighted sum of their losses, and one
with only the final exit. Medians over timed steps (warm-up excluded) go to
``bench/results/train_step.json``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from dyn_adapter.evaluation.speed import machine_info
from dyn_adapter.files import write_json
from dyn_adapter.models import (
    BackboneConfig,
    ExitsConfig,
    ModelConfig,
    PetlConfig,
    create_dyn_adapter,
)

RESULTS = Path(__file__).parent / "results" / "train_step.json"


def step_seconds(
    cfg: ModelConfig, batch: int, steps: int, warmup: int, device: torch.device
) -> float:
    torch.manual_seed(0)
    model = create_dyn_adapter(cfg).to(device).train()
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3)
    size = cfg.backbone.img_size
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, cfg.num_classes, (batch,), device=device)
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        loss = sum(F.cross_entropy(t, y) for t in model.forward_exits(x))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--petl", default="adapter", choices=["adapter", "lora", "repadapter"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--weights", default="packaged")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    device = torch.device(args.device)
    backbone = BackboneConfig(weights=args.weights, img_size=112)
    petl = PetlConfig(method=args.petl)
    multi = ModelConfig(backbone=backbone, petl=petl)
    single = ModelConfig(
        backbone=backbone,
        petl=petl,
        exits=ExitsConfig(blocks=[12], head_depths=[0], head_widths=[0]),
    )
    t_single = step_seconds(single, args.batch, args.steps, args.warmup, device)
    t_multi = step_seconds(multi, args.batch, args.steps, args.warmup, device)
    result = {
        "step_time_ratio": t_multi / t_single,
        "seconds_multi_exit": t_multi,
        "seconds_single_exit": t_single,
        "petl": args.petl,
        "batch": args.batch,
        "steps": args.steps,
        "warmup": args.warmup,
        "backbone": backbone.name,
        "img_size": backbone.img_size,
        "device": str(device),
        "machine": machine_info(device),
    }
    write_json(args.out, result)
    print(
        f"multi-exit step {t_multi:.3f} s, single-exit {t_single:.3f} s: "
        f"ratio {result['step_time_ratio']:.3f} -> {args.out}"
    )


if __name__ == "__main__":
    main()
