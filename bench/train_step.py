"""What do the early exits cost in training? A multi-exit step against a single-exit step.

Same backbone (packaged DINOv2 ViT-S/14, 112 px), same PETL method, batch 64: one model with the
default four exits and balanced heads, trained on the weighted sum of their losses, and one
with only the final exit. Medians over timed steps (warm-up excluded), of the whole step and of
its phases (forward with the loss, backward, optimizer step), and the same multi-exit step with
a fused AdamW, go to ``bench/results/train_step.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from dyn_adapter.evaluation.speed import machine_info
from dyn_adapter.files import write_json
from dyn_adapter.inference import amp_dtype
from dyn_adapter.models import (
    BackboneConfig,
    ExitsConfig,
    ModelConfig,
    PetlConfig,
    create_dyn_adapter,
)

RESULTS = Path(__file__).parent / "results" / "train_step.json"


def autocast(device: torch.device, amp: str):
    dtype = amp_dtype(device, amp)
    return torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()


def step_seconds(
    cfg: ModelConfig,
    batch: int,
    steps: int,
    warmup: int,
    device: torch.device,
    amp: str = "off",
    fused: bool = False,
) -> dict[str, float]:
    """Median seconds of a whole training step and of its phases (forward with the loss,
    backward, optimizer), each phase timed to the device's completion."""
    torch.manual_seed(0)
    model = create_dyn_adapter(cfg).to(device).train()
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3, fused=fused or None)
    size = cfg.backbone.img_size
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, cfg.num_classes, (batch,), device=device)
    phases: dict[str, list[float]] = {"forward": [], "backward": [], "optimizer": []}

    def sync() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    for i in range(warmup + steps):
        start = sync()
        with autocast(device, amp):
            loss = sum(F.cross_entropy(t.float(), y) for t in model.forward_exits(x))
        forward = sync()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        backward = sync()
        opt.step()
        done = sync()
        if i >= warmup:
            phases["forward"].append(forward - start)
            phases["backward"].append(backward - forward)
            phases["optimizer"].append(done - backward)
    medians = {k: statistics.median(v) for k, v in phases.items()}
    totals = [sum(p) for p in zip(*phases.values(), strict=True)]
    return {"step": statistics.median(totals), **medians}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--petl", default="adapter", choices=["adapter", "lora", "repadapter"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--weights", default="packaged", help="packaged, none or a file")
    parser.add_argument("--img-size", type=int, default=112)
    parser.add_argument("--amps", nargs="+", default=["off"], choices=["off", "bf16"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    device = torch.device(args.device)
    backbone = BackboneConfig(weights=args.weights, img_size=args.img_size)
    petl = PetlConfig(method=args.petl)
    multi = ModelConfig(backbone=backbone, petl=petl)
    single = ModelConfig(
        backbone=backbone,
        petl=petl,
        exits=ExitsConfig(blocks=[12], head_depths=[0], head_widths=[0]),
    )
    runs = {}
    for amp in args.amps:
        t_single = step_seconds(single, args.batch, args.steps, args.warmup, device, amp)
        t_multi = step_seconds(multi, args.batch, args.steps, args.warmup, device, amp)
        t_fused = step_seconds(multi, args.batch, args.steps, args.warmup, device, amp, True)
        runs[amp] = {
            "step_time_ratio": t_multi["step"] / t_single["step"],
            "step_time_ratio_fused_adamw": t_fused["step"] / t_single["step"],
            "single_exit": t_single,
            "multi_exit": t_multi,
            "multi_exit_fused_adamw": t_fused,
        }
        print(
            f"{amp}: multi-exit step {t_multi['step']:.4f} s, single-exit {t_single['step']:.4f} s "
            f"(ratio {runs[amp]['step_time_ratio']:.3f}; fused AdamW "
            f"{runs[amp]['step_time_ratio_fused_adamw']:.3f}); phases multi "
            + ", ".join(f"{k} {t_multi[k]:.4f}" for k in ("forward", "backward", "optimizer"))
            + ", single "
            + ", ".join(f"{k} {t_single[k]:.4f}" for k in ("forward", "backward", "optimizer"))
        )
    first = runs[args.amps[0]]
    result = {
        "step_time_ratio": first["step_time_ratio"],
        "seconds_multi_exit": first["multi_exit"]["step"],
        "seconds_single_exit": first["single_exit"]["step"],
        "runs": runs,
        "petl": args.petl,
        "batch": args.batch,
        "steps": args.steps,
        "warmup": args.warmup,
        "backbone": backbone.name,
        "weights": args.weights,
        "img_size": backbone.img_size,
        "device": str(device),
        "machine": machine_info(device),
    }
    write_json(args.out, result)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
