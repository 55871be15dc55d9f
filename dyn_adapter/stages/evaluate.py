"""The ``evaluate`` stage: real dynamic inference on the test split, for every searched budget.

Accuracy, measured GFLOPs and exit fractions come from real early exit with batch compaction
(never from a simulation), run by the configured inference engine at the precision the model is
served at (``inference.*``), and are checked against what the cached logits predict.
Baselines read on the same test split: every static exit, the geometric thresholds, the
frozen-probe early-exit model, and the static PETL model. LoRA and RepAdapter are evaluated
merged into the backbone. Outputs: ``metrics.json``, plots (PNG, and JSON for ``dvc plots``),
a Markdown model card.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..artifacts import (
    CARD_FILE,
    MANIFEST_FILE,
    METRICS_FILE,
    RiskPoints,
    Thresholds,
    TrainedModel,
    write_task_label,
)
from ..data.prepared import PreparedData
from ..data.transforms import to_model_input
from ..evaluation.certified import certified_points_on_test
from ..evaluation.config import EvaluateConfig
from ..evaluation.iso import iso_accuracy_point
from ..evaluation.speed import machine_info, time_ratios
from ..evaluation.stats import classification_summary, paired_difference
from ..evaluation_report import EvaluationReport
from ..files import atomic_path, write_json
from ..inference import Engine, dynamic_predictions, load_engine, resolve_device, split_scores
from ..manifest import stage_manifest
from ..models import FLOPS_UNIT
from ..params import Params
from ..policies.thresholds import ExitScores, correct, oracle, simulate
from ..reporting.card import model_card

logger = logging.getLogger(__name__)


def _accuracy(scores: ExitScores, labels: np.ndarray) -> float:
    """The last exit's accuracy."""
    return float((scores.prediction[-1] == labels).mean())


def _operating_point(row: dict[str, Any] | None) -> dict[str, Any]:
    """A budget row's test numbers (all ``None`` without a row)."""
    keys = ("budget", "accuracy", "accuracy_interval", "balanced_accuracy", "gflops_ratio")
    return {k: (row[k] if row else None) for k in keys}


@dataclass(frozen=True)
class _TestSplit:
    """The test split and every exit's answers on it."""

    images: np.ndarray
    labels: np.ndarray
    scores: ExitScores
    num_classes: int

    def summary(self, pred: np.ndarray, per_class: bool = False) -> dict[str, Any]:
        # Per-class recall only for the models a reader compares (the full and static ones):
        # every budget and exit would make thousands of MLflow metrics on a 397-class task.
        return classification_summary(self.labels, pred, self.num_classes, per_class)


def _frozen_probe(
    model_dir: str | Path,
    search_dir: str | Path,
    data: PreparedData,
    params: Params,
    dev: torch.device,
) -> tuple[ExitScores, dict[float, dict[str, Any]]]:
    """The frozen-probe baseline's answers on test and its searched policies by budget."""
    probe = load_engine(model_dir, dev, params.inference)
    data.check_model_classes(probe.model.num_classes, model_dir)
    probe_search = Thresholds(search_dir, probe.num_exits).data
    scores = split_scores(probe, data, "test", params.evaluate.batch_size)
    return scores, {r["budget"]: r for r in probe_search["budgets"]}


def _budget_rows(
    engine: Engine,
    search: dict[str, Any],
    test: _TestSplit,
    data: PreparedData,
    cfg: EvaluateConfig,
    probe_scores: ExitScores | None,
    probe_rows: dict[float, dict[str, Any]],
) -> tuple[list[dict[str, Any]], dict[float, np.ndarray]]:
    """Each searched budget's policy run for real on test (budgets sharing a policy run it
    once), beside what the cached logits predict and the baselines at that budget; and each
    budget's per-image correctness."""
    scores, labels, full = test.scores, test.labels, test.scores.full_gflops
    budgets = []
    correct_at: dict[float, np.ndarray] = {}
    runs: dict[tuple[float, ...], tuple[np.ndarray, np.ndarray]] = {}
    for row in search["budgets"]:
        thr = row["thresholds"]
        if tuple(thr) not in runs:
            runs[tuple(thr)] = dynamic_predictions(
                engine, test.images, labels, data.data_config, thr, cfg.batch_size
            )
        pred, exits = runs[tuple(thr)]
        correct_at[row["budget"]] = pred == labels
        measured = float(scores.gflops[exits].mean())
        simulated = simulate(scores, thr)
        entry = {
            "budget": row["budget"],
            "thresholds": thr,
            **test.summary(pred),
            "val_accuracy": row["accuracy"],
            "val_gflops_ratio": row["gflops_ratio"],
            # what risk control bounds, for comparison: answers unlike the full model's
            "disagreement": float((pred != scores.prediction[-1]).mean()),
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
            "vs_frozen_probe": None,
        }
        probe_row = probe_rows.get(row["budget"])
        if probe_scores is not None and probe_row is not None:
            p = simulate(probe_scores, probe_row["thresholds"])
            entry["frozen_probe_accuracy"], entry["frozen_probe_gflops"] = p.accuracy, p.gflops
            entry["vs_frozen_probe"] = paired_difference(
                pred == labels, correct(probe_scores, probe_row["thresholds"])
            )
        budgets.append(entry)
        logger.info(
            "budget %.2f: test accuracy %.4f at %.3f GFLOPs (%.3f of full)",
            row["budget"],
            entry["accuracy"],
            measured,
            measured / full,
        )
    return budgets, correct_at


