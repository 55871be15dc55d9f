"""The ``prepare`` stage: the configured source into seeded train/val/test splits."""

from __future__ import annotations

from pathlib import Path

from ..data.prepare import PrepareResult, prepare
from ..params import Params


def run(params: Params, out_dir: str | Path) -> PrepareResult:
    """Read ``params.data``'s images, preprocessed for ``params.model.backbone``, into
    ``out_dir`` (replaced atomically)."""
    return prepare(params.data, params.model.backbone, out_dir)


def metrics(result: PrepareResult) -> dict[str, float]:
    return {f"{split}_images": float(n) for split, n in result.counts.items()} | {
        "classes": float(result.num_classes),
        "skipped": float(result.skipped),
    }


def describe(result: PrepareResult, out_dir: Path) -> str:
    """The command's result line."""
    return (
        f"prepared {result.counts} ({result.num_classes} classes, {result.skipped} skipped) "
        f"-> {result.out_dir}"
    )
