"""Shared fixtures: tiny randomly initialised timm ViTs (milliseconds per forward)."""

from __future__ import annotations

import os

import pytest
import torch

# Never reach for a model hub or telemetry from tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

from dyn_adapter.models import (  # noqa: E402
    BackboneConfig,
    DynAdapterViT,
    ExitsConfig,
    ModelConfig,
    PetlConfig,
    create_dyn_adapter,
)


def pytest_report_header() -> str:
    # The image tests write tens of GB (the image, its pushed copy): a full disk shows as
    # errors in whatever test runs next, so the header says how much there was.
    import shutil
    import tempfile

    free = shutil.disk_usage(tempfile.gettempdir()).free / 2**30
    return f"free disk under {tempfile.gettempdir()}: {free:.1f} GiB"


TINY_VIT = dict(patch_size=7, embed_dim=64, depth=6, num_heads=4)
PETL_METHODS = ["adapter", "lora", "repadapter"]


def tiny_config(petl: str = "adapter", num_classes: int = 5, **exits) -> ModelConfig:
    return ModelConfig(
        backbone=BackboneConfig(
            name="vit_tiny_patch16_224", weights="none", img_size=28, model_kwargs=dict(TINY_VIT)
        ),
        petl=PetlConfig(method=petl, dim=4, groups=2),
        exits=ExitsConfig(
            **{"blocks": [2, 4, 6], "head_depths": [2, 1, 0], "head_widths": [16, 8, 0], **exits}
        ),
        num_classes=num_classes,
    )


def tiny_model(petl: str = "adapter", num_classes: int = 5, **exits) -> DynAdapterViT:
    torch.manual_seed(0)  # PETL and head init come from the global generator
    return create_dyn_adapter(tiny_config(petl, num_classes, **exits)).eval()


