"""Bidirectional sparsity: dropout forward, random gradient masks backward, both shallow-heavy.

Forward: dropout inside the PETL modules and on each head's pooled features, at a rate that
falls linearly from ``forward_rate`` at the first stage to 0 at the last. Backward: after
``backward()``, each trainable tensor's gradient is multiplied by a fresh Bernoulli(keep) mask
and rescaled by 1/keep (the expected update is unchanged); keep rises linearly from
``backward_keep`` at the first stage to 1 at the last.
"""

from __future__ import annotations

import torch

from ..models import DynAdapterViT
from ..models.heads import ExitHead
from ..models.petl import petl_parameters, set_petl_dropout
from .config import SparsifyConfig, SparsityConfig, SparsityMode

__all__ = ["SparsifyConfig", "SparsityConfig", "SparsityMode"]  # their home is .config


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
