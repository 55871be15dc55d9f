"""The prepare stage: sources, seeded balanced splits, image conversion, bad data, atomicity."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dyn_adapter.config import from_dict
from dyn_adapter.data import images, sources
from dyn_adapter.data.config import DataConfig
from dyn_adapter.data.prepare import balanced_quota, stratified_quota
from dyn_adapter.data.prepare import prepare as prepare_data
from dyn_adapter.data.prepared import PreparedData
from dyn_adapter.errors import ConfigError
from dyn_adapter.models import BackboneConfig

TINY = BackboneConfig(name="vit_tiny_patch16_224", weights="none", img_size=32)
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["cat", "dog", "fox"]
MODES = ["RGB", "L", "RGBA", "I;16", "P"]


# --- synthetic data --------------------------------------------------------------------------


def save_image(path: Path, mode: str = "RGB", size: tuple[int, int] = (20, 24), seed: int = 0):
    """A random image of ``mode`` and ``(height, width)`` ``size``, written with PIL."""
    rng = np.random.default_rng(seed)
    h, w = size
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    elif mode == "L":
        img = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8))
    elif mode == "RGBA":
        img = Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8))
    else:
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        img = img.convert(mode) if mode != "RGB" else img
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def make_imagefolder(root: Path, per_class: int = 6, varied: bool = True) -> Path:
    """``root/<class>/<i>.png`` in every mode; sizes vary unless ``varied`` is False."""
    for c, name in enumerate(CLASSES):
        for i in range(per_class):
            size = (16 + 3 * i, 20 + c) if varied else (20, 24)
            save_image(root / name / f"{i}.png", MODES[i % len(MODES)], size, seed=10 * c + i)
    return root


def make_vtab(root: Path, train: int = 6, val: int = 3, test: int = 6) -> Path:
    """A VTAB-1k-style task with 3 classes; train paths carry ``images/``, the others do not."""
    counts = {"train800.txt": train, "val200.txt": val, "test.txt": test}
    for s, (split_file, n) in enumerate(counts.items()):
        lines = []
        for i in range(n):
            name = f"{split_file[:-4]}_{i}.jpg"
            save_image(root / "images" / name, MODES[i % 2], (20 + i, 24), seed=100 * s + i)
            ref = f"images/{name}" if split_file == "train800.txt" else name
            lines.append(f"{ref} {i % 3}")
        (root / split_file).write_text("\n".join(lines) + "\n")
    (root / "train800val200.txt").write_text("")  # present in VTAB-1k, not used
    return root


def write_idx(path: Path, array: np.ndarray) -> None:
    magic = 0x0803 if array.ndim == 3 else 0x0801
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def make_fashion_mnist(root: Path, per_class: int = 6, test_per_class: int = 2) -> Path:
    """Tiny IDX files; image ``i`` of a pool has pixel ``[0, 0] = i`` so each is unique."""
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", per_class), ("t10k", test_per_class)):
        labels = np.tile(np.arange(10), n)
        images = np.zeros((len(labels), 28, 28), dtype=np.uint8)
        images[:, 0, 0] = np.arange(len(labels))
        images[:, 1, 1] = 200 if prefix == "t10k" else 100
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


def prepare(tmp_path: Path, name: str = "out", **data) -> tuple[PreparedData, dict]:
    result = prepare_data(DataConfig(**data), TINY, tmp_path / name)
    prepared = PreparedData(result.out_dir)
    assert result.counts == {k: v["count"] for k, v in prepared.manifest["splits"].items()}
    return prepared, prepared.manifest


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def rows(images: np.ndarray) -> set[bytes]:
    return {image.tobytes() for image in images}


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"train_size": 0}, r"data\.train_size: must be >= 1"),
        ({"val_size": -1}, r"data\.val_size: must be >= 1"),
        ({"test_size": 0}, r"data\.test_size: must be >= 1"),
        ({"calibration_size": -1}, r"data\.calibration_size: must be >= 0"),
        ({"selection_size": -1}, r"data\.selection_size: must be >= 0"),
        ({"seed": -1}, r"data\.seed"),
        ({"source": "mnist"}, r"data\.source"),
        ({"on_bad": "ignore"}, r"data\.on_bad"),
        ({"train_size": "800"}, r"data\.train_size: expected an integer"),
        ({"tran_size": 800}, r"data\.tran_size: unknown key"),
        ({"path": "s3://"}, r"data\.path"),
        ({"s3_endpoint_url": "localhost:9000"}, r"data\.s3_endpoint_url"),
        ({"s3_endpoint_url": "http://key:secret@host"}, r"carries credentials"),
    ],
)
def test_config_errors_name_the_key(data, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(DataConfig, data, "data")


def test_balanced_quota():
    assert balanced_quota(800, 10).tolist() == [80] * 10
    assert balanced_quota(7, 3).tolist() == [3, 2, 2]


def test_stratified_quota_keeps_the_proportions():
    assert stratified_quota(10, np.array([60, 30, 10])).tolist() == [6, 3, 1]
    quota = stratified_quota(7, np.array([50, 30, 20]))
    assert quota.sum() == 7 and quota.tolist() == [4, 2, 1]  # 3.5, 2.1, 1.4: largest remainder


def make_imbalanced_folder(root: Path, counts=(24, 12, 6)) -> Path:
    for c, n in enumerate(counts):
        for i in range(n):
            save_image(root / f"class{c}" / f"{i}.png", size=(20, 24), seed=100 * c + i)
    return root


def test_a_balanced_draw_from_an_imbalanced_pool_is_marked(tmp_path, caplog):
    """One pool of 24/12/6 images: balanced train/val (6/6/6 in all) leave test at 18/6/0,
    far from train/val's equal thirds; the manifest and a warning say so."""
    root = make_imbalanced_folder(tmp_path / "pool")
    with caplog.at_level(logging.WARNING):
        _, m = prepare(tmp_path, source="imagefolder", path=str(root), train_size=12, val_size=6)
    assert m["splits"]["test"]["class_counts"] == [18, 6, 0]
    assert m["class_shift"]["test_vs_train_val"] == pytest.approx(0.5 * (5 / 12 + 1 / 12 + 1 / 3))
    assert m["class_shift"]["marked"] and "data.draw=stratified" in caplog.text


