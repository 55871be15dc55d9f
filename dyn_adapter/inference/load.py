"""A saved model behind the configured engine, as it is served."""

from __future__ import annotations

from pathlib import Path

import torch

from ..models import DynAdapterViT
from ..models.checkpoint import load_for_inference
from .config import InferenceConfig
from .engines import CompiledEngine, EagerEngine, Engine
from .precision import amp_dtype, cast_matmul_weights


def create_engine(
    model: DynAdapterViT, device: torch.device, cfg: InferenceConfig | None = None
) -> Engine:
    """The engine ``cfg`` names over ``model`` (already on ``device``), at ``cfg.amp``."""
    cfg = cfg or InferenceConfig()
    dtype = amp_dtype(device, cfg.amp)
    if cfg.engine == "eager":
        return EagerEngine(model, device, dtype)
    return CompiledEngine(model, device, dtype, max_batch=cfg.max_batch)


def load_engine(
    model_dir: str | Path, device: torch.device, cfg: InferenceConfig | None = None
) -> Engine:
    """A saved model as served: merged where its PETL method merges, matmul weights stored in
    the serving precision (the same numbers autocast gives, without per-call casts), behind the
    configured engine."""
    cfg = cfg or InferenceConfig()
    model = load_for_inference(model_dir, device)
    model.exit_info  # noqa: B018 (measured in float32, before the weights are cast)
    cast_matmul_weights(model, amp_dtype(device, cfg.amp))
    return create_engine(model, device, cfg)
