"""What each exit costs, before anything is trained: the ``model-info`` report."""

from __future__ import annotations

from typing import Any

from ..config import to_dict
from .config import ModelConfig
from .factory import create_dyn_adapter
from .flops import FLOPS_UNIT


def describe(cfg: ModelConfig) -> dict[str, Any]:
    """Build the model and report its exits, FLOPs and trainable parameters.

    ``head_overhead`` is the paper's comparison: trainable parameters of Dyn-Adapter over those
    of the base PETL method with only its final head, minus one.
    """
    model = create_dyn_adapter(cfg)
    info = model.exit_info
    heads = model.head_param_counts()
    petl = model.petl_param_count()
    base = petl + heads[-1]
    full = info[-1].gflops_cumulative
    return {
        "backbone": cfg.backbone.name,
        "weights": cfg.backbone.weights,
        "backbone_sha256": model.backbone_sha256,
        "img_size": cfg.backbone.img_size,
        "petl": to_dict(cfg.petl),
        "num_classes": cfg.num_classes,
        "backbone_params": sum(p.numel() for p in model.backbone.parameters()) - petl,
        "petl_params": petl,
        "head_params": sum(heads),
        "trainable_params": sum(p.numel() for p in model.trainable_parameters()),
        "head_overhead": (petl + sum(heads)) / base - 1.0,
        "full_gflops": full,
        "flops_unit": FLOPS_UNIT,
        "exits": [
            {
                "index": e.index,
                "block": e.block,
                "head_depth": model.head_depths[e.index],
                "head_params": e.head_params,
                "head_gflops": e.head_gflops,
                "gflops_cumulative": e.gflops_cumulative,
                "gflops_fraction": e.gflops_cumulative / full,
            }
            for e in info
        ],
    }


def format_table(report: dict[str, Any]) -> str:
    """The report as a human-readable table."""
    petl = report["petl"]
    lines = [
        f"{report['backbone']} @ {report['img_size']} px  weights={report['weights']}"
        f"  sha256={report['backbone_sha256'][:12]}…",
        f"PETL: {petl['method']} (dim {petl['dim']})   classes: {report['num_classes']}",
        "",
        f"{'exit':>4} {'block':>5} {'head depth':>10} {'head params':>11} "
        f"{'GFLOPs (cum.)':>13} {'% of full':>9}",
    ]
    for e in report["exits"]:
        lines.append(
            f"{e['index']:>4} {e['block']:>5} {e['head_depth']:>10} {e['head_params']:>11,} "
            f"{e['gflops_cumulative']:>13.4f} {100 * e['gflops_fraction']:>8.1f}%"
        )
    lines += [
        "",
        f"frozen backbone params: {report['backbone_params']:,}",
        f"trainable params:       {report['trainable_params']:,} "
        f"(PETL {report['petl_params']:,} + heads {report['head_params']:,})",
        f"head overhead over the base PETL method: {100 * report['head_overhead']:+.1f}%",
        f"unit: {report['flops_unit']}",
    ]
    return "\n".join(lines)
