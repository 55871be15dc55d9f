"""The training recipe, and what a training run produced.

Settings only: ``params.py`` reads them, so a stage that needs a setting does not import the
training loops."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..config import check_choices
from ..data.config import AugmentConfig
from ..errors import ConfigError
from .schedules import LossWeightsConfig


@dataclass
class HeadWarmupConfig:
    """Head training on cached tokens before PETL training starts.

    Attributes:
        epochs: Passes over all cached views (0: no warm-up). With a frozen backbone there is
            no warm-up: the whole training runs on the cache, for ``train.epochs`` passes.
        lr: Peak learning rate of the warm-up (cosine decay to ``train.min_lr``).
        views: Augmented views of the training split whose tokens are cached. Memory: views x
            images x exits x the heads' inputs in float16 (patch tokens for ``conv`` heads,
            one vector for the others).
    """

    epochs: int = 20
    lr: float = 3e-3
    views: int = 4

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ConfigError(f"train.head_warmup.epochs: must be >= 0, got {self.epochs}")
        if not self.lr > 0:
            raise ConfigError(f"train.head_warmup.lr: must be > 0, got {self.lr}")
        if self.views < 1:
            raise ConfigError(f"train.head_warmup.views: must be >= 1, got {self.views}")


SparsityMode = Literal["none", "forward", "backward", "both"]


@dataclass
class SparsityConfig:
    """Which halves of bidirectional sparsity are on, and how strong at the shallowest stage.

    Attributes:
        mode: ``none``, ``forward``, ``backward`` or ``both``. Backward by default: ``ablate
            --split selection`` found it the one half that helps the early exits.
        forward_rate: Dropout rate at the first stage (0 at the last).
        backward_keep: Gradient keep ratio at the first stage (1 at the last).
    """

    mode: SparsityMode = "backward"
    forward_rate: float = 0.2
    backward_keep: float = 0.7

    def __post_init__(self) -> None:
        check_choices(self, "train.sparsity")
        if not 0 <= self.forward_rate < 1:
            raise ConfigError(f"forward_rate: must be in [0, 1), got {self.forward_rate}")
        if not 0 < self.backward_keep <= 1:
            raise ConfigError(f"backward_keep: must be in (0, 1], got {self.backward_keep}")

    @property
    def forward(self) -> bool:
        return self.mode in ("forward", "both")

    @property
    def backward(self) -> bool:
        return self.mode in ("backward", "both")


@dataclass
class DistillConfig:
    """Self-distillation: each early exit also learns the last exit's softened answer (as in
    BYOT and LGViT), a target richer than the label that the early exits' heads can meet
    without pulling the shared blocks away from what the last exit needs.

    Attributes:
        weight: Of the distillation term (KL divergence from the last exit's softened
            distribution, times ``temperature`` squared) beside each early exit's
            cross-entropy; 0: off.
        temperature: Softening of both distributions.
    """

    weight: float = 0.0
    temperature: float = 2.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.weight) and self.weight >= 0):
            raise ConfigError(f"train.distill.weight: must be >= 0, got {self.weight}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ConfigError(f"train.distill.temperature: must be > 0, got {self.temperature}")


@dataclass
class SparsifyConfig:
    """Bidirectional sparsity tuning: a seeded grid of short fine-tuning runs from ``train``'s model.

    Attributes:
        mode: Which halves of sparsity the candidates use (``none`` fine-tunes without).
        forward_rates: Dropout rates at the first stage to try.
        backward_keeps: Gradient keep ratios at the first stage to try.
        epochs: Fine-tuning epochs per candidate.
        lr: Peak learning rate of the fine-tuning.
        warmup_epochs: Warm-up of the fine-tuning.
    """

    mode: SparsityMode = "both"
    forward_rates: Sequence[float] = (0.1, 0.3)
    backward_keeps: Sequence[float] = (0.5, 0.8)
    epochs: int = 5
    lr: float = 3e-4
    warmup_epochs: int = 0

    def __post_init__(self) -> None:
        if not self.forward_rates or not self.backward_keeps:
            raise ConfigError(
                "sparsify.forward_rates and sparsify.backward_keeps must be non-empty"
            )
        if self.epochs < 1:
            raise ConfigError(f"sparsify.epochs: must be >= 1, got {self.epochs}")


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
        exit_gradient: Share of each early exit's loss gradient that reaches the blocks and
            PETL modules later exits share (its head always gets all of it): 1, the paper's
            joint training; 0, the PETL modules learn from the last exit alone, as the static
            model's do (up to the weight the loss schedule gives the last exit), and the early
            heads learn on top of them.
        distill: Self-distillation of the early exits from the last (off by default).
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
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)
    exit_gradient: float = 1.0
    distill: DistillConfig = field(default_factory=DistillConfig)
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    device: str = "auto"
    eval_batch_size: int = 256
    evaluate_test: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        check_choices(self, "train")
        for key in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"train.{key}: must be >= 1, got {getattr(self, key)}")
        for key in ("lr", "head_lr_scale", "min_lr", "weight_decay", "label_smoothing"):
            if not math.isfinite(getattr(self, key)):
                raise ConfigError(f"train.{key}: must be a finite number, got {getattr(self, key)}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr: must be > 0, got {self.lr}")
        if not 0.0 <= self.exit_gradient <= 1.0:
            raise ConfigError(
                f"train.exit_gradient: must be in [0, 1] (a share of the gradient), got "
                f"{self.exit_gradient}"
            )
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
