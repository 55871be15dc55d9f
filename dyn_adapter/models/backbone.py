"""Frozen timm ViT backbones from a hub name, a local weights file, or the packaged DINOv2."""

from __future__ import annotations

import hashlib
import logging
import pickle
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn as nn
from timm.models.vision_transformer import VisionTransformer

from ..errors import ConfigError
from . import dinov2_onnx
from .config import BackboneConfig

logger = logging.getLogger(__name__)

WEIGHT_SOURCES = ("packaged", "hub", "none")


def state_dict_sha256(module: nn.Module) -> str:
    """A content hash of a module's weights (names, shapes, dtypes and bytes), source-agnostic."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def create_backbone(cfg: BackboneConfig) -> nn.Module:
    """Build the backbone with timm, weights loaded strictly, classifier removed."""
    kwargs: dict[str, Any] = dict(
        num_classes=0, img_size=cfg.img_size, dynamic_img_size=True, **cfg.model_kwargs
    )
    if cfg.name not in timm.list_models() and not timm.is_model(cfg.name):
        raise ConfigError(
            f"backbone.name: {cfg.name!r} is not a timm model; see `timm.list_models('vit_*')`"
        )
    if cfg.weights == "none":
        # Random init is seeded so a saved model can be rebuilt bit for bit.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return _create(cfg, pretrained=False, **kwargs)
    if cfg.weights == "hub":
        return _create(cfg, pretrained=True, **kwargs)
    path = dinov2_onnx.packaged_weights() if cfg.weights == "packaged" else Path(cfg.weights)
    if not path.is_file():
        raise ConfigError(
            f"backbone.weights: {cfg.weights!r} is neither one of {WEIGHT_SOURCES} nor an existing "
            "weights file"
        )
    from safetensors import SafetensorError

    try:
        return _create(cfg, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs)
    except SafetensorError as e:
        raise ConfigError(
            f"backbone.weights: {path} is not a readable safetensors file ({e}); is it damaged?"
        ) from None
    except (RuntimeError, KeyError) as e:
        if "weights_only" in str(e) or isinstance(e.__cause__, pickle.UnpicklingError):
            # torch.load(weights_only=True) refused to unpickle objects: the file could run code.
            raise ConfigError(
                f"backbone.weights: {path} holds pickled Python objects besides tensors; they "
                "are never loaded (they could run code): save the state dict as .safetensors"
            ) from None
        detail = str(e).strip().splitlines()
        raise ConfigError(
            f"backbone.weights: {path} does not fit {cfg.name!r} ({detail[0] if detail else e}"
            f"{' ...' if len(detail) > 1 else ''}); check that backbone.name is the "
            "architecture the file was saved from"
        ) from e


def _create(cfg: BackboneConfig, **kwargs: Any) -> nn.Module:
    try:
        model = timm.create_model(cfg.name, **kwargs)
    except TypeError as e:  # timm's non-ViT families refuse the ViT keyword arguments
        raise ConfigError(
            f"backbone.name: {cfg.name!r} could not be built as a ViT ({e}); Dyn-Adapter needs a "
            "timm VisionTransformer (vit_*, deit_*, ...)"
        ) from e
    if not isinstance(model, VisionTransformer):
        raise ConfigError(
            f"backbone.name: {cfg.name!r} is a {type(model).__name__}, not a timm VisionTransformer"
        )
    return model
