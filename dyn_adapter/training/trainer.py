"""Multi-exit training with adaptive prioritisation of the exits' losses.

:func:`train` is the train stage's work (:mod:`dyn_adapter.stages.train`). Everything random in an epoch is seeded from
(seed, epoch), and a checkpoint is written after every epoch, so a run that is killed and
started again on the same output directory ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..artifacts import CHECKPOINTS_DIR, MANIFEST_FILE, METRICS_FILE, MODEL_DIR, TRAIN_LOG
from ..config import to_dict
from ..console import record_progress
from ..data.prepared import PreparedData
from ..errors import ConfigError, TrainingDiverged
from ..files import write_json
from ..inference import EagerEngine, amp_dtype, exit_logits, resolve_device
from ..manifest import config_hash, stage_manifest
from ..models import DynAdapterViT, ModelConfig, create_dyn_adapter, load_trainable, save_trainable
from ..models.checkpoint import read_config
from .config import TrainConfig, TrainResult
from .head_cache import (
    backbone_is_frozen,
    cache_split,
    cached_epoch,
    cached_logits,
    warm_up_heads,
)
from .loop import EpochStats, exit_stats, train_epoch
from .resume import latest_training_state, load_training_state, save_training_state
from .schedules import cosine_lr, loss_weights
from .sparsity import GradientMasker, apply_forward_sparsity

logger = logging.getLogger(__name__)
TRAJECTORY_SPLITS = ("train", "val")  # the splits training epochs read (test only at the end)


def build_optimizer(model: DynAdapterViT, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with two groups: PETL modules at ``lr``, exit heads at ``lr * head_lr_scale``."""
    heads = [p for p in model.heads.parameters() if p.requires_grad]
    head_ids = {id(p) for p in heads}
    petl = [p for p in model.trainable_parameters() if id(p) not in head_ids]
    groups = [
        {"params": petl, "lr_scale": 1.0},
        {"params": heads, "lr_scale": cfg.head_lr_scale},
    ]
    return torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=cfg.lr, weight_decay=cfg.weight_decay
    )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    data_dir: str | Path,
    out_dir: str | Path,
    init_from: str | Path | None = None,
) -> TrainResult:
    """Train a Dyn-Adapter model on a prepared dataset, resuming from ``out_dir`` if it holds a run.

    Args:
        model_cfg: Architecture; ``num_classes`` is taken from the data.
        train_cfg: The recipe.
        data_dir: A directory written by ``prepare``.
        out_dir: Where the model, logs, metrics, manifest and checkpoints go.
        init_from: A model directory to start from (sparsity tuning starts from ``train``'s).
    """
    out = Path(out_dir)
    data = PreparedData(data_dir)
    model_cfg = dataclasses.replace(model_cfg, num_classes=data.num_classes)
    config = {"model": to_dict(model_cfg), "train": to_dict(train_cfg)}
    # A run is its config and the splits its epochs read: a split added to the data later
    # (calibration, selection) or another test subset (scored only at the end) leaves it as it was.
    read = {k: v for k, v in data.manifest.get("splits", {}).items() if k in TRAJECTORY_SPLITS}
    run_id = config_hash({**config, "data": read, "init_from": str(init_from or "")})
    device = resolve_device(train_cfg.device)

    if init_from is not None:  # before building anything: the classes come from the data
        data.check_model_classes(read_config(init_from)[0].num_classes, init_from)
    seed_everything(train_cfg.seed)
    model = create_dyn_adapter(model_cfg)
    if init_from is not None:
        load_trainable(model, Path(init_from))
    model.to(device)
    optimizer = build_optimizer(model, train_cfg)
    train_x, train_y = data.split("train")
    val_x, val_y = data.split("val")
    frozen = backbone_is_frozen(model)
    train_cache = val_cache = None
    if frozen:  # the tokens never change: compute them once, train the heads on them
        train_cache = cache_split(model, train_x, train_y, data.data_config, train_cfg, device)
        val_cache = cache_split(
            model, val_x, val_y, data.data_config, train_cfg, device, train=False
        )
    epoch_size = len(train_cache) if train_cache is not None else len(train_y)
    steps_per_epoch = -(-epoch_size // train_cfg.batch_size)
    total_steps = train_cfg.epochs * steps_per_epoch

    log: list[dict[str, Any]] = []
    start_epoch = 0
    session = 0  # which process trained an epoch: 0 the first, +1 each time the run resumes
    latest = latest_training_state(out / CHECKPOINTS_DIR)
    if latest is not None:
        state = load_training_state(latest, model, optimizer)
        if state.get("run_id") != run_id:
            raise ConfigError(
                f"{out} holds a training run with another config or data; use a new output "
                f"directory, or delete {out / CHECKPOINTS_DIR} to start over"
            )
        start_epoch, log, session = state["epoch"], state["log"], state.get("session", 0) + 1
        logger.info("resuming %s after epoch %d", out, start_epoch)
    elif not frozen and init_from is None and train_cfg.head_warmup.epochs > 0:
        _warm_up(model, train_x, train_y, data.data_config, train_cfg, device)

    apply_forward_sparsity(model, train_cfg.sparsity)
    masker = GradientMasker(model, train_cfg.sparsity)
    scaler = (
        torch.amp.GradScaler("cuda") if device.type == "cuda" and train_cfg.amp == "fp16" else None
    )

    def lr_at(step: int) -> float:
        return cosine_lr(
            step,
            total_steps,
            train_cfg.warmup_epochs * steps_per_epoch,
            train_cfg.lr,
            train_cfg.min_lr,
        )

    from tqdm.auto import tqdm

    for epoch in range(start_epoch, train_cfg.epochs):
        # Everything random in this epoch derives from (seed, epoch): resumption is exact.
        epoch_seed = train_cfg.seed * 100_003 + epoch
        torch.manual_seed(epoch_seed)
        generator = torch.Generator().manual_seed(epoch_seed)
        weights = loss_weights(train_cfg.loss_weights, model.num_exits, epoch, train_cfg.epochs)
        tic = time.perf_counter()
        with tqdm(
            total=epoch_size,
            desc=f"epoch {epoch + 1}/{train_cfg.epochs}",
            unit="img",
            leave=False,
            disable=None,
        ) as bar:
            try:
                if train_cache is not None and val_cache is not None:
                    stats = cached_epoch(
                        model,
                        optimizer,
                        train_cache,
                        batch_size=train_cfg.batch_size,
                        weights=weights,
                        lr_at=lr_at,
                        first_step=epoch * steps_per_epoch,
                        generator=generator,
                        device=device,
                        label_smoothing=train_cfg.label_smoothing,
                        distill=train_cfg.distill,
                        after_backward=masker if train_cfg.sparsity.backward else None,
                    )
                    bar.update(epoch_size)
                else:
                    stats = train_epoch(
                        model,
                        optimizer,
                        train_x,
                        train_y,
                        data_config=data.data_config,
                        batch_size=train_cfg.batch_size,
                        weights=weights,
                        lr_at=lr_at,
                        first_step=epoch * steps_per_epoch,
                        generator=generator,
                        augment=train_cfg.augment,
                        device=device,
                        amp=train_cfg.amp,
                        label_smoothing=train_cfg.label_smoothing,
                        distill=train_cfg.distill,
                        exit_gradient=train_cfg.exit_gradient,
                        after_backward=masker if train_cfg.sparsity.backward else None,
                        scaler=scaler,
                        progress=bar.update,
                    )
            except FloatingPointError as e:
                raise _diverged(e, epoch, train_cfg, out) from e
        if val_cache is not None:
            val = exit_stats(cached_logits(model, val_cache, train_cfg.eval_batch_size), val_y)
        else:
            val = _evaluate(model, val_x, val_y, data.data_config, train_cfg, device)
        log.append(
            _epoch_record(
                epoch,
                lr_at((epoch + 1) * steps_per_epoch - 1),
                weights,
                stats,
                val,
                time.perf_counter() - tic,
                session,
            )
        )
        logger.info(
            "epoch %d/%d  loss %s  val acc %s",
            epoch + 1,
            train_cfg.epochs,
            _fmt(stats.loss),
            _fmt(val.accuracy),
        )
        record_progress(
            "train", epoch=epoch + 1, epochs=train_cfg.epochs, val_accuracy=val.accuracy
        )
        save_training_state(
            out / CHECKPOINTS_DIR,
            epoch + 1,
            model,
            optimizer,
            {"run_id": run_id, "log": log, "session": session},
        )
        write_json(out / TRAIN_LOG, {"epochs": log})

    return _finish(model, data, train_cfg, config, log, out, device, init_from)


def _warm_up(
    model: DynAdapterViT,
    images: np.ndarray,
    labels: np.ndarray,
    data_config: dict[str, Any],
    cfg: TrainConfig,
    device: torch.device,
) -> None:
    """Train the heads on cached tokens of the still-untrained model (see ``head_cache``)."""
    cache = cache_split(model, images, labels, data_config, cfg, device)
    history = warm_up_heads(
        model,
        cache,
        cfg.head_warmup,
        lr=cfg.head_warmup.lr,
        min_lr=cfg.min_lr,
        weight_decay=cfg.weight_decay,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        device=device,
        label_smoothing=cfg.label_smoothing,
    )
    logger.info(
        "head warm-up: %d epochs over %d cached images, train acc %s",
        cfg.head_warmup.epochs,
        len(cache),
        _fmt(history[-1].accuracy),
    )


def _diverged(e: FloatingPointError, epoch: int, cfg: TrainConfig, out: Path) -> TrainingDiverged:
    """The error for a loss that stopped being finite: where, what was kept, what to do."""
    last = latest_training_state(out / CHECKPOINTS_DIR)
    kept = (
        f"the last finished epoch's checkpoint is kept in {last}"
        if last is not None
        else "nothing was saved (no epoch had finished)"
    )
    again = (
        f", into a new output directory or after deleting {out / CHECKPOINTS_DIR} (a changed "
        "config does not resume)"
        if last is not None
        else ""
    )
    return TrainingDiverged(
        f"training diverged in epoch {epoch + 1}/{cfg.epochs}: {e}; no model was written from the "
        f"diverged weights and {kept}; lower train.lr (now {cfg.lr:g}) and train again{again}"
    )


def _epoch_record(
    epoch: int,
    lr: float,
    weights: list[float],
    train: EpochStats,
    val: EpochStats,
    seconds: float,
    session: int,
) -> dict[str, Any]:
    return {
        "epoch": epoch + 1,
        "lr": lr,
        "loss_weights": weights,
        "train_loss": train.loss,
        "train_accuracy": train.accuracy,
        "val_loss": val.loss,
        "val_accuracy": val.accuracy,
        "seconds": seconds,
        "session": session,
    }


def _fmt(values: list[float]) -> str:
    return "[" + " ".join(f"{v:.3f}" for v in values) + "]"


def _finish(
    model: DynAdapterViT,
    data: PreparedData,
    cfg: TrainConfig,
    config: dict[str, Any],
    log: list[dict[str, Any]],
    out: Path,
    device: torch.device,
    init_from: str | Path | None,
) -> TrainResult:
    """Write the final model, metrics (final epoch, never the best one) and the manifest."""
    model.cpu()
    tmp = out / f".{MODEL_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_trainable(model, tmp)
    shutil.rmtree(out / MODEL_DIR, ignore_errors=True)
    tmp.rename(out / MODEL_DIR)
    model.to(device)

    final = log[-1]
    metrics: dict[str, Any] = {
        "epochs": final["epoch"],
        "exits": [{"block": b} for b in model.exit_blocks],
        "val_accuracy": final["val_accuracy"],
        "train_loss": final["train_loss"],
    }
    test_acc = None
    if cfg.evaluate_test and "test" in data.manifest.get("splits", {}):
        test_x, test_y = data.split("test")
        test_acc = _evaluate(model, test_x, test_y, data.data_config, cfg, device).accuracy
        metrics["test_accuracy"] = test_acc
        logger.info("final-epoch test accuracy per exit: %s", _fmt(test_acc))
    for k, e in enumerate(metrics["exits"]):
        e["val_accuracy"] = final["val_accuracy"][k]
        if test_acc is not None:
            e["test_accuracy"] = test_acc[k]
    write_json(out / METRICS_FILE, metrics)
    write_json(
        out / MANIFEST_FILE,
        stage_manifest(
            "train",
            config,
            data_sha256={k: v.get("sha256") for k, v in data.manifest.get("splits", {}).items()},
            backbone_sha256=model.backbone_sha256,
            init_from=str(init_from) if init_from else None,
        ),
    )
    return TrainResult(out, out / MODEL_DIR, final["val_accuracy"], test_acc, len(log))


def _evaluate(
    model: DynAdapterViT,
    images: np.ndarray,
    labels: np.ndarray,
    data_config: dict[str, Any],
    cfg: TrainConfig,
    device: torch.device,
) -> EpochStats:
    # Validated as trained: autocast on CUDA only, the weights left in float32.
    dtype = amp_dtype(device, cfg.amp) if device.type == "cuda" else None
    engine = EagerEngine(model, device, dtype)
    logits = exit_logits(
        engine, images, labels, data_config=data_config, batch_size=cfg.eval_batch_size
    )
    return exit_stats(logits, labels)


def evaluate_split(
    model_dir: str | Path, data_dir: str | Path, split: str, cfg: TrainConfig
) -> list[float]:
    """Accuracy of every exit of a saved model on one split of a prepared dataset."""
    from ..models import load_model

    data = PreparedData(data_dir)
    device = resolve_device(cfg.device)
    model = load_model(model_dir).to(device)
    data.check_model_classes(model.num_classes, model_dir)
    images, labels = data.split(split)
    return _evaluate(model, images, labels, data.data_config, cfg, device).accuracy