@torch.no_grad()
def randomize_trainable(model: torch.nn.Module, seed: int = 0, std: float = 0.2) -> None:
    """Move the zero-initialised update paths away from zero, so tests see non-trivial PETL."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        if p.requires_grad:
            p.add_(torch.randn(p.shape, generator=g) * std)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(16, 3, 28, 28, generator=torch.Generator().manual_seed(1))


TINY_PARAMS = {
    "model": {
        "backbone": {
            "name": "vit_tiny_patch16_224",
            "weights": "none",
            "img_size": 28,
            "model_kwargs": dict(TINY_VIT),
        },
        "petl": {"method": "adapter", "dim": 4},
        "exits": {"blocks": [2, 4, 6], "head_depths": [2, 1, 0], "head_widths": [16, 8, 0]},
    },
    # Unit tests run on the CPU wherever they run: numbers are then the same on every machine.
    "train": {
        "epochs": 2,
        "batch_size": 32,
        "warmup_epochs": 1,
        "eval_batch_size": 128,
        "device": "cpu",
    },
}


def tiny_params(tmp_path, *overrides):
    """``TINY_PARAMS`` written to ``tmp_path/params.yaml`` and loaded with ``overrides``."""
    import yaml

    from dyn_adapter.params import load_params

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(TINY_PARAMS))
    return load_params(path, overrides)


def write_prepared(root, sizes=None, num_classes: int = 4, size: int = 28, seed: int = 0):
    """A prepared-dataset directory (the format ``prepare`` writes) of learnable synthetic images:
    class k is noise in the k-th brightness band."""
    import json
    from pathlib import Path

    import numpy as np

    from dyn_adapter.data.transforms import resolve_data_config
    from dyn_adapter.models import BackboneConfig

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sizes = sizes or {"train": 128, "val": 64, "test": 64}
    splits = {}
    for split, n in sizes.items():
        labels = np.arange(n) % num_classes
        # Class k: noise in the k-th brightness band (what a random-init ViT can still see).
        step = 256 // num_classes
        noise = rng.integers(0, step, (n, size, size, 3))
        images = (noise + labels[:, None, None, None] * step).astype(np.uint8)
        np.save(root / f"{split}_images.npy", images)
        np.save(root / f"{split}_labels.npy", labels.astype(np.int64))
        splits[split] = {
            "count": n,
            "class_counts": np.bincount(labels, minlength=num_classes).tolist(),
            "sha256": f"synthetic-{split}-{seed}",
        }
    backbone = BackboneConfig(name="vit_tiny_patch16_224", weights="none", img_size=size)
    from dyn_adapter.data.prepared import FORMAT_VERSION

    manifest = {
        "format_version": FORMAT_VERSION,
        "source": "synthetic",
        "path": str(root),
        "classes": [f"class_{k}" for k in range(num_classes)],
        "num_classes": num_classes,
        "splits": splits,
        "skipped": [],
        "skipped_count": 0,
        "data_config": resolve_data_config(backbone),
        "image_size": [size, size],
        "config": {},
        "seed": seed,
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.fixture
def prepared(tmp_path):
    return write_prepared(tmp_path / "prepared")


@pytest.fixture
def tiny_params_file(tmp_path):
    import yaml

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(TINY_PARAMS))
    return path


def evaluation_metrics(
    accuracy: float,
    gflops: float,
    budgets: list[tuple[float, float, float]],
    iso: tuple[float, float, float] | None,
    static_accuracy: float | None = None,
) -> dict:
    """A complete evaluate report (``metrics.json``) with the numbers a reader under test
    reads: the last exit's ``accuracy`` at ``gflops``, ``(budget, accuracy, gflops_ratio)`` per
    budget, the iso-accuracy point as one such triple (None: no budget qualified)."""

    def answers(acc):
        return {"accuracy": acc, "accuracy_interval": [acc, acc], "balanced_accuracy": acc}

    def point(p):
        budget, acc, ratio = p if p else (None, None, None)
        return {
            "budget": budget,
            "accuracy": acc,
            "accuracy_interval": None if p is None else [acc, acc],
            "balanced_accuracy": acc,
            "gflops_ratio": ratio,
        }

    rows = [
        {
            "budget": b,
            "thresholds": [0.5, 0.0],
            **answers(a),
            "val_accuracy": a,
            "val_gflops_ratio": r,
            "disagreement": 0.0,
            "gflops": r * gflops,
            "gflops_ratio": r,
            "exit_fractions": [1.0 - r, r],
            "simulated_accuracy": a,
            "simulated_gflops": r * gflops,
        }
        for b, a, r in budgets
    ]
    static = {"accuracy": None}
    if static_accuracy is not None:
        static = {**answers(static_accuracy), "per_class_recall": [], "val_accuracy": 0.0}
    return {
        "flops_unit": "GFLOPs",
        "full": {**answers(accuracy), "per_class_recall": [], "val_accuracy": accuracy,
                 "gflops": gflops},
        "static_petl": static,
        "frozen_probe": {"exits": None},
        "exits": [{"block": 1, **answers(accuracy), "gflops_cumulative": gflops / 2},
                  {"block": 2, **answers(accuracy), "gflops_cumulative": gflops}],
        "budgets": rows,
        "oracle": {"accuracy": accuracy, "gflops": gflops, "exit_fractions": [0.5, 0.5]},
        "iso_accuracy": {
            "chosen_on": "validation",
            "reference_val_accuracy": accuracy,
            **point(iso),
            "tolerance": 0.005,
            "test_read": {"chosen_on": "test", "reference_accuracy": accuracy, **point(iso)},
        },
        "half_gflops": {"max_budget": 0.5, **point(None)},
        "comparisons": {},
        "risk_control": None,
        "speed": {
            "seconds_full_b64": 1.0, "seconds_dynamic_b64": 0.5, "time_ratio_b64": 0.5,
            "seconds_full_b1": 1.0, "seconds_dynamic_b1": 0.6, "time_ratio_b1": 0.6,
            "budget": 0.5, "images": 16, "engine": "eager", "precision": "fp32", "machine": {},
        },
        "test_images": 64,
    }  # fmt: skip


def tiny_evaluated(root, sizes=None, speed_images: int = 16, overrides=()):
    """Train (1 epoch), search and evaluate a tiny model under ``root``: what registration and
    serving tests start from. Returns ``(model_dir, data_dir)``; ``root/search`` and
    ``root/evaluate`` hold the other two stage outputs; ``root/params.yaml`` with ``overrides``
    are the params used."""
    from pathlib import Path

    import yaml

    from dyn_adapter.params import load_params
    from dyn_adapter.stages import evaluate, search, train

    root = Path(root)
    data = write_prepared(root / "prepared", sizes=sizes)
    (root / "params.yaml").write_text(yaml.safe_dump(TINY_PARAMS))
    p = load_params(
        root / "params.yaml",
        [
            "train.epochs=1",
            "train.evaluate_test=false",
            "search.trials=10",
            "search.budgets=[0.5, 1.0]",
            f"evaluate.speed_images={speed_images}",
            "evaluate.speed_repeats=1",
            "evaluate.batch_size=64",
            *overrides,
        ],
    )
    train.run(p, "dyn", data, root / "train")
    model_dir = root / "train" / "model"
    search.run(p, model_dir, data, root / "search")
    evaluate.run(
        p,
        model_dir,
        root / "search",
        data,
        root / "evaluate",
    )
    return model_dir, data


@pytest.fixture(scope="session")
def subprocess_dag(tmp_path_factory):
    """The tiny demo DAG, run once per session with the KFP subprocess runner into an embedded
    MLflow store (its end-to-end test and the Docker runner's comparison both read it)."""
    from types import SimpleNamespace

    from pipelines import tiny_pipeline_params, write_vtab_task

    from dyn_adapter.mlops.store import embedded_tracking_uri
    from pipeline.runner import run_local

    base = tmp_path_factory.mktemp("subprocess-dag")
    params = tiny_pipeline_params(base, "vtab", write_vtab_task(base / "task"))
    uri = embedded_tracking_uri(base / "mlflow")
    summary = run_local(params, pipeline_root=base / "kfp", tracking_uri=uri)
    return SimpleNamespace(summary=summary, root=base / "kfp", tracking_uri=uri)
