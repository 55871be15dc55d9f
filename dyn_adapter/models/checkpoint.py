"""Save and load only what training changes: PETL and head weights, plus the model config.

A checkpoint directory holds ``adapter_model.safetensors`` and ``model_config.json``; the
backbone is referenced by name and by the sha256 of its weights, never copied.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..config import from_dict, to_dict
from ..errors import ConfigError
from ..files import atomic_path, write_json
from .config import ModelConfig
from .dyn_vit import DynAdapterViT
from .factory import create_dyn_adapter
from .petl import MergeableLayer, petl_layers

WEIGHTS_FILE = "adapter_model.safetensors"
CONFIG_FILE = "model_config.json"
FORMAT_VERSION = 1


def trainable_state_dict(model: DynAdapterViT) -> dict[str, torch.Tensor]:
    """The trainable tensors (PETL modules and heads), by their names in ``model``."""
    return {
        n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad
    }


def save_trainable(
    model: DynAdapterViT, out_dir: str | Path, extra: dict[str, Any] | None = None
) -> Path:
    """Write the trainable weights and the config needed to rebuild ``model``; returns ``out_dir``."""
    from safetensors.torch import save_file

    if getattr(model, "config", None) is None:
        raise ValueError(
            "save_trainable needs a model built by create_dyn_adapter (it has no config)"
        )
    if any(getattr(m, "merged", False) for m in model.modules()):
        raise ValueError(
            "unmerge the model before saving: checkpoints hold the unmerged PETL weights"
        )
    out = Path(out_dir)
    with atomic_path(out / WEIGHTS_FILE) as tmp:
        save_file(trainable_state_dict(model), str(tmp))
    write_json(
        out / CONFIG_FILE,
        {
            "format_version": FORMAT_VERSION,
            "model": to_dict(model.config),
            "backbone_sha256": model.backbone_sha256,
            **(extra or {}),
        },
    )
    return out


def read_config(ckpt_dir: str | Path) -> tuple[ModelConfig, dict[str, Any]]:
    path = Path(ckpt_dir) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(
            f"{ckpt_dir}: no {CONFIG_FILE}; is this a dyn-adapter checkpoint directory?"
        )
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e}); the checkpoint is damaged") from e
    if not isinstance(meta, dict) or not isinstance(meta.get("model"), dict):
        raise ConfigError(f"{path}: no 'model' section; the checkpoint is damaged")
    exits = meta["model"].get("exits")
    if isinstance(exits, dict):  # written before conv heads existed: every head was an MLP head
        exits.setdefault("head_type", "mlp")
    return from_dict(ModelConfig, meta["model"], "model"), meta


def load_trainable(model: DynAdapterViT, ckpt_dir: str | Path) -> None:
    """Load a checkpoint's PETL and head weights into ``model``, refusing any mismatch."""
    cfg, meta = read_config(ckpt_dir)
    if cfg.num_classes != model.num_classes:
        raise ConfigError(
            f"{ckpt_dir}: checkpoint has {cfg.num_classes} classes, the model {model.num_classes}; "
            "set model.num_classes to match or retrain"
        )
    want = getattr(model, "backbone_sha256", None)
    if want is not None and meta.get("backbone_sha256") != want:
        raise ConfigError(
            f"{ckpt_dir}: backbone hash {str(meta.get('backbone_sha256'))[:12]}… does not match this "
            f"model's backbone {want[:12]}… ({cfg.backbone.name}, weights={cfg.backbone.weights}); "
            "the adapters were trained on other weights"
        )
    weights = Path(ckpt_dir) / WEIGHTS_FILE
    if not weights.is_file():
        raise ConfigError(f"{ckpt_dir}: {WEIGHTS_FILE} is missing")
    state = read_safetensors(weights)
    expected = trainable_state_dict(model)
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ConfigError(
            f"{weights}: keys do not match the model (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}); was it saved with another PETL method or exit layout?"
        )
    for name, t in state.items():
        if t.shape != expected[name].shape:
            raise ConfigError(
                f"{weights}: {name} has shape {tuple(t.shape)}, the model expects "
                f"{tuple(expected[name].shape)}"
            )
    model.load_state_dict(state, strict=False)


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; anything else (a pickle, a damaged file) is refused.

    safetensors never runs code while loading: a pickle renamed to ``.safetensors`` fails to
    parse here instead of being unpickled.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ConfigError(
            f"{path}: not a readable safetensors file ({e}); it is damaged or was not written by "
            "dyn-adapter (pickled checkpoints are never loaded): save or train the model again"
        ) from None


def load_model(ckpt_dir: str | Path) -> DynAdapterViT:
    """Rebuild a saved model: the backbone from its source (hash checked), then its weights."""
    cfg, _ = read_config(ckpt_dir)
    model = create_dyn_adapter(cfg)
    load_trainable(model, ckpt_dir)
    return model


def load_for_inference(ckpt_dir: str | Path, device: torch.device | str = "cpu") -> DynAdapterViT:
    """A saved model ready for inference: merged when every PETL layer can be, in eval mode.

    LoRA and RepAdapter fold into the frozen weights, so inference costs exactly the
    backbone's FLOPs; adapters that cannot merge run as trained. The evaluate stage and the
    MLflow serving model both load through here, so they measure and serve the same network.
    """
    model = merge_if_mergeable(load_model(ckpt_dir))
    return model.to(torch.device(device)).eval()


def merge_if_mergeable(model: DynAdapterViT) -> DynAdapterViT:
    """Fold the PETL layers into the frozen weights when every one of them can be."""
    layers = petl_layers(model)
    if layers and all(isinstance(m, MergeableLayer) for m in layers):
        model.merge()
    return model
