"""Training and evaluation loops over uint8 image arrays (no DataLoader workers: 2-core friendly)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .data.transforms import AugmentConfig, to_model_input
from .errors import ConfigError
from .models import DynAdapterViT


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
    n = len(labels)
    order = torch.randperm(n, generator=generator).numpy()
    loss_sum = torch.zeros(model.num_exits)
    correct = torch.zeros(model.num_exits)
    step = first_step
    for x8, y in batches(images, labels, batch_size, order):
        x = to_model_input(x8.to(device), data_config, augment, generator)
        y = y.to(device)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step) * group.get("lr_scale", 1.0)
        with autocast(device, amp):
            logits = model.forward_exits(x)
        losses = torch.stack(
            [F.cross_entropy(t.float(), y, label_smoothing=label_smoothing) for t in logits]
        )
        loss = (losses * torch.tensor(weights, device=device)).sum()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if after_backward is not None:
            after_backward()
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        step += 1
        with torch.no_grad():
            loss_sum += losses.detach().cpu() * len(y)
            correct += torch.stack([(t.argmax(-1) == y).sum() for t in logits]).cpu().float()
        if progress is not None:
            progress(len(y))
    # The last steps' updates are not seen by a loss: check the weights once per epoch, so a
    # diverged model is never checkpointed as a finished epoch.
    with torch.no_grad():
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if params and not bool(torch.stack([p.isfinite().all() for p in params]).all()):
            raise FloatingPointError(
                f"trainable weights are not finite after step {step - 1} (the epoch's last)"
            )
    return EpochStats((loss_sum / n).tolist(), (correct / n).tolist())


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


def exit_stats(logits: list[torch.Tensor], labels: np.ndarray) -> EpochStats:
    y = torch.as_tensor(np.asarray(labels))
    return EpochStats(
        [float(F.cross_entropy(t, y)) for t in logits],
        [float((t.argmax(-1) == y).float().mean()) for t in logits],
    )
