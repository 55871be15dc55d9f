"""Where labelled images come from: Fashion-MNIST IDX files, VTAB-1k tasks, image folders.

A source is read into a :class:`Layout`: the class names and one or more :class:`Pool` of
labelled candidates (decoded arrays, or image files named relative to the data root). Which
candidates become train/val/test is decided by :mod:`dyn_adapter.data.prepare`; image files
are only decoded there, once selected.
"""

from __future__ import annotations

import gzip
import logging
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .config import SOURCES
from .images import IMAGE_EXTENSIONS

logger = logging.getLogger(__name__)

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension

VTAB_SPLIT_FILES = {"train": "train800.txt", "val": "val200.txt", "test": "test.txt"}
# Optional: images to choose defaults on, apart from test (`dyn-adapter vtab-data --selection`).
VTAB_SELECTION = ("selection", "selection.txt")
SKIP_HINT = "or set data.on_bad=skip to skip bad images"


@dataclass
class Pool:
    """Labelled candidate images in a fixed order.

    Attributes:
        labels: int64 ``[N]`` class indices.
        images: Decoded uint8 ``[N, H, W]`` (grey) or ``[N, H, W, 3]`` images, or None.
        files: Image paths relative to the data root (POSIX style), or None.
    """

    labels: np.ndarray
    images: np.ndarray | None = None
    files: list[str] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: np.ndarray | list[int]) -> Pool:
        index = np.asarray(index, dtype=np.int64)
        return Pool(
            labels=self.labels[index],
            images=None if self.images is None else self.images[index],
            files=None if self.files is None else [self.files[i] for i in index],
        )


@dataclass
class Layout:
    """A source as read from disk.

    Attributes:
        classes: Class names; labels index into them.
        pools: ``train`` (and optionally ``test``) candidates to draw splits from, or, with
            ``fixed_splits``, the ``train``/``val``/``test`` splits themselves.
        origins: Per pool, the file or folder it came from (relative to the root), for messages.
        fixed_splits: The source defines its splits (VTAB-1k); sizes are not drawn.
    """

    classes: list[str]
    pools: dict[str, Pool]
    origins: dict[str, str] = field(default_factory=dict)
    fixed_splits: bool = False


class BadData:
    """Reports bad input: raises a ConfigError, or with ``on_bad="skip"`` records it.

    Args:
        on_bad: ``error`` or ``skip``.
        display_root: How the data root is shown in messages (the local path, or the s3:// URL
            for downloaded data), so messages name the file the user knows.
    """

    def __init__(self, on_bad: str, display_root: str) -> None:
        self.skip = on_bad == "skip"
        self.display_root = display_root.rstrip("/")
        self.skipped: list[dict[str, str]] = []

    def where(self, rel: str) -> str:
        """``rel`` (relative to the data root) as the user would name it."""
        return f"{self.display_root}/{rel}" if rel not in ("", ".") else self.display_root

    def report(self, rel: str, reason: str, fix: str) -> None:
        """Raise ConfigError naming ``rel``, or (skip mode) record it in :attr:`skipped`."""
        if not self.skip:
            raise ConfigError(f"{self.where(rel)}: {reason}; {fix}, {SKIP_HINT}")
        logger.debug("skipping %s: %s", rel, reason)
        self.skipped.append({"path": rel, "reason": reason})


def load(source: str, root: Path, bad: BadData) -> Layout:
    """Read ``source`` (``fashion-mnist``, ``vtab`` or ``imagefolder``) from directory ``root``."""
    if not root.is_dir():
        hint = " (install the Debian package dataset-fashion-mnist: `make setup`)"
        raise ConfigError(
            f"data.path: {bad.display_root} is not a directory"
            + (hint if source == "fashion-mnist" else "")
        )
    if source == "fashion-mnist":
        return load_fashion_mnist(root, bad)
    if source == "vtab":
        return load_vtab(root, bad)
    if source == "imagefolder":
        return load_imagefolder(root, bad)
    raise ConfigError(f"data.source: {source!r} is not one of {list(SOURCES)}")


# --- Fashion-MNIST -------------------------------------------------------------------------


