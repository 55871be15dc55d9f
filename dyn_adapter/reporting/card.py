"""The model card of an evaluated model: what it is, what it was tested on, what it costs."""

from __future__ import annotations

from typing import Any

from ..data.prepared import PreparedData
from ..evaluation_report import EvaluationReport, FullModel, Speed, StaticPetl
from ..models import DynAdapterViT
from ..policies.risk import guaranteed_risk
from . import fraction, header, points, shares

COMPARISONS = {
    "last_exit_vs_static_petl": "Last exit minus static PETL",
    "iso_vs_static_petl": "Iso-accuracy point minus static PETL",
    "half_gflops_vs_static_petl": "Half-GFLOPs point minus static PETL",
}


def _interval(m: Any) -> str:
    """A record's test accuracy with its interval (a model, a budget, an operating point)."""
    return fraction(m.accuracy, m.accuracy_interval)


def _summary(m: FullModel | StaticPetl) -> str:
    return f"accuracy {_interval(m)}, balanced accuracy {m.balanced_accuracy:.4f}"


def model_card(report: EvaluationReport, model: DynAdapterViT, data: PreparedData) -> str:
    """The card as Markdown; artifacts are named by their place in the run, not by a path on
    the machine that made it."""
    cfg = model.config
    assert cfg is not None
    iso = report.iso_accuracy
    lines = [
        "# Model card: Dyn-Adapter",
        "",
        "## Model",
        f"- Backbone: `{cfg.backbone.name}` ({cfg.backbone.weights} weights), frozen, "
        f"sha256 `{model.backbone_sha256}`, {cfg.backbone.img_size} px input.",
        f"- PETL: {cfg.petl.method} (dim {cfg.petl.dim}); exits after blocks "
        f"{model.exit_blocks}; {cfg.exits.head_type} exit heads, blocks {model.head_depths}, widths "
        f"{model.head_widths} ({cfg.exits.head_setting()} heads).",
        "- Exit rule: max softmax probability >= the exit's threshold; the last exit takes the "
        "rest. Thresholds: the search stage's `thresholds.json` (chosen on validation only).",
        "",
        "## Data",
        f"- Source: {data.manifest.get('source')} `{data.manifest.get('path')}`; "
        f"{data.num_classes} classes; test images: {report.test_images}.",
        *(
            [f"- Class proportions: {shift['note']}."]
            if (shift := report.class_shift or {}).get("marked")
            else []
        ),
        "",
        "## Results (test split, final-epoch model; 95% intervals)",
        f"- Full model (last exit): {_summary(report.full)} at "
        f"{report.full.gflops:.3f} GFLOPs ({report.flops_unit}).",
    ]
    if report.static_petl.accuracy is not None:
        lines.append(f"- Static PETL model: {_summary(report.static_petl)}.")
    if iso.gflops_ratio is not None and iso.budget is not None:
        lines.append(
            f"- Iso-accuracy (chosen on validation): {_interval(iso)} at "
            f"{iso.gflops_ratio:.3f} x the full GFLOPs (budget {iso.budget:g}: the "
            f"cheapest whose validation accuracy is within {iso.tolerance:g} of "
            f"{iso.reference_val_accuracy:.4f})."
        )
    else:
        lines.append(
            "- No searched budget keeps the reference validation accuracy within the tolerance."
        )
    half = report.half_gflops
    if half.budget is not None and half.gflops_ratio is not None:
        lines.append(
            f"- Searched for at most half the GFLOPs (budget {half.budget:g}, on "
            f"validation): {_interval(half)} at {half.gflops_ratio:.3f} x the full GFLOPs "
            "measured on test."
        )
    for name, c in report.comparisons.items():
        verdict = "resolved" if c["resolved"] else "not resolved"
        lines.append(
            f"- {COMPARISONS.get(name, name)}: {points(c['difference'], c['interval'], ' points')} "
            f"({verdict}; paired bootstrap, McNemar p "
            f"{c['mcnemar_p']:.3g})."
        )
    recall = report.full.per_class_recall
    lines.append(
        "- Per-class recall (last exit): "
        + ", ".join(
            f"{name} {r:.2f}" if r is not None else f"{name} n/a"
            for name, r in zip(data.classes, recall, strict=True)
        )
        + "."
    )
    speed = report.speed
    lines += [
        f"- Wall-clock, dynamic over full: {speed.time_ratio_b64:.3f} at batch 64, "
        f"{speed.time_ratio_b1:.3f} at batch 1 (budget {speed.budget:g}; {_served_as(speed)}).",
        "",
        *header("budget", "accuracy [95% interval]", "balanced", "val accuracy", "GFLOPs", "ratio",
                "exit fractions", "geometric", "frozen probe"),
    ]  # fmt: skip
    for b in report.budgets:
        fr = shares(b.exit_fractions)
        geo = f"{b.geometric_accuracy:.4f}" if b.geometric_accuracy is not None else "n/a"
        probe = f"{b.frozen_probe_accuracy:.4f}" if b.frozen_probe_accuracy is not None else "n/a"
        lines.append(
            f"| {b.budget:g} | {_interval(b)} | {b.balanced_accuracy:.4f} | "
            f"{b.val_accuracy:.4f} | {b.gflops:.3f} | {b.gflops_ratio:.3f} | {fr} | "
            f"{geo} | {probe} |"
        )
    lines += _risk_lines(report.risk_control)
    lines += [
        "",
        "## Limits",
        "- Thresholds are calibrated on a small validation split; accuracy at a budget carries "
        "its sampling noise.",
        "- The iso-accuracy budget is chosen on the validation images its thresholds were "
        "searched on: their validation accuracy is optimistic, so the choice leans to cheaper "
        "budgets; the test numbers beside it are the honest ones.",
        "- Intervals: Wilson's for an accuracy; for a difference a paired bootstrap over the "
        "test images, resolved only if it excludes zero and McNemar's exact test agrees.",
        "- GFLOPs count matrix multiplications (attention included), not normalisation or "
        "activation functions; wall-clock ratios depend on the device and batch size.",
        "",
    ]
    return "\n".join(lines)


