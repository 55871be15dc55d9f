"""Bad input through the real CLI: a clear message naming the problem and where, exit code 2,
and nothing half-written (no final file, or the previous one untouched).

Cases already covered elsewhere (not repeated here):

* grey/RGBA/16-bit/palette images converted: ``test_prepare.py::test_image_conversion`` and
  ``test_imagefolder_mixed_modes_and_sizes``; corrupt/truncated/zero-byte images refused naming
  the file: ``test_prepare.py::test_bad_image_names_the_file``,
  ``test_skip_mode_lists_and_counts_bad_inputs``, ``test_failed_prepare_leaves_previous_output_untouched``.
* split-file paths escaping the data root (``..``, absolute), skip mode included:
  ``test_prepare.py::test_path_escape_is_always_an_error`` (here: the same through the CLI).
* class count and backbone hash in ``load_trainable``: ``test_model.py::test_load_refuses_*``.
* NaN, negative and too few thresholds in ``forward_dynamic``:
  ``test_model.py::test_dynamic_rejects_bad_thresholds`` (values above 1 are valid by design:
  "never exit here", as the geometric baseline writes them).
* params keys and types through ``load_params``: ``test_train.py::test_params_errors_name_the_key``.
"""

from __future__ import annotations

import json
import math
import pickle
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from conftest import TINY_PARAMS, TINY_VIT, tiny_model, write_prepared
from safetensors import safe_open
from test_prepare import make_vtab

from dyn_adapter.cli import main
from dyn_adapter.errors import ConfigError
from dyn_adapter.models import BackboneConfig, create_backbone, load_model
from dyn_adapter.params import load_params
from dyn_adapter.training import trainer as train
from dyn_adapter.training.loop import train_epoch

FAST = ["--set", "train.epochs=1", "--set", "train.evaluate_test=false"]


def cli(capsys, *args: object) -> tuple[int, str]:
    """Run ``dyn-adapter`` in-process; the exit code and stderr."""
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def error_line(err: str, command: str) -> str:
    """The CLI's one-line error (``dyn-adapter <cmd>: error: ...``); no traceback."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith(f"dyn-adapter {command}: error:")]
    assert len(lines) == 1, err
    return lines[0]


def search_cli(capsys, trained, model, data, out) -> tuple[int, str]:
    return cli(
        capsys, "search", "--params", trained.params, "--model", model, "--data", data, "--out", out
    )


def files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny model on 4-class data, trained for one epoch, shared by the tests below."""
    root = tmp_path_factory.mktemp("bad_input")
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(TINY_PARAMS))
    data = write_prepared(root / "data")
    p = load_params(params, ["train.epochs=1", "train.evaluate_test=false"])
    train.train(p.model, p.train, data, root / "train")
    return SimpleNamespace(
        root=root, params=params, data=data, out=root / "train", model=root / "train" / "model"
    )


@pytest.fixture(scope="module")
def six_classes(trained):
    """Prepared data with 6 classes: not the data the shared model was trained on."""
    return write_prepared(trained.root / "data6", num_classes=6)


# --- 1. split-file paths outside the data root ---------------------------------------------


@pytest.mark.parametrize("escape", ["../../etc/passwd", "/etc/passwd"])
def test_split_file_path_outside_the_data_is_refused(tmp_path, capsys, trained, escape):
    root = make_vtab(tmp_path / "task")  # val200.txt: 3 lines
    with open(root / "val200.txt", "a") as f:
        f.write(f"{escape} 0\n")
    out = tmp_path / "prepared"
    code, err = cli(
        capsys,
        "prepare",
        "--params",
        trained.params,
        "--set",
        "data.source=vtab",
        "--set",
        f"data.path={root}",
        "--set",
        "data.on_bad=skip",  # never skipped
        "--out",
        out,
    )
    assert code == 2
    line = error_line(err, "prepare")
    assert f"{root}/val200.txt:4: path '{escape}' points outside the data directory" in line
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["task"]  # no temporary directory left


# --- 2. a checkpoint that does not fit the data or the backbone -----------------------------