def load_fashion_mnist(root: Path, bad: BadData) -> Layout:
    """The 60,000 training and 10,000 test images from the four IDX files in ``root``."""
    pools = {}
    for split, (images_name, labels_name) in FASHION_MNIST_FILES.items():
        images = _read_idx(_idx_path(root, images_name, bad), IDX_IMAGES_MAGIC, 3, bad)
        labels = _read_idx(_idx_path(root, labels_name, bad), IDX_LABELS_MAGIC, 1, bad)
        if len(images) != len(labels):
            raise ConfigError(
                f"{bad.where(images_name)}: {len(images)} images but {len(labels)} labels in "
                f"{labels_name}; reinstall the dataset"
            )
        if labels.max(initial=0) >= len(FASHION_MNIST_CLASSES):
            raise ConfigError(
                f"{bad.where(labels_name)}: label {labels.max()} out of range 0..9; reinstall"
            )
        pools[split] = Pool(labels=labels.astype(np.int64), images=images)
    origins = {split: names[0] for split, names in FASHION_MNIST_FILES.items()}
    return Layout(list(FASHION_MNIST_CLASSES), pools, origins)


def _idx_path(root: Path, name: str, bad: BadData) -> Path:
    """``name.gz`` or, uncompressed, ``name``."""
    for candidate in (root / f"{name}.gz", root / name):
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"{bad.where(name + '.gz')}: missing; install the Debian package dataset-fashion-mnist "
        "(`make setup`) or point data.path at a directory with the four Fashion-MNIST IDX files"
    )


