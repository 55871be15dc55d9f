"""The ``evaluate`` stage: real dynamic inference on the test split, for every searched budget.

Accuracy, measured GFLOPs and exit fractions come from ``forward_dynamic`` with batch
compaction (never from a simulation), and are checked against what the cached logits predict.
Baselines read on the same test split: every static exit, the geometric thresholds, the
frozen-probe early-exit model, and the static PETL model. LoRA and RepAdapter are evaluated
merged into the backbone. Outputs: ``metrics.json``, plots (PNG, and JSON for ``dvc plots``),
a Markdown model card.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data.prepared import PreparedData
from .data.transforms import to_model_input
from .engine import batches, exit_logits, resolve_device
from .errors import ConfigError
from .io import atomic_path, write_json
from .manifest import stage_manifest
from .models import FLOPS_UNIT, DynAdapterViT
from .models.checkpoint import load_for_inference
from .models.dyn_vit import check_thresholds
from .search import THRESHOLDS_FILE
from .speed import machine_info, time_ratios
from .thresholds import ExitScores, exit_indices, oracle, simulate

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
CARD_FILE = "model_card.md"
PLOTS_DIR = "plots"


@dataclass
class EvaluateConfig:
    """Evaluation settings.

    Attributes:
        iso_tolerance: Accuracy (absolute) the dynamic model may lose against the static PETL
            model at the iso-accuracy budget.
        speed_images: Test images timed for the wall-clock ratios (accuracy always uses all).
        speed_repeats: Timed repeats (medians are reported).
        batch_size: Images per forward pass.
    """

    iso_tolerance: float = 0.005
    speed_images: int = 256
    speed_repeats: int = 5
    batch_size: int = 256


@torch.no_grad()
def dynamic_predictions(
    model: DynAdapterViT,
    images: np.ndarray,
    labels: np.ndarray,
    data_config: dict[str, Any],
    thresholds: list[float],
    batch_size: int,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and exit indices of real early-exit inference over a whole split."""
    model.eval()
    preds, exits = [], []
    for x8, _ in batches(images, labels, batch_size):
        out = model.forward_dynamic(to_model_input(x8.to(device), data_config), thresholds)
        preds.append(out.prediction.cpu())
        exits.append(out.exit_index.cpu())
    return torch.cat(preds).numpy(), torch.cat(exits).numpy()


def _test_scores(
    model: DynAdapterViT, data: PreparedData, batch_size: int, device: torch.device
) -> ExitScores:
    images, labels = data.split("test")
    logits = exit_logits(
        model, images, labels, data_config=data.data_config, batch_size=batch_size, device=device
    )
    return ExitScores.from_logits(
        logits, np.asarray(labels), [e.gflops_cumulative for e in model.exit_info]
    )


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: missing; run `dyn-adapter {what}` first")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON ({e}); run `dyn-adapter {what}` again") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object; run `dyn-adapter {what}` again")
    return data


def read_search(search_dir: str | Path, num_exits: int) -> dict[str, Any]:
    """A ``search`` output's ``thresholds.json``, every policy in it checked against the model.

    A hand-edited or foreign file is refused naming the file, the budget and the value: NaN,
    negative or missing thresholds, or another count than the model's exits.
    """
    path = Path(search_dir) / THRESHOLDS_FILE
    search = _read_json(path, "search")
    fix = "fix the file or run `dyn-adapter search` again"
    rows = search.get("budgets")
    if not isinstance(rows, list) or not rows:
        raise ConfigError(f"{path}: 'budgets' must be a non-empty list; {fix}")

    def check(value: Any, where: str) -> None:
        numbers = isinstance(value, list) and all(
            isinstance(t, (int, float)) and not isinstance(t, bool) for t in value
        )
        if not numbers:
            raise ConfigError(f"{path}: {where}: expected a list of numbers, got {value!r}; {fix}")
        try:
            check_thresholds(value, num_exits)
        except ConfigError as e:
            raise ConfigError(f"{path}: {where}: {e}; {fix}") from None

    def thresholds_of(policy: Any) -> Any:
        return policy.get("thresholds") if isinstance(policy, dict) else None

    for i, row in enumerate(rows):
        budget = row.get("budget") if isinstance(row, dict) else None
        if not isinstance(budget, (int, float)) or isinstance(budget, bool):
            raise ConfigError(f"{path}: budgets[{i}]: no numeric 'budget'; {fix}")
        check(row.get("thresholds"), f"budget {budget:g} thresholds")
        if row.get("geometric") is not None:
            check(thresholds_of(row["geometric"]), f"budget {budget:g} geometric thresholds")
        if row.get("temperatures"):
            raise ConfigError(
                f"{path}: budget {budget:g}: searched temperatures are not supported by the "
                "evaluate stage yet; search with search.temperatures=false"
            )
    curve = search.get("geometric_curve")
    if not isinstance(curve, list):
        raise ConfigError(f"{path}: 'geometric_curve' must be a list; {fix}")
    for i, policy in enumerate(curve):
        check(thresholds_of(policy), f"geometric_curve[{i}] thresholds")
    return search