def test_init_from_a_model_of_other_classes(tmp_path, capsys, trained, six_classes):
    out = tmp_path / "out"
    code, err = cli(
        capsys,
        "train",
        "--params",
        trained.params,
        *FAST,
        "--data",
        six_classes,
        "--init-from",
        trained.model,
        "--out",
        out,
    )
    assert code == 2
    assert (
        f"{trained.model}: the model has 4 classes, the prepared data {six_classes} has 6"
        in error_line(err, "train")
    )
    assert not out.exists()


def test_init_from_a_model_of_another_backbone(tmp_path, capsys, trained):
    from safetensors.torch import save_file

    backbone = create_backbone(
        BackboneConfig(
            name="vit_tiny_patch16_224", weights="none", img_size=28, model_kwargs=dict(TINY_VIT)
        )
    )
    weights = tmp_path / "other_backbone.safetensors"  # same architecture, other weights
    save_file({k: v + 0.01 for k, v in backbone.state_dict().items()}, str(weights))
    out = tmp_path / "out"
    code, err = cli(
        capsys,
        "train",
        "--params",
        trained.params,
        *FAST,
        "--set",
        f"model.backbone.weights={weights}",
        "--data",
        trained.data,
        "--init-from",
        trained.model,
        "--out",
        out,
    )
    assert code == 2
    line = error_line(err, "train")
    assert f"{trained.model}: backbone hash" in line and "does not match" in line
    assert not out.exists()


def test_model_whose_backbone_hash_differs(tmp_path, capsys, trained):
    model = shutil.copytree(trained.model, tmp_path / "model")
    meta = json.loads((model / "model_config.json").read_text())
    meta["backbone_sha256"] = "0" * 64
    (model / "model_config.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="backbone hash 000000000000… does not match"):
        load_model(model)

    out = tmp_path / "search"
    code, err = search_cli(capsys, trained, model, trained.data, out)
    assert code == 2
    assert f"{model}: backbone hash" in error_line(err, "search")
    assert not out.exists() or files(out) == []


def test_search_with_a_model_of_other_data(tmp_path, capsys, trained, six_classes):
    out = tmp_path / "search"
    code, err = search_cli(capsys, trained, trained.model, six_classes, out)
    assert code == 2
    assert "the model has 4 classes, the prepared data" in error_line(err, "search")
    assert not out.exists() or files(out) == []


def test_evaluate_with_a_model_of_other_data(tmp_path, capsys, trained, six_classes):
    out = tmp_path / "evaluate"
    code, err = cli(
        capsys,
        "evaluate",
        "--params",
        trained.params,
        "--model",
        trained.model,
        "--search",
        tmp_path / "search",
        "--data",
        six_classes,
        "--out",
        out,
    )
    assert code == 2
    assert (
        f"{trained.model}: the model has 4 classes, the prepared data {six_classes} has 6"
        in error_line(err, "evaluate")
    )
    assert not out.exists()


# --- 3. unknown or mistyped params.yaml keys --------------------------------------------------


@pytest.mark.parametrize(
    ("section", "override", "message"),
    [
        ({"epochz": 3}, "train.epochz=3", "train.epochz: unknown key"),
        ({"epochs": "ten"}, "train.epochs=ten", "train.epochs: expected an integer, got 'ten'"),
        ({"lr": "fast"}, "train.lr=fast", "train.lr: expected a number, got 'fast'"),
        ({"lr": math.nan}, "train.lr=.nan", "train.lr: must be a finite number, got nan"),
    ],
)
@pytest.mark.parametrize("how", ["file", "override"])
def test_params_mistakes_name_the_key(tmp_path, capsys, section, override, message, how):
    params = tmp_path / "params.yaml"
    raw = json.loads(json.dumps(TINY_PARAMS))
    if how == "file":
        raw["train"].update(section)
    params.write_text(yaml.safe_dump(raw))
    extra = ["--set", override] if how == "override" else []
    out = tmp_path / "out"
    code, err = cli(
        capsys, "train", "--params", params, *extra, "--data", tmp_path / "data", "--out", out
    )
    assert code == 2
    line = error_line(err, "train")
    assert f"{params}: {message}" in line
    assert not out.exists()


@pytest.mark.parametrize(("text", "value"), [("1e-3", 1e-3), ("2E-4", 2e-4), ("1.e-2", 1e-2)])
def test_exponent_notation_is_a_number(tmp_path, text, value):
    # PyYAML reads `1e-3` (no dot) as a string; a float key takes it as the number it is.
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(TINY_PARAMS))
    assert load_params(params, [f"train.lr={text}"]).train.lr == value
    params.write_text(yaml.safe_dump(TINY_PARAMS).replace("train:\n", f"train:\n  lr: {text}\n"))
    assert load_params(params).train.lr == value
    with pytest.raises(ConfigError, match="train.epochs: expected an integer, got '1e3'"):
        load_params(params, ["train.epochs=1e3"])


