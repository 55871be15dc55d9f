"""Build a Dyn-Adapter model from one typed config."""

from __future__ import annotations

from dataclasses import dataclass, field

from .backbone import BackboneConfig, create_backbone, state_dict_sha256
from .dyn_vit import DynAdapterViT, ExitsConfig
from .petl import PetlConfig


@dataclass
class ModelConfig:
    """Everything that defines a Dyn-Adapter model's architecture.

    Attributes:
        backbone: The frozen pre-trained ViT.
        petl: The PETL method injected into every block.
        exits: Exit positions and balanced head sizes.
        num_classes: Classes of every exit head.
    """

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    petl: PetlConfig = field(default_factory=PetlConfig)
    exits: ExitsConfig = field(default_factory=ExitsConfig)
    num_classes: int = 10


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
