"""Dyn-Adapter models: frozen timm ViTs, PETL modules, balanced exit heads."""

from .backbone import BackboneConfig, create_backbone, state_dict_sha256
from .checkpoint import load_model, load_trainable, save_trainable
from .config import ExitsConfig, ModelConfig
from .dyn_vit import DynAdapterViT, DynamicOutput, ExitStep
from .factory import create_dyn_adapter
from .flops import FLOPS_UNIT, ExitInfo
from .petl import PetlConfig

__all__ = [
    "FLOPS_UNIT",
    "BackboneConfig",
    "DynAdapterViT",
    "DynamicOutput",
    "ExitInfo",
    "ExitStep",
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