def test_a_stratified_draw_keeps_the_pools_proportions(tmp_path):
    root = make_imbalanced_folder(tmp_path / "pool")
    _, m = prepare(
        tmp_path,
        source="imagefolder",
        path=str(root),
        train_size=14,
        val_size=7,
        draw="stratified",
    )
    assert m["splits"]["train"]["class_counts"] == [8, 4, 2]
    assert m["splits"]["val"]["class_counts"] == [4, 2, 1]
    assert m["splits"]["test"]["class_counts"] == [12, 6, 3]
    assert m["class_shift"]["test_vs_train_val"] == pytest.approx(0.0)
    assert not m["class_shift"]["marked"]


# --- Fashion-MNIST ---------------------------------------------------------------------------


@pytest.mark.skipif(
    not (FASHION_MNIST / "train-images-idx3-ubyte.gz").exists(),
    reason="needs the dataset-fashion-mnist Debian package (`make setup`)",
)
def test_fashion_mnist_real(tmp_path):
    data, manifest = prepare(tmp_path)
    assert manifest["num_classes"] == 10 and data.classes[0] == "T-shirt/top"
    counts = {name: split["count"] for name, split in manifest["splits"].items()}
    assert counts == {"train": 800, "val": 200, "test": 10000}
    assert manifest["splits"]["train"]["class_counts"] == [80] * 10
    assert manifest["splits"]["val"]["class_counts"] == [20] * 10
    assert manifest["image_size"] == [28, 28]
    assert manifest["data_config"]["input_size"] == [3, 32, 32]
    train, train_labels = data.split("train")
    val, _ = data.split("val")
    test, test_labels = data.split("test")
    assert train.shape == (800, 28, 28, 3) and train.dtype == np.uint8
    assert train_labels.dtype == np.int64
    assert np.array_equal(train[..., 0], train[..., 2])  # grey repeated to 3 channels
    assert not rows(train) & rows(val)  # (the 60,000 training images are all distinct)
    # The test split is the whole test set, in its order.
    raw = sources.load_fashion_mnist(FASHION_MNIST, sources.BadData("error", ""))
    assert np.array_equal(test[..., 0], raw.pools["test"].images)
    assert np.array_equal(test_labels, raw.pools["test"].labels)
    assert rows(train[..., 0]) <= rows(raw.pools["train"].images)

    again, _ = prepare(tmp_path, "again")
    other, _ = prepare(tmp_path, "other", seed=1)
    assert np.array_equal(again.split("train")[0], train)
    assert again.manifest["splits"] == manifest["splits"]
    assert not np.array_equal(other.split("train")[0], train)
    assert other.manifest["splits"]["test"] == manifest["splits"]["test"]


