"""Whole prepared splits through an engine, a batch at a time, in stored order."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..data.prepared import PreparedData, batches
from ..data.transforms import to_model_input
from ..errors import ConfigError
from ..policies.thresholds import ExitScores
from .engines import Engine


def _check_labels(engine: Engine, labels: np.ndarray) -> None:
    top = int(np.max(labels)) if len(labels) else -1
    if top >= engine.model.num_classes:
        raise ConfigError(
            f"the data has labels up to {top}, but the model has {engine.model.num_classes} "
            "classes: it was trained on other data; use the model trained on this prepared data"
        )


def exit_logits(
    engine: Engine,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    data_config: dict[str, Any],
    batch_size: int,
) -> list[torch.Tensor]:
    """Every exit's logits (float32, on CPU) for a whole split, in stored order.

    Raises:
        ConfigError: A label outside the model's classes: the model was trained on other data.
    """
    _check_labels(engine, labels)
    chunks: list[list[torch.Tensor]] = [[] for _ in range(engine.num_exits)]
    for x8, _ in batches(images, labels, batch_size):
        for k, t in enumerate(engine.exits(to_model_input(x8.to(engine.device), data_config))):
            chunks[k].append(t.cpu())
    return [torch.cat(c) for c in chunks]


def split_scores(engine: Engine, data: PreparedData, split: str, batch_size: int) -> ExitScores:
    """Every exit's confidence and prediction over one prepared split, from one pass."""
    images, labels = data.split(split)
    logits = exit_logits(
        engine, images, labels, data_config=data.data_config, batch_size=batch_size
    )
    return ExitScores.from_logits(
        logits, np.asarray(labels), [e.gflops_cumulative for e in engine.model.exit_info]
    )


def dynamic_predictions(
    engine: Engine,
    images: np.ndarray,
    labels: np.ndarray,
    data_config: dict[str, Any],
    thresholds: list[float],
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and exit indices of real early-exit inference over a whole split."""
    preds, exits = [], []
    for x8, _ in batches(images, labels, batch_size):
        out = engine.dynamic(to_model_input(x8.to(engine.device), data_config), thresholds)
        preds.append(out.prediction.cpu())
        exits.append(out.exit_index.cpu())
    if not preds:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return torch.cat(preds).numpy(), torch.cat(exits).numpy()