# --- 4. hand-edited thresholds.json ---------------------------------------------------------


@pytest.mark.parametrize(
    ("thresholds", "message"),
    [
        ([0.5, math.nan, 0.0], r"budget 0\.5 thresholds: thresholds\[1\] = nan: thresholds must "),
        ([0.5, -0.1, 0.0], r"budget 0\.5 thresholds: thresholds\[1\] = -0\.1: .* >= 0"),
        ([0.5, 0.5], r"budget 0\.5 thresholds: thresholds: need one per exit \(3\), got 2"),
        ([0.5, "high", 0.0], r"budget 0\.5 thresholds: expected a list of numbers"),
        (None, r"budget 0\.5 thresholds: expected a list of numbers, got None"),
    ],
)
def test_evaluate_refuses_bad_thresholds_file(tmp_path, capsys, trained, thresholds, message):
    search = tmp_path / "search"
    search.mkdir()
    row = {"budget": 0.5, "thresholds": thresholds, "geometric": None}
    (search / "thresholds.json").write_text(
        json.dumps({"budgets": [row], "geometric_curve": []})  # NaN is written as NaN
    )
    out = tmp_path / "evaluate"
    out.mkdir()
    (out / "metrics.json").write_text('{"previous": true}\n')
    code, err = cli(
        capsys,
        "evaluate",
        "--params",
        trained.params,
        "--model",
        trained.model,
        "--search",
        search,
        "--data",
        trained.data,
        "--out",
        out,
    )
    assert code == 2
    line = error_line(err, "evaluate")
    assert re.search(re.escape(f"{search / 'thresholds.json'}: ") + message, line), line
    assert "run `dyn-adapter search` again" in line
    assert files(out) == ["metrics.json"]
    assert (out / "metrics.json").read_text() == '{"previous": true}\n'


# --- 5. a FLOPs budget below the first exit's cost ------------------------------------------


def test_budget_below_the_first_exit(tmp_path, capsys, trained):
    out = tmp_path / "search"
    out.mkdir()
    (out / "thresholds.json").write_text('{"previous": true}\n')
    code, err = cli(
        capsys,
        "search",
        "--params",
        trained.params,
        "--set",
        "search.budgets=[0.05, 1.0]",
        "--set",
        "search.trials=3",
        "--model",
        trained.model,
        "--data",
        trained.data,
        "--out",
        out,
    )
    assert code == 2
    line = error_line(err, "search")
    found = re.search(
        r"no thresholds meet the budget 0\.05 x full GFLOPs; the first exit alone costs "
        r"(\d\.\d\d) x full: raise the budget",
        line,
    )
    assert found, line
    model = load_model(trained.model)
    first = model.exit_info[0].gflops_cumulative / model.exit_info[-1].gflops_cumulative
    assert float(found[1]) == pytest.approx(first, abs=0.005)
    assert files(out) == ["thresholds.json"]
    assert (out / "thresholds.json").read_text() == '{"previous": true}\n'


# --- 6. an empty validation split -------------------------------------------------------------


def test_val_size_zero_is_refused(tmp_path, capsys, trained):
    out = tmp_path / "prepared"
    code, err = cli(
        capsys, "prepare", "--params", trained.params, "--set", "data.val_size=0", "--out", out
    )
    assert code == 2
    assert "data.val_size: must be >= 1, got 0" in error_line(err, "prepare")
    assert not out.exists()