def test_fashion_mnist_synthetic_sizes(tmp_path):
    root = make_fashion_mnist(tmp_path / "fm", per_class=6, test_per_class=4)
    data, manifest = prepare(tmp_path, path=str(root), train_size=23, val_size=10, test_size=20)
    assert manifest["splits"]["train"]["class_counts"] == [3, 3, 3] + [2] * 7
    assert manifest["splits"]["val"]["class_counts"] == [1] * 10
    assert manifest["splits"]["test"]["class_counts"] == [2] * 10
    train, val, test = (data.split(s)[0] for s in ("train", "val", "test"))
    assert not rows(train) & rows(val)
    assert (test[:, 1, 1] == 200).all() and (train[:, 1, 1] == 100).all()


def test_calibration_split_leaves_the_other_splits_as_they_were(tmp_path):
    root = make_fashion_mnist(tmp_path / "fm", per_class=8, test_per_class=4)
    sizes = dict(path=str(root), train_size=20, val_size=10, test_size=20)
    plain, plain_manifest = prepare(tmp_path, "plain", **sizes)
    data, manifest = prepare(tmp_path, "with", calibration_size=30, **sizes)
    assert "calibration" not in plain_manifest["splits"]
    for split in ("train", "val", "test"):  # the same images, the same order
        assert manifest["splits"][split] == plain_manifest["splits"][split]
    calibration, labels = data.split("calibration")
    assert manifest["splits"]["calibration"]["class_counts"] == [3] * 10
    # From the training pool (pixel [1, 1] is 100 there, 200 in the test pool), disjoint.
    assert (calibration[:, 1, 1] == 100).all() and len(rows(calibration)) == 30
    assert not rows(calibration) & (rows(data.split("train")[0]) | rows(data.split("val")[0]))
    with pytest.raises(ConfigError, match="no calibration split; prepare with data.calibration"):
        plain.split("calibration")


def test_selection_split_comes_after_calibration_and_leaves_it_as_it_was(tmp_path):
    root = make_fashion_mnist(tmp_path / "fm", per_class=8, test_per_class=4)
    sizes = dict(path=str(root), train_size=20, val_size=10, test_size=20, calibration_size=30)
    _, before = prepare(tmp_path, "before", **sizes)
    data, manifest = prepare(tmp_path, "with", selection_size=20, **sizes)
    assert manifest["splits"].keys() - before["splits"].keys() == {"selection"}
    for split in before["splits"]:
        assert manifest["splits"][split] == before["splits"][split]
    selection = data.split("selection")[0]
    assert (selection[:, 1, 1] == 100).all() and len(rows(selection)) == 20
    others = set().union(*(rows(data.split(s)[0]) for s in ("train", "val", "calibration")))
    assert not rows(selection) & others


def test_imagefolder_calibration_split_comes_before_the_test_rest(tmp_path):
    root = make_imagefolder(tmp_path / "folder", per_class=6)
    _, manifest = prepare(
        tmp_path,
        source="imagefolder",
        path=str(root),
        train_size=6,
        val_size=3,
        calibration_size=3,
    )
    counts = {name: split["class_counts"] for name, split in manifest["splits"].items()}
    assert counts == {"train": [2] * 3, "val": [1] * 3, "calibration": [1] * 3, "test": [2] * 3}


