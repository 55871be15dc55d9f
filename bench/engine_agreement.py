"""Do the compiled and the eager engine give the same answers on a trained model's test images?

For each precision (fp32, bf16 autocast) and each searched policy (and policies with every
early exit's threshold at a quantile of its confidences), early exit over the whole
test split runs twice: the eager engine (the model's own ``forward_dynamic``, float32 weights
under autocast) and the compiled engine (the model as served: matmul weights in the autocast
dtype, CUDA graphs per batch bucket on CUDA, samples padded to the bucket). Written: the share
of images with the same prediction and the same exit, and for every image that differs the exit
where the two parted and its confidence's distance to that exit's threshold (a disagreement
with a margin of ~1e-3 is rounding at a threshold, one with a large margin a bug).

Needs only torch, timm, numpy and this package. ``--weights`` replaces the backbone's weights
(e.g. the packaged ones rounded to fp16 to travel): the adapters then load without the
backbone-hash check, which the JSON records.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

from dyn_adapter.data.prepared import batches
from dyn_adapter.data.transforms import to_model_input
from dyn_adapter.files import write_json
from dyn_adapter.inference import CompiledEngine, EagerEngine, Engine, cast_matmul_weights
from dyn_adapter.models import create_dyn_adapter, load_trainable
from dyn_adapter.models.checkpoint import merge_if_mergeable, read_config

DTYPES = {"fp32": None, "bf16": torch.bfloat16}


def load(model_dir: Path, weights: str | None, device: torch.device):
    cfg, _ = read_config(model_dir)
    if weights:
        cfg.backbone.weights = weights
    model = create_dyn_adapter(cfg)
    if weights:
        model.backbone_sha256 = None  # replaced on purpose: see --weights
    load_trainable(model, model_dir)
    merge_if_mergeable(model)
    model.exit_info  # noqa: B018 (FLOPs counted in float32)
    return model.to(device).eval()


def run_policy(engine: Engine, inputs: list[torch.Tensor], thresholds: list[float]):
    out = [engine.dynamic(x, thresholds) for x in inputs]
    return (
        torch.cat([o.prediction for o in out]).cpu().numpy(),
        torch.cat([o.exit_index for o in out]).cpu().numpy(),
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a trained model directory")
    parser.add_argument("--data", type=Path, required=True, help="prepared data directory")
    parser.add_argument("--split", default="test")
    parser.add_argument("--thresholds", type=Path, required=True, help="search's thresholds.json")
    parser.add_argument("--weights", default=None, help="backbone weights file replacing its own")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--quantiles",
        nargs="*",
        type=float,
        default=[0.25, 0.5, 0.75],
        help="more policies: every early exit's threshold at this quantile of its confidences",
    )
    parser.add_argument("--limit", type=int, default=None, help="the first N images only")
    parser.add_argument("--amps", nargs="+", default=["fp32", "bf16"], choices=sorted(DTYPES))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    manifest = json.loads((args.data / "manifest.json").read_text())
    images = np.load(args.data / f"{args.split}_images.npy")
    labels = np.load(args.data / f"{args.split}_labels.npy")
    images, labels = images[: args.limit], labels[: args.limit]
    policies = sorted(
        {tuple(b["thresholds"]) for b in json.loads(args.thresholds.read_text())["budgets"]}
    )
    inputs = [
        to_model_input(x8.to(device), manifest["data_config"])
        for x8, _ in batches(images, labels, args.batch_size)
    ]
    model = load(args.model, args.weights, device)
    result: dict = {
        "model": str(args.model),
        "images": len(labels),
        "batch_size": args.batch_size,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__,
        "backbone_weights_replaced": args.weights,
        "precisions": {},
    }
    for amp in args.amps:
        dtype = DTYPES[amp]
        served = copy.deepcopy(model)
        cast_matmul_weights(served, dtype)
        eager = EagerEngine(model, device, dtype)
        compiled = CompiledEngine(served, device, dtype)
        per_batch = [eager.exits(x) for x in inputs]
        probs = torch.stack(
            [torch.cat([b[k] for b in per_batch]).softmax(-1).cpu() for k in range(model.num_exits)]
        )
        top2 = probs.topk(2, dim=-1).values  # [exits, images, 2]
        quantiles = [
            (*(float(probs[k].max(-1).values.quantile(q)) for k in range(model.num_exits - 1)), 0.0)
            for q in args.quantiles
        ]
        rows = []
        for thr in [*policies, *quantiles]:
            tic = time.perf_counter()
            e_pred, e_exit = run_policy(eager, inputs, list(thr))
            c_pred, c_exit = run_policy(compiled, inputs, list(thr))
            seconds = time.perf_counter() - tic
            differ = np.flatnonzero((e_pred != c_pred) | (e_exit != c_exit))
            parted = np.minimum(e_exit[differ], c_exit[differ])
            # Where they parted: the confidence's distance to that exit's threshold (early
            # exits), and the gap between the two most probable classes there.
            margins = [
                abs(float(top2[k, i, 0]) - thr[k]) if k < len(thr) - 1 else None
                for i, k in zip(differ, parted, strict=True)
            ]
            gaps = [
                float(top2[k, i, 0] - top2[k, i, 1]) for i, k in zip(differ, parted, strict=True)
            ]
            rows.append(
                {
                    "thresholds": list(thr),
                    "same_prediction": float((e_pred == c_pred).mean()),
                    "same_exit": float((e_exit == c_exit).mean()),
                    "same_both": 1.0 - len(differ) / len(labels),
                    "accuracy_eager": float((e_pred == labels).mean()),
                    "accuracy_compiled": float((c_pred == labels).mean()),
                    "differing": [
                        {"image": int(i), "exit": int(k), "margin_to_threshold": m, "top2_gap": g}
                        for i, k, m, g in zip(differ, parted, margins, gaps, strict=True)
                    ],
                    "seconds": seconds,
                }
            )
            print(
                f"{amp} thresholds {[round(t, 4) for t in thr]}: same prediction "
                f"{rows[-1]['same_prediction']:.4f}, same exit {rows[-1]['same_exit']:.4f}"
            )
        result["precisions"][amp] = {
            "policies": rows,
            "same_both_min": min(r["same_both"] for r in rows),
            "graphs_captured": compiled.captured,
        }
    write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