def _risk_lines(control: dict[str, Any] | None) -> list[str]:
    """The risk-controlled operating points (``calibrate``), as run on the test split."""
    if not control or not control["points"]:
        return []
    lines = [
        "",
        f"## Risk-controlled exits (certified on {control['calibration_images']} "
        f"{control['split']} images)",
        f"- Guarantee: {_guaranteed(control['points'][0].get('window_images'))} <= epsilon "
        f"with probability >= 1 - delta; assumption: {control['assumption']}.",
        "",
        *header("risk", "epsilon", "delta", "test risk [95%]", "accuracy", "GFLOPs ratio",
                "time ratio b64", "splits over epsilon: held-out part / pool"),
    ]  # fmt: skip
    for p in control["points"]:
        low, high = p["test_risk_interval"]
        rep = p["repeated_splits"]
        lines.append(
            f"| {p['risk']} | {p['epsilon']:g} | {p['delta']:g} | {p['test_risk']:.4f} "
            f"[{low:.4f}, {high:.4f}] | {p['accuracy']:.4f} | {p['gflops_ratio']:.3f} | "
            f"{p['time_ratio_b64']:.3f} | {rep['violation_frequency']:.2f} / "
            f"{rep['pool_violation_frequency']:.2f} of {rep['splits']} (delta {p['delta']:g} "
            f"+- {rep['standard_error']:.3f}) |"
        )
    return lines


def _guaranteed(window_images: int | None) -> str:
    scatter = " (the realised risk of a finite test set scatters around it)"
    return guaranteed_risk(window_images) + (scatter if window_images is None else "")


def _served_as(speed: Speed) -> str:
    """How the timed (and served) model ran: engine, precision, device."""
    machine = speed.machine or {}
    where = machine.get("gpu") or f"CPU, {machine.get('torch_threads', '?')} threads"
    return (
        f"{speed.engine} engine, {speed.precision} on {where}; answers and timings at this "
        "precision"
    )