@pytest.mark.parametrize("key", ["calibration_size", "selection_size"])
def test_vtab_has_no_pool_to_draw_more_splits_from(tmp_path, key):
    root = make_vtab(tmp_path / "task")
    with pytest.raises(ConfigError, match=rf"data.{key}=5: .* set data.{key}=0"):
        prepare(tmp_path, source="vtab", path=str(root), **{key: 5})
    assert not (tmp_path / "out").exists()


def test_fashion_mnist_too_few_images(tmp_path):
    root = make_fashion_mnist(tmp_path / "fm", per_class=3)
    with pytest.raises(
        ConfigError,
        match=r"data\.train_size=30 \+ data\.val_size=20 need 5 .* but .*/train-images-idx3-ubyte has 3",
    ):
        prepare(tmp_path, path=str(root), train_size=30, val_size=20)


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[:100]), "cannot read"),  # truncated gzip
        (lambda p: p.write_bytes(gzip.compress(b"\0\0\x08\x01" + b"\0" * 20)), "magic"),
        (lambda p: p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes())[:-5])), "bytes"),
        (lambda p: p.unlink(), "missing; install"),
    ],
)
def test_fashion_mnist_corrupt_files(tmp_path, damage, match):
    root = make_fashion_mnist(tmp_path / "fm")
    damage(root / "train-images-idx3-ubyte.gz")
    with pytest.raises(ConfigError, match=f"train-images-idx3-ubyte.*{match}"):
        prepare(tmp_path, path=str(root))


def test_missing_data_directory(tmp_path):
    with pytest.raises(ConfigError, match="nowhere is not a directory.*dataset-fashion-mnist"):
        prepare(tmp_path, path=str(tmp_path / "nowhere"))


# --- image folders and VTAB ------------------------------------------------------------------


def test_imagefolder_mixed_modes_and_sizes(tmp_path):
    root = make_imagefolder(tmp_path / "folder", per_class=6)
    data, manifest = prepare(
        tmp_path, source="imagefolder", path=str(root), train_size=6, val_size=3
    )
    assert data.classes == CLASSES
    counts = {name: split["class_counts"] for name, split in manifest["splits"].items()}
    assert counts == {"train": [2, 2, 2], "val": [1, 1, 1], "test": [3, 3, 3]}  # test: the rest
    assert manifest["image_size"] == [32, 32]  # sizes differ: the backbone's input size
    seen = []
    for split in ("train", "val", "test"):
        images, labels = data.split(split)
        assert images.shape[1:] == (32, 32, 3) and images.dtype == np.uint8
        assert labels.dtype == np.int64 and set(labels) <= {0, 1, 2}
        seen += rows(images)
    assert len(set(seen)) == 18  # disjoint splits covering the folder


def test_imagefolder_common_size_is_kept(tmp_path):
    root = make_imagefolder(tmp_path / "folder", per_class=4, varied=False)
    data, manifest = prepare(
        tmp_path, source="imagefolder", path=str(root), train_size=3, val_size=3, test_size=3
    )
    assert manifest["image_size"] == [20, 24]
    assert data.split("test")[0].shape == (3, 20, 24, 3)


def test_imagefolder_train_test_folders(tmp_path):
    make_imagefolder(tmp_path / "folder" / "train", per_class=5)
    save_image(tmp_path / "folder" / "test" / "dog" / "a.png")
    save_image(tmp_path / "folder" / "test" / "fox" / "b.png", "L")
    data, manifest = prepare(
        tmp_path, source="imagefolder", path=str(tmp_path / "folder"), train_size=9, val_size=6
    )
    assert manifest["splits"]["test"]["class_counts"] == [0, 1, 1]
    assert data.split("test")[1].tolist() == [1, 2]


