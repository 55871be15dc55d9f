"""Inference: device and precision, the engines that run the exits, whole splits through them.

Search, calibrate, evaluate, ablate, the served model and the benchmarks run models through
here; ``training`` keeps only the fit.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..models import DynAdapterViT
from ..models.checkpoint import load_for_inference
from .config import AMP_MODES, ENGINES, InferenceConfig
from .engines import CompiledEngine, EagerEngine, Engine, bucket_sizes
from .precision import amp_dtype, autocast, cast_matmul_weights, precision_name, resolve_device
from .splits import dynamic_predictions, exit_logits, split_scores


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


__all__ = [
    "AMP_MODES",
    "ENGINES",
    "CompiledEngine",
    "EagerEngine",
    "Engine",
    "InferenceConfig",
    "amp_dtype",
    "autocast",
    "bucket_sizes",
    "cast_matmul_weights",
    "create_engine",
    "dynamic_predictions",
    "exit_logits",
    "load_engine",
    "precision_name",
    "resolve_device",
    "split_scores",
]
