"""The ``sparsify`` stage: tune the bidirectional-sparsity rates by short fine-tuning runs.

Every candidate (forward dropout rate, backward keep ratio) fine-tunes ``train``'s model for a
few epochs and is scored on validation accuracy averaged over the exits. Candidates are
independent (``run_candidate``), so a pipeline can fan them out; ``select`` then picks the best,
the unchanged input model included (``input_row``), and writes the same file contract as
``train``.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .io import write_json
from .models import ModelConfig
from .sparsity import SparsityConfig
from .train import METRICS_FILE, MODEL_DIR, TrainConfig, evaluate_split
from .train import run as train_run

logger = logging.getLogger(__name__)

CANDIDATES_DIR = "candidates"
TABLE_JSON = "candidates.json"
TABLE_MD = "candidates.md"


@dataclass
class Candidate:
    """One point of the sparsity grid."""

    forward_rate: float
    backward_keep: float

    @property
    def name(self) -> str:
        return f"f{self.forward_rate:g}-b{self.backward_keep:g}"


def candidates(cfg: Any) -> list[Candidate]:
    """The grid of ``sparsify`` settings (``cfg`` is a ``SparsifyConfig``), in a fixed order."""
    forward = cfg.forward_rates if cfg.mode in ("forward", "both") else [0.0]
    backward = cfg.backward_keeps if cfg.mode in ("backward", "both") else [1.0]
    return [Candidate(f, b) for f, b in itertools.product(forward, backward)]


def candidate_train_config(train: TrainConfig, cfg: Any, cand: Candidate) -> TrainConfig:
    return dataclasses.replace(
        train,
        epochs=cfg.epochs,
        lr=cfg.lr,
        warmup_epochs=cfg.warmup_epochs,
        sparsity=SparsityConfig(cfg.mode, cand.forward_rate, cand.backward_keep),
        evaluate_test=False,
    )


def run_candidate(
    model: ModelConfig,
    train: TrainConfig,
    cfg: Any,
    cand: Candidate,
    data_dir: str | Path,
    init_model: str | Path,
    out_dir: str | Path,
) -> dict[str, Any]:
    """Fine-tune one candidate into ``out_dir``; returns its row of the candidates table."""
    result = train_run(
        model, candidate_train_config(train, cfg, cand), data_dir, out_dir, init_from=init_model
    )
    val = result.val_accuracy
    return {
        "name": cand.name,
        "forward_rate": cand.forward_rate,
        "backward_keep": cand.backward_keep,
        "val_accuracy": val,
        "score": sum(val) / len(val),
        "model_dir": str(Path(out_dir) / MODEL_DIR),
    }


def input_row(init_model: str | Path, data_dir: str | Path, train: TrainConfig) -> dict[str, Any]:
    """The starting model as a candidate: tuning keeps it unless sparsity beats it on validation."""
    val = evaluate_split(init_model, data_dir, "val", train)
    return {
        "name": "input (no sparsity tuning)",
        "forward_rate": 0.0,
        "backward_keep": 1.0,
        "val_accuracy": val,
        "score": sum(val) / len(val),
        "model_dir": str(init_model),
    }


def select(rows: list[dict[str, Any]], out_dir: str | Path) -> dict[str, Any]:
    """Keep the best candidate (first on ties) as ``out_dir/model``; write the table and metrics."""
    if not rows:
        raise ConfigError("sparsify: no candidates to select from")
    out = Path(out_dir)
    best = max(rows, key=lambda r: r["score"])  # max keeps the first of equal scores
    tmp = out / f".{MODEL_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(best["model_dir"], tmp)
    shutil.rmtree(out / MODEL_DIR, ignore_errors=True)
    tmp.rename(out / MODEL_DIR)
    write_json(out / TABLE_JSON, {"best": best["name"], "candidates": rows})
    (out / TABLE_MD).write_text(_markdown(rows, best["name"]))
    metrics = {"best": best["name"], "score": best["score"], "val_accuracy": best["val_accuracy"]}
    write_json(out / METRICS_FILE, metrics)
    logger.info("best sparsity candidate %s (val mean accuracy %.4f)", best["name"], best["score"])
    return best


def run(
    model: ModelConfig,
    train: TrainConfig,
    cfg: Any,
    data_dir: str | Path,
    init_model: str | Path,
    out_dir: str | Path,
) -> dict[str, Any]:
    """Run every candidate in turn, select (the input model included), and report the best
    model's test accuracy."""
    out = Path(out_dir)
    rows = [input_row(init_model, data_dir, train)] + [
        run_candidate(model, train, cfg, c, data_dir, init_model, out / CANDIDATES_DIR / c.name)
        for c in candidates(cfg)
    ]
    best = select(rows, out)
    if train.evaluate_test:
        best["test_accuracy"] = evaluate_split(out / MODEL_DIR, data_dir, "test", train)
        write_json(out / METRICS_FILE, {**best, "val_accuracy": best["val_accuracy"]})
    return best


def _markdown(rows: list[dict[str, Any]], best: str) -> str:
    n = len(rows[0]["val_accuracy"])
    head = (
        "| candidate | forward rate | backward keep | "
        + " | ".join(f"val acc exit {k}" for k in range(n))
        + " | mean |\n"
    )
    head += "|---" * (n + 4) + "|\n"
    lines = [
        f"| {r['name']}{' (best)' if r['name'] == best else ''} | {r['forward_rate']:g} | "
        f"{r['backward_keep']:g} | "
        + " | ".join(f"{a:.4f}" for a in r["val_accuracy"])
        + f" | {r['score']:.4f} |"
        for r in rows
    ]
    return head + "\n".join(lines) + "\n"
