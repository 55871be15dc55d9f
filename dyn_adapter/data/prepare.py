"""The ``prepare`` stage: a source's images to fixed uint8 splits on disk.

``run`` reads Fashion-MNIST, a VTAB-1k task or an image folder (locally or from S3), draws
seeded train/val(/test) splits (class-balanced, or stratified: ``data.draw``), decodes the selected images to uint8 RGB of one
size, and writes them with a manifest (see :mod:`dyn_adapter.data.prepared`), atomically:
the output directory appears complete or not at all.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..config import to_dict
from ..errors import ConfigError
from ..files import check_replaceable, replace_dir, write_json
from ..models.config import BackboneConfig
from . import s3, sources
from .config import DataConfig
from .images import BadImage, read_rgb, read_size
from .prepared import (
    CALIBRATION_SPLIT,
    FORMAT_VERSION,
    MANIFEST,
    POOL_SPLITS,
    SELECTION_SPLIT,
    split_files,
)
from .sources import BadData, Layout, Pool
from .transforms import resolve_data_config

logger = logging.getLogger(__name__)

# Test class proportions this far (total variation distance) from train/val's are "marked":
# the thresholds were tuned on other proportions than the ones they are tested on.
MARKED_SHIFT = 0.1


@dataclass
class PrepareResult:
    """What ``prepare`` wrote: the directory, the class count, images per split, skipped inputs."""

    out_dir: Path
    num_classes: int
    counts: dict[str, int]
    skipped: int


def prepare(cfg: DataConfig, backbone: BackboneConfig, out_dir: str | Path) -> PrepareResult:
    """Prepare ``cfg``'s images for ``backbone`` into ``out_dir``, replacing it atomically.

    Everything is written into a temporary sibling directory that is renamed onto ``out_dir``
    only once complete; on any error it is removed and a previous ``out_dir`` is left as it was.

    Args:
        cfg: The source and the split sizes.
        backbone: Gives the input size images are resized to (when sources differ in size) and
            the normalisation stored in the manifest as ``data_config``.
        out_dir: The prepared-dataset directory; an existing one must be empty or a previous
            prepared dataset (it is never deleted otherwise).

    Raises:
        ConfigError: Bad configuration, missing or bad data (see ``DataConfig.on_bad``).
    """
    out_dir = Path(os.path.abspath(Path(out_dir).expanduser()))  # "." and ".." have no name
    if not out_dir.name:
        raise ConfigError(f"{out_dir}: not usable as the output directory; name a directory")
    check_replaceable(out_dir, MANIFEST, "a prepared dataset")
    data_config = resolve_data_config(backbone)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        manifest = _prepare_into(tmp, cfg, data_config)
        replace_dir(tmp, out_dir, MANIFEST, "a prepared dataset")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    counts = {name: split["count"] for name, split in manifest["splits"].items()}
    logger.info("prepared %s: %s images, %d classes", out_dir, counts, manifest["num_classes"])
    if manifest["skipped_count"]:
        logger.warning(
            "skipped %d bad inputs; they are listed under 'skipped' in %s",
            manifest["skipped_count"],
            out_dir / MANIFEST,
        )
    return PrepareResult(out_dir, manifest["num_classes"], counts, manifest["skipped_count"])


def _prepare_into(tmp: Path, cfg: DataConfig, data_config: dict[str, Any]) -> dict[str, Any]:
    """Write the splits and the manifest into ``tmp``; return the manifest."""
    root, display = _local_root(cfg)
    bad = BadData(cfg.on_bad, display)
    layout = sources.load(cfg.source, root, bad)
    if cfg.source == "vtab":
        logger.info("vtab: the task's split files define train/val; train_size/val_size unused")
    planned = plan_splits(layout, cfg, bad)
    planned, size = _image_size(planned, root, bad, tuple(data_config["input_size"][1:]))
    splits = {}
    for name in planned:
        labels = _write_split(tmp, name, planned[name], root, size, bad)
        _check_not_empty(name, labels, layout, bad)
        splits[name] = {
            "count": len(labels),
            "class_counts": np.bincount(labels, minlength=len(layout.classes)).tolist(),
            "sha256": _sha256(tmp / f for f in split_files(name)),
        }
    shift = class_shift(splits)
    if shift["marked"]:
        logger.warning("%s", shift["note"])
    manifest = {
        "format_version": FORMAT_VERSION,
        "source": cfg.source,
        "path": display,
        "classes": layout.classes,
        "num_classes": len(layout.classes),
        "splits": splits,
        "class_shift": shift,
        "skipped": bad.skipped,
        "skipped_count": len(bad.skipped),
        "data_config": data_config,
        "image_size": list(size),
        "config": to_dict(cfg),
        "seed": cfg.seed,
    }
    write_json(tmp / MANIFEST, manifest)
    return manifest


def _local_root(cfg: DataConfig) -> tuple[Path, str]:
    """The local data directory and how messages name it (the s3:// URL for S3 data)."""
    if s3.is_s3_url(cfg.path):
        return s3.download_prefix(cfg.path, cfg.s3_endpoint_url), str(s3.parse_url(cfg.path))
    root = Path(cfg.path).expanduser().absolute()
    return root, str(root)


# --- which images go where ---------------------------------------------------------------------


def plan_splits(layout: Layout, cfg: DataConfig, bad: BadData) -> dict[str, Pool]:
    """The train/val/test selection: seeded, disjoint, class-balanced or stratified."""
    pools = layout.pools
    where = {name: bad.where(layout.origins.get(name, ".")) for name in pools}
    # Separate streams, so the test subset does not change train/val (and vice versa).
    train_rng = np.random.default_rng([cfg.seed, 0])
    test_rng = np.random.default_rng([cfg.seed, 1])
    test_size: list[tuple[str, int | None]] = [("test", cfg.test_size)]
    pool_sizes = [(CALIBRATION_SPLIT, cfg.calibration_size), (SELECTION_SPLIT, cfg.selection_size)]
    if layout.fixed_splits:
        for name, size in pool_sizes:
            if size and name not in pools:
                key = POOL_SPLITS[name]
                hint = (
                    " (`dyn-adapter vtab-data --selection N` writes one)"
                    if name == SELECTION_SPLIT
                    else ""
                )
                raise ConfigError(
                    f"{key}={size}: {where['train']} fixes its splits (VTAB-1k) and has no "
                    f"{name} split{hint}, so no training images are left for one; set {key}=0 "
                    "(or use another prepared dataset)"
                )
        test = pools["test"]
        if cfg.test_size is not None:
            (test,) = _draw(test, test_size, layout.classes, test_rng, where["test"], cfg.draw)
        fixed = {"train": pools["train"], "val": pools["val"], "test": test}
        for name, size in pool_sizes:  # a split the task's files define, where asked for
            if size and name in pools:
                pool = pools[name]
                if size > len(pool):
                    raise ConfigError(
                        f"{POOL_SPLITS[name]}={size}: {where[name]} holds {len(pool)} images "
                        f"for its {name} split; ask for at most that many"
                    )
                if size < len(pool):
                    rng = np.random.default_rng([cfg.seed, 2])
                    (pool,) = _draw(
                        pool, [(name, size)], layout.classes, rng, where[name], cfg.draw
                    )
                fixed[name] = pool
        return fixed
    # The calibration and selection images come after train and val (selection after
    # calibration) in the same seeded draw, so asking for them leaves the splits before them
    # exactly as they were without (and test, where the source has a test pool).
    sizes: list[tuple[str, int | None]] = [("train", cfg.train_size), ("val", cfg.val_size)]
    sizes += [(name, size) for name, size in pool_sizes if size]
    if "test" in pools:
        drawn = _draw(pools["train"], sizes, layout.classes, train_rng, where["train"], cfg.draw)
        test = pools["test"]
        if cfg.test_size is not None:
            (test,) = _draw(test, test_size, layout.classes, test_rng, where["test"], cfg.draw)
    else:  # one pool: the test split is what the others leave (or a subset of it)
        *drawn, test = _draw(
            pools["train"], sizes + test_size, layout.classes, train_rng, where["train"], cfg.draw
        )
    planned = dict(zip((name for name, _ in sizes), drawn, strict=True))
    return {"train": planned["train"], "val": planned["val"], "test": test} | {
        name: pool for name, pool in planned.items() if name in POOL_SPLITS
    }


def class_shift(splits: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """How far the test split's class proportions are from train+val's (total variation
    distance: half the summed absolute differences; 0 same, 1 disjoint)."""
    tuned = np.add(splits["train"]["class_counts"], splits["val"]["class_counts"])
    test = np.asarray(splits["test"]["class_counts"])
    if tuned.sum() == 0 or test.sum() == 0:
        return {"test_vs_train_val": None, "marked": False, "note": ""}
    distance = float(0.5 * np.abs(tuned / tuned.sum() - test / test.sum()).sum())
    marked = distance > MARKED_SHIFT
    note = (
        f"the test split's class proportions differ from train/val's (total variation "
        f"distance {distance:.2f} > {MARKED_SHIFT}): accuracy weighs classes differently "
        "there; read balanced accuracy, or prepare with data.draw=stratified"
        if marked
        else ""
    )
    return {"test_vs_train_val": distance, "marked": marked, "note": note}


def stratified_quota(size: int, counts: np.ndarray) -> np.ndarray:
    """Images per class for ``size`` in the proportions of ``counts`` (largest remainders)."""
    exact = size * counts / counts.sum()
    quota = np.floor(exact).astype(np.int64)
    quota[np.argsort(-(exact - quota), kind="stable")[: size - quota.sum()]] += 1
    return quota


def balanced_quota(size: int, num_classes: int) -> np.ndarray:
    """Images per class for a class-balanced ``size``; the first ``size % k`` classes get one more."""
    quota = np.full(num_classes, size // num_classes, dtype=np.int64)
    quota[: size % num_classes] += 1
    return quota


def _draw(
    pool: Pool,
    sizes: list[tuple[str, int | None]],
    classes: list[str],
    rng: np.random.Generator,
    where: str,
    draw: str = "balanced",
) -> list[Pool]:
    """Disjoint subsets of ``pool``, one per ``(split, size)``, class-balanced or stratified.

    A size of None takes everything the earlier subsets left, in pool order; drawn subsets
    come in a seeded random order. ``where`` names the pool in messages.
    """
    num_classes = len(classes)
    by_class = [rng.permutation(np.flatnonzero(pool.labels == c)) for c in range(num_classes)]
    remaining = np.array([len(m) for m in by_class])
    quotas: list[np.ndarray | None] = []
    for _, size in sizes:
        if size is None:
            quotas.append(None)
            continue
        # Stratified: in the proportions of what earlier splits left, so that rounding never
        # asks a small class for more images than it has.
        drawn = (
            balanced_quota(size, num_classes)
            if draw == "balanced"
            else stratified_quota(size, remaining)
        )
        quotas.append(drawn)
        remaining = remaining - drawn
    needed = sum((q for q in quotas if q is not None), np.zeros(num_classes, dtype=np.int64))
    for c, members in enumerate(by_class):
        if len(members) < needed[c]:
            asked = " + ".join(f"data.{name}_size={size}" for name, size in sizes if size)
            raise ConfigError(
                f"{asked} need {needed[c]} images of class {classes[c]!r}, but {where} has "
                f"{len(members)}; lower the sizes or add images"
            )
    start = np.zeros(num_classes, dtype=np.int64)
    subsets = []
    for quota in quotas:
        if quota is None:
            rest = [m[s:] for m, s in zip(by_class, start, strict=True)]
            subsets.append(pool.take(np.sort(np.concatenate(rest))))
            continue
        chosen = [m[s : s + q] for m, s, q in zip(by_class, start, quota, strict=True)]
        subsets.append(pool.take(rng.permutation(np.concatenate(chosen))))
        start += quota
    return subsets


# --- writing -------------------------------------------------------------------------------------


def _image_size(
    planned: dict[str, Pool], root: Path, bad: BadData, input_size: tuple[int, ...]
) -> tuple[dict[str, Pool], tuple[int, int]]:
    """The one stored size, and the splits without files whose header cannot be read.

    When all selected images share a size it is kept (no resampling); otherwise everything is
    resized to the backbone's input size.
    """
    sizes: set[tuple[int, int]] = set()
    readable = {}
    for name, pool in planned.items():
        if pool.images is not None:
            sizes.add((pool.images.shape[1], pool.images.shape[2]))
            readable[name] = pool
            continue
        keep = []
        for i, rel in enumerate(tqdm(pool.files, desc=f"check {name}", unit="img", disable=None)):
            try:
                sizes.add(read_size(root / rel))
                keep.append(i)
            except BadImage as e:
                bad.report(rel, str(e), "replace or delete the file")
        readable[name] = pool.take(keep)
    if len(sizes) == 1:
        return readable, sizes.pop()
    height, width = input_size
    return readable, (int(height), int(width))


def _write_split(
    tmp: Path, name: str, pool: Pool, root: Path, size: tuple[int, int], bad: BadData
) -> np.ndarray:
    """Write ``<name>_images.npy`` and ``<name>_labels.npy``; return the labels written."""
    images_path, labels_path = (tmp / f for f in split_files(name))
    if pool.images is not None:
        images = pool.images if pool.images.ndim == 4 else np.repeat(pool.images[..., None], 3, -1)
        np.save(images_path, np.ascontiguousarray(images, dtype=np.uint8))
        labels = pool.labels
    else:
        labels = _write_files(images_path, name, pool, root, size, bad)
    np.save(labels_path, labels.astype(np.int64))
    return labels


def _write_files(
    path: Path, name: str, pool: Pool, root: Path, size: tuple[int, int], bad: BadData
) -> np.ndarray:
    """Decode ``pool``'s files straight into a memory-mapped ``.npy`` (no full copy in RAM)."""
    assert pool.files is not None
    height, width = size
    if not pool.files:
        np.save(path, np.zeros((0, height, width, 3), dtype=np.uint8))
        return pool.labels
    out = np.lib.format.open_memmap(
        path, mode="w+", dtype=np.uint8, shape=(len(pool.files), height, width, 3)
    )
    kept: list[int] = []
    for i, rel in enumerate(tqdm(pool.files, desc=f"load {name}", unit="img", disable=None)):
        try:
            out[len(kept)] = read_rgb(root / rel, size)
            kept.append(i)
        except BadImage as e:
            bad.report(rel, str(e), "replace or delete the file")
    out.flush()
    if len(kept) < len(pool.files):  # skipped images left unused rows at the end: drop them
        shrunk = path.with_name(f"shrunk-{path.name}")
        np.save(shrunk, out[: len(kept)])
        del out
        os.replace(shrunk, path)
    return pool.labels[kept]


def _check_not_empty(name: str, labels: np.ndarray, layout: Layout, bad: BadData) -> None:
    if len(labels):
        return
    origin = layout.origins.get(name) or layout.origins.get("train", ".")
    message = f"the {name} split is empty"
    if name == "train" or not bad.skip:
        raise ConfigError(f"{bad.where(origin)}: {message}; add images for it (or lower the sizes)")
    logger.warning("%s: %s", bad.where(origin), message)


def _sha256(paths: Iterable[Path]) -> str:
    """One hash over the concatenated files (a split's images, then its labels)."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    return h.hexdigest()


# --- atomic replacement ---------------------------------------------------------------------------
