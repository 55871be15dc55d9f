"""Tiny pipeline configurations and a learnable VTAB-layout task, for whole-DAG tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from conftest import TINY_PARAMS
from PIL import Image


def band_image(label: int, num_classes: int, rng: np.random.Generator) -> Image.Image:
    """Class k: noise in the k-th brightness band (learnable by a tiny random ViT)."""
    step = 256 // num_classes
    return Image.fromarray((rng.integers(0, step, (28, 28)) + label * step).astype(np.uint8))


def write_vtab_task(root: Path, num_classes: int = 3, seed: int = 0) -> Path:
    """A VTAB-1k-layout task: images/ plus the split files."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    for split_file, n in {"train800.txt": 48, "val200.txt": 24, "test.txt": 24}.items():
        lines = []
        for i in range(n):
            name = f"images/{split_file[:-4]}_{i}.png"
            band_image(i % num_classes, num_classes, rng).save(root / name)
            lines.append(f"{name} {i % num_classes}")
        (root / split_file).write_text("\n".join(lines) + "\n")
    return root


def tiny_pipeline_params(tmp_path: Path, source: str, data_path: Path) -> Path:
    params = json.loads(json.dumps(TINY_PARAMS))
    params["data"] = {
        "source": source,
        "path": str(data_path),
        "train_size": 48,
        "val_size": 24,
    }
    params["train"].update(epochs=2, device="cpu")
    params["sparsify"] = {"forward_rates": [0.1], "backward_keeps": [0.5, 0.8], "epochs": 1}
    params["search"] = {"budgets": [0.5, 1.0], "trials": 20}
    params["evaluate"] = {"speed_images": 16, "speed_repeats": 1, "batch_size": 64}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path
