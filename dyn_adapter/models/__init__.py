"""Dyn-Adapter models: frozen timm ViTs, PETL modules, balanced exit heads.

The names below load on first use, so that importing the configs (``models.config``, which
``params.py`` and the CLI's parsers need) does not import torch and timm.
"""

from __future__ import annotations

from ..lazy import lazy_getattr

_WHERE = {
    "FLOPS_UNIT": "flops",
    "BackboneConfig": "config",
    "DynAdapterViT": "dyn_vit",
    "DynamicOutput": "dyn_vit",
    "ExitInfo": "flops",
    "ExitStep": "dyn_vit",
    "ExitsConfig": "config",
    "ModelConfig": "config",
    "PetlConfig": "config",
    "create_backbone": "backbone",
    "create_dyn_adapter": "factory",
    "load_model": "checkpoint",
    "load_trainable": "checkpoint",
    "save_trainable": "checkpoint",
    "state_dict_sha256": "backbone",
}

__all__ = sorted(_WHERE)


__getattr__ = lazy_getattr(__name__, _WHERE)