def test_imagefolder_unknown_test_class(tmp_path):
    make_imagefolder(tmp_path / "folder" / "train", per_class=3)
    save_image(tmp_path / "folder" / "test" / "owl" / "a.png")
    with pytest.raises(ConfigError, match="test/owl: class folder not in"):
        prepare(tmp_path, source="imagefolder", path=str(tmp_path / "folder"), train_size=3)


def test_image_conversion(tmp_path):
    grey = np.array([[0, 128], [255, 7]], dtype=np.uint8)
    wide = np.array([[0, 32896], [65535, 257]], dtype=np.uint16)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    Image.fromarray(wide).save(tmp_path / "wide.png")
    rgba = np.dstack([np.full((2, 2, 3), 90, np.uint8), np.zeros((2, 2), np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    Image.new("P", (2, 2), 0).save(tmp_path / "palette.png")
    assert Image.open(tmp_path / "wide.png").mode in images.SIXTEEN_BIT_MODES

    assert np.array_equal(images.read_rgb(tmp_path / "grey.png", (2, 2)), np.dstack([grey] * 3))
    scaled = np.array([[0, 128], [255, 1]], dtype=np.uint8)
    assert np.array_equal(images.read_rgb(tmp_path / "wide.png", (2, 2)), np.dstack([scaled] * 3))
    assert (images.read_rgb(tmp_path / "rgba.png", (2, 2)) == 90).all()
    assert images.read_rgb(tmp_path / "palette.png", (3, 5)).shape == (3, 5, 3)


def test_vtab_task(tmp_path):
    root = make_vtab(tmp_path / "task", train=6, val=3, test=6)
    (root / "classes.txt").write_text("a\nb\nc\n")
    data, manifest = prepare(tmp_path, source="vtab", path=str(root), train_size=1, val_size=1)
    assert data.classes == ["a", "b", "c"]
    counts = {name: split["count"] for name, split in manifest["splits"].items()}
    assert counts == {"train": 6, "val": 3, "test": 6}  # the split files, not the sizes
    assert data.split("test")[1].tolist() == [0, 1, 2, 0, 1, 2]  # whole splits keep their order
    assert data.split("train")[0].shape == (6, 32, 32, 3)

    subset, manifest = prepare(tmp_path, "subset", source="vtab", path=str(root), test_size=3)
    assert subset.classes == ["a", "b", "c"]
    assert manifest["splits"]["test"]["class_counts"] == [1, 1, 1]


def test_vtab_default_class_names(tmp_path):
    data, _ = prepare(tmp_path, source="vtab", path=str(make_vtab(tmp_path / "task")))
    assert data.classes == ["class_0", "class_1", "class_2"]


# --- bad data --------------------------------------------------------------------------------


def corrupt(path: Path) -> None:
    path.write_bytes(b"this is not an image" * 4)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the header survives: decoding fails


def empty(path: Path) -> None:
    path.write_bytes(b"")


@pytest.mark.parametrize(
    ("damage", "reason"),
    [(corrupt, "not a readable image"), (truncate, "truncated image"), (empty, "empty file")],
)
def test_bad_image_names_the_file(tmp_path, damage, reason):
    root = make_imagefolder(tmp_path / "folder", per_class=4)
    damage(root / "dog" / "2.png")
    with pytest.raises(ConfigError, match=rf"folder/dog/2\.png: {reason}.*on_bad=skip"):
        prepare(tmp_path, source="imagefolder", path=str(root), train_size=6, val_size=3)


def vtab_with_line(tmp_path: Path, line: str, split_file: str = "train800.txt") -> Path:
    root = make_vtab(tmp_path / "task")
    (root / "classes.txt").write_text("a\nb\nc\n")
    with open(root / split_file, "a") as f:
        f.write(line + "\n")
    return root


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("images/gone.jpg 1", r"train800\.txt:7: names a missing image 'images/gone\.jpg'"),
        ("images/val200_0.jpg 3", r"train800\.txt:7: label 3 out of range"),
        ("images/val200_0.jpg -1", r"train800\.txt:7: label -1 is negative"),
        ("images/val200_0.jpg cat", r"train800\.txt:7: label 'cat' is not an integer"),
        ("images/val200_0.jpg", r"train800\.txt:7: expected `<image path> <label>`"),
    ],
)
def test_bad_split_file_lines(tmp_path, line, match):
    root = vtab_with_line(tmp_path, line)
    with pytest.raises(ConfigError, match=match):
        prepare(tmp_path, source="vtab", path=str(root))


@pytest.mark.parametrize("on_bad", ["error", "skip"])
@pytest.mark.parametrize("escape", ["../outside.png", "images/../../outside.png", "ABSOLUTE"])
def test_path_escape_is_always_an_error(tmp_path, on_bad, escape):
    outside = save_image(tmp_path / "outside.png")
    escape = str(outside) if escape == "ABSOLUTE" else escape
    root = vtab_with_line(tmp_path, f"{escape} 0", "test.txt")
    with pytest.raises(ConfigError, match=r"test\.txt:7: path .* points outside the data"):
        prepare(tmp_path, source="vtab", path=str(root), on_bad=on_bad)


def test_absolute_path_inside_the_task_is_accepted(tmp_path):
    root = make_vtab(tmp_path / "task")
    (root / "test.txt").write_text(f"{root / 'images' / 'val200_0.jpg'} 2\n")
    data, _ = prepare(tmp_path, source="vtab", path=str(root))
    assert data.split("test")[1].tolist() == [2]


def test_empty_class_folder(tmp_path):
    root = make_imagefolder(tmp_path / "folder", per_class=4)
    (root / "emu").mkdir()
    (root / "emu" / "notes.txt").write_text("not an image")
    with pytest.raises(ConfigError, match=r"folder/emu: empty class folder"):
        prepare(tmp_path, source="imagefolder", path=str(root), train_size=3, val_size=3)
    # Skipped, the folder is not a class.
    data, manifest = prepare(
        tmp_path, source="imagefolder", path=str(root), train_size=3, val_size=3, on_bad="skip"
    )
    assert data.classes == CLASSES
    assert manifest["skipped"] == [{"path": "emu", "reason": "empty class folder (no image files)"}]


def test_empty_split(tmp_path):
    root = make_vtab(tmp_path / "task")
    (root / "test.txt").write_text("\n")
    with pytest.raises(ConfigError, match=r"task/test\.txt: the test split is empty"):
        prepare(tmp_path, source="vtab", path=str(root))
    # Skip mode writes it empty; reading it is refused.
    data, manifest = prepare(tmp_path, source="vtab", path=str(root), on_bad="skip")
    assert manifest["splits"]["test"]["count"] == 0
    with pytest.raises(ConfigError, match="the test split is empty"):
        data.split("test")
    (root / "train800.txt").write_text("")
    with pytest.raises(ConfigError, match="train split is empty"):  # never skippable
        prepare(tmp_path, source="vtab", path=str(root), on_bad="skip")


def test_imagefolder_leaves_no_test_images(tmp_path):
    root = make_imagefolder(tmp_path / "folder", per_class=3)
    with pytest.raises(ConfigError, match="folder: the test split is empty"):
        prepare(tmp_path, source="imagefolder", path=str(root), train_size=6, val_size=3)


def test_skip_mode_lists_and_counts_bad_inputs(tmp_path, caplog):
    root = make_vtab(tmp_path / "task", train=9)
    truncate(root / "images" / "train800_4.jpg")
    corrupt(root / "images" / "train800_5.jpg")
    empty(root / "images" / "test_1.jpg")
    with open(root / "val200.txt", "a") as f:
        f.write("gone.jpg 1\nval200_0.jpg x\n")
    with caplog.at_level(logging.WARNING):
        data, manifest = prepare(tmp_path, source="vtab", path=str(root), on_bad="skip")
    assert manifest["skipped_count"] == 5
    assert sorted(s["path"] for s in manifest["skipped"]) == [
        "images/test_1.jpg",
        "images/train800_4.jpg",
        "images/train800_5.jpg",
        "val200.txt:4",
        "val200.txt:5",
    ]
    assert {name: s["count"] for name, s in manifest["splits"].items()} == {
        "train": 7,
        "val": 3,
        "test": 5,
    }
    train, labels = data.split("train")
    assert train.shape == (7, 32, 32, 3) and labels.tolist() == [0, 1, 2, 0, 0, 1, 2]
    assert "skipped 5 bad inputs" in caplog.text
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "manifest.json",
        *(
            f"{split}_{kind}.npy"
            for split in ("test", "train", "val")
            for kind in ("images", "labels")
        ),
    ]


