"""The stage table is the one place a stage is declared: its command, its params, its DVC stage.

A throwaway stage is added to a copy of the package the way a developer would add one (its
module, its row, and its wiring: a ``dvc.yaml`` row and a KFP component module); nothing else
is edited, and it has a sub-command, params, a ``dvc.yaml`` stage and a component.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
from importlib import import_module
from pathlib import Path

import pytest
import yaml

from dyn_adapter.stage_table import STAGES

REPO = Path(__file__).resolve().parents[1]

STAGE_MODULE = '''"""Count the files of a prepared data directory."""

from pathlib import Path

from ..files import write_json
from ..params import Params


def run(params: Params, data_dir: str, out_dir: str) -> dict:
    result = {"files": len(list(Path(data_dir).iterdir())), "seed": params.data.seed}
    write_json(Path(out_dir) / "inventory.json", result)
    return result


def describe(result: dict, out_dir: Path) -> str:
    return f"{result['files']} files (seed {result['seed']}) -> {out_dir}"
'''

ROW = """    Stage(
        "inventory",
        ("data.seed",),
        help="count the prepared files",
        description="Count the files of the prepared data.",
        out="outputs/inventory",
        inputs=(_data(),),
        components=("count_inventory",),
    ),
"""

COMPONENT = '''"""Inventory component."""

from kfp.dsl import Dataset, Input, Output, Artifact


def count_inventory(params: dict, overrides: list, data: Input[Dataset], out: Output[Artifact]):
    from components import shim
    from dyn_adapter.stages import inventory

    with shim.user_errors("inventory"):
        inventory.run(shim.load(params, overrides), data.path, out.path)
'''


def _insert_before(path: Path, marker: str, text: str) -> None:
    source = path.read_text()
    assert source.count(marker) == 1, f"{path}: expected one {marker!r}"
    path.write_text(source.replace(marker, text + marker))


@pytest.fixture(scope="module")
def with_new_stage(tmp_path_factory):
    """A copy of the package with one stage added: module, row, DVC row, component."""
    root = tmp_path_factory.mktemp("house")
    ignore = shutil.ignore_patterns("__pycache__")
    for package in ("dyn_adapter", "components"):
        shutil.copytree(REPO / package, root / package, ignore=ignore)
    (root / "dyn_adapter/stages/inventory.py").write_text(STAGE_MODULE)
    _insert_before(root / "dyn_adapter/stage_table.py", "    # The VTAB table reads", ROW)
    _insert_before(
        root / "dyn_adapter/dvc_stages.py",
        ")  # fmt: skip",
        '    DvcStage("inventory", "inventory", "inventory", PREPARED),\n',
    )
    (root / "components/inventory.py").write_text(COMPONENT)
    return root


def _python(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}  # the copy, not the installed package
    proc = subprocess.run(
        [sys.executable, *args], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_a_new_stage_gets_its_command_from_its_row(with_new_stage):
    root = with_new_stage
    listing = _python(root, "-m", "dyn_adapter.cli", "--help").stdout
    assert "count the prepared files" in listing
    (root / "prepared").mkdir()
    (root / "prepared/a.npy").write_bytes(b"")
    proc = _python(
        root,
        *("-m", "dyn_adapter.cli", "inventory", "--params", str(REPO / "params.yaml")),
        *("--data", "prepared", "--set", "data.seed=7"),
    )
    assert "1 files (seed 7) -> outputs/inventory" in proc.stdout
    assert json.loads((root / "outputs/inventory/inventory.json").read_text()) == {
        "files": 1,
        "seed": 7,
    }
    assert (root / "outputs/inventory/timing.json").is_file()  # recorded as every stage's


def test_a_new_stage_gets_its_params_dvc_stage_and_component(with_new_stage):
    root = with_new_stage
    code = (
        "import json; from dyn_adapter.stage_table import BY_NAME, stage_params; "
        "from dyn_adapter.dvc_stages import TRACKED_OUTPUTS; import components; "
        "print(json.dumps([stage_params({'data': {'seed': 3, 'path': 'x'}}, 'inventory'), "
        "TRACKED_OUTPUTS['inventory'], [f.__name__ for f in components.functions()], "
        "BY_NAME['inventory'].components]))"
    )
    params, tracked, functions, named = json.loads(_python(root, "-c", code).stdout)
    assert params == {"data": {"seed": 3}}
    assert tracked == "outputs/inventory"
    assert "count_inventory" in functions and named == ["count_inventory"]
    stages = yaml.safe_load(_python(root, "-m", "dyn_adapter.dvc_stages").stdout)["stages"]
    stage = stages["inventory"]
    assert stage["cmd"] == "dyn-adapter inventory --data outputs/prepared --out outputs/inventory"
    assert stage["params"] == ["data.seed"]
    assert (
        "outputs/prepared" in stage["deps"] and "dyn_adapter/stages/inventory.py" in stage["deps"]
    )
    assert "outputs/inventory" in stages["track"]["deps"]  # track logs it to MLflow


@pytest.mark.parametrize("stage", [s for s in STAGES if s.help], ids=lambda s: s.name)
def test_a_rows_options_are_its_run_functions_arguments(stage):
    """The command passes each option to ``run`` by the row's keyword: a row whose keyword
    ``run`` does not take, or a ``run`` argument no option fills, fails here, not in use."""
    module = import_module(stage.module)
    run = inspect.signature(module.run).parameters
    given = {o.param for o in (*stage.inputs, *stage.options)} | {"params", "out_dir"}
    given |= {"variant"} if stage.variants else set()
    assert given <= set(run), f"{stage.name}: run takes no {sorted(given - set(run))}"
    needed = {name for name, p in run.items() if p.default is inspect.Parameter.empty}
    assert needed <= given, f"{stage.name}: no option fills {sorted(needed - given)}"
    assert callable(module.describe)


def test_each_component_that_runs_a_stage_is_named_by_that_stages_row():
    """The table says which KFP components run a stage, and a component that imports a stage
    module is in that stage's row: the table is where a stage's component is found."""
    components = pytest.importorskip("components")
    found = {f.__name__: inspect.getsource(f) for f in components.functions()}
    named = {c: s.name for s in STAGES for c in s.components}
    assert set(named) <= set(found), f"rows name missing components {set(named) - set(found)}"
    for name, source in found.items():
        runs = {s.name for s in STAGES if f"from dyn_adapter.stages import {s.name}\n" in source}
        assert runs == ({named[name]} if name in named else set()), name
