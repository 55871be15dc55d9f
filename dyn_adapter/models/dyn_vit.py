"""The Dyn-Adapter model: a frozen, PETL-tuned timm ViT with balanced early exits.

The backbone is wrapped, never forked: the blocks run in stages between exits, and a batch is
compacted at every exit during dynamic inference so that samples that left cost nothing more.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from ..errors import ConfigError
from .config import ExitsConfig, ModelConfig
from .flops import ExitInfo, measure_exit_info
from .heads import ExitHead
from .petl import PetlConfig, inject_petl, merge_petl, petl_parameters, unmerge_petl


@dataclass
class ExitStep:
    """One exit on the way through the model (see :meth:`DynAdapterViT.forward_intermediates`).

    Attributes:
        index: The exit's position (0-based).
        tokens: The exit head's input for the samples still in flight ``[b, tokens, dim]``.
        rows: Their positions in the input batch ``[b]``.
        keep: Set by the consumer: which of them go on to the next stage (``None``: all).
    """

    index: int
    tokens: torch.Tensor
    rows: torch.Tensor
    keep: torch.Tensor | None = None


@dataclass
class DynamicOutput:
    """Result of :meth:`DynAdapterViT.forward_dynamic`, one entry per input sample."""

    prediction: torch.Tensor
    confidence: torch.Tensor
    exit_index: torch.Tensor
    logits: torch.Tensor = field(repr=False)


class DynAdapterViT(nn.Module):
    """A frozen timm ViT with PETL modules and balanced early-exit heads.

    Args:
        backbone: A timm ``VisionTransformer``; its weights are frozen.
        num_classes: Classes of every exit head.
        petl: PETL method injected into every block.
        exits: Exit positions and head sizes.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        petl: PetlConfig | None = None,
        exits: ExitsConfig | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(backbone, VisionTransformer):
            raise ConfigError(
                f"backbone is a {type(backbone).__name__}, not a timm VisionTransformer; Dyn-Adapter "
                "needs a ViT (e.g. vit_base_patch16_224, vit_small_patch14_dinov2, deit_*)"
            )
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        self.petl_cfg = petl or PetlConfig()
        self.exits_cfg = exits or ExitsConfig()
        depth = len(backbone.blocks)
        self.exit_blocks, self.head_depths, self.head_widths = self.exits_cfg.resolve(depth)
        self.num_classes = num_classes
        # Set by create_dyn_adapter; a checkpoint needs both to rebuild the model.
        self.config: ModelConfig | None = None
        self.backbone_sha256: str | None = None

        backbone.reset_classifier(0)
        backbone.requires_grad_(False)
        inject_petl(list(backbone.blocks), self.petl_cfg)
        for p in petl_parameters(backbone):
            p.requires_grad_(True)
        self.backbone = backbone

        dim = backbone.embed_dim
        self.heads = nn.ModuleList(
            ExitHead(
                dim,
                num_classes,
                depth=d,
                hidden=w,
                kind=self.exits_cfg.head_type,
                pool=self.exits_cfg.pool,
                num_prefix_tokens=backbone.num_prefix_tokens,
                grid=tuple(backbone.patch_embed.grid_size),
            )
            for d, w in zip(self.head_depths, self.head_widths, strict=True)
        )
        self._exit_info: list[ExitInfo] | None = None

    # -- structure -----------------------------------------------------------------------

    @property
    def num_exits(self) -> int:
        return len(self.exit_blocks)

    def stages(self) -> list[nn.Sequential]:
        """The backbone blocks between consecutive exits."""
        bounds = [0, *self.exit_blocks]
        return [nn.Sequential(*self.backbone.blocks[a:b]) for a, b in itertools.pairwise(bounds)]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def petl_param_count(self) -> int:
        return sum(p.numel() for p in petl_parameters(self.backbone))

    def head_param_counts(self) -> list[int]:
        return [sum(p.numel() for p in h.parameters()) for h in self.heads]

    # -- forward passes ------------------------------------------------------------------

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Patch embedding, position embedding and pre-norm: the ViT's stem."""
        b = self.backbone
        return b.norm_pre(b.patch_drop(b._pos_embed(b.patch_embed(x))))

    def forward_intermediates(self, x: torch.Tensor) -> Iterator[ExitStep]:
        """Run the stem, then the blocks stage by stage, yielding every exit head's input.

        The one traversal of the exits (like timm's ``forward_intermediates``): the training
        forward, dynamic inference, the head cache and the FLOP counter all walk it. A consumer
        that sets ``step.keep`` (a mask over ``step.rows``) drops the other samples before the
        next stage runs: batch compaction. When no sample is kept, the walk stops.

        Args:
            x: Images ``[B, 3, H, W]``.
        """
        h = self.embed(x)
        rows = torch.arange(x.shape[0], device=x.device)
        last = self.num_exits - 1
        for k, stage in enumerate(self.stages()):
            h = stage(h)
            # The final exit sees the backbone's own (frozen, pretrained) final norm, as timm does.
            step = ExitStep(k, self.backbone.norm(h) if k == last else h, rows)
            yield step
            if step.keep is not None:
                if not bool(step.keep.any()):
                    return
                if not bool(step.keep.all()):
                    h, rows = h[step.keep], rows[step.keep]

    def forward_exits(self, x: torch.Tensor, exit_gradient: float = 1.0) -> list[torch.Tensor]:
        """Logits of every exit, in one pass over all blocks.

        Args:
            x: Images ``[B, 3, H, W]``.
            exit_gradient: The share of each early exit's gradient that flows back into the
                blocks (and their PETL modules), which later exits share; its head gets all of
                it. 1: all (the paper's training); 0: none, so the PETL modules learn from the
                last exit alone, as the static model's do
                (up to the weight the loss schedule gives the last exit).
        """
        last = self.num_exits - 1
        return [
            self.heads[s.index](
                s.tokens if s.index == last else scale_gradient(s.tokens, exit_gradient)
            )
            for s in self.forward_intermediates(x)
        ]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_exits(x)

    def forward_final(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the last exit only: the static model, no early head evaluated."""
        h = self.backbone.norm(self.backbone.blocks(self.embed(x)))
        return self.heads[-1](h)

    @torch.no_grad()
    def forward_dynamic(
        self, x: torch.Tensor, thresholds: Sequence[float] | torch.Tensor
    ) -> DynamicOutput:
        """Early-exit inference: each sample stops at the first exit confident enough.

        At exit ``k`` a sample leaves when ``max softmax(logits) >= thresholds[k]``; the last
        exit accepts every sample that is left. The batch is compacted after every exit, so
        later blocks only run on the samples still in flight.

        Args:
            x: Images ``[B, 3, H, W]``.
            thresholds: One confidence threshold per exit (``>= 0``; the last is not used but
                must be given). 0 sends everything to the first exit, values above 1 nothing.
        """
        thr = check_thresholds(thresholds, self.num_exits)
        n = x.shape[0]
        prediction = torch.empty(n, dtype=torch.long, device=x.device)
        confidence = torch.empty(n, device=x.device)
        exit_index = torch.empty(n, dtype=torch.long, device=x.device)
        out_logits = torch.empty(n, self.num_classes, device=x.device)
        last = self.num_exits - 1
        for step in self.forward_intermediates(x):
            k = step.index
            logits = self.heads[k](step.tokens).float()
            conf, pred = F.softmax(logits, dim=-1).max(dim=-1)
            leave = torch.ones_like(conf, dtype=torch.bool) if k == last else conf >= thr[k]
            idx = step.rows[leave]
            prediction[idx] = pred[leave]
            confidence[idx] = conf[leave]
            exit_index[idx] = k
            out_logits[idx] = logits[leave]
            step.keep = ~leave
        return DynamicOutput(prediction, confidence, exit_index, out_logits)

    # -- inference helpers ---------------------------------------------------------------

    def merge(self) -> int:
        """Fold LoRA/RepAdapter into the frozen weights; returns the number of merged layers."""
        self._exit_info = None  # merged layers cost less: measure again
        return merge_petl(self.backbone)

    def unmerge(self) -> None:
        self._exit_info = None
        unmerge_petl(self.backbone)

    @property
    def exit_info(self) -> list[ExitInfo]:
        """Per exit: block, cumulative GFLOPs (measured, unit :data:`FLOPS_UNIT`), head size."""
        if self._exit_info is None:
            self._exit_info = measure_exit_info(self)
        return self._exit_info


class _ScaleGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


def scale_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``x`` unchanged, its gradient multiplied by ``scale`` on the way back."""
    if scale == 1.0:
        return x
    if scale == 0.0:
        return x.detach()
    return _ScaleGradient.apply(x, scale)


def check_thresholds(thresholds: Sequence[float] | torch.Tensor, num_exits: int) -> list[float]:
    values = [
        float(t) for t in (thresholds.tolist() if torch.is_tensor(thresholds) else thresholds)
    ]
    if len(values) != num_exits:
        raise ConfigError(f"thresholds: need one per exit ({num_exits}), got {len(values)}")
    for k, t in enumerate(values):
        if math.isnan(t) or t < 0:
            raise ConfigError(f"thresholds[{k}] = {t}: thresholds must be numbers >= 0")
    return values