def _static_petl(
    static_dir: str | Path,
    test: _TestSplit,
    data: PreparedData,
    params: Params,
    dev: torch.device,
    val_labels: np.ndarray,
) -> tuple[dict[str, Any], np.ndarray]:
    """The static PETL model's test summary and validation accuracy, and its per-image
    correctness on test."""
    batch = params.evaluate.batch_size
    static = load_engine(
        TrainedModel(static_dir, "train --static").model_dir, dev, params.inference
    )
    data.check_model_classes(static.model.num_classes, static_dir)
    pred = split_scores(static, data, "test", batch).prediction[-1]
    val_accuracy = _accuracy(split_scores(static, data, "val", batch), val_labels)
    return {**test.summary(pred, per_class=True), "val_accuracy": val_accuracy}, pred == test.labels


def _speed(
    engine: Engine, x: torch.Tensor, timed: dict[str, Any], cfg: EvaluateConfig, dev: torch.device
) -> dict[str, Any]:
    """Wall-clock of ``timed``'s policy against the full model on the images ``x``."""
    return {
        **time_ratios(engine, x, timed["thresholds"], repeats=cfg.speed_repeats),
        "budget": timed["budget"],
        "images": len(x),
        "engine": engine.name,
        "precision": engine.precision,
        "machine": machine_info(dev),
    }


