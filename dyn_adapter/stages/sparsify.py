"""The ``sparsify`` stage: tune the bidirectional-sparsity rates by short fine-tuning runs.

Every candidate (forward dropout rate, backward keep ratio) fine-tunes ``train``'s model for a
few epochs and is scored on validation accuracy averaged over the exits. Candidates are
independent: ``run`` is ``grid``, then ``run_candidate`` for each, then ``select``, and the KFP
pipeline calls the three itself to fan the candidates out. ``select`` picks the best, the
unchanged input model included, and writes the same file contract as ``train``.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..artifacts import (
    CANDIDATE_ROW,
    CANDIDATES_DIR,
    CANDIDATES_MARKDOWN,
    CANDIDATES_TABLE,
    METRICS_FILE,
    MODEL_DIR,
    accuracy_metrics,
    read_json,
)
from ..files import write_json
from ..params import Params
from ..reporting.tables import sparsity_table
from ..training.config import SparsifyConfig, SparsityConfig, TrainConfig

logger = logging.getLogger(__name__)


@dataclass
class SparsityCandidate:
    """One point of the sparsity grid."""

    forward_rate: float
    backward_keep: float

    @property
    def name(self) -> str:
        return f"f{self.forward_rate:g}-b{self.backward_keep:g}"


def grid(params: Params) -> list[SparsityCandidate]:
    """The candidates of ``params.sparsify``, in a fixed order."""
    cfg = params.sparsify
    forward = cfg.forward_rates if cfg.mode in ("forward", "both") else [0.0]
    backward = cfg.backward_keeps if cfg.mode in ("backward", "both") else [1.0]
    return [SparsityCandidate(f, b) for f, b in itertools.product(forward, backward)]


def candidate_train_config(
    recipe: TrainConfig, cfg: SparsifyConfig, cand: SparsityCandidate
) -> TrainConfig:
    return dataclasses.replace(
        recipe,
        epochs=cfg.epochs,
        lr=cfg.lr,
        warmup_epochs=cfg.warmup_epochs,
        sparsity=SparsityConfig(cfg.mode, cand.forward_rate, cand.backward_keep),
        evaluate_test=False,
    )


def run_candidate(
    params: Params,
    cand: SparsityCandidate,
    data_dir: str | Path,
    init_model: str | Path,
    out_dir: str | Path,
) -> dict[str, Any]:
    """Fine-tune one candidate from ``init_model`` into ``out_dir``; its row of the candidates
    table is returned and written to ``out_dir/row.json``."""
    recipe = candidate_train_config(params.train, params.sparsify, cand)
    from ..training.trainer import train  # torch: not for the pipeline's grid of candidates

    result = train(params.model, recipe, data_dir, out_dir, init_from=init_model)
    val = result.val_accuracy
    row = {
        "name": cand.name,
        "forward_rate": cand.forward_rate,
        "backward_keep": cand.backward_keep,
        "val_accuracy": val,
        "score": sum(val) / len(val),
        "model_dir": str(Path(out_dir) / MODEL_DIR),
    }
    write_json(Path(out_dir) / CANDIDATE_ROW, row)
    return row


def _input_row(params: Params, init_model: str | Path, data_dir: str | Path) -> dict[str, Any]:
    """The starting model as a candidate: tuning keeps it unless sparsity beats it on validation."""
    from ..training.trainer import evaluate_split

    val = evaluate_split(init_model, data_dir, "val", params.train)
    return {
        "name": "input (no sparsity tuning)",
        "forward_rate": 0.0,
        "backward_keep": 1.0,
        "val_accuracy": val,
        "score": sum(val) / len(val),
        "model_dir": str(init_model),
    }


@dataclass
class SparsifyResult:
    """The selected candidate's row of the table."""

    out_dir: Path
    best: dict[str, Any]

    def metrics(self) -> dict[str, float]:
        return {"score": self.best["score"]} | accuracy_metrics(self.best["val_accuracy"], None)


def select(
    params: Params,
    data_dir: str | Path,
    init_model: str | Path,
    candidate_dirs: Sequence[str | Path],
    out_dir: str | Path,
) -> SparsifyResult:
    """Keep the best of the input model and the candidates' outputs (first on ties) as
    ``out_dir/model``; write the table and metrics."""
    rows = [_input_row(params, init_model, data_dir)]
    for d in candidate_dirs:
        row = read_json(Path(d) / CANDIDATE_ROW, "sparsify")
        row["model_dir"] = str(Path(d) / MODEL_DIR)  # artifacts move between tasks
        rows.append(row)
    out = Path(out_dir)
    best = max(rows, key=lambda r: r["score"])  # max keeps the first of equal scores
    tmp = out / f".{MODEL_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(best["model_dir"], tmp)
    shutil.rmtree(out / MODEL_DIR, ignore_errors=True)
    tmp.rename(out / MODEL_DIR)
    write_json(out / CANDIDATES_TABLE, {"best": best["name"], "candidates": rows})
    (out / CANDIDATES_MARKDOWN).write_text(sparsity_table(rows, best["name"]))
    metrics = {"best": best["name"], "score": best["score"], "val_accuracy": best["val_accuracy"]}
    write_json(out / METRICS_FILE, metrics)
    logger.info("best sparsity candidate %s (val mean accuracy %.4f)", best["name"], best["score"])
    return SparsifyResult(out, best)


def run(
    params: Params, data_dir: str | Path, init_model: str | Path, out_dir: str | Path
) -> SparsifyResult:
    """Run every candidate in turn, then select (the input model included)."""
    out = Path(out_dir)
    candidates = grid(params)
    dirs = [out / CANDIDATES_DIR / c.name for c in candidates]
    for cand, d in zip(candidates, dirs, strict=True):
        run_candidate(params, cand, data_dir, init_model, d)
    return select(params, data_dir, init_model, dirs, out)


def describe(result: SparsifyResult, out_dir: Path) -> str:
    """The command's result line: the candidate kept."""
    best = result.best
    return (
        f"best candidate {best['name']}: val accuracy per exit "
        f"{' '.join(f'{a:.4f}' for a in best['val_accuracy'])} -> {out_dir}"
    )
