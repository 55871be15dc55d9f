"""The training loop over uint8 image arrays (no DataLoader workers: 2-core friendly)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data.config import AugmentConfig
from ..data.prepared import batches
from ..data.transforms import to_model_input
from ..inference.precision import amp_dtype
from ..models import DynAdapterViT
from .config import DistillConfig


def autocast(device: torch.device, amp: str) -> AbstractContextManager[Any]:
    """Training autocast: bf16/fp16 on CUDA (``auto`` means bf16 there); full precision on CPU."""
    if device.type != "cuda" or amp == "off":
        return nullcontext()
    return torch.autocast(device_type="cuda", dtype=amp_dtype(device, amp))


@dataclass
class EpochStats:
    """Per-exit mean loss and accuracy over one pass."""

    loss: list[float]
    accuracy: list[float]


def train_epoch(
    model: DynAdapterViT,
    optimizer: torch.optim.Optimizer,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    data_config: dict[str, Any],
    batch_size: int,
    weights: list[float],
    lr_at: Callable[[int], float],
    first_step: int,
    generator: torch.Generator,
    augment: AugmentConfig | None,
    device: torch.device,
    amp: str = "auto",
    label_smoothing: float = 0.0,
    distill: DistillConfig | None = None,
    exit_gradient: float = 1.0,
    after_backward: Callable[[], None] | None = None,
    scaler: torch.amp.GradScaler | None = None,
    progress: Callable[[float], None] | None = None,
) -> EpochStats:
    """One shuffled pass of weighted multi-exit cross-entropy.

    Raises:
        FloatingPointError: when the loss, or at the end of the pass a trainable weight, stops
            being finite (the caller keeps its last checkpoint and writes no model).
    """
    model.train()
    order = torch.randperm(len(labels), generator=generator).numpy()
    steps = StepLoop(model, optimizer, weights, lr_at, first_step, device, label_smoothing, distill)
    for x8, y in batches(images, labels, batch_size, order):
        x = to_model_input(x8.to(device), data_config, augment, generator)
        y = y.to(device)
        steps.set_lr()
        with autocast(device, amp):
            logits = model.forward_exits(x, exit_gradient)
        steps.step(logits, y, after_backward, scaler)
        if progress is not None:
            progress(len(y))
    return steps.finish()


class StepLoop:
    """The optimizer steps of one epoch: weighted loss, backward, hooks, step, running stats.

    Shared by training on images and training the heads on cached tokens.
    """

    def __init__(
        self,
        model: DynAdapterViT,
        optimizer: torch.optim.Optimizer,
        weights: list[float],
        lr_at: Callable[[int], float],
        first_step: int,
        device: torch.device,
        label_smoothing: float,
        distill: DistillConfig | None = None,
    ) -> None:
        self.optimizer = optimizer
        self.distill = distill
        self.lr_at = lr_at
        self.step_index = first_step
        self.weights = torch.tensor(weights, device=device)
        self.label_smoothing = label_smoothing
        self.loss_sum = torch.zeros(model.num_exits)
        self.correct = torch.zeros(model.num_exits)
        self.seen = 0

    def set_lr(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.step_index) * group.get("lr_scale", 1.0)

    def step(
        self,
        logits: list[torch.Tensor],
        y: torch.Tensor,
        after_backward: Callable[[], None] | None = None,
        scaler: torch.amp.GradScaler | None = None,
    ) -> None:
        losses = exit_losses(logits, y, self.label_smoothing, self.distill)
        loss = (losses * self.weights).sum()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {self.step_index}")
        self.optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if after_backward is not None:
            after_backward()
        if scaler is not None:
            scaler.step(self.optimizer)
            scaler.update()
        else:
            self.optimizer.step()
        self.step_index += 1
        with torch.no_grad():
            self.loss_sum += losses.detach().cpu() * len(y)
            self.correct += torch.stack([(t.argmax(-1) == y).sum() for t in logits]).cpu().float()
        self.seen += len(y)

    def finish(self) -> EpochStats:
        # The last steps' updates are not seen by a loss: check the weights once per epoch, so a
        # diverged model is never checkpointed as a finished epoch.
        with torch.no_grad():
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            if params and not bool(torch.stack([p.isfinite().all() for p in params]).all()):
                raise FloatingPointError(
                    f"trainable weights are not finite after step {self.step_index - 1} "
                    "(the epoch's last)"
                )
        n = max(1, self.seen)
        return EpochStats((self.loss_sum / n).tolist(), (self.correct / n).tolist())


def exit_losses(
    logits: list[torch.Tensor],
    y: torch.Tensor,
    label_smoothing: float = 0.0,
    distill: DistillConfig | None = None,
) -> torch.Tensor:
    """Each exit's loss ``[exits]``: cross-entropy, plus for the early exits the distillation
    term when ``distill`` is on (the last exit's answer is a target, not trained by it)."""
    losses = [F.cross_entropy(t.float(), y, label_smoothing=label_smoothing) for t in logits]
    if distill is not None and distill.weight > 0:
        temp = distill.temperature
        teacher = F.softmax(logits[-1].detach().float() / temp, dim=-1)
        for k in range(len(logits) - 1):
            student = F.log_softmax(logits[k].float() / temp, dim=-1)
            kl = F.kl_div(student, teacher, reduction="batchmean") * temp**2
            losses[k] = losses[k] + distill.weight * kl
    return torch.stack(losses)


def exit_stats(logits: list[torch.Tensor], labels: np.ndarray) -> EpochStats:
    y = torch.as_tensor(np.asarray(labels))
    return EpochStats(
        [float(F.cross_entropy(t, y)) for t in logits],
        [float((t.argmax(-1) == y).float().mean()) for t in logits],
    )
