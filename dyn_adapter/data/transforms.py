"""Per-backbone preprocessing (timm's data config) applied to whole uint8 batches."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..models.config import BackboneConfig
from .config import AugmentConfig


def resolve_data_config(backbone: BackboneConfig) -> dict[str, Any]:
    """Input size, mean/std and interpolation the backbone was pre-trained with (timm's config).

    The input size is the configured ``img_size``, not the pre-training size.
    """
    import timm  # here, not at the top: preparing data needs it, reading the config does not

    pretrained = timm.models.get_pretrained_cfg(backbone.name)
    cfg = pretrained.to_dict() if pretrained is not None else {}
    return {
        "input_size": [3, backbone.img_size, backbone.img_size],
        "mean": list(cfg.get("mean", (0.485, 0.456, 0.406))),
        "std": list(cfg.get("std", (0.229, 0.224, 0.225))),
        "interpolation": cfg.get("interpolation", "bicubic"),
    }


def to_model_input(
    images: torch.Tensor,
    data_config: dict[str, Any],
    augment: AugmentConfig | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """uint8 ``[B, H, W, C]`` images to normalised float ``[B, 3, S, S]`` model input.

    Grey images are repeated to 3 channels, resized with the backbone's interpolation, then
    (training only) flipped and shifted, and normalised with the backbone's mean and std.
    """
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    size = tuple(data_config["input_size"][1:])
    if tuple(x.shape[2:]) != size:
        mode = "bicubic" if data_config["interpolation"] == "bicubic" else "bilinear"
        x = F.interpolate(x, size=size, mode=mode, align_corners=False).clamp_(0.0, 1.0)
    if augment is not None:
        x = _augment(x, augment, generator)
    mean = torch.tensor(data_config["mean"], device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(data_config["std"], device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def _augment(
    x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None
) -> torch.Tensor:
    b, _, h, w = x.shape
    if cfg.hflip > 0:
        flip = torch.rand(b, generator=generator) < cfg.hflip
        x = torch.where(flip.view(b, 1, 1, 1).to(x.device), x.flip(-1), x)
    pad = round(cfg.translate * h)
    if pad > 0:
        # Replicate-pad, then crop back at a random offset per image: a random translation.
        padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
        dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator).tolist()
        dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator).tolist()
        x = torch.stack(
            [
                padded[i, :, y : y + h, z : z + w]
                for i, (y, z) in enumerate(zip(dy, dx, strict=True))
            ]
        )
    return x
