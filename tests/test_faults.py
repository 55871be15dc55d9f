"""Faults and load, with real processes and servers on loopback (no mocks of the failing part).

* An S3 server (SeaweedFS) stopped in the middle of ``prepare``: bounded retries, a clear error,
  no output directory; a restarted server on the same data and port lets a re-run complete.
* An MLflow tracking server that is not there: a clear error within seconds, no
  ``registration.json``; with a real server, registering twice gives one version.
* Four Optuna worker processes on one SQLite study: no lock errors, every trial recorded once,
  the total bounded, and the reported best a function of the recorded trials.
* ``dvc repro`` interrupted (SIGINT, then SIGKILL) in the ``train`` stage, then re-run.
* ``bench/serve_load.py`` against ``mlflow models serve`` at a small scale.

Every server or process a test starts is stopped by it, whatever happens.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from dataclasses import asdict
from pathlib import Path

import numpy as np
import psutil
import pytest
import servers
import torch
import yaml
from conftest import TINY_PARAMS, evaluation_metrics, tiny_model, write_prepared
from servers import MlflowServer, free_ports, mlflow_server, seaweedfs
from test_prepare import TINY, make_fashion_mnist, make_imagefolder

from dyn_adapter.artifacts import REGISTRATION_FILE
from dyn_adapter.data import s3
from dyn_adapter.data.config import DataConfig
from dyn_adapter.data.prepare import prepare
from dyn_adapter.data.prepared import PreparedData
from dyn_adapter.errors import ConfigError, ServiceUnavailable
from dyn_adapter.mlops.config import RegisterConfig
from dyn_adapter.mlops.store import HTTP_DEFAULTS
from dyn_adapter.models import save_trainable
from dyn_adapter.params import Params
from dyn_adapter.stages import register

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]


def venv_env(**extra: str) -> dict[str, str]:
    """This environment with the venv's bin/ first on PATH (dvc stages and `mlflow models
    serve` find `dyn-adapter` and `uvicorn` there) and one torch thread per process."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, "OMP_NUM_THREADS": "1", **extra}


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 10) -> None:
    """Signal ``proc``'s process group, wait, then SIGKILL whatever is left of it."""
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


# -- 1. the S3 server goes away during prepare ----------------------------------------------

KEY_ID = "AKIADYNADAPTERFAULTS"
SECRET = "dyn-adapter-faults-secret-0123456789"
BUCKET = "faults"
S3_TRIES = 3  # AWS_MAX_ATTEMPTS here: the back-off between tries is then at most 1 + 2 s


@pytest.fixture
def s3_env(monkeypatch, tmp_path):
    """Credentials only from the environment, a private cache, few tries per request."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    for var in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_RETRY_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("DYN_ADAPTER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", str(S3_TRIES))


def s3_client(endpoint: str):
    return servers.s3_client(endpoint, KEY_ID, SECRET)


def retry_until(fn, what: str, timeout: float = 60):
    """``fn()`` once it stops raising (a fresh SeaweedFS registers its volume a moment after
    the gateway answers)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except Exception:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: still failing after {timeout} s") from None
            time.sleep(0.5)


def prepared_arrays(path: Path) -> dict[str, list[np.ndarray]]:
    data = PreparedData(path)
    return {s: [np.asarray(a) for a in data.split(s)] for s in ("train", "val", "test")}


@pytest.mark.slow
def test_s3_server_stopped_during_prepare_then_restarted(tmp_path, s3_env, monkeypatch, caplog):
    local = make_imagefolder(tmp_path / "local", per_class=4)
    base, out = tmp_path / "weed", tmp_path / "prepared"
    with ExitStack() as server:  # closing it stops the server's process group (SIGTERM, wait)
        endpoint = server.enter_context(seaweedfs(base, KEY_ID, SECRET))
        client = s3_client(endpoint)
        retry_until(lambda: client.create_bucket(Bucket=BUCKET), "create_bucket")
        keys = []
        for path in sorted(p for p in local.rglob("*.png")):
            keys.append(f"data/{path.relative_to(local).as_posix()}")
            client.upload_file(str(path), BUCKET, keys[-1])
        cfg = DataConfig(
            source="imagefolder",
            path=f"s3://{BUCKET}/data",
            train_size=6,
            val_size=3,
            s3_endpoint_url=endpoint,
        )

        # The server stops right after prepare listed the prefix: every download fails.
        list_objects = s3._list_objects

        def list_then_stop(*args):
            objects = list_objects(*args)
            server.close()
            return objects

        monkeypatch.setattr(s3, "_list_objects", list_then_stop)
        caplog.set_level(logging.DEBUG, logger="botocore.retries.standard")
        with pytest.raises(ConfigError) as info:
            prepare(cfg, TINY, out)
        message = str(info.value)
        assert message.startswith(f"s3://{BUCKET}/data: cannot reach the S3 endpoint {endpoint}")
        assert f"gave up after {S3_TRIES} tries" in message
        assert re.search(rf"{re.escape(endpoint)}/{BUCKET}/data/\w+/\d+\.png", message), message
        assert SECRET not in message
        # Retried with back-off: rand(0, 1) * 2**n s before try n + 2, then gave up.
        delays = [
            float(r.getMessage().rsplit(" ", 1)[1])
            for r in caplog.records
            if r.getMessage().startswith("Retry needed, retrying request after delay")
        ]
        assert len(delays) >= S3_TRIES - 1 and all(0 <= d <= 2 for d in delays)
        assert f"Max attempts of {S3_TRIES} reached." in caplog.text
        # Atomic: no prepared directory, no temporary one, no half-downloaded file.
        assert not out.exists() and not list(tmp_path.glob(".prepared.tmp-*"))
        assert not list((tmp_path / "cache").rglob(f"*{s3.PART_SUFFIX}"))

        # Stopped before prepare starts: the listing itself fails, as clearly.
        monkeypatch.setattr(s3, "_list_objects", list_objects)
        with pytest.raises(ConfigError, match=f"cannot reach the S3 endpoint {endpoint}"):
            prepare(cfg, TINY, out)
        assert not out.exists()

        # The same data directory and ports again: the re-run completes.
        assert server.enter_context(seaweedfs(base, KEY_ID, SECRET)) == endpoint
        client = s3_client(endpoint)
        for key in keys:  # every volume back: the filer answers before they all are
            retry_until(lambda k=key: client.get_object(Bucket=BUCKET, Key=k)["Body"].read(), key)
        result = prepare(cfg, TINY, out)
    assert result.counts == {"train": 6, "val": 3, "test": 3}
    here = prepare(
        DataConfig(source="imagefolder", path=str(local), train_size=6, val_size=3),
        TINY,
        tmp_path / "local-prepared",
    )
    a, b = prepared_arrays(out), prepared_arrays(here.out_dir)
    for split in a:
        assert all(np.array_equal(x, y) for x, y in zip(a[split], b[split], strict=True))
    assert not list((tmp_path / "cache").rglob(f"*{s3.PART_SUFFIX}"))


def test_s3_max_attempts_is_checked(monkeypatch):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "0")
    with pytest.raises(ConfigError, match="AWS_MAX_ATTEMPTS: '0' is not a whole number >= 1"):
        s3.max_attempts()
    monkeypatch.delenv("AWS_MAX_ATTEMPTS")
    assert s3.max_attempts() == s3.MAX_ATTEMPTS


# -- 2. the tracking server is down at registration; registering twice --------------------

MODEL_NAME = "faults-tiny"
# Tiny 3-exit model: budget 0.5 sends everything to the first exit, 1.0 to the last.
POLICIES = [
    {"budget": 0.5, "thresholds": [0.0, 0.0, 0.0]},
    {"budget": 1.0, "thresholds": [1.01, 1.01, 0.0]},
]


@pytest.fixture(scope="module")
def model_outputs(tmp_path_factory) -> Path:
    """A prepared dataset, a saved tiny model, its thresholds and test metrics (no training)."""
    root = tmp_path_factory.mktemp("model-outputs")
    write_prepared(root / "prepared", sizes={"train": 8, "val": 8, "test": 8})
    save_trainable(tiny_model(num_classes=4), root / "model")
    (root / "search").mkdir()
    (root / "search" / "thresholds.json").write_text(
        json.dumps({"full_gflops": 0.0055, "budgets": POLICIES})
    )
    (root / "evaluate").mkdir()
    metrics = evaluation_metrics(0.9, 0.0055, [(0.5, 0.9, 0.4), (1.0, 0.9, 1.0)], (0.5, 0.9, 0.4))
    (root / "evaluate" / "metrics.json").write_text(json.dumps(metrics))
    return root


@pytest.fixture(scope="module")
def tracking(tmp_path_factory) -> Iterator[MlflowServer]:
    """A real ``mlflow server``, started here and waited for where it is first needed."""
    base = tmp_path_factory.mktemp("mlflow")
    with mlflow_server(base, str(base / "artifacts"), env=venv_env(), wait=False) as server:
        yield server


def register_tiny(outputs: Path, out: Path, run_id: str, tracking_uri: str) -> dict:
    return register.run(
        Params(register=RegisterConfig(model_name=MODEL_NAME, max_gflops_ratio=None)),
        outputs / "model",
        outputs / "search",
        outputs / "evaluate",
        outputs / "prepared",
        out,
        pipeline_run_id=run_id,
        tracking_uri=tracking_uri,
    )


@pytest.fixture(scope="module")
def registered(model_outputs, tracking) -> dict:
    """The tiny model registered once on the real server (pipeline run ``run-1``)."""
    result = register_tiny(model_outputs, model_outputs / "register", "run-1", tracking.ready())
    return {**result, "url": tracking.url}


@pytest.mark.slow
def test_registration_with_the_server_down_then_up_twice(
    model_outputs, tracking, tmp_path, monkeypatch, request
):
    for var in HTTP_DEFAULTS:  # the user has not set them: register's bounds apply
        monkeypatch.delenv(var, raising=False)
    port = free_ports(1)[0]  # nothing listens there
    out = tmp_path / "down"
    with pytest.raises(ServiceUnavailable) as info:
        register_tiny(model_outputs, out, "run-1", f"http://127.0.0.1:{port}")
    message = str(info.value)
    assert message.startswith(
        f"cannot reach the MLflow tracking server at http://127.0.0.1:{port} "
        "(3 retries, 30 s timeout each)"
    ), message
    assert "Connection refused" in message and "MLFLOW_HTTP_REQUEST_MAX_RETRIES" in message
    assert not (out / REGISTRATION_FILE).exists()
    assert not any(var in os.environ for var in HTTP_DEFAULTS)  # put back

    # The server is up: register, then the same pipeline run again.
    from mlflow import MlflowClient

    first = request.getfixturevalue("registered")
    client = MlflowClient(first["url"], registry_uri=first["url"])
    before = client.get_registered_model(MODEL_NAME)
    again = register_tiny(model_outputs, tmp_path / "again", "run-1", first["url"])
    after = client.get_registered_model(MODEL_NAME)
    assert (first["version"], first["reused"], first["aliases"]) == (
        "1",
        False,
        ["candidate", "champion"],
    )
    assert again["version"] == first["version"] and again["reused"] and not again["promoted"]
    assert again["aliases"] == first["aliases"]
    assert len(client.search_model_versions(f"name = '{MODEL_NAME}'")) == 1
    assert after.aliases == before.aliases == {"candidate": "1", "champion": "1"}
    assert after.tags["champion_history"] == before.tags["champion_history"] == '["1"]'
    assert json.loads((tmp_path / "again" / REGISTRATION_FILE).read_text()) == again


# -- 3. four Optuna workers share one SQLite study -----------------------------------------

WORKERS = 4
TRIALS = 60
BUDGET = 0.6
WORKER = textwrap.dedent(
    """
    import json, os, sys, time
    from dataclasses import asdict

    import optuna, torch
    from dyn_adapter.policies.config import SearchConfig
    from dyn_adapter.policies.search import best_geometric, quiet_optuna, search_budget
    from dyn_adapter.policies.thresholds import ExitScores, geometric_curve

    logits_file, storage, out, go, trials, budget = sys.argv[1:7]
    saved = torch.load(logits_file)
    labels = saved["labels"].numpy()
    ran = []  # the trials this worker ran: the objective sets "gflops" once per trial
    set_user_attr = optuna.trial.Trial.set_user_attr

    def spy(self, key, value):
        if key == "gflops":
            ran.append(self.number)
        set_user_attr(self, key, value)

    optuna.trial.Trial.set_user_attr = spy
    quiet_optuna()
    cfg = SearchConfig(budgets=[float(budget)], trials=int(trials))
    scores = ExitScores.from_logits(saved["logits"], labels, saved["gflops"])
    geo = best_geometric(geometric_curve(scores, cfg.geometric_qs), float(budget) * scores.full_gflops)
    open(out + ".ready", "w").close()
    while not os.path.exists(go):  # all workers start together: the storage is new to all
        time.sleep(0.01)
    policy = search_budget(
        scores, float(budget), cfg, storage, "shared", starts=[geo] if geo else []
    )
    json.dump({"ran": ran, "best": asdict(policy)}, open(out, "w"))
    """
)


def synthetic_logits(path: Path, n: int = 300, classes: int = 5) -> dict:
    """Three exits, each more accurate than the one before, saved for the workers."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % classes
    logits = []
    for k in range(3):
        x = torch.randn(n, classes, generator=g) * 2.0
        x[torch.arange(n), labels] += 1.0 + 1.5 * k
        logits.append(x)
    saved = {"logits": logits, "labels": labels, "gflops": [1.0, 2.0, 3.0]}
    torch.save(saved, path)
    return saved


@pytest.mark.slow
def test_four_workers_share_one_sqlite_study(tmp_path):
    import optuna

    from dyn_adapter.policies.config import SearchConfig
    from dyn_adapter.policies.search import search_budget
    from dyn_adapter.policies.thresholds import ExitScores, simulate

    saved = synthetic_logits(tmp_path / "logits.pt")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    go = tmp_path / "go"
    outs = [tmp_path / f"worker-{i}.json" for i in range(WORKERS)]
    procs: list[subprocess.Popen] = []
    try:
        for out in outs:
            args = [str(tmp_path / "logits.pt"), storage, str(out), str(go), str(TRIALS)]
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(script), *args, str(BUDGET)],
                    env=venv_env(),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    start_new_session=True,
                )
            )
        deadline = time.monotonic() + 120
        while not all(Path(f"{out}.ready").exists() for out in outs):
            dead = [p for p in procs if p.poll() is not None]
            assert not dead, dead[0].communicate()[0][-3000:]
            assert time.monotonic() < deadline, "workers did not start"
            time.sleep(0.1)
        go.touch()
        logs = [p.communicate(timeout=180)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                stop_group(p, signal.SIGKILL, grace=0)
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-3000:]
        assert "database is locked" not in log
    results = [json.loads(out.read_text()) for out in outs]

    # Every trial recorded, each run by exactly one worker, all complete; the total bounded.
    study = optuna.load_study(study_name="shared", storage=storage)
    trials = study.trials
    ran = sorted(n for r in results for n in r["ran"])
    assert ran == sorted(t.number for t in trials)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    # MaxTrialsCallback stops every worker once the study holds TRIALS trials; a worker may
    # have started one more meanwhile. Without it, each worker ran up to TRIALS.
    assert TRIALS <= len(trials) <= TRIALS + WORKERS - 1, len(trials)
    # The study was shared: several workers ran trials (one that starts last may find none left).
    assert sum(bool(r["ran"]) for r in results) >= 2, [len(r["ran"]) for r in results]

    # Re-evaluate every recorded trial's params here: same values, same best.
    labels = saved["labels"].numpy()
    scores = ExitScores.from_logits(saved["logits"], labels, saved["gflops"])
    limit = BUDGET * float(saved["gflops"][-1])
    rows = []
    for t in trials:
        policy = simulate(scores, [t.params["t0"], t.params["t1"], 0.0])
        excess = policy.gflops - limit
        value = policy.accuracy if excess <= 0 else -excess / limit
        assert (t.value, t.user_attrs["gflops"]) == (value, policy.gflops)
        rows.append((value, policy))
    feasible = [(v, p) for v, p in rows if v >= 0]
    expected = max(feasible, key=lambda vp: (vp[0], -vp[1].gflops))[1]
    # A last process on the same storage runs no trial and reports exactly that policy.
    cfg = SearchConfig(budgets=[BUDGET], trials=TRIALS)
    best = search_budget(scores, BUDGET, cfg, storage, "shared")
    assert asdict(best) == asdict(expected)
    assert len(optuna.load_study(study_name="shared", storage=storage).trials) == len(trials)
    # Each worker reported the best of what it saw: never above the best of all.
    assert all(r["best"]["accuracy"] <= expected.accuracy for r in results)
    assert max(r["best"]["accuracy"] for r in results) <= best.accuracy


# -- 4. dvc repro interrupted in the train stage --------------------------------------------


@pytest.fixture
def dvc_project(tmp_path) -> Path:
    """A git + DVC project with the real dvc.yaml's ``prepare`` and ``train`` stages, the
    package sources they depend on, tiny params and a tiny Fashion-MNIST."""
    root = tmp_path / "project"
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    dvc_yaml = {
        "stages": {name: stages[name] for name in ("prepare", "train")},
        "metrics": ["outputs/train/metrics.json"],
    }
    root.mkdir()
    (root / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml, sort_keys=False))
    shutil.copy(REPO / ".dvcignore", root)
    shutil.copytree(
        REPO / "dyn_adapter", root / "dyn_adapter", ignore=shutil.ignore_patterns("__pycache__")
    )
    make_fashion_mnist(root / "data" / "fashion-mnist", per_class=4, test_per_class=2)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    tiny = json.loads(json.dumps(TINY_PARAMS))
    params["model"] = tiny["model"]
    # Enough epochs (a checkpoint each) to be interrupted between two of them.
    params["train"].update(tiny["train"], epochs=200, device="cpu", evaluate_test=False)
    params["data"].update(
        path="data/fashion-mnist", train_size=20, val_size=10, test_size=None, calibration_size=0
    )
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True, timeout=60)
    dvc(root, "init", "-q")
    dvc(root, "add", "-q", "data")
    return root


def dvc(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=cwd,
        env=venv_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check:
        assert proc.returncode == 0, f"dvc {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def repro_interrupted_in_train(root: Path, sig: int) -> tuple[int, str]:
    """``dvc repro`` in its own process group; ``sig`` to the group once the train stage has
    written an epoch checkpoint. Returns the exit status and the output."""
    log = root.parent / f"repro-{signal.Signals(sig).name}.log"
    # DVC deletes the train stage's outputs before its command runs, so a checkpoint newer
    # than the launch is this run's: no need to catch the stage command itself, which a
    # loaded machine could miss for the whole of a tiny training.
    started = time.time()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dvc", "repro"],
            cwd=root,
            env=venv_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # As from a terminal: a runner started in the background without job control
            # (`cmd &` in a script) ignores SIGINT, and that would pass down to the stage.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    try:
        deadline = time.monotonic() + 600
        while not epoch_done(root, started):
            assert proc.poll() is None, f"dvc repro ended first:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"train never got going:\n{log.read_text()}"
            time.sleep(0.05)
        seen = sorted(p.name for p in (root / "outputs/train/checkpoints").glob("epoch-*"))
        os.killpg(proc.pid, sig)  # in the middle of training: an epoch done, more to go
        rc = proc.wait(timeout=120)
    finally:
        stop_group(proc, signal.SIGKILL, grace=0)  # whatever is left of the group
    return rc, f"(signalled with {seen} on disk)\n{log.read_text()}"


def epoch_done(root: Path, since: float) -> bool:
    """Whether the train stage wrote an epoch checkpoint after ``since`` (this run's, not one
    an earlier run left)."""
    for path in (root / "outputs" / "train" / "checkpoints").glob("epoch-*"):
        try:
            if path.stat().st_mtime >= since:
                return True
        except FileNotFoundError:  # removed since the glob: by the next checkpoint, or by DVC
            continue
    return False


def rwlock(root: Path) -> dict:
    path = root / ".dvc" / "tmp" / "rwlock"
    return json.loads(path.read_text()) if path.exists() else {}


@pytest.mark.slow
def test_dvc_repro_interrupted_in_train_then_rerun(dvc_project):
    root = dvc_project
    # Ctrl-C: the stage command dies, dvc fails the stage and releases its locks itself.
    rc, out = repro_interrupted_in_train(root, signal.SIGINT)
    assert rc != 0 and "Running stage 'train'" in out, out
    assert "failed to reproduce 'train'" in out, out
    assert not rwlock(root).get("write") and not rwlock(root).get("read")
    assert (root / "outputs/prepared/manifest.json").is_file()  # prepare completed before

    # kill -9: dvc leaves its write lock on the train stage's output in .dvc/tmp/rwlock.
    rc, out = repro_interrupted_in_train(root, signal.SIGKILL)
    assert rc == -signal.SIGKILL, out
    assert "Running stage 'prepare'" not in out  # prepare's result was cached
    stale = rwlock(root)
    assert any(info["cmd"].endswith("repro") for info in stale.get("write", {}).values()), stale

    # DVC 3.67 has no `dvc unlock`: a lock held by a dead process is dropped by the next run,
    # with a warning (the repo lock .dvc/tmp/lock is an flock the kernel released).
    unlock = dvc(root, "unlock", check=False)
    assert unlock.returncode != 0 and "invalid choice: 'unlock'" in unlock.stderr

    again = dvc(root, "repro")
    text = again.stdout + again.stderr
    assert "had been killed. Auto removed it from the lock file." in text, text
    assert "Running stage 'train'" in text and "Running stage 'prepare'" not in text
    # DVC deletes a stage's outputs before running it: train starts over, not from the killed
    # run's last checkpoint (that would take `persist: true` on outputs/train).
    assert "resuming" not in text
    left = rwlock(root)
    assert not left.get("write"), left
    # DVC only drops the dead process's entries that stood in its way: its read locks on the
    # train stage's deps stay in the file. They belong to no live process and block nothing
    # (reads share; a later writer of such a path drops them the same way).
    readers = {info["pid"] for infos in left.get("read", {}).values() for info in infos}
    assert not any(psutil.pid_exists(pid) for pid in readers), left

    status = dvc(root, "status")
    assert "Data and pipelines are up to date." in status.stdout, status.stdout
    metrics = json.loads((root / "outputs/train/metrics.json").read_text())
    assert "exits" in metrics
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    for name, stage in lock.items():
        for out_ in stage["outs"]:
            assert (root / out_["path"]).exists(), (name, out_["path"])
    assert (root / "outputs/train/model/model_config.json").is_file()
    shown = json.loads(dvc(root, "metrics", "show", "--json").stdout)
    assert shown, "dvc metrics show found nothing"


# -- 5. load on `mlflow models serve` --------------------------------------------------------


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
def test_serve_load_script_small(registered, model_outputs, tmp_path):
    out = tmp_path / "serve_load.json"
    port = free_ports(1)[0]
    cmd = [
        *(sys.executable, str(REPO / "bench" / "serve_load.py")),
        *("--model-uri", f"models:/{MODEL_NAME}@champion", "--tracking-uri", registered["url"]),
        *("--images", str(model_outputs / "prepared"), "--requests", "40"),
        *("--concurrency", "4", "--budgets", "0.5,0.75,1.0", "--warmup", "2"),
        *("--server-threads", "1", "--port", str(port), "--out", str(out)),
        *("--server-log", str(tmp_path / "server.log")),
    ]
    proc = subprocess.Popen(
        cmd,
        env=venv_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        log = proc.communicate(timeout=300)[0]
    finally:
        if proc.poll() is None:  # SIGTERM: the script stops its server before exiting
            stop_group(proc, signal.SIGTERM, grace=30)
    assert proc.returncode == 0, log[-3000:]
    result = json.loads(out.read_text())
    assert result["model_uri"] == f"models:/{MODEL_NAME}@champion"
    assert (result["requests"], result["failures"], result["concurrency"]) == (40, 0, 4)
    assert result["status_counts"] == {"200": 40}
    lat = result["latency_ms"]
    assert 0 < lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    assert result["throughput_rps"] > 0 and result["budgets"] == [0.5, 0.75, 1.0]
    assert set(result["per_budget"]) == {"0.5", "0.75", "1"}
    assert {"cpu", "torch", "cpu_count"} <= set(result["machine"])
    assert "40 requests, 0 failed" in log
    assert not port_open(port)  # the server was stopped
