"""dvc.yaml declares what each stage really reads: its params.yaml keys and its code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from dyn_adapter.params import STAGE_SECTIONS, stage_params

REPO = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]

# The module each stage's command runs (the CLI only parses arguments and calls it).
ENTRY = {
    "prepare": ["dyn_adapter.stages.prepare"],
    "train": ["dyn_adapter.stages.train"],
    "train_static": ["dyn_adapter.stages.train"],
    "train_probe": ["dyn_adapter.stages.train"],
    "sparsify": ["dyn_adapter.stages.sparsify"],
    "search": ["dyn_adapter.stages.search"],
    "search_probe": ["dyn_adapter.stages.search"],
    "calibrate": ["dyn_adapter.stages.calibrate"],
    "evaluate": ["dyn_adapter.stages.evaluate"],
    "register": ["dyn_adapter.stages.register"],
    "track": ["dyn_adapter.stages.track"],
}


def module_file(module: str) -> Path | None:
    path = REPO / Path(*module.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path, module: str) -> set[str]:
    """Every ``dyn_adapter`` module ``path`` imports, at the top or inside a function."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - node.level + 1] + ([node.module] if node.module else [])
                name = ".".join(base)
            else:
                name = node.module or ""
            found.add(name)
            found |= {f"{name}.{alias.name}" for alias in node.names}  # submodules
    return {m for m in found if m.split(".")[0] == "dyn_adapter"}


def import_closure(modules: list[str]) -> set[str]:
    """Files of the modules reached from ``modules`` (parent packages included), repo-relative."""
    seen: dict[str, Path] = {}
    todo = list(modules)
    while todo:
        module = todo.pop()
        path = module_file(module)
        if module in seen or path is None:
            continue
        seen[module] = path
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        todo += imported_modules(path, module)
    return {p.relative_to(REPO).as_posix() for p in seen.values()}


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
