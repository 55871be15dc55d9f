"""The model card of an evaluated model: what it is, what it was tested on, what it costs."""

from __future__ import annotations

from typing import Any

from ..data.prepared import PreparedData
from ..models import DynAdapterViT


def model_card(metrics: dict[str, Any], model: DynAdapterViT, data: PreparedData) -> str:
    """The card as Markdown; artifacts are named by their place in the run, not by a path on
    the machine that made it."""
    cfg = model.config
    assert cfg is not None
    iso = metrics["iso_accuracy"]
    lines = [
        "# Model card: Dyn-Adapter",
        "",
        "## Model",
        f"- Backbone: `{cfg.backbone.name}` ({cfg.backbone.weights} weights), frozen, "
        f"sha256 `{model.backbone_sha256}`, {cfg.backbone.img_size} px input.",
        f"- PETL: {cfg.petl.method} (dim {cfg.petl.dim}); exits after blocks "
        f"{model.exit_blocks}; head depths {model.head_depths}.",
        "- Exit rule: max softmax probability >= the exit's threshold; the last exit takes the "
        "rest. Thresholds: the search stage's `thresholds.json` (chosen on validation only).",
        "",
        "## Data",
        f"- Source: {data.manifest.get('source')} `{data.manifest.get('path')}`; "
        f"{data.num_classes} classes; test images: {metrics['test_images']}.",
        "",
        "## Results (test split, final-epoch model)",
        f"- Full model (last exit): accuracy {metrics['full']['accuracy']:.4f} at "
        f"{metrics['full']['gflops']:.3f} GFLOPs ({metrics['flops_unit']}).",
    ]
    if metrics["static_petl"]["accuracy"] is not None:
        lines.append(f"- Static PETL model: accuracy {metrics['static_petl']['accuracy']:.4f}.")
    if iso["gflops_ratio"] is not None:
        lines.append(
            f"- Iso-accuracy: {iso['accuracy']:.4f} at {iso['gflops_ratio']:.3f} x the full GFLOPs "
            f"(budget {iso['budget']:g}; reference {iso['reference_accuracy']:.4f} - "
            f"{iso['tolerance']:g})."
        )
    else:
        lines.append("- No searched budget reaches the reference accuracy within the tolerance.")
    lines += [
        f"- Wall-clock, dynamic over full: {metrics['speed']['time_ratio_b64']:.3f} at batch 64, "
        f"{metrics['speed']['time_ratio_b1']:.3f} at batch 1 (budget {metrics['speed']['budget']:g}).",
        "",
        "| budget | accuracy | GFLOPs | ratio | exit fractions | geometric | frozen probe |",
        "|---|---|---|---|---|---|---|",
    ]
    for b in metrics["budgets"]:
        fr = " / ".join(f"{f:.2f}" for f in b["exit_fractions"])
        geo = f"{b['geometric_accuracy']:.4f}" if b["geometric_accuracy"] is not None else "n/a"
        probe = (
            f"{b['frozen_probe_accuracy']:.4f}" if b["frozen_probe_accuracy"] is not None else "n/a"
        )
        lines.append(
            f"| {b['budget']:g} | {b['accuracy']:.4f} | {b['gflops']:.3f} | "
            f"{b['gflops_ratio']:.3f} | {fr} | {geo} | {probe} |"
        )
    lines += [
        "",
        "## Limits",
        "- Thresholds are calibrated on a small validation split; accuracy at a budget carries "
        "its sampling noise.",
        "- GFLOPs count matrix multiplications (attention included), not normalisation or "
        "activation functions; wall-clock ratios depend on the device and batch size.",
        "",
    ]
    return "\n".join(lines)
