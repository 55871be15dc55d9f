"""The training recipe, and what a training run produced."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..data.transforms import AugmentConfig
from ..errors import ConfigError
from .head_cache import HeadWarmupConfig
from .schedules import LossWeightsConfig
from .sparsity import SparsityConfig


@dataclass
class TrainConfig:
    """The training recipe (VTAB-1k PETL protocol, scaled to the run's epochs).

    Attributes:
        epochs: Passes over the training split.
        batch_size: Images per optimizer step.
        lr: Peak AdamW learning rate of the PETL modules, reached after the warm-up.
        head_lr_scale: The exit heads' learning rate is ``lr`` times this: freshly initialised
            classifiers on frozen features need larger steps than the zero-initialised PETL
            updates inside the backbone.
        min_lr: Learning rate at the end of the cosine decay.
        weight_decay: AdamW weight decay.
        warmup_epochs: Linear warm-up length.
        label_smoothing: Cross-entropy label smoothing.
        augment: Training augmentation (flip, translation).
        head_warmup: Heads trained on cached tokens before the PETL modules move. With a
            frozen backbone (no PETL) the whole training runs on that cache, and an epoch is a
            pass over all its views.
        loss_weights: Adaptive prioritisation schedule of the exits' losses.
        sparsity: Bidirectional sparsity (``mode: none`` to train without).
        amp: ``auto`` (bf16 on CUDA, off on CPU), ``bf16``, ``fp16`` (with gradient scaling) or ``off``.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``, ...
        eval_batch_size: Images per forward pass when evaluating.
        evaluate_test: Evaluate every exit on the test split after the final epoch.
        seed: Seeds model init, shuffling, augmentation, dropout and gradient masks.
    """

    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    head_lr_scale: float = 10.0
    min_lr: float = 1e-6
    weight_decay: float = 1e-4
    warmup_epochs: int = 2
    label_smoothing: float = 0.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    head_warmup: HeadWarmupConfig = field(default_factory=HeadWarmupConfig)
    loss_weights: LossWeightsConfig = field(default_factory=LossWeightsConfig)
    sparsity: SparsityConfig = field(default_factory=lambda: SparsityConfig(mode="none"))
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    device: str = "auto"
    eval_batch_size: int = 256
    evaluate_test: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"train.{key}: must be >= 1, got {getattr(self, key)}")
        for key in ("lr", "head_lr_scale", "min_lr", "weight_decay", "label_smoothing"):
            if not math.isfinite(getattr(self, key)):
                raise ConfigError(f"train.{key}: must be a finite number, got {getattr(self, key)}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr: must be > 0, got {self.lr}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ConfigError(
                f"train.warmup_epochs: must be in [0, epochs], got {self.warmup_epochs}"
            )


@dataclass
class TrainResult:
    """What :func:`train` produced."""

    out_dir: Path
    model_dir: Path
    val_accuracy: list[float]
    test_accuracy: list[float] | None
    epochs_run: int