def run(
    params: Params,
    model_dir: str | Path,
    search_dir: str | Path,
    data_dir: str | Path,
    out_dir: str | Path,
    static_dir: str | Path | None = None,
    probe_model_dir: str | Path | None = None,
    probe_search_dir: str | Path | None = None,
    task_name: str = "",
    risk_dir: str | Path | None = None,
) -> EvaluationReport:
    """Evaluate a searched Dyn-Adapter model on the test split; returns the report written as
    ``metrics.json``.

    Args:
        params: ``evaluate.*`` and ``train.device`` are read.
        model_dir: The Dyn-Adapter model.
        search_dir: Its ``search`` output (thresholds chosen on validation only).
        data_dir: The prepared data.
        out_dir: Where metrics, plots and the model card go.
        static_dir: ``train --static`` output: the static PETL model's accuracy to keep.
        probe_model_dir, probe_search_dir: The frozen-probe early-exit baseline and its search.
        task_name: Labels the output (``task.txt``) for tables collected over several tasks.
        risk_dir: The ``calibrate`` output: its certified points are run on the test split
            (realised risk, GFLOPs, time) and re-certified over random calibration/test splits.
    """
    cfg = params.evaluate
    out = Path(out_dir)
    dev = resolve_device(params.train.device)
    data = PreparedData(data_dir)
    engine = load_engine(model_dir, dev, params.inference)
    model = engine.model
    data.check_model_classes(model.num_classes, model_dir)
    search = Thresholds(search_dir, model.num_exits).data
    images, labels = data.split("test")
    test = _TestSplit(images, np.asarray(labels), split_scores(engine, data, "test", cfg.batch_size),
                      len(data.classes))  # fmt: skip
    scores = test.scores

    probe_scores: ExitScores | None = None
    probe_rows: dict[float, dict[str, Any]] = {}
    if probe_model_dir is not None and probe_search_dir is not None:
        probe_scores, probe_rows = _frozen_probe(
            probe_model_dir, probe_search_dir, data, params, dev
        )
    budgets, correct_at = _budget_rows(engine, search, test, data, cfg, probe_scores, probe_rows)
    static_exits = [
        {
            "block": b,
            **test.summary(scores.prediction[k]),
            "gflops_cumulative": float(scores.gflops[k]),
        }
        for k, b in enumerate(model.exit_blocks)
    ]
    val_labels = np.asarray(data.split("val")[1])
    full_val_accuracy = _accuracy(split_scores(engine, data, "val", cfg.batch_size), val_labels)
    static_petl: dict[str, Any] = {"accuracy": None}
    static_correct = None
    if static_dir is not None:
        static_petl, static_correct = _static_petl(static_dir, test, data, params, dev, val_labels)

    # The headline operating point is chosen on validation: the cheapest budget whose
    # validation accuracy keeps the static PETL model's (the full model's without one).
    reference_val = static_petl.get("val_accuracy", full_val_accuracy)
    iso_best = iso_accuracy_point(
        budgets, reference_val, cfg.iso_tolerance, accuracy="val_accuracy", cost="val_gflops_ratio"
    )
    # A second reading, labelled as such: the same rule on the test curve.
    reference_test = (
        static_petl["accuracy"]
        if static_petl["accuracy"] is not None
        else static_exits[-1]["accuracy"]
    )
    iso_test = iso_accuracy_point(budgets, reference_test, cfg.iso_tolerance)
    # The dynamic model at half the GFLOPs: the policy searched under the largest budget <= 0.5.
    half = max((b for b in budgets if b["budget"] <= 0.5), key=lambda b: b["budget"], default=None)

    comparisons: dict[str, Any] = {}
    if static_correct is not None:
        last_correct = scores.prediction[-1] == test.labels
        comparisons["last_exit_vs_static_petl"] = paired_difference(last_correct, static_correct)
        for name, row in (("iso_vs_static_petl", iso_best), ("half_gflops_vs_static_petl", half)):
            if row is not None:
                comparisons[name] = paired_difference(correct_at[row["budget"]], static_correct)

    # Timed at the iso-accuracy thresholds (the middle budget if none qualifies).
    timed = iso_best or budgets[len(budgets) // 2]
    x = to_model_input(
        torch.from_numpy(np.array(images[: cfg.speed_images])).to(dev), data.data_config
    )
    speed = _speed(engine, x, timed, cfg, dev)

    risk_control = None
    if risk_dir is not None:
        risk_control = certified_points_on_test(
            engine, RiskPoints(risk_dir, model.num_exits), scores, images, test.labels, x, data, cfg
        )

    orc = oracle(scores)
    metrics: dict[str, Any] = {
        "flops_unit": FLOPS_UNIT,
        "full": {
            **test.summary(scores.prediction[-1], per_class=True),
            "val_accuracy": full_val_accuracy,
            "gflops": scores.full_gflops,
        },
        "static_petl": static_petl,
        "frozen_probe": {
            "exits": None
            if probe_scores is None
            else [
                {
                    **test.summary(probe_scores.prediction[k]),
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
            "chosen_on": "validation",
            "reference_val_accuracy": reference_val,
            **_operating_point(iso_best),
            "tolerance": cfg.iso_tolerance,
            "test_read": {
                "chosen_on": "test (a second reading, not a held-out choice)",
                "reference_accuracy": reference_test,
                **_operating_point(iso_test),
            },
        },
        "half_gflops": {"max_budget": 0.5, **_operating_point(half)},
        "comparisons": comparisons,
        "risk_control": risk_control,
        "speed": speed,
        "test_images": len(test.labels),
        "class_shift": data.manifest.get("class_shift"),
    }
    report = EvaluationReport.from_dict(metrics, "evaluate")  # its shape checked on the way out
    out.mkdir(parents=True, exist_ok=True)
    from ..evaluation.plots import curves, write_plots  # matplotlib: only when writing them

    plotted = curves(report, search, scores, probe_scores, probe_rows)
    write_plots(out, report, plotted, model, scores, test.labels, data.classes, iso_best)
    with atomic_path(out / CARD_FILE) as tmp:
        tmp.write_text(model_card(report, model, data))
    report.write(out / METRICS_FILE)
    if task_name:
        write_task_label(out, task_name)
    write_json(
        out / MANIFEST_FILE,
        stage_manifest(
            "evaluate",
            {"evaluate": cfg.__dict__, "inference": params.inference.__dict__},
            model=str(model_dir),
            search=str(search_dir),
            data=str(data_dir),
            calibrate=None if risk_dir is None else str(risk_dir),
            backbone_sha256=model.backbone_sha256,
        ),
    )
    return report


def report(result: EvaluationReport, out_dir: Path) -> tuple[Path, str]:
    """The Markdown report the command shows, and what it is."""
    return out_dir / CARD_FILE, "model card"


def describe(result: EvaluationReport, out_dir: Path) -> str:
    """The command's result line: the last exit, the iso-accuracy point, the time ratio."""
    iso = result.iso_accuracy
    at = (
        f"iso-accuracy {iso.accuracy:.4f} at {iso.gflops_ratio:.3f} of the GFLOPs"
        if iso.accuracy is not None and iso.gflops_ratio is not None
        else "no budget reached iso-accuracy"
    )
    return (
        f"test accuracy {result.full.accuracy:.4f} (last exit); {at}; "
        f"dynamic/full time at batch 64: {result.speed.time_ratio_b64:.3f}"
    )
