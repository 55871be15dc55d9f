"""Dyn-Adapter models: frozen timm ViTs, PETL modules, balanced exit heads."""

from .backbone import BackboneConfig, create_backbone, state_dict_sha256
from .checkpoint import load_model, load_trainable, save_trainable
from .dyn_vit import DynAdapterViT, DynamicOutput, ExitInfo, ExitsConfig
from .factory import ModelConfig, create_dyn_adapter
from .flops import FLOPS_UNIT
from .petl import PetlConfig

__all__ = [
    "FLOPS_UNIT",
    "BackboneConfig",
    "DynAdapterViT",
    "DynamicOutput",
    "ExitInfo",
    "ExitsConfig",
    "ModelConfig",
    "PetlConfig",
    "create_backbone",
    "create_dyn_adapter",
    "load_model",
    "load_trainable",
    "save_trainable",
    "state_dict_sha256",
]
