"""What each exit costs, before anything is trained: the ``model-info`` report."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..config import to_dict
from .config import HEAD_SETTINGS, ModelConfig
from .dyn_vit import DynAdapterViT
from .factory import create_dyn_adapter
from .flops import FLOPS_UNIT


def head_overhead(model: DynAdapterViT) -> float:
    """The paper's Table 1 comparison: trainable parameters of Dyn-Adapter over those of the
    base PETL method with only its final head, minus one."""
    heads = model.head_param_counts()
    petl = model.petl_param_count()
    return (petl + sum(heads)) / (petl + heads[-1]) - 1.0


def head_settings(cfg: ModelConfig, built: DynAdapterViT) -> list[dict[str, Any]]:
    """What each named head setting (``exits.heads``) costs on this backbone, PETL method and
    exits. ``built`` is ``cfg``'s model, reused where ``cfg`` is one of them; the others are
    built with random weights: parameter counts and FLOPs do not depend on the weights."""
    rows = []
    for name, sizes in HEAD_SETTINGS.items():
        exits = cfg.exits.with_heads(name)
        if exits == cfg.exits:
            model = built
        else:
            backbone = dataclasses.replace(cfg.backbone, weights="none")
            model = create_dyn_adapter(dataclasses.replace(cfg, backbone=backbone, exits=exits))
        rows.append(
            {
                "name": name,
                "about": sizes.about,
                "head_depths": model.head_depths,
                "head_widths": model.head_widths,
                "head_params": sum(model.head_param_counts()),
                "head_overhead": head_overhead(model),
                "head_gflops": sum(e.head_gflops for e in model.exit_info),
            }
        )
    return rows


def describe(cfg: ModelConfig) -> dict[str, Any]:
    """Build the model and report its exits, FLOPs and trainable parameters, and what each
    named head setting would cost instead (``head_settings``)."""
    model = create_dyn_adapter(cfg)
    info = model.exit_info
    heads = model.head_param_counts()
    petl = model.petl_param_count()
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
        "heads": cfg.exits.head_setting(),
        "head_type": cfg.exits.head_type,
        "head_overhead": head_overhead(model),
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
        "head_settings": head_settings(cfg, model),
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
        "",
        "named head settings (exits.heads; conv heads) on this backbone:",
        f"  {'setting':<10} {'depths':<10} {'widths':<14} {'head params':>11} {'overhead':>9} "
        f"{'head GFLOPs':>11}",
    ]
    for s in report["head_settings"]:
        lines.append(
            f"  {s['name']:<10} {_csv(s['head_depths']):<10} {_csv(s['head_widths']):<14} "
            f"{s['head_params']:>11,} {100 * s['head_overhead']:>+8.1f}% "
            f"{s['head_gflops']:>11.4f}  {s['about']}"
        )
    return "\n".join(lines)


def _csv(values: list[int]) -> str:
    return ",".join(str(v) for v in values)
