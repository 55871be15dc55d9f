"""The project image's Dockerfile, checked statically: only what the real build and runs
(tests/test_image.py) cannot show, namely the variant that is not built here, the one source of
truth for the pins, and what the build context keeps out.

A tiny parser turns the Dockerfile into instructions (line continuations joined, comments
dropped), so the checks read what Docker would run, not just text that happens to be there.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
BASE = "requirements/base.txt"


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, ...
    args: str  # continuation lines joined with a space
    line: int  # where it starts (1-based)


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions of a Dockerfile: ``\\`` continuations joined, comment lines dropped (also
    inside a continued instruction, as Docker does), blank lines skipped."""
    out: list[Instruction] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not parts:
            start = number
        if line.endswith("\\"):
            parts.append(line[:-1].strip())
            continue
        parts.append(line)
        keyword, _, args = " ".join(p for p in parts if p).partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
        parts = []
    if parts:
        raise ValueError(f"line {start}: the last instruction ends in a line continuation")
    return out


def shell_commands(run: str) -> list[list[str]]:
    """The simple commands of a RUN's shell script, split on ``&&``, ``||``, ``;`` and ``|``."""
    lexer = shlex.shlex(run, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in {";", "&&", "||", "|", "&"}:
            commands.append([])
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def pip_installs(instructions: list[Instruction]) -> list[list[str]]:
    """The arguments after ``pip install`` of every pip command in every RUN."""
    out = []
    for ins in instructions:
        if ins.keyword != "RUN":
            continue
        for cmd in shell_commands(ins.args):
            for i in range(len(cmd) - 1):
                if cmd[i].endswith("pip") and cmd[i + 1] == "install":
                    out.append(cmd[i + 2 :])
    return out


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Whether ``.dockerignore`` keeps ``path`` out of the build context: the last pattern that
    matches the path or one of its parent directories decides (``!`` re-includes)."""

    def regex(pattern: str) -> re.Pattern[str]:
        out = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out, i = out + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                out, i = out + ".*", i + 2
            elif pattern[i] == "*":
                out, i = out + "[^/]*", i + 1
            elif pattern[i] == "?":
                out, i = out + "[^/]", i + 1
            else:
                out, i = out + re.escape(pattern[i]), i + 1
        return re.compile(out + r"\Z")

    parents = path.split("/")
    candidates = ["/".join(parents[: i + 1]) for i in range(len(parents))]
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw.lstrip("!").strip("/")
        if any(regex(pattern).match(c) for c in candidates):
            excluded = not negate
    return excluded


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text())


def of(instructions: list[Instruction], keyword: str) -> list[Instruction]:
    return [i for i in instructions if i.keyword == keyword]


def requirement_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==([^\s#;]+)", line)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


# -- the parser ---------------------------------------------------------------------------


def test_parser_joins_continuations_and_drops_comments():
    text = (
        "# syntax comment\n"
        "FROM python:3.11.17-slim-bookworm\n"
        "\n"
        "RUN apt-get update \\\n"
        "    # a comment inside the instruction\n"
        " && apt-get install -y x \\\n"
        "      y\n"
        "USER 1000\n"
    )
    assert parse_dockerfile(text) == [
        Instruction("FROM", "python:3.11.17-slim-bookworm", 2),
        Instruction("RUN", "apt-get update && apt-get install -y x y", 4),
        Instruction("USER", "1000", 8),
    ]
    with pytest.raises(ValueError, match="continuation"):
        parse_dockerfile("RUN a \\\n")
    assert shell_commands("set -eu; a && b || { c; }") == [
        ["set", "-eu"],
        ["a"],
        ["b"],
        ["{", "c"],
        ["}"],
    ]


def test_dockerignore_matcher():
    patterns = ["*", "!dyn_adapter/", "**/__pycache__"]
    assert dockerignore_excludes(".venv/bin/python", patterns)
    assert not dockerignore_excludes("dyn_adapter/cli.py", patterns)
    assert dockerignore_excludes("dyn_adapter/__pycache__/cli.pyc", patterns)


# -- the image ----------------------------------------------------------------------------


def test_base_image_is_a_build_argument_defaulting_to_a_pinned_python_311_slim(instructions):
    (from_,) = of(instructions, "FROM")
    assert from_.args == "${BASE_IMAGE}"
    args = dict(i.args.split("=", 1) for i in of(instructions, "ARG") if "=" in i.args)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", args["BASE_IMAGE"])
    from pipeline.image import OFFICIAL_BASE

    assert args["BASE_IMAGE"] == OFFICIAL_BASE, "the builder's default is the Dockerfile's"


def test_installs_come_from_the_pinned_lists_offline(instructions):
    """Every pip install reads the wheelhouse only (--no-index), from base.txt and no-deps.txt
    (the Makefile's lists); no version is written in the Dockerfile itself."""
    text = DOCKERFILE.read_text()
    assert not re.search(r"[A-Za-z0-9_-]+==\d", text), "a version pinned outside requirements/"
    runs = [i.args for i in of(instructions, "RUN") if "pip install" in i.args]
    assert runs and all("--no-index" in r or "$wheels" in r for r in runs)
    for run in runs:
        assert "--mount=type=bind,source=build/image/wheels" in run
    installs = pip_installs(instructions)
    files = [
        a[i + 1] for a in installs for i, x in enumerate(a[:-1]) if x in {"-r", "--requirement"}
    ]
    assert files == [BASE, "requirements/no-deps.txt"]
    assert "--no-deps" in next(a for a in installs if "requirements/no-deps.txt" in a)
    setup = (ROOT / "scripts/setup-venv.sh").read_text()
    assert 'sync --quiet "${py[@]}" "$lock"' in setup and "lock=requirements/lock.txt" in setup
    assert "--no-deps -r requirements/no-deps.txt" in setup
    dev = [line.strip() for line in (ROOT / "requirements/dev.txt").read_text().splitlines()]
    assert "-r base.txt" in dev


def _pins(path: Path) -> dict[str, str]:
    """``name: version`` of each ``name==version`` line (names normalised as pip does)."""
    pins = {}
    for line in path.read_text().splitlines():
        spec = line.split("#")[0].split(";")[0].strip()
        if "==" in spec:
            name, version = spec.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    return pins


def test_the_lock_holds_every_pin_at_its_version():
    """requirements/lock.txt (what the venv, CI and the image's wheelhouse install) is
    `make lock`'s output for the pins of base.txt and dev.txt: a pin changed there without
    `make lock` fails here. The --no-deps packages stay out of it (the lock resolves
    dependencies)."""
    lock = _pins(ROOT / "requirements/lock.txt")
    for name in ("base.txt", "dev.txt"):
        for package, version in _pins(ROOT / "requirements" / name).items():
            assert lock.get(package) == version, f"requirements/{name}: {package}=={version}"
    assert not set(_pins(ROOT / "requirements/no-deps.txt")) & set(lock)
    assert "make lock" in (ROOT / "requirements/lock.txt").read_text().splitlines()[1]


def _script(run: str) -> str:
    """A RUN's shell script, without its ``--mount`` flags."""
    return re.sub(r"^(--mount=\S+\s+)+", "", run)


@pytest.mark.parametrize("variant", ["cpu", "cuda", "rocm"])
def test_dependency_step_checks_the_variant(instructions, tmp_path, variant):
    """Run the dependency RUN with stand-ins for pip and python: both variants install the
    same lists (the wheelhouse decides which torch), an unknown one is refused before any
    install. Only one variant is built here (the CPU index is out of reach)."""
    run = _script(next(i.args for i in of(instructions, "RUN") if "TORCH_VARIANT" in i.args))
    (tmp_path / "requirements").mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("pip", "python"):
        (bin_dir / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> "{tmp_path}/calls"\n')
        (bin_dir / tool).chmod(0o755)
    done = subprocess.run(
        ["sh", "-c", run],
        cwd=tmp_path,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "TORCH_VARIANT": variant},
        capture_output=True,
        text=True,
        timeout=120,
    )
    calls = (tmp_path / "calls").read_text().splitlines() if (tmp_path / "calls").exists() else []
    if variant == "rocm":
        assert done.returncode != 0 and "TORCH_VARIANT must be cpu or cuda" in done.stderr
        assert calls == []
        return
    assert done.returncode == 0, done.stderr
    wheels = "--no-index --find-links /tmp/build/wheels"
    assert [c for c in calls if c.startswith("pip ")] == [
        f"pip install {wheels} -r {BASE}",
        f"pip install {wheels} --no-deps -r requirements/no-deps.txt",
    ]
    check = next(c for c in calls if "torch.version.cuda is None" in c)
    assert f"('{variant}' == 'cpu')" in check  # the installed torch is checked against it


def test_context_holds_what_is_copied_and_nothing_private(instructions):
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = []
    for ins in of(instructions, "COPY"):
        *sources, _dest = shlex.split(ins.args)
        assert not any(s.startswith("--") for s in sources), "no --from/--chown copies expected"
        copied += sources
    mounted = re.findall(r"--mount=type=bind,source=([^,\s]+)", DOCKERFILE.read_text())
    assert set(mounted) == {"build/image/wheels", "build/image/debs"}
    for src in copied:
        path = ROOT / src
        assert path.exists(), f"COPY {src}: not in the repository"
        files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
        for f in files:
            rel = f.relative_to(ROOT).as_posix()
            if "__pycache__" not in rel:
                assert not dockerignore_excludes(rel, patterns), f"{rel} is copied but ignored"
    for src in mounted:
        assert not dockerignore_excludes(f"{src}/x.whl", patterns), f"{src} is mounted but ignored"
    # Every package pyproject.toml installs is copied.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for package in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert f"{package.rstrip('*')}/" in copied, f"package {package} is not copied"
    for private in (".venv/bin/python", "outputs/mlflow/mlflow.db", ".git/config", ".env"):
        assert dockerignore_excludes(private, patterns), private
    assert dockerignore_excludes("build/image/inputs.json", patterns)
    assert dockerignore_excludes("data/fashion-mnist/train-images-idx3-ubyte.gz", patterns)
    assert dockerignore_excludes("dyn_adapter/__pycache__/cli.cpython-311.pyc", patterns)
