"""Exit heads trained on cached tokens.

Until the PETL modules take their first step they are the identity, so the model's tokens are
the frozen backbone's: computed once for a few augmented views of the training split, they let
the heads train for many steps at the cost of a few forward passes. Two uses:

- **head warm-up** before PETL training (linear-probe-then-fine-tune): freshly initialised
  heads need far more steps than a short PETL run gives them, and until they are trained their
  gradients only pull the PETL modules around;
- a model whose backbone is entirely frozen (the frozen-probe baseline) trains on the cache
  alone: running the frozen blocks again every epoch would recompute the same tokens.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data.config import AugmentConfig
from ..data.prepared import batches
from ..data.transforms import to_model_input
from ..models import DynAdapterViT
from ..models.heads import ExitHead
from .config import DistillConfig, HeadWarmupConfig, TrainConfig
from .loop import EpochStats, StepLoop, autocast
from .schedules import cosine_lr


@dataclass
class HeadCache:
    """Every exit head's input for a set of (augmented) images, float16 on the CPU."""

    features: list[torch.Tensor]
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


def _heads(model: DynAdapterViT) -> list[ExitHead]:
    return [h for h in model.heads if isinstance(h, ExitHead)]


def backbone_is_frozen(model: DynAdapterViT) -> bool:
    """True when nothing before the heads trains: the tokens never change."""
    return not any(p.requires_grad for p in model.backbone.parameters())


@torch.no_grad()
def cache_head_inputs(
    model: DynAdapterViT,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    data_config: dict[str, Any],
    views: int,
    augment: AugmentConfig | None,
    generator: torch.Generator,
    batch_size: int,
    device: torch.device,
    amp: str = "auto",
    progress: Callable[[float], None] | None = None,
) -> HeadCache:
    """Run the model once per view and keep every head's parameter-free input."""
    model.eval()
    heads = _heads(model)
    chunks: list[list[torch.Tensor]] = [[] for _ in range(model.num_exits)]
    for _ in range(views):
        for x8, _ in batches(images, labels, batch_size):
            x = to_model_input(x8.to(device), data_config, augment, generator)
            with autocast(device, amp):
                for step in model.forward_intermediates(x):
                    features = heads[step.index].features(step.tokens)
                    chunks[step.index].append(features.half().cpu())
            if progress is not None:
                progress(len(x8))
    y = torch.from_numpy(np.tile(np.asarray(labels), views)).long()
    return HeadCache([torch.cat(c) for c in chunks], y)


def cached_epoch(
    model: DynAdapterViT,
    optimizer: torch.optim.Optimizer,
    cache: HeadCache,
    *,
    batch_size: int,
    weights: list[float],
    lr_at: Callable[[int], float],
    first_step: int,
    generator: torch.Generator,
    device: torch.device,
    label_smoothing: float = 0.0,
    distill: DistillConfig | None = None,
    after_backward: Callable[[], None] | None = None,
) -> EpochStats:
    """One shuffled pass over the cache, training the heads only (same loss as ``train_epoch``)."""
    model.heads.train()
    order = torch.randperm(len(cache), generator=generator)
    steps = StepLoop(model, optimizer, weights, lr_at, first_step, device, label_smoothing, distill)
    for start in range(0, len(cache), batch_size):
        idx = order[start : start + batch_size]
        steps.set_lr()
        logits = [
            head.classify(f[idx].to(device).float())
            for head, f in zip(_heads(model), cache.features, strict=True)
        ]
        steps.step(logits, cache.labels[idx].to(device), after_backward)
    return steps.finish()


@torch.no_grad()
def cached_logits(model: DynAdapterViT, cache: HeadCache, batch_size: int) -> list[torch.Tensor]:
    """Every exit's float32 logits for the cached inputs, in cache order."""
    model.heads.eval()
    return [
        torch.cat(
            [
                head.classify(f[i : i + batch_size].float().to(next(head.parameters()).device))
                .float()
                .cpu()
                for i in range(0, len(cache), batch_size)
            ]
        )
        for head, f in zip(_heads(model), cache.features, strict=True)
    ]


def warm_up_heads(
    model: DynAdapterViT,
    cache: HeadCache,
    cfg: HeadWarmupConfig,
    *,
    lr: float,
    min_lr: float,
    weight_decay: float,
    batch_size: int,
    seed: int,
    device: torch.device,
    label_smoothing: float = 0.0,
) -> list[EpochStats]:
    """Train every head on the cache with equal loss weights and a cosine schedule from ``lr``.

    The heads are independent here (the tokens are fixed), so each exit's loss only moves its
    own head. Returns one :class:`EpochStats` per epoch.
    """
    params = [p for p in model.heads.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(cache) / batch_size)
    total = cfg.epochs * steps_per_epoch
    generator = torch.Generator().manual_seed(seed)
    history = []
    for epoch in range(cfg.epochs):
        history.append(
            cached_epoch(
                model,
                optimizer,
                cache,
                batch_size=batch_size,
                weights=[1.0] * model.num_exits,
                lr_at=lambda step: cosine_lr(step, total, 0, lr, min_lr),
                first_step=epoch * steps_per_epoch,
                generator=generator,
                device=device,
                label_smoothing=label_smoothing,
            )
        )
    return history


def cache_split(
    model: DynAdapterViT,
    images: np.ndarray,
    labels: np.ndarray,
    data_config: dict[str, Any],
    cfg: TrainConfig,
    device: torch.device,
    train: bool = True,
) -> HeadCache:
    """The heads' inputs over a split, with a progress bar: ``head_warmup.views`` augmented
    views (``train``) or the plain images."""
    from tqdm.auto import tqdm

    views = cfg.head_warmup.views if train else 1
    augment = cfg.augment if train else None
    with tqdm(total=views * len(labels), desc="caching tokens", unit="img", leave=False) as bar:
        return cache_head_inputs(
            model,
            images,
            labels,
            data_config=data_config,
            views=views,
            augment=augment,
            generator=torch.Generator().manual_seed(cfg.seed),
            batch_size=cfg.batch_size,
            device=device,
            amp=cfg.amp,
            progress=bar.update,
        )
