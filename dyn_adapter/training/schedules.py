"""Training schedules: the exits' loss weights (adaptive prioritisation) and the learning rate."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from ..errors import ConfigError

WeightShape = Literal["constant", "linear", "cosine"]


@dataclass
class LossWeightsConfig:
    """Adaptive prioritisation of the exits' losses over training.

    Early exits' weights rise from ``early_start`` to 1 while the last exit's weight falls to
    ``final_floor``, keeping the sum of weights constant (the last exit is learned first, the
    early exits catch up; ending at 3 rather than 1 keeps the last exit as accurate as the
    static PETL model, see ``ablate --study last-exit``). ``shape`` sets how the ramp moves;
    ``constant`` gives every exit weight 1 throughout (the ablation baseline).

    Attributes:
        shape: ``constant``, ``linear`` or ``cosine``.
        early_start: Early exits' weight at the first epoch.
        final_floor: Last exit's weight at the final epoch.
    """

    shape: WeightShape = "linear"
    early_start: float = 0.1
    final_floor: float = 3.0

    def __post_init__(self) -> None:
        if not 0 <= self.early_start <= 1:
            raise ConfigError(
                f"train.loss_weights.early_start: must be in [0, 1], got {self.early_start}"
            )
        if self.final_floor <= 0:
            raise ConfigError(
                f"train.loss_weights.final_floor: must be > 0, got {self.final_floor}"
            )


def loss_weights(cfg: LossWeightsConfig, num_exits: int, epoch: int, epochs: int) -> list[float]:
    """The per-exit weights for ``epoch`` (0-based) of ``epochs``; they sum to a constant."""
    if cfg.shape == "constant" or num_exits == 1:
        return [1.0] * num_exits
    t = epoch / max(1, epochs - 1)
    ramp = t if cfg.shape == "linear" else 0.5 - 0.5 * math.cos(math.pi * t)
    early = cfg.early_start + (1.0 - cfg.early_start) * ramp
    total = (num_exits - 1) + cfg.final_floor  # the sum at the end of training
    return [early] * (num_exits - 1) + [total - (num_exits - 1) * early]


def cosine_lr(
    step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float
) -> float:
    """Linear warm-up to ``base_lr``, then cosine decay to ``min_lr``."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))
