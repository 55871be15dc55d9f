"""Training and evaluation loops over uint8 image arrays (no DataLoader workers: 2-core friendly)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data.prepared import PreparedData
from ..data.transforms import AugmentConfig, to_model_input
from ..errors import ConfigError
from ..models import DynAdapterViT
from ..policies.thresholds import ExitScores


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast(device: torch.device, amp: str) -> AbstractContextManager[Any]:
    """bf16/fp16 autocast on CUDA (``auto`` means bf16 there); full precision on CPU."""
    if device.type != "cuda" or amp == "off":
        return nullcontext()
    dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    return torch.autocast(device_type="cuda", dtype=dtype)


def batches(
    images: np.ndarray, labels: np.ndarray, batch_size: int, order: np.ndarray | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """uint8 image and label tensors, ``batch_size`` at a time, in ``order`` (default: as stored)."""
    n = len(labels)
    order = np.arange(n) if order is None else order
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        yield (
            torch.from_numpy(np.ascontiguousarray(images[idx])),
            torch.from_numpy(np.asarray(labels[idx])),
        )


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
    steps = StepLoop(model, optimizer, weights, lr_at, first_step, device, label_smoothing)
    for x8, y in batches(images, labels, batch_size, order):
        x = to_model_input(x8.to(device), data_config, augment, generator)
        y = y.to(device)
        steps.set_lr()
        with autocast(device, amp):
            logits = model.forward_exits(x)
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
    ) -> None:
        self.optimizer = optimizer
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
        losses = torch.stack(
            [F.cross_entropy(t.float(), y, label_smoothing=self.label_smoothing) for t in logits]
        )
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


@torch.no_grad()
def exit_logits(
    model: DynAdapterViT,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    data_config: dict[str, Any],
    batch_size: int,
    device: torch.device,
    amp: str = "auto",
) -> list[torch.Tensor]:
    """Every exit's logits (float32, on CPU) for a whole split, in stored order.

    Raises:
        ConfigError: A label outside the model's classes: the model was trained on other data.
    """
    top = int(np.max(labels)) if len(labels) else -1
    if top >= model.num_classes:
        raise ConfigError(
            f"the data has labels up to {top}, but the model has {model.num_classes} classes: it "
            "was trained on other data; use the model trained on this prepared data"
        )
    model.eval()
    chunks: list[list[torch.Tensor]] = [[] for _ in range(model.num_exits)]
    for x8, _ in batches(images, labels, batch_size):
        x = to_model_input(x8.to(device), data_config)
        with autocast(device, amp):
            for k, t in enumerate(model.forward_exits(x)):
                chunks[k].append(t.float().cpu())
    return [torch.cat(c) for c in chunks]


def split_scores(
    model: DynAdapterViT,
    data: PreparedData,
    split: str,
    batch_size: int,
    device: torch.device,
) -> ExitScores:
    """Every exit's confidence and prediction over one prepared split, from one pass."""
    images, labels = data.split(split)
    logits = exit_logits(
        model, images, labels, data_config=data.data_config, batch_size=batch_size, device=device
    )
    return ExitScores.from_logits(
        logits, np.asarray(labels), [e.gflops_cumulative for e in model.exit_info]
    )


def exit_stats(logits: list[torch.Tensor], labels: np.ndarray) -> EpochStats:
    y = torch.as_tensor(np.asarray(labels))
    return EpochStats(
        [float(F.cross_entropy(t, y)) for t in logits],
        [float((t.argmax(-1) == y).float().mean()) for t in logits],
    )
