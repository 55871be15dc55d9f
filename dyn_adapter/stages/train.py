"""The ``train`` stage: Dyn-Adapter, or one of its two baselines, with the same recipe.

Variants: ``dyn`` (the multi-exit model of ``params.model``), ``static`` (the same PETL method
with only the final exit: the accuracy Dyn-Adapter must keep) and ``probe`` (the frozen backbone
with a linear probe at every exit: the baseline anyone could build). Only the static baseline
reads the test split here (with ``train.evaluate_test``); ``evaluate`` reads it for the others.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal, get_args

from ..artifacts import accuracy_metrics
from ..errors import ConfigError
from ..models import ModelConfig
from ..params import Params
from ..training.config import TrainResult
from ..training.trainer import train

Variant = Literal["dyn", "probe", "static"]
VARIANTS: tuple[str, ...] = get_args(Variant)


def frozen_probe(model: ModelConfig) -> ModelConfig:
    """The frozen backbone with a linear probe at every exit."""
    exits = dataclasses.replace(model.exits, head_depths=[0] * len(model.exits.head_depths))
    return dataclasses.replace(
        model, petl=dataclasses.replace(model.petl, method="none"), exits=exits
    )


def static_petl(model: ModelConfig) -> ModelConfig:
    """The same PETL method with only the final exit."""
    exits = dataclasses.replace(model.exits, blocks=[-1], head_depths=[0], head_widths=[0])
    return dataclasses.replace(model, exits=exits)


def run(
    params: Params,
    variant: str,
    data_dir: str | Path,
    out_dir: str | Path,
    init_from: str | Path | None = None,
) -> TrainResult:
    """Train ``variant`` on the prepared data into ``out_dir`` (resuming a run found there).

    Args:
        params: ``model.*`` and ``train.*`` are read.
        variant: ``dyn``, ``static`` or ``probe``.
        data_dir: A ``prepare`` output.
        out_dir: Where the model, logs, metrics, manifest and checkpoints go.
        init_from: A model directory whose PETL and head weights training starts from.
    """
    if variant not in VARIANTS:
        raise ConfigError(f"train variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    model = {"dyn": lambda m: m, "probe": frozen_probe, "static": static_petl}[variant](
        params.model
    )
    recipe = dataclasses.replace(
        params.train, evaluate_test=params.train.evaluate_test and variant == "static"
    )
    return train(model, recipe, data_dir, out_dir, init_from=init_from)


def metrics(result: TrainResult) -> dict[str, float]:
    """Final-epoch accuracies per exit, as flat metric names."""
    return accuracy_metrics(result.val_accuracy, result.test_accuracy)


def describe(result: TrainResult, out_dir: Path) -> str:
    """The command's result line: each exit's final-epoch accuracy."""
    acc = result.test_accuracy or result.val_accuracy
    split = "test" if result.test_accuracy else "val"
    return (
        f"final-epoch {split} accuracy per exit: {' '.join(f'{a:.4f}' for a in acc)} "
        f"-> {result.model_dir}"
    )
