"""Build a Dyn-Adapter model from one typed config."""

from __future__ import annotations

from .backbone import create_backbone, state_dict_sha256
from .config import ModelConfig
from .dyn_vit import DynAdapterViT


def create_dyn_adapter(cfg: ModelConfig) -> DynAdapterViT:
    """Build the backbone, hash its weights, inject PETL modules and attach the exit heads.

    The returned model carries ``config`` and ``backbone_sha256`` (the content hash of the
    pre-trained weights), which every saved checkpoint records.
    """
    backbone = create_backbone(cfg.backbone)
    digest = state_dict_sha256(backbone)
    model = DynAdapterViT(backbone, cfg.num_classes, petl=cfg.petl, exits=cfg.exits)
    model.config = cfg
    model.backbone_sha256 = digest
    return model