def _read_idx(path: Path, magic: int, ndim: int, bad: BadData) -> np.ndarray:
    """Parse an IDX file of unsigned bytes, checking its magic number and its size."""
    name = bad.where(path.name)
    fix = "the file is corrupt or truncated; reinstall the dataset or download it again"
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise ConfigError(f"{name}: cannot read ({e}); {fix}") from None
    header = 4 + 4 * ndim
    if len(data) < header or int.from_bytes(data[:4], "big") != magic:
        raise ConfigError(f"{name}: not an IDX file with magic {magic:#010x}; {fix}")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise ConfigError(f"{name}: {len(data)} bytes, the header {shape} needs {expected}; {fix}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


# --- VTAB-1k ---------------------------------------------------------------------------------


def load_vtab(root: Path, bad: BadData) -> Layout:
    """A VTAB-1k task: ``images/`` plus ``train800.txt``, ``val200.txt`` and ``test.txt`` (and
    ``selection.txt``, the selection split, where it exists).

    Each split-file line is ``<path> <label>``, the path relative to the task directory, with or
    without the leading ``images/``. Class names come from ``classes.txt`` (one per line) when it
    exists, else ``class_<i>`` for labels ``0..max``.
    """
    names = _read_class_names(root / "classes.txt")
    files = dict(VTAB_SPLIT_FILES)
    if (root / VTAB_SELECTION[1]).is_file():
        files[VTAB_SELECTION[0]] = VTAB_SELECTION[1]
    entries = {split: _read_split_file(root, name, bad) for split, name in files.items()}
    num_classes = (
        len(names)
        if names is not None
        else 1 + max((label for rows in entries.values() for _, label, _ in rows), default=-1)
    )
    pools = {}
    for split, rows in entries.items():
        kept = []
        for rel, label, line in rows:
            if label >= num_classes:
                bad.report(
                    f"{files[split]}:{line}",
                    f"label {label} out of range: classes.txt has {num_classes} classes",
                    "fix the label or classes.txt",
                )
            else:
                kept.append((rel, label))
        pools[split] = Pool(
            labels=np.array([label for _, label in kept], dtype=np.int64),
            files=[rel for rel, _ in kept],
        )
    classes = names if names is not None else [f"class_{i}" for i in range(num_classes)]
    return Layout(classes, pools, files, fixed_splits=True)


def _read_class_names(path: Path) -> list[str] | None:
    if not path.is_file():
        return None
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise ConfigError(f"{path}: empty; list one class name per line, or delete the file")
    return names


def _read_split_file(root: Path, name: str, bad: BadData) -> list[tuple[str, int, int]]:
    """``(image path relative to root, label, line number)`` for each usable line."""
    path = root / name
    if not path.is_file():
        raise ConfigError(
            f"{bad.where(name)}: split file missing; a VTAB-1k task directory holds "
            f"images/ and {', '.join(VTAB_SPLIT_FILES.values())}"
        )
    rows = []
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        if not text.strip():
            continue
        where = f"{name}:{number}"
        parts = text.rsplit(None, 1)  # the path may contain spaces, the label does not
        if len(parts) != 2:
            bad.report(where, f"expected `<image path> <label>`, got {text!r}", "fix the line")
            continue
        raw, label_text = parts
        try:
            label = int(label_text)
        except ValueError:
            bad.report(where, f"label {label_text!r} is not an integer", "fix the label")
            continue
        if label < 0:
            bad.report(where, f"label {label} is negative", "fix the label")
            continue
        rel = _find_image(root, raw, where, bad)
        if rel is None:
            bad.report(where, f"names a missing image {raw!r}", "restore the image or fix the line")
            continue
        rows.append((rel, label, number))
    return rows


def _find_image(root: Path, raw: str, where: str, bad: BadData) -> str | None:
    """The existing image ``raw`` names, relative to ``root``; with or without ``images/``."""
    rel = inside_root(root, raw, where, bad)
    candidates = [rel] if raw.startswith("images/") else [rel, f"images/{rel}"]
    return next((c for c in candidates if (root / c).is_file()), None)


def inside_root(root: Path, raw: str, where: str, bad: BadData) -> str:
    """``raw`` as a path relative to ``root``; a ConfigError if it points outside.

    The check is lexical (``..`` and absolute paths), so symbolic links the dataset itself
    contains keep working. It is never skipped: a list file naming files outside the dataset
    is a security problem, not bad data.
    """
    base = os.path.abspath(root)
    target = os.path.normpath(os.path.join(base, raw))  # an absolute raw replaces base
    if os.path.commonpath([base, target]) != base or target == base:
        raise ConfigError(
            f"{bad.where(where)}: path {raw!r} points outside the data directory "
            f"{bad.display_root}; list files may only name images inside it (never skipped)"
        )
    return Path(os.path.relpath(target, base)).as_posix()


# --- image folders --------------------------------------------------------------------------


def load_imagefolder(root: Path, bad: BadData) -> Layout:
    """``root/<class>/*.<ext>``, or ``root/train/<class>/...`` with an optional ``root/test/``.

    Class names are the sorted folder names (of ``train/`` when it exists). Without ``train/``
    the folder is one pool; with it, ``train/`` is the pool for train and val and ``test/`` (if
    present) the pool for test. An empty class folder is bad data; skipped, it is not a class.
    """
    if (root / "train").is_dir():
        train, classes = _class_pool(root, "train", None, bad)
        pools, origins = {"train": train}, {"train": "train"}
        if (root / "test").is_dir():
            pools["test"], _ = _class_pool(root, "test", classes, bad)
            origins["test"] = "test"
        return Layout(classes, pools, origins)
    if (root / "test").is_dir():
        raise ConfigError(
            f"{bad.where('test')}: a test/ folder without train/; put the training images in "
            f"{bad.where('train')}/<class>/, or rename test/ if it is a class"
        )
    pool, classes = _class_pool(root, ".", None, bad)
    return Layout(classes, {"train": pool}, {"train": "."})


def _class_pool(
    root: Path, sub: str, classes: list[str] | None, bad: BadData
) -> tuple[Pool, list[str]]:
    """The images of ``root/sub/<class>/``; ``classes`` given: folders must be among them."""
    base = root / sub
    folders = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes is None and not folders:
        raise ConfigError(
            f"{bad.where(sub)}: no class folders; an image folder holds <class>/<image>.png "
            f"(extensions {', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    found: list[str] = []
    files: list[str] = []
    labels: list[int] = []
    for folder in folders:
        rel_dir = Path(sub, folder).as_posix()
        if classes is not None and folder not in classes:
            raise ConfigError(
                f"{bad.where(rel_dir)}: class folder not in {bad.where('train')} "
                f"({len(classes)} classes); rename it or add the class to train/"
            )
        images = sorted(
            p.name
            for p in (base / folder).iterdir()
            if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
        )
        if not images:
            bad.report(rel_dir, "empty class folder (no image files)", "add images or remove it")
            continue
        found.append(folder)
        # The test pool uses train's class indices; the defining pool numbers what it finds.
        label = classes.index(folder) if classes is not None else len(found) - 1
        files += [f"{rel_dir}/{name}" for name in images]
        labels += [label] * len(images)
    if classes is None and not found:
        raise ConfigError(f"{bad.where(sub)}: every class folder is empty; add images")
    pool = Pool(labels=np.array(labels, dtype=np.int64), files=files)
    return pool, classes if classes is not None else found
