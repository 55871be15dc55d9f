"""Device and precision: where a model runs and in which float format."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import torch.nn as nn


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA where there is a GPU, else the CPU; anything else as torch spells it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def amp_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """The autocast dtype of an ``amp`` setting (``None``: float32).

    ``auto`` is bf16 on CUDA and float32 elsewhere; ``bf16`` and ``fp16`` are what they say.
    """
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[amp]


def precision_name(dtype: torch.dtype | None) -> str:
    """``bf16``, ``fp16`` or ``fp32``: how results computed at ``dtype`` are labelled."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}[dtype]


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager[Any]:
    """Autocast to ``dtype`` on ``device`` (nothing for float32).

    The weight cache is off: a cached cast would be captured into a CUDA graph and outlive it.
    """
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype, cache_enabled=False)


def cast_matmul_weights(model: nn.Module, dtype: torch.dtype | None) -> int:
    """Store the weights of linear and convolution layers in ``dtype``; returns how many layers.

    Under autocast these layers cast their weights to ``dtype`` on every call anyway, so
    casting them once gives the same numbers without the per-call copies (on a GPU the copies
    move the whole model through memory every forward). Norms and everything else autocast
    keeps in float32 stay float32. For inference only: training needs float32 master weights.
    """
    if dtype is None:
        return 0
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    for m in layers:
        m.to(dtype)
    return len(layers)
