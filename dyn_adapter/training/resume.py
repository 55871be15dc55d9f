"""Per-epoch training checkpoints (safetensors + JSON, never pickles) for exact resumption.

Each checkpoint is a directory ``epoch-NNNN`` written under a temporary name and renamed into
place, so a run killed at any moment leaves either the previous checkpoint or the new one,
never a half-written one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..models import DynAdapterViT
from ..models.checkpoint import read_safetensors, trainable_state_dict

_PREFIX = "epoch-"


def save_training_state(
    root: Path,
    epoch: int,
    model: DynAdapterViT,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
) -> Path:
    """Checkpoint after ``epoch`` (1-based count of finished epochs); older ones are removed."""
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{_PREFIX}{epoch:04d}.", dir=root))
    try:
        save_file(trainable_state_dict(model), str(tmp / "weights.safetensors"))
        opt = optimizer.state_dict()
        tensors = {
            f"{i}.{k}": v.detach().cpu().contiguous()
            for i, s in opt["state"].items()
            for k, v in s.items()
        }
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "state.json").write_text(
            json.dumps({"epoch": epoch, "param_groups": opt["param_groups"], **state}, indent=1)
        )
        final = root / f"{_PREFIX}{epoch:04d}"
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in root.glob(f"{_PREFIX}*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_training_state(root: Path) -> Path | None:
    done = sorted(root.glob(f"{_PREFIX}[0-9]*")) if root.is_dir() else []
    return done[-1] if done else None


def load_training_state(
    path: Path, model: DynAdapterViT, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Restore weights and optimizer from ``path``; returns the saved state (``epoch``, ...)."""
    model.load_state_dict(read_safetensors(path / "weights.safetensors"), strict=False)
    state = json.loads((path / "state.json").read_text())
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    for key, t in read_safetensors(path / "optimizer.safetensors").items():
        i, name = key.split(".", 1)
        per_param.setdefault(int(i), {})[name] = t
    optimizer.load_state_dict({"state": per_param, "param_groups": state.pop("param_groups")})
    return state
