"""The Dyn-Adapter model: a frozen, PETL-tuned timm ViT with balanced early exits.

The backbone is wrapped, never forked: the blocks run in stages between exits, and a batch is
compacted at every exit during dynamic inference so that samples that left cost nothing more.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from ..errors import ConfigError
from .heads import ExitHead, HeadType, PoolType
from .petl import PetlConfig, inject_petl, merge_petl, petl_parameters, unmerge_petl

if TYPE_CHECKING:
    from .factory import ModelConfig


@dataclass
class ExitsConfig:
    """Where the exits sit and how strong their heads are.

    Attributes:
        blocks: 1-based block indices after which an exit sits; the last must be the final
            block (the model's normal head); negative values count from the end (-1: the final
            block). ``None``: every 3rd block, i.e. 3, 6, 9, 12 on a 12-block ViT.
        head_depths: Blocks per exit head (decreasing with depth: balanced heads); 0 is a
            LayerNorm + Linear probe.
        head_widths: Width of those blocks per exit (see :class:`ExitHead`).
        head_type: ``conv`` (blocks on the patch grid) or ``mlp`` (blocks on pooled tokens).
        pool: Token pooling of ``mlp`` heads and probes. ``avg`` (mean of patch tokens) by
            default: shallow CLS tokens carry little class information yet, the patch tokens do.
    """

    blocks: Sequence[int] | None = None
    head_depths: Sequence[int] = (2, 1, 1, 0)
    head_widths: Sequence[int] = (96, 96, 48, 0)
    head_type: HeadType = "conv"
    pool: PoolType = "avg"

    def resolve(self, depth: int) -> tuple[list[int], list[int], list[int]]:
        """Exit blocks, head depths and widths for a backbone with ``depth`` blocks."""
        if self.blocks is None:
            blocks = list(range(3, depth + 1, 3))
            if not blocks or blocks[-1] != depth:
                blocks.append(depth)
        else:  # negative indices count from the end, as in Python: -1 is the final block
            blocks = [int(b) + depth + 1 if int(b) < 0 else int(b) for b in self.blocks]
        bad = [b for b in blocks if not 1 <= b <= depth]
        if bad:
            raise ConfigError(
                f"exits.blocks: block {bad[0]} is out of range; this backbone has blocks 1..{depth}"
            )
        if sorted(set(blocks)) != blocks:
            raise ConfigError(f"exits.blocks: must be strictly increasing, got {blocks}")
        if blocks[-1] != depth:
            raise ConfigError(
                f"exits.blocks: the last exit must be the final block {depth} (the model's own "
                f"head), got {blocks}; append {depth}"
            )
        n = len(blocks)
        return (
            blocks,
            _fit(self.head_depths, n, "exits.head_depths"),
            _fit(self.head_widths, n, "exits.head_widths"),
        )


def _fit(values: Sequence[int], n: int, key: str) -> list[int]:
    """Per-exit values: a list of exactly ``n``, or a longer default list cut to its ends.

    A default written for 4 exits serves other counts by keeping the first ``n - 1`` entries for
    the early exits and the last entry for the final exit.
    """
    values = list(values)
    if len(values) == n:
        return values
    if len(values) > n >= 1:
        return values[: n - 1] + values[-1:]
    raise ConfigError(f"{key}: {len(values)} values for {n} exits; give one per exit")


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
        self.exit_blocks, self.head_depths, widths = self.exits_cfg.resolve(depth)
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
            for d, w in zip(self.head_depths, widths, strict=True)
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

    def _exit_tokens(self, k: int, x: torch.Tensor) -> torch.Tensor:
        # The final exit sees the backbone's own (frozen, pretrained) final norm, as timm does.
        return self.backbone.norm(x) if k == self.num_exits - 1 else x

    def forward_exits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every exit, in one pass over all blocks."""
        x = self.embed(x)
        logits = []
        for k, stage in enumerate(self.stages()):
            x = stage(x)
            logits.append(self.heads[k](self._exit_tokens(k, x)))
        return logits

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_exits(x)

    def forward_final(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the last exit only: the static model, no early head evaluated."""
        h = self.backbone.blocks(self.embed(x))
        return self.heads[-1](self._exit_tokens(self.num_exits - 1, h))

    @torch.no_grad()
    def forward_dynamic(
        self,
        x: torch.Tensor,
        thresholds: Sequence[float] | torch.Tensor,
        temperatures: Sequence[float] | torch.Tensor | None = None,
    ) -> DynamicOutput:
        """Early-exit inference: each sample stops at the first exit confident enough.

        At exit ``k`` a sample leaves when ``max softmax(logits / T_k) >= thresholds[k]``; the
        last exit accepts every sample that is left. The batch is compacted after every exit,
        so later blocks only run on the samples still in flight.

        Args:
            x: Images ``[B, 3, H, W]``.
            thresholds: One confidence threshold per exit (``>= 0``; the last is not used but
                must be given). 0 sends everything to the first exit, values above 1 nothing.
            temperatures: Optional per-exit softmax temperature (``> 0``).
        """
        thr = check_thresholds(thresholds, self.num_exits)
        temps = check_temperatures(temperatures, self.num_exits)
        n = x.shape[0]
        prediction = torch.empty(n, dtype=torch.long, device=x.device)
        confidence = torch.empty(n, device=x.device)
        exit_index = torch.empty(n, dtype=torch.long, device=x.device)
        out_logits = torch.empty(n, self.num_classes, device=x.device)
        remaining = torch.arange(n, device=x.device)
        h = self.embed(x)
        last = self.num_exits - 1
        for k, stage in enumerate(self.stages()):
            h = stage(h)
            logits = self.heads[k](self._exit_tokens(k, h)).float()
            conf, pred = F.softmax(logits / temps[k], dim=-1).max(dim=-1)
            leave = torch.ones_like(conf, dtype=torch.bool) if k == last else conf >= thr[k]
            idx = remaining[leave]
            prediction[idx] = pred[leave]
            confidence[idx] = conf[leave]
            exit_index[idx] = k
            out_logits[idx] = logits[leave]
            if k == last or bool(leave.all()):
                break
            if bool(leave.any()):
                stay = ~leave
                h, remaining = h[stay], remaining[stay]
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
            from .flops import measure_exit_info

            self._exit_info = measure_exit_info(self)
        return self._exit_info


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


def check_temperatures(
    temperatures: Sequence[float] | torch.Tensor | None, num_exits: int
) -> list[float]:
    if temperatures is None:
        return [1.0] * num_exits
    values = [
        float(t) for t in (temperatures.tolist() if torch.is_tensor(temperatures) else temperatures)
    ]
    if len(values) != num_exits:
        raise ConfigError(f"temperatures: need one per exit ({num_exits}), got {len(values)}")
    bad = [t for t in values if not (t > 0 and math.isfinite(t))]
    if bad:
        raise ConfigError(f"temperatures: must be finite and > 0, got {bad[0]}")
    return values