def test_empty_vtab_val_split(tmp_path, capsys, trained):
    root = make_vtab(tmp_path / "task")
    (root / "val200.txt").write_text("")
    args = ["--params", trained.params, "--set", "data.source=vtab", "--set", f"data.path={root}"]
    out = tmp_path / "prepared"
    code, err = cli(capsys, "prepare", *args, "--out", out)
    assert code == 2
    assert f"{root}/val200.txt: the val split is empty" in error_line(err, "prepare")
    assert not out.exists()

    # Skipping bad data writes the empty split (and says so); training refuses it.
    assert cli(capsys, "prepare", *args, "--set", "data.on_bad=skip", "--out", out)[0] == 0
    train_out = tmp_path / "train"
    code, err = cli(
        capsys, "train", "--params", trained.params, *FAST, "--data", out, "--out", train_out
    )
    assert code == 2
    assert f"{out}: the val split is empty" in error_line(err, "train")
    assert not train_out.exists()


# --- 7. a loss that stops being finite --------------------------------------------------------


def test_diverged_training_stops_and_keeps_its_last_checkpoint(tmp_path, capsys, trained):
    # One step per epoch at lr 1e30: epoch 1's step starts from sane weights (a finite loss)
    # and throws them to ~1e30; epoch 2's loss overflows.
    args = ["train", "--params", trained.params, "--data", trained.data, "--out", tmp_path / "out"]
    recipe = [
        *("--set", "train.epochs=2", "--set", "train.evaluate_test=false"),
        *("--set", "train.batch_size=128", "--set", "train.warmup_epochs=0"),
    ]
    code, err = cli(capsys, *args, *recipe, "--set", "train.lr=1e30")
    assert code == 2
    line = error_line(err, "train")
    assert re.search(r"training diverged in epoch 2/2: loss is (nan|inf) at step 1", line), line
    out = tmp_path / "out"
    assert f"kept in {out / 'checkpoints' / 'epoch-0001'}" in line
    assert "lower train.lr (now 1e+30)" in line
    # No model from the diverged weights; epoch 1's checkpoint and log stay.
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["epoch-0001"]
    assert not (out / "model").exists()
    assert not (out / "metrics.json").exists() and not (out / "manifest.json").exists()
    assert len(json.loads((out / "train_log.json").read_text())["epochs"]) == 1

    # Fixed, on the same directory: the existing resume rule (another config) applies...
    code, err = cli(capsys, *args, *recipe, "--set", "train.lr=1e-3")
    assert code == 2 and "holds a training run with another config" in error_line(err, "train")
    # ...and after deleting the checkpoints as it says, the run goes through.
    shutil.rmtree(out / "checkpoints")
    assert cli(capsys, *args, *recipe, "--set", "train.lr=1e-3")[0] == 0
    assert (out / "model" / "adapter_model.safetensors").is_file()
    assert len(json.loads((out / "train_log.json").read_text())["epochs"]) == 2


def test_diverged_first_epoch_saves_nothing_and_blocks_nothing(tmp_path, capsys, trained):
    args = ["train", "--params", trained.params, *FAST, "--data", trained.data]
    out = tmp_path / "out"
    code, err = cli(capsys, *args, "--set", "train.lr=1e30", "--out", out)  # 4 steps per epoch
    assert code == 2
    line = error_line(err, "train")
    assert re.search(r"diverged in epoch 1/1: loss is (nan|inf) at step \d", line), line
    assert "nothing was saved (no epoch had finished)" in line
    assert not out.exists() or files(out) == []
    assert cli(capsys, *args, "--out", out)[0] == 0  # fixed: the same directory just works


def test_non_finite_weights_after_the_last_step_are_caught():
    # A loss is only checked before its step: the epoch's last update is checked on the weights.
    model = tiny_model(num_classes=4).train()
    optimizer = torch.optim.SGD(model.trainable_parameters(), lr=1.0)
    images = np.random.default_rng(0).integers(0, 256, (8, 28, 28, 3), dtype=np.uint8)
    labels = np.arange(8) % 4
    data_config = {"input_size": [3, 28, 28], "mean": [0.5] * 3, "std": [0.5] * 3}
    with pytest.raises(FloatingPointError, match="weights are not finite after step 3"):
        train_epoch(
            model,
            optimizer,
            images,
            labels,
            data_config=data_config,
            batch_size=8,  # one step: its loss is finite, its update is not
            weights=[1.0, 1.0, 1.0],
            lr_at=lambda step: math.inf,
            first_step=3,
            generator=torch.Generator().manual_seed(0),
            augment=None,
            device=torch.device("cpu"),
        )


