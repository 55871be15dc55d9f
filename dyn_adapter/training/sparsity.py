"""Bidirectional sparsity: dropout forward, random gradient masks backward, both shallow-heavy.

Forward: dropout inside the PETL modules and on each head's pooled features, at a rate that
falls linearly from ``forward_rate`` at the first stage to 0 at the last. Backward: after
``backward()``, each trainable tensor's gradient is multiplied by a fresh Bernoulli(keep) mask
and rescaled by 1/keep (the expected update is unchanged); keep rises linearly from
``backward_keep`` at the first stage to 1 at the last.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from ..errors import ConfigError
from ..models import DynAdapterViT
from ..models.heads import ExitHead
from ..models.petl import petl_parameters, set_petl_dropout

SparsityMode = Literal["none", "forward", "backward", "both"]


@dataclass
class SparsityConfig:
    """Which halves of bidirectional sparsity are on, and how strong at the shallowest stage.

    Attributes:
        mode: ``none``, ``forward``, ``backward`` or ``both`` (for ablations).
        forward_rate: Dropout rate at the first stage (0 at the last).
        backward_keep: Gradient keep ratio at the first stage (1 at the last).
    """

    mode: SparsityMode = "both"
    forward_rate: float = 0.2
    backward_keep: float = 0.7

    def __post_init__(self) -> None:
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


def _stage_ramp(start: float, end: float, num_stages: int) -> list[float]:
    if num_stages == 1:
        return [end]
    # Interpolated as a weighted sum so the ends are exact (no -1e-17 dropout rate at the end).
    steps = [s / (num_stages - 1) for s in range(num_stages)]
    return [start * (1 - t) + end * t for t in steps]


def stage_dropout_rates(cfg: SparsityConfig, num_stages: int) -> list[float]:
    return _stage_ramp(cfg.forward_rate if cfg.forward else 0.0, 0.0, num_stages)


def stage_keep_ratios(cfg: SparsityConfig, num_stages: int) -> list[float]:
    return _stage_ramp(cfg.backward_keep if cfg.backward else 1.0, 1.0, num_stages)


def apply_forward_sparsity(model: DynAdapterViT, cfg: SparsityConfig) -> list[float]:
    """Set the dropout of every stage's PETL modules and head; returns the per-stage rates."""
    rates = stage_dropout_rates(cfg, model.num_exits)
    for stage, head, rate in zip(model.stages(), model.heads, rates, strict=True):
        set_petl_dropout(stage, rate)
        assert isinstance(head, ExitHead)
        head.drop.p = rate
    return rates


class GradientMasker:
    """Masks gradients in place after ``backward()``: Bernoulli(keep) / keep, keep per stage.

    With a gradient scaler (fp16 AMP) call it before ``scaler.step``: masking is linear, so it
    commutes with the unscaling.
    """

    def __init__(self, model: DynAdapterViT, cfg: SparsityConfig) -> None:
        keeps = stage_keep_ratios(cfg, model.num_exits)
        self.groups: list[tuple[float, list[torch.nn.Parameter]]] = []
        for stage, head, keep in zip(model.stages(), model.heads, keeps, strict=True):
            params = [*petl_parameters(stage), *head.parameters()]
            if keep < 1.0:
                self.groups.append((keep, params))

    @torch.no_grad()
    def __call__(self) -> None:
        for keep, params in self.groups:
            for p in params:
                if p.grad is not None:
                    mask = torch.empty_like(p.grad).bernoulli_(keep)
                    p.grad.mul_(mask).div_(keep)


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
