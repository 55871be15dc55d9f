"""Open Clip Art (Debian's ``openclipart-png``) as a colour classification task.

The package files about 8,100 public-domain PNG pictures under
``/usr/share/openclipart/png/<category>/<subcategory>/``; a picture's top-level category is its
class. The rules below were fixed from the package's file counts alone, before any model saw a
picture:

1. Identical files (SHA-256 of the bytes; the package also links files into several folders)
   are one picture. A picture filed under two categories has no single label and is dropped.
2. Pictures over :data:`MAX_PIXELS` are skipped: decoding one costs gigabytes (16 files).
3. Each picture is laid on a white background (transparency, palette or grey alike), scaled so
   that its longer side is :data:`SIZE` pixels and padded to a square: nothing is cropped or
   stretched. Pictures that come out pixel-identical are one picture (rule 1 again).
4. Classes: every category with at least :data:`MIN_PER_CLASS` pictures, except ``unsorted``
   (it names no subject): twelve categories, which leaves each class test images after a
   class-balanced 800 / 200 train / val draw.
5. A class keeps at most :data:`MAX_PER_CLASS` pictures, a seeded draw, so that ``computer``
   and ``shapes`` (mostly icons and stars, about 1,600 pictures each) do not make up most of
   the test split; the test split is
   what train and val leave: 2,369 pictures with the package as Debian 12 ships it.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..errors import ConfigError
from .sources import Layout, Pool

logger = logging.getLogger(__name__)

OPENCLIPART_DIR = Path("/usr/share/openclipart/png")
SIZE = 224
BACKGROUND = (255, 255, 255)
MAX_PIXELS = 40_000_000
MIN_PER_CLASS = 90
MAX_PER_CLASS = 500
EXCLUDED = frozenset({"unsorted"})


def read_clipart(
    root: Path = OPENCLIPART_DIR,
    seed: int = 0,
    *,
    size: int = SIZE,
    min_per_class: int = MIN_PER_CLASS,
    max_per_class: int = MAX_PER_CLASS,
    max_pixels: int = MAX_PIXELS,
) -> tuple[Layout, dict]:
    """The pictures under ``root`` as one labelled pool (see the module's rules), and a record
    of what each rule removed."""
    if not root.is_dir():
        raise ConfigError(
            f"{root}: no Open Clip Art pictures here; install the Debian package openclipart-png "
            "(`make setup` does) or pass its png/ folder with --openclipart"
        )
    by_content, files = _unique_files(root)
    labelled = {h: next(iter(c)) for h, c in by_content.items() if len(c) == 1}
    counts = Counter(labelled.values())
    candidates = sorted(c for c, n in counts.items() if n >= min_per_class and c not in EXCLUDED)
    record: dict = {
        "files": sum(len(f) for f in files.values()),
        "unique_files": len(by_content),
        "dropped_in_two_categories": len(by_content) - len(labelled),
    }
    rendered: dict[bytes, tuple[str, np.ndarray]] = {}
    copies: dict[bytes, int] = defaultdict(int)  # pictures that render to each key
    conflicts: set[bytes] = set()
    too_large = 0
    chosen = sorted(h for h, c in labelled.items() if c in candidates)
    for h in tqdm(chosen, desc="clip art", unit="img", disable=None):
        image = render(files[h][0], size, max_pixels)
        if image is None:
            too_large += 1
            continue
        key = hashlib.sha256(image.tobytes()).digest()
        if key in rendered and rendered[key][0] != labelled[h]:
            conflicts.add(key)
        rendered.setdefault(key, (labelled[h], image))
        copies[key] += 1
    for key in conflicts:
        del rendered[key]
    record |= {
        "skipped_over_max_pixels": too_large,
        # pictures folded into another of the same category, and pictures dropped because one
        # like them (same pixels) is filed under another category
        "same_pixels_merged": sum(copies[k] - 1 for k in rendered),
        "same_pixels_in_two_categories": sum(copies[k] for k in conflicts),
    }
    per_class: dict[str, list[np.ndarray]] = defaultdict(list)
    for key in sorted(rendered):  # a fixed order, whatever the file system's
        label, image = rendered[key]
        per_class[label].append(image)
    classes = sorted(c for c in per_class if len(per_class[c]) >= min_per_class)
    record["dropped_classes_under_min"] = {
        c: len(per_class[c]) for c in sorted(per_class) if c not in classes
    }
    if len(classes) < 2:
        raise ConfigError(
            f"{root}: fewer than two categories with {min_per_class} or more distinct pictures "
            f"({dict(Counter(label for label, _ in rendered.values()))}); is this the png/ folder "
            "of openclipart-png?"
        )
    rng = np.random.default_rng([seed, 2])
    images, labels = [], []
    for index, name in enumerate(classes):
        pictures = per_class[name]
        keep = np.sort(rng.permutation(len(pictures))[:max_per_class])
        images += [pictures[i] for i in keep]
        labels += [index] * len(keep)
    record |= {
        "pictures_per_class": {c: len(per_class[c]) for c in classes},
        "kept_per_class": {c: min(len(per_class[c]), max_per_class) for c in classes},
        "rules": {
            "size": size,
            "background": list(BACKGROUND),
            "max_pixels": max_pixels,
            "min_per_class": min_per_class,
            "max_per_class": max_per_class,
            "excluded": sorted(EXCLUDED),
        },
    }
    pool = Pool(labels=np.asarray(labels, dtype=np.int64), images=np.stack(images))
    return Layout(classes, {"train": pool}), record


def _unique_files(root: Path) -> tuple[dict[str, set[str]], dict[str, list[Path]]]:
    """Per content hash: the categories it is filed under, and its paths (sorted)."""
    categories: dict[str, set[str]] = defaultdict(set)
    files: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(root.rglob("*.png")):
        if not path.is_file() or len(path.relative_to(root).parts) < 2:
            continue  # a dangling link, or a picture outside any category
        h = hashlib.sha256(path.read_bytes()).hexdigest()
        categories[h].add(path.relative_to(root).parts[0])
        files[h].append(path)
    return categories, files


def render(path: Path, size: int = SIZE, max_pixels: int = MAX_PIXELS) -> np.ndarray | None:
    """``path`` on a white background, letterboxed into ``size x size`` RGB; None when it has
    more than ``max_pixels`` pixels (read from the header, nothing decoded)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path)
        with opened:
            if opened.width * opened.height > max_pixels:
                return None
            rgba = opened.convert("RGBA")
    except Image.DecompressionBombError:  # PIL's own limit, far above max_pixels
        return None
    canvas = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
    flat = Image.alpha_composite(canvas, rgba).convert("RGB")
    scale = size / max(flat.size)
    w, h = max(1, round(flat.width * scale)), max(1, round(flat.height * scale))
    flat = flat.resize((w, h), Image.Resampling.LANCZOS, reducing_gap=3.0)
    square = Image.new("RGB", (size, size), BACKGROUND)
    square.paste(flat, ((size - w) // 2, (size - h) // 2))
    return np.asarray(square)