def run(
    cfg: EvaluateConfig,
    model_dir: str | Path,
    search_dir: str | Path,
    data_dir: str | Path,
    out_dir: str | Path,
    static_dir: str | Path | None = None,
    probe_model_dir: str | Path | None = None,
    probe_search_dir: str | Path | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """Evaluate a searched Dyn-Adapter model on the test split; returns ``metrics.json``'s content.

    Args:
        cfg: Settings.
        model_dir: The Dyn-Adapter model.
        search_dir: Its ``search`` output (thresholds chosen on validation only).
        data_dir: The prepared data.
        out_dir: Where metrics, plots and the model card go.
        static_dir: ``train --static`` output: the static PETL model's accuracy to keep.
        probe_model_dir, probe_search_dir: The frozen-probe early-exit baseline and its search.
        device: ``auto``, ``cpu``, ``cuda``...
    """
    out = Path(out_dir)
    dev = resolve_device(device)
    data = PreparedData(data_dir)
    model = load_for_inference(model_dir, dev)
    data.check_model_classes(model.num_classes, model_dir)
    search = read_search(search_dir, model.num_exits)
    scores = _test_scores(model, data, cfg.batch_size, dev)
    images, labels = data.split("test")
    labels = np.asarray(labels)
    full = scores.full_gflops

    probe_scores, probe_rows = None, {}
    if probe_model_dir is not None and probe_search_dir is not None:
        probe = load_for_inference(probe_model_dir, dev)
        data.check_model_classes(probe.num_classes, probe_model_dir)
        probe_search = read_search(probe_search_dir, probe.num_exits)
        probe_scores = _test_scores(probe, data, cfg.batch_size, dev)
        probe_rows = {r["budget"]: r for r in probe_search["budgets"]}

    budgets = []
    runs: dict[tuple[float, ...], tuple[np.ndarray, np.ndarray]] = {}  # budgets may share a policy
    for row in search["budgets"]:
        thr = row["thresholds"]
        if tuple(thr) not in runs:
            runs[tuple(thr)] = dynamic_predictions(
                model, images, labels, data.data_config, thr, cfg.batch_size, dev
            )
        pred, exits = runs[tuple(thr)]
        measured = float(scores.gflops[exits].mean())
        simulated = simulate(scores, thr)
        entry = {
            "budget": row["budget"],
            "thresholds": thr,
            "accuracy": float((pred == labels).mean()),
            "gflops": measured,
            "gflops_ratio": measured / full,
            "exit_fractions": (
                np.bincount(exits, minlength=scores.num_exits) / len(labels)
            ).tolist(),
            "simulated_accuracy": simulated.accuracy,
            "simulated_gflops": simulated.gflops,
            "geometric_accuracy": (
                simulate(scores, row["geometric"]["thresholds"]).accuracy
                if row["geometric"]
                else None
            ),
            "frozen_probe_accuracy": None,
            "frozen_probe_gflops": None,
        }
        probe_row = probe_rows.get(row["budget"])
        if probe_scores is not None and probe_row is not None:
            p = simulate(probe_scores, probe_row["thresholds"])
            entry["frozen_probe_accuracy"], entry["frozen_probe_gflops"] = p.accuracy, p.gflops
        budgets.append(entry)
        logger.info(
            "budget %.2f: test accuracy %.4f at %.3f GFLOPs (%.3f of full)",
            row["budget"],
            entry["accuracy"],
            measured,
            measured / full,
        )

    static_exits = [
        {
            "block": b,
            "accuracy": float((scores.prediction[k] == labels).mean()),
            "gflops_cumulative": float(scores.gflops[k]),
        }
        for k, b in enumerate(model.exit_blocks)
    ]
    static_acc = None
    if static_dir is not None:
        static_metrics = _read_json(Path(static_dir) / "metrics.json", "train --static")
        static_acc = static_metrics.get("test_accuracy", [None])[-1]
        if static_acc is None:
            raise ConfigError(
                f"{static_dir}/metrics.json has no test accuracy; train with "
                "train.evaluate_test=true"
            )
    reference = static_acc if static_acc is not None else static_exits[-1]["accuracy"]
    iso = [b for b in budgets if b["accuracy"] >= reference - cfg.iso_tolerance]
    iso_best = min(iso, key=lambda b: b["gflops"]) if iso else None

    # Timed at the iso-accuracy thresholds (the middle budget if none qualifies).
    timed = iso_best or budgets[len(budgets) // 2]
    subset = images[: cfg.speed_images]
    x = to_model_input(torch.from_numpy(np.array(subset)).to(dev), data.data_config)
    speed: dict[str, Any] = {
        **time_ratios(model, x, timed["thresholds"], repeats=cfg.speed_repeats),
        "budget": timed["budget"],
        "images": len(subset),
        "machine": machine_info(dev),
    }

    orc = oracle(scores)
    metrics: dict[str, Any] = {
        "flops_unit": FLOPS_UNIT,
        "full": {"accuracy": static_exits[-1]["accuracy"], "gflops": full},
        "static_petl": {"accuracy": static_acc},
        "frozen_probe": {
            "exits": None
            if probe_scores is None
            else [
                {
                    "accuracy": float((probe_scores.prediction[k] == labels).mean()),
                    "gflops_cumulative": float(probe_scores.gflops[k]),
                }
                for k in range(probe_scores.num_exits)
            ]
        },
        "exits": static_exits,
        "budgets": budgets,
        "oracle": {
            "accuracy": orc.accuracy,
            "gflops": orc.gflops,
            "exit_fractions": orc.exit_fractions,
        },
        "iso_accuracy": {
            "reference_accuracy": reference,
            "tolerance": cfg.iso_tolerance,
            "budget": iso_best["budget"] if iso_best else None,
            "accuracy": iso_best["accuracy"] if iso_best else None,
            "gflops_ratio": iso_best["gflops_ratio"] if iso_best else None,
        },
        "speed": speed,
        "test_images": len(labels),
    }
    out.mkdir(parents=True, exist_ok=True)
    curves = _curves(metrics, search, scores, probe_scores, probe_rows)
    _write_plots(out, metrics, curves, model, scores, labels, data.classes, iso_best)
    with atomic_path(out / CARD_FILE) as tmp:
        tmp.write_text(model_card(metrics, model, data, search_dir))
    write_json(out / METRICS_FILE, metrics)
    write_json(
        out / "manifest.json",
        stage_manifest(
            "evaluate",
            {"evaluate": cfg.__dict__},
            model=str(model_dir),
            search=str(search_dir),
            backbone_sha256=model.backbone_sha256,
        ),
    )
    return metrics


def _curves(
    metrics: dict[str, Any],
    search: dict[str, Any],
    scores: ExitScores,
    probe_scores: ExitScores | None,
    probe_rows: dict[float, Any],
) -> dict[str, list[dict[str, float]]]:
    geometric = [simulate(scores, g["thresholds"]) for g in search["geometric_curve"]]
    curves = {
        "Dyn-Adapter (searched)": [
            {"gflops": b["gflops"], "accuracy": b["accuracy"]} for b in metrics["budgets"]
        ],
        "geometric thresholds": [{"gflops": g.gflops, "accuracy": g.accuracy} for g in geometric],
        "oracle": [
            {"gflops": metrics["oracle"]["gflops"], "accuracy": metrics["oracle"]["accuracy"]}
        ],
        "static exits": [
            {"gflops": e["gflops_cumulative"], "accuracy": e["accuracy"]} for e in metrics["exits"]
        ],
    }
    if probe_scores is not None:
        curves["frozen probe (searched)"] = [
            {"gflops": b["frozen_probe_gflops"], "accuracy": b["frozen_probe_accuracy"]}
            for b in metrics["budgets"]
            if b["frozen_probe_accuracy"] is not None
        ]
    if metrics["static_petl"]["accuracy"] is not None:
        curves["static PETL"] = [
            {"gflops": metrics["full"]["gflops"], "accuracy": metrics["static_petl"]["accuracy"]}
        ]
    return curves


def _write_plots(
    out: Path,
    metrics: dict[str, Any],
    curves: dict[str, list[dict[str, float]]],
    model: DynAdapterViT,
    scores: ExitScores,
    labels: np.ndarray,
    classes: list[str],
    iso_best: dict[str, Any] | None,
) -> None:
    from . import plots

    d = out / PLOTS_DIR
    d.mkdir(parents=True, exist_ok=True)
    figures = {
        "accuracy_vs_gflops.png": plots.accuracy_vs_gflops(curves, metrics["full"]["gflops"]),
        "exit_distribution.png": plots.exit_distribution(metrics["budgets"], model.exit_blocks),
    }
    # Confusion matrix of the iso-accuracy policy (the most generous budget if none qualifies).
    thr = (iso_best or metrics["budgets"][-1])["thresholds"]
    chosen = exit_indices(scores, thr)
    pred = scores.prediction[chosen, np.arange(len(labels))]
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(matrix, (labels, pred), 1)
    figures["confusion_matrix.png"] = plots.confusion_matrix(matrix, classes)
    for name, fig in figures.items():
        with atomic_path(d / name) as tmp:
            fig.savefig(tmp, format="png", dpi=120)
    rows = [{"curve": name, **p} for name, pts in curves.items() for p in pts]
    write_json(d / "accuracy_vs_gflops.json", rows)
    write_json(d / "confusion_matrix.json", {"classes": classes, "matrix": matrix.tolist()})


def model_card(
    metrics: dict[str, Any], model: DynAdapterViT, data: PreparedData, search_dir: str | Path
) -> str:
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
        f"- Exit rule: max softmax probability >= the exit's threshold; the last exit takes the "
        f"rest. Thresholds from `{search_dir}` (chosen on validation only).",
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