# --- output ----------------------------------------------------------------------------------


def test_failed_prepare_leaves_previous_output_untouched(tmp_path):
    root = make_imagefolder(tmp_path / "folder", per_class=4)
    args = dict(source="imagefolder", path=str(root), train_size=3, val_size=3)
    prepare(tmp_path, **args)
    before = snapshot(tmp_path / "out")
    truncate(root / "fox" / "3.png")
    with pytest.raises(ConfigError, match="fox/3.png"):
        prepare(tmp_path, **args)
    assert snapshot(tmp_path / "out") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "out"]  # no temp dirs left


def test_prepare_replaces_a_previous_output(tmp_path):
    root = make_imagefolder(tmp_path / "folder", per_class=4)
    prepare(tmp_path, source="imagefolder", path=str(root), train_size=3, val_size=3)
    (tmp_path / "out" / "stale.npy").write_bytes(b"old")
    _, manifest = prepare(tmp_path, source="imagefolder", path=str(root), train_size=6, val_size=3)
    assert manifest["splits"]["train"]["count"] == 6
    assert not (tmp_path / "out" / "stale.npy").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "out"]


def test_refuses_to_replace_an_unrelated_directory(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "thesis.tex").write_text("precious")
    with pytest.raises(ConfigError, match="not a prepared dataset"):
        prepare(tmp_path, path=str(make_fashion_mnist(tmp_path / "fm")), train_size=10)
    assert (tmp_path / "out" / "thesis.tex").read_text() == "precious"


