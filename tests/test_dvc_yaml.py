"""dvc.yaml declares what each stage really reads: its params.yaml keys and its code."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dyn_adapter.dvc_stages import DVC_STAGES, TRACK, dvc_yaml, import_closure
from dyn_adapter.stage_table import STAGE_SECTIONS, stage_params

REPO = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]

# The module each stage's command runs (the CLI only parses arguments and calls it).
ENTRY = {s.name: [s.entry] for s in (*DVC_STAGES, TRACK)}


def test_dvc_yaml_is_what_the_stage_table_generates():
    assert (REPO / "dvc.yaml").read_text() == dvc_yaml(), (
        "dvc.yaml differs from dyn_adapter/dvc_stages.py: run "
        "`python -m dyn_adapter.dvc_stages > dvc.yaml`"
    )


def test_import_closure_follows_relative_and_lazy_imports():
    files = import_closure(["dyn_adapter.stages.evaluate"])
    assert "dyn_adapter/evaluation/plots.py" in files  # imported inside a function
    assert "dyn_adapter/models/heads.py" in files  # through the models package
    assert "dyn_adapter/cli.py" not in files


def test_every_stage_has_an_entry_module():
    assert set(STAGES) == set(ENTRY)


@pytest.mark.parametrize("name", sorted(ENTRY))
def test_stage_depends_on_the_code_it_imports(name):
    deps = [d for d in STAGES[name]["deps"] if d.startswith("dyn_adapter")]
    covered = lambda f: any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps)  # noqa: E731
    missing = sorted(f for f in import_closure(ENTRY[name]) if not covered(f))
    assert not missing, f"dvc.yaml stage {name} does not depend on {missing}"
    assert all((REPO / d).exists() for d in deps), "a code dependency does not exist"


@pytest.mark.parametrize("name", sorted(ENTRY))
def test_stage_depends_on_no_code_it_does_not_import(name):
    """A change to a module the stage never imports must not re-run it: every code dependency
    is a module of the closure, or a directory holding only such modules."""
    closure = import_closure(ENTRY[name])
    for dep in (d for d in STAGES[name]["deps"] if d.startswith("dyn_adapter")):
        path = REPO / dep
        files = [path] if path.is_file() else sorted(path.rglob("*.py"))
        extra = [f.relative_to(REPO).as_posix() for f in files]
        extra = [f for f in extra if f not in closure]
        assert not extra, f"dvc.yaml stage {name} depends on {extra}, which it never imports"


@pytest.mark.parametrize("name", sorted(ENTRY))
def test_stage_params_are_what_the_stage_reads(name):
    kfp_name = name.replace("_", "-")
    expected = STAGE_SECTIONS.get(kfp_name, STAGE_SECTIONS.get(kfp_name.split("-")[0]))
    assert expected is not None
    assert STAGES[name]["params"] == list(expected)


def test_stage_params_of_a_baseline_leave_out_what_it_overrides():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    static = stage_params(params, "train-static")
    assert set(static["model"]) == {"backbone", "petl", "exits"}
    assert set(static["model"]["exits"]) == {"pool"}
    assert "petl" not in stage_params(params, "train-probe")["model"]
    assert "epochs" not in stage_params(params, "sparsify")["train"]


def test_every_stage_writes_only_its_own_output_directory():
    outs = {}
    for name, stage in STAGES.items():
        (out,) = stage["outs"]
        out = out if isinstance(out, str) else next(iter(out))
        assert out.startswith("outputs/") and not out.startswith("data")
        assert f"--out {out}" in " ".join(stage["cmd"].split())
        assert stage["cmd"].startswith("dyn-adapter ")
        outs[name] = out
    assert len(set(outs.values())) == len(outs)