# --- 8. no pickles in, no pickles out ---------------------------------------------------------


class RunsCode:
    """Unpickled, this creates ``marker``: a stand-in for a payload that runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def pickled_checkpoint(path: Path, marker: Path, key: str) -> Path:
    torch.save({key: RunsCode(marker)}, path)
    return path


def test_payload_would_run_if_unpickled(tmp_path):
    # The control: the payload the tests below refuse really runs code when unpickled.
    marker = tmp_path / "ran"
    path = pickled_checkpoint(tmp_path / "evil.pt", marker, "x")
    torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()
    pickle.loads(pickle.dumps(RunsCode(marker)))
    assert marker.exists()


def test_pickle_named_safetensors_is_refused(tmp_path, capsys, trained):
    model = shutil.copytree(trained.model, tmp_path / "model")
    marker = tmp_path / "ran"
    weights = pickled_checkpoint(model / "adapter_model.safetensors", marker, "heads.0.fc.weight")
    with pytest.raises(ConfigError, match="not a readable safetensors file"):
        load_model(model)
    out = tmp_path / "search"
    code, err = search_cli(capsys, trained, model, trained.data, out)
    assert code == 2
    line = error_line(err, "search")
    assert f"{weights}: not a readable safetensors file" in line and "pickled" in line
    assert not marker.exists()
    assert not out.exists() or files(out) == []


def test_pickled_resume_checkpoint_is_refused(tmp_path, capsys, trained):
    out = shutil.copytree(trained.out, tmp_path / "train")
    before = (out / "model" / "adapter_model.safetensors").read_bytes()
    marker = tmp_path / "ran"
    weights = pickled_checkpoint(
        out / "checkpoints" / "epoch-0001" / "weights.safetensors", marker, "heads.0.fc.weight"
    )
    code, err = cli(
        capsys, "train", "--params", trained.params, *FAST, "--data", trained.data, "--out", out
    )
    assert code == 2
    assert f"{weights}: not a readable safetensors file" in error_line(err, "train")
    assert not marker.exists()
    assert (out / "model" / "adapter_model.safetensors").read_bytes() == before


def test_pickled_backbone_weights_are_refused(tmp_path, capsys):
    marker = tmp_path / "ran"
    weights = pickled_checkpoint(tmp_path / "backbone.pth", marker, "cls_token")
    code, err = cli(
        capsys,
        "model-info",
        "--backbone",
        "vit_tiny_patch16_224",
        "--img-size",
        "32",
        "--weights",
        weights,
    )
    assert code == 2
    line = error_line(err, "model-info")
    assert f"backbone.weights: {weights} holds pickled Python objects besides tensors" in line
    assert not marker.exists()


def test_train_writes_only_safetensors_and_json(trained):
    written = files(trained.out)
    assert "model/adapter_model.safetensors" in written
    assert "checkpoints/epoch-0001/optimizer.safetensors" in written
    odd = [f for f in written if Path(f).suffix not in {".safetensors", ".json", ".md", ".png"}]
    assert odd == [], odd
    for f in written:  # and each file is what its name says
        path = trained.out / f
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as st:
                assert list(st.keys()), f
        elif path.suffix == ".json":
            json.loads(path.read_text())


def test_no_unsafe_deserialisation_in_the_package():
    root = Path(__file__).parents[1] / "dyn_adapter"
    unsafe = []
    for path in root.rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            code = line.split("#", 1)[0]
            if "torch.load(" in code and "weights_only=True" not in code:
                unsafe.append(f"{path}:{number}")
            if re.search(r"\bpickle\.loads?\(|allow_pickle\s*=\s*True|joblib\.load\(", code):
                unsafe.append(f"{path}:{number}")
    assert unsafe == []
