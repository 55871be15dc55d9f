"""Measured FLOPs of each exit, with torch's own counter.

Unit: one multiply-add counts as one FLOP (the fvcore convention used by the ViT and PETL
literature: ViT-B/16 at 224 px is about 17.6 GFLOPs). ``torch.utils.flop_counter`` counts two
per multiply-add, so its totals are halved.

``FlopCounterMode`` does not see the CPU fused attention kernel, so attention is switched to
timm's explicit matmul path while counting.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

FLOPS_UNIT = "GFLOPs (1 multiply-add = 1 FLOP, fvcore convention)"
_TORCH_FLOPS_PER_MAC = 2
T = TypeVar("T")


@dataclass
class ExitInfo:
    """Metadata of one exit, like timm's ``feature_info``.

    Attributes:
        index: Position of the exit (0-based).
        block: 1-based backbone block after which the exit sits.
        gflops_cumulative: GFLOPs per image to reach this exit's prediction: patch embedding,
            blocks up to ``block``, and every head evaluated on the way (see ``flops_unit``).
        head_params: Parameters of this exit's head.
        head_gflops: GFLOPs of this exit's head alone.
    """

    index: int
    block: int
    gflops_cumulative: float
    head_params: int
    head_gflops: float


@contextmanager
def unfused_attention(module: nn.Module | ExitModel) -> Iterator[None]:
    """Temporarily route timm attention through explicit matmuls, which the counter sees."""
    saved = [(m, m.fused_attn) for m in module.modules() if hasattr(m, "fused_attn")]
    try:
        for m, _ in saved:
            setattr(m, "fused_attn", False)  # noqa: B010 (a timm Final attribute)
        yield
    finally:
        for m, fused in saved:
            setattr(m, "fused_attn", fused)  # noqa: B010


def count_gflops(fn: Callable[[], T]) -> tuple[float, T]:
    """Run ``fn`` under the FLOP counter; return (GFLOPs in :data:`FLOPS_UNIT`, its output)."""
    with FlopCounterMode(display=False) as counter:
        out = fn()
    return counter.get_total_flops() / _TORCH_FLOPS_PER_MAC / 1e9, out


class ExitModel(Protocol):
    """What the counter needs of a model with exits (``DynAdapterViT``)."""

    backbone: Any
    heads: Any
    exit_blocks: list[int]
    training: bool

    def forward_intermediates(self, x: torch.Tensor) -> Iterator[Any]: ...

    def head_param_counts(self) -> list[int]: ...

    def parameters(self) -> Iterator[nn.Parameter]: ...

    def eval(self) -> Any: ...

    def train(self, mode: bool = True) -> Any: ...

    def modules(self) -> Iterator[nn.Module]: ...


@torch.no_grad()
def measure_exit_info(model: ExitModel, img_size: tuple[int, int] | None = None) -> list[ExitInfo]:
    """Per-exit cumulative GFLOPs for one image, counted along the model's exit traversal:
    the stem and each stage as the traversal runs them, then each head on its input."""
    size = img_size or tuple(model.backbone.patch_embed.img_size)
    x = torch.zeros(1, 3, *size, device=next(model.parameters()).device)
    was_training = model.training
    model.eval()
    infos = []
    try:
        with unfused_attention(model):
            steps = model.forward_intermediates(x)
            total = 0.0
            for k, n_params in enumerate(model.head_param_counts()):
                stage_flops, step = count_gflops(lambda: next(steps))
                head_flops, _ = count_gflops(lambda: model.heads[k](step.tokens))  # noqa: B023
                total += stage_flops + head_flops
                infos.append(ExitInfo(k, model.exit_blocks[k], total, n_params, head_flops))
    finally:
        model.train(was_training)
    return infos