def test_prepared_data_round_trip(tmp_path):
    root = make_imagefolder(tmp_path / "folder", per_class=4)
    result = prepare_data(
        DataConfig(source="imagefolder", path=str(root), train_size=3, val_size=3),
        TINY,
        tmp_path / "o",
    )
    assert result.num_classes == 3 and result.skipped == 0
    assert result.counts == {"train": 3, "val": 3, "test": 6}
    data = PreparedData(tmp_path / "o")
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert data.manifest == manifest and data.num_classes == 3
    assert data.data_config == manifest["data_config"] and data.image_size == (32, 32)
    assert manifest["config"]["source"] == "imagefolder" and manifest["seed"] == 0
    images, labels = data.split("val")
    assert isinstance(images, np.memmap) and not images.flags.writeable
    assert np.array_equal(np.load(tmp_path / "o" / "val_images.npy"), images)
    assert labels.tolist() == list(np.load(tmp_path / "o" / "val_labels.npy"))
    with pytest.raises(ConfigError, match=r"no split 'dev'; splits: \['test', 'train', 'val'\]"):
        data.split("dev")
    with pytest.raises(ConfigError, match="run `dyn-adapter prepare`"):
        PreparedData(tmp_path / "missing")


def test_a_stratified_draw_never_asks_a_small_class_for_too_many():
    """A pool of 3 + 97: train 50 and val 50 take all 100; rounding each on its own would ask
    the small class for 2 + 2 images."""
    from dyn_adapter.data.prepare import _draw
    from dyn_adapter.data.sources import Pool

    pool = Pool(labels=np.array([0] * 3 + [1] * 97))
    train, val = _draw(
        pool, [("train", 50), ("val", 50)], ["a", "b"], np.random.default_rng(0), "x", "stratified"
    )
    assert np.bincount(train.labels).tolist() == [2, 48]
    assert np.bincount(val.labels).tolist() == [1, 49]
