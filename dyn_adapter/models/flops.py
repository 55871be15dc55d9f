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
from functools import partial
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

if TYPE_CHECKING:
    from .dyn_vit import DynAdapterViT, ExitInfo

FLOPS_UNIT = "GFLOPs (1 multiply-add = 1 FLOP, fvcore convention)"
_TORCH_FLOPS_PER_MAC = 2


@contextmanager
def unfused_attention(module: nn.Module) -> Iterator[None]:
    """Temporarily route timm attention through explicit matmuls, which the counter sees."""
    saved = [(m, m.fused_attn) for m in module.modules() if hasattr(m, "fused_attn")]
    try:
        for m, _ in saved:
            setattr(m, "fused_attn", False)  # noqa: B010 (a timm Final attribute)
        yield
    finally:
        for m, fused in saved:
            setattr(m, "fused_attn", fused)  # noqa: B010


def count_gflops(fn: Callable[[], torch.Tensor]) -> tuple[float, torch.Tensor]:
    """Run ``fn`` under the FLOP counter; return (GFLOPs in :data:`FLOPS_UNIT`, its output)."""
    with FlopCounterMode(display=False) as counter:
        out = fn()
    return counter.get_total_flops() / _TORCH_FLOPS_PER_MAC / 1e9, out


@torch.no_grad()
def measure_exit_info(
    model: DynAdapterViT, img_size: tuple[int, int] | None = None
) -> list[ExitInfo]:
    """Per-exit cumulative GFLOPs for one image, measured stage by stage."""
    from .dyn_vit import ExitInfo

    size = img_size or tuple(model.backbone.patch_embed.img_size)
    x = torch.zeros(1, 3, *size, device=next(model.parameters()).device)
    was_training = model.training
    model.eval()
    try:
        with unfused_attention(model):
            total, h = count_gflops(partial(model.embed, x))
            infos = []
            heads = zip(model.heads, model.head_param_counts(), strict=True)
            for k, (stage, (head, n_params)) in enumerate(zip(model.stages(), heads, strict=True)):
                stage_flops, h = count_gflops(partial(stage, h))
                head_flops, _ = count_gflops(partial(head, model._exit_tokens(k, h)))
                total += stage_flops + head_flops
                infos.append(ExitInfo(k, model.exit_blocks[k], total, n_params, head_flops))
    finally:
        model.train(was_training)
    return infos
