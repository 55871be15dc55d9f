"""Read a prepared-dataset directory written by :func:`dyn_adapter.data.prepare.run`.

Layout::

    out_dir/
      manifest.json                      classes, splits (count, class_counts, sha256), ...
      <split>_images.npy                 uint8 [N, H, W, 3]; splits: train, val, test and,
                                         with data.calibration_size / data.selection_size,
                                         calibration / selection
      <split>_labels.npy                 int64 [N]
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..artifacts import MANIFEST_FILE
from ..errors import ConfigError

MANIFEST = MANIFEST_FILE
FORMAT_VERSION = 1
CALIBRATION_SPLIT = "calibration"  # optional: written only when data.calibration_size > 0
SELECTION_SPLIT = "selection"  # optional: written only when data.selection_size > 0
# The optional splits drawn from the training images that train and val leave, in draw order,
# with the key that sizes each.
POOL_SPLITS = {CALIBRATION_SPLIT: "data.calibration_size", SELECTION_SPLIT: "data.selection_size"}
PREPARE_HINT = "run `dyn-adapter prepare` first"


def split_files(split: str) -> tuple[str, str]:
    """File names of a split's images and labels."""
    return f"{split}_images.npy", f"{split}_labels.npy"


class PreparedData:
    """A prepared dataset: the manifest, and each split as arrays.

    Args:
        out_dir: The directory ``prepare`` wrote.

    Attributes:
        manifest: The parsed ``manifest.json``.
        classes: Class names; labels index into them.
        num_classes: ``len(classes)``.
        data_config: The backbone's input size, mean/std and interpolation
            (:func:`dyn_adapter.data.transforms.resolve_data_config`).
    """

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.manifest = self._read_manifest()
        try:
            self.classes: list[str] = list(self.manifest["classes"])
            self.num_classes: int = int(self.manifest["num_classes"])
            self.data_config: dict[str, Any] = dict(self.manifest["data_config"])
            self._splits: dict[str, Any] = dict(self.manifest["splits"])
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(
                f"{self.out_dir / MANIFEST}: incomplete manifest ({e!r}); {PREPARE_HINT}"
            ) from None

    def _read_manifest(self) -> dict[str, Any]:
        path = self.out_dir / MANIFEST
        if not path.is_file():
            raise ConfigError(
                f"{self.out_dir}: no prepared data ({MANIFEST} missing); {PREPARE_HINT}"
            )
        try:
            manifest = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path}: unreadable ({e}); {PREPARE_HINT}") from None
        version = manifest.get("format_version") if isinstance(manifest, dict) else None
        if version != FORMAT_VERSION:
            raise ConfigError(
                f"{path}: format_version {version!r}, this code reads {FORMAT_VERSION}; "
                f"{PREPARE_HINT} again"
            )
        return manifest

    def check_model_classes(self, num_classes: int, model_dir: str | Path) -> None:
        """Refuse a model whose heads have another number of classes than this data."""
        if num_classes != self.num_classes:
            raise ConfigError(
                f"{model_dir}: the model has {num_classes} classes, the prepared data "
                f"{self.out_dir} has {self.num_classes}; it was trained on other data: use the "
                "model trained on this data, or this model's data"
            )

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the stored images (every split has the same)."""
        height, width = self.manifest["image_size"]
        return int(height), int(width)

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Images (uint8 ``[N, H, W, 3]``, memory-mapped, read-only) and int64 labels ``[N]``.

        Raises:
            ConfigError: An unknown or empty split, or files that do not match the manifest.
        """
        info = self._splits.get(name)
        if info is None and name in POOL_SPLITS:
            raise ConfigError(
                f"{self.out_dir}: no {name} split; prepare with {POOL_SPLITS[name]} > 0 "
                "(images of the training pool left unused), or name another split"
            )
        if info is None:
            raise ConfigError(f"{self.out_dir}: no split {name!r}; splits: {sorted(self._splits)}")
        if info["count"] == 0:
            raise ConfigError(
                f"{self.out_dir}: the {name} split is empty; add images for it to the source and "
                "run `dyn-adapter prepare` again"
            )
        images_name, labels_name = split_files(name)
        try:
            images = np.load(self.out_dir / images_name, mmap_mode="r")
            labels = np.load(self.out_dir / labels_name)
        except (OSError, ValueError) as e:
            raise ConfigError(
                f"{self.out_dir}: cannot read split {name!r} ({e}); {PREPARE_HINT}"
            ) from None
        if len(images) != info["count"] or len(labels) != info["count"]:
            raise ConfigError(
                f"{self.out_dir}: split {name!r} holds {len(images)} images and {len(labels)} "
                f"labels, the manifest says {info['count']}; {PREPARE_HINT} again"
            )
        return images, labels


def batches(
    images: np.ndarray, labels: np.ndarray, batch_size: int, order: np.ndarray | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """uint8 image and label tensors, ``batch_size`` at a time, in ``order`` (default: as stored)."""
    n = len(labels)
    order = np.arange(n) if order is None else order
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        yield (
            torch.from_numpy(np.ascontiguousarray(images[idx])),
            torch.from_numpy(np.asarray(labels[idx])),
        )
