"""Shared fixtures: tiny randomly initialised timm ViTs (milliseconds per forward)."""

from __future__ import annotations

import os

import pytest
import torch

# Never reach for a model hub or telemetry from tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

from dyn_adapter.models import (  # noqa: E402
    BackboneConfig,
    DynAdapterViT,
    ExitsConfig,
    ModelConfig,
    PetlConfig,
    create_dyn_adapter,
)

TINY_VIT = dict(patch_size=7, embed_dim=64, depth=6, num_heads=4)
PETL_METHODS = ["adapter", "lora", "repadapter"]


def tiny_config(petl: str = "adapter", num_classes: int = 5, **exits) -> ModelConfig:
    return ModelConfig(
        backbone=BackboneConfig(
            name="vit_tiny_patch16_224", weights="none", img_size=28, model_kwargs=dict(TINY_VIT)
        ),
        petl=PetlConfig(method=petl, dim=4, groups=2),
        exits=ExitsConfig(
            **{"blocks": [2, 4, 6], "head_depths": [2, 1, 0], "head_widths": [16, 8, 0], **exits}
        ),
        num_classes=num_classes,
    )


def tiny_model(petl: str = "adapter", num_classes: int = 5, **exits) -> DynAdapterViT:
    torch.manual_seed(0)  # PETL and head init come from the global generator
    return create_dyn_adapter(tiny_config(petl, num_classes, **exits)).eval()


@torch.no_grad()
def randomize_trainable(model: torch.nn.Module, seed: int = 0, std: float = 0.2) -> None:
    """Move the zero-initialised update paths away from zero, so tests see non-trivial PETL."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        if p.requires_grad:
            p.add_(torch.randn(p.shape, generator=g) * std)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(16, 3, 28, 28, generator=torch.Generator().manual_seed(1))
