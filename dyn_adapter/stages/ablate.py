"""The ``ablate`` stage: Dyn-Adapter's training strategies, one at a time, on validation.

Each variant trains from scratch with the same recipe, changing one thing: which halves of
bidirectional sparsity are on (none / forward / backward / both, at ``train.sparsity``'s
rates) and whether the exits' loss weights follow the schedule or stay constant.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from ..artifacts import ABLATION_MARKDOWN, ABLATION_TABLE
from ..files import write_json
from ..params import Params
from ..training.config import SparsityMode, TrainConfig
from ..training.schedules import WeightShape
from ..training.trainer import train

logger = logging.getLogger(__name__)

# (name, sparsity mode, loss-weight shape or None for the configured schedule)
VARIANTS: list[tuple[str, SparsityMode, WeightShape | None]] = [
    ("none", "none", None),
    ("forward", "forward", None),
    ("backward", "backward", None),
    ("both", "both", None),
    ("none, constant λ", "none", "constant"),
    ("both, constant λ", "both", "constant"),
]


def variant_config(
    train: TrainConfig, mode: SparsityMode, shape: WeightShape | None
) -> TrainConfig:
    sparsity = dataclasses.replace(train.sparsity, mode=mode)
    weights = (
        train.loss_weights
        if shape is None
        else dataclasses.replace(train.loss_weights, shape=shape)
    )
    return dataclasses.replace(train, sparsity=sparsity, loss_weights=weights, evaluate_test=False)


def run(params: Params, data_dir: str | Path, out_dir: str | Path) -> list[dict[str, Any]]:
    """Train every variant of ``params.model`` and ``params.train``; write ``ablation.json``
    and ``ablation.md`` (final-epoch val accuracy)."""
    out = Path(out_dir)
    recipe = params.train
    rows = []
    for i, (name, mode, shape) in enumerate(VARIANTS):
        cfg = variant_config(recipe, mode, shape)
        logger.info("ablation %d/%d: %s", i + 1, len(VARIANTS), name)
        run_dir = out / "runs" / f"{i}-{mode}-{shape or 'schedule'}"
        result = train(params.model, cfg, data_dir, run_dir)
        val = result.val_accuracy
        rows.append(
            {
                "variant": name,
                "sparsity": mode,
                "loss_weights": shape or recipe.loss_weights.shape,
                "val_accuracy": val,
                "val_mean": sum(val) / len(val),
            }
        )
        write_json(out / ABLATION_TABLE, {"epochs": recipe.epochs, "rows": rows})
    (out / ABLATION_MARKDOWN).write_text(markdown(rows, recipe))
    return rows


def markdown(rows: list[dict[str, Any]], train: TrainConfig) -> str:
    n = len(rows[0]["val_accuracy"])
    lines = [
        f"Final-epoch validation accuracy ({train.epochs} epochs; sparsity rates: forward "
        f"{train.sparsity.forward_rate:g}, backward keep {train.sparsity.backward_keep:g}).",
        "",
        "| variant | sparsity | loss weights | "
        + " | ".join(f"exit {k}" for k in range(n))
        + " | mean |",
        "|---" * (n + 4) + "|",
    ]
    for r in rows:
        accs = " | ".join(f"{a:.4f}" for a in r["val_accuracy"])
        lines.append(
            f"| {r['variant']} | {r['sparsity']} | {r['loss_weights']} | {accs} | {r['val_mean']:.4f} |"
        )
    return "\n".join(lines) + "\n"
