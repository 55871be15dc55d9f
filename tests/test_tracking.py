"""MLflow tracking from stage output directories: nested runs, per-epoch history, idempotent
re-logging, redaction of credentials, and a real ``mlflow server`` on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import TINY_PARAMS, tiny_params, write_prepared

from dyn_adapter.mlops import runs as tracking
from dyn_adapter.mlops import stage_outputs
from dyn_adapter.mlops.redaction import is_credential_key, redact
from dyn_adapter.mlops.store import default_artifact_location, embedded_tracking_uri
from dyn_adapter.stage_table import stage_params

FAKE_SECRETS = {
    "AWS_SECRET_ACCESS_KEY": "fakeSecretAccessKey-wJalrXUtnFEMI-K7MDENG",
    "AWS_ACCESS_KEY_ID": "AKIAFAKEKEYID0000001",
    "AWS_SESSION_TOKEN": "fakeSessionToken-FwoGZXIvYXdzEBY",
    "MLFLOW_TRACKING_TOKEN": "fake-mlflow-token-3f9a1c",
    "MLFLOW_TRACKING_PASSWORD": "fake-mlflow-password-77",
    "MY_SERVICE_SECRET": "fake-service-secret-1234",
}
URL_PASSWORD = "pw-in-url-s3cr3t"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict]:
    """A tiny 2-epoch train stage output directory and the params it read."""
    from dyn_adapter.training.trainer import train

    root = tmp_path_factory.mktemp("tracking")
    data = write_prepared(root / "prepared", sizes={"train": 64, "val": 32})
    p = tiny_params(root, "train.epochs=2", "train.evaluate_test=false")
    train(p.model, p.train, data, root / "train")
    return root / "train", stage_params(TINY_PARAMS, "train")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[str, Path]:
    """One embedded store for the module (creating its tables takes seconds); tests use their
    own pipeline run ids."""
    root = tmp_path_factory.mktemp("store") / "mlflow"
    return embedded_tracking_uri(root), root


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def all_artifacts(c, run_id: str, path: str | None = None) -> list[str]:
    out = []
    for f in c.list_artifacts(run_id, path):
        out += all_artifacts(c, run_id, f.path) if f.is_dir else [f.path]
    return out


def child_runs(c, parent_id: str):
    exp = c.get_run(parent_id).info.experiment_id
    return c.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent_id}'")


# -- pure helpers -----------------------------------------------------------------------------


def test_embedded_store_keeps_artifacts_beside_the_database(tmp_path):
    uri = embedded_tracking_uri(tmp_path / "m")
    location = default_artifact_location(uri)
    assert uri == f"sqlite:///{tmp_path.resolve()}/m/mlflow.db"
    assert location == (tmp_path.resolve() / "m" / "artifacts").as_uri()
    assert default_artifact_location("http://127.0.0.1:5000") is None


def test_flatten_skips_what_is_not_a_finite_number():
    metrics, settings = stage_outputs.stage_numbers(
        {"full": {"accuracy": 0.5, "name": "x"}, "b": [1, None, float("nan"), True, 2.5]}
    )
    assert metrics == {"full.accuracy": 0.5, "b_exit0": 1.0, "b_exit4": 2.5} and settings == {}
    assert stage_outputs.flatten_params({"a": {"b": [1, 2], "c": None, "d": "s"}}) == {
        "a.b": "[1, 2]",
        "a.c": "null",
        "a.d": "s",
    }


def test_stage_numbers_name_each_number_once_and_keep_settings_as_params():
    """train's metrics.json states each exit's accuracy twice and its blocks; evaluate's names
    budgets, intervals and classes; search's curve stays in the artifact."""
    train = {
        "epochs": 16,
        "exits": [{"block": 3, "val_accuracy": 0.8}, {"block": 12, "val_accuracy": 0.9}],
        "val_accuracy": [0.8, 0.9],
    }
    metrics, settings = stage_outputs.stage_numbers(train)
    assert metrics == {"val_accuracy_exit0": 0.8, "val_accuracy_exit1": 0.9}
    assert settings == {"epochs": "16", "block_exit0": "3", "block_exit1": "12"}
    evaluate = {
        "full": {"accuracy_interval": [0.7, 0.8], "per_class_recall": [0.5, 1.0]},
        "budgets": [{"budget": 0.5, "accuracy": 0.75, "exit_fractions": [0.6, 0.4]}],
        "points": [{"epsilon": 0.05, "gflops_ratio": 0.4, "delta": 0.1}],
        "geometric_curve": [{"accuracy": 0.7}],
    }
    metrics, settings = stage_outputs.stage_numbers(evaluate)
    assert metrics == {
        "full.accuracy_low": 0.7,
        "full.accuracy_high": 0.8,
        "full.per_class_recall_class0": 0.5,
        "full.per_class_recall_class1": 1.0,
        "accuracy_budget0.5": 0.75,
        "exit_fractions_budget0.5_exit0": 0.6,
        "exit_fractions_budget0.5_exit1": 0.4,
        "gflops_ratio_risk0.05": 0.4,
    }
    assert settings == {"delta_risk0.05": "0.1"}


def test_stage_params_pick_the_sections_a_stage_reads():
    raw = {"data": {"seed": 1}, "model": {"backbone": {"img_size": 28}, "petl": {}}, "train": {}}
    assert stage_params(raw, "prepare") == {
        "data": {"seed": 1},
        "model": {"backbone": {"img_size": 28}},
    }
    assert stage_params({"train": {"device": "cpu", "lr": 1}}, "search-probe") == {
        "train": {"device": "cpu"}
    }


def test_artifact_files_leave_out_checkpoints_and_the_study(tmp_path):
    files = [
        "metrics.json",
        "pareto.md",
        "optuna.db",
        "plots/acc.png",
        "model/adapter_model.safetensors",
        "model/model_config.json",
        "checkpoints/epoch-0001/state.json",
        "checkpoints/epoch-0001/weights.safetensors",
        "candidates/f0.1/train_log.json",
        "candidates/f0.1/model/adapter_model.safetensors",
        ".model.tmp/model_config.json",
        "train_images.npy",
    ]
    for f in files:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("{}")
    picked = {p.as_posix() for p in stage_outputs.artifact_files(tmp_path)}
    assert picked == {
        "metrics.json",
        "pareto.md",
        "plots/acc.png",
        "model/adapter_model.safetensors",
        "model/model_config.json",
        "candidates/f0.1/train_log.json",
    }
    assert "optuna.db" in {p.as_posix() for p in stage_outputs.artifact_files(tmp_path, ["*.db"])}


def test_redact_replaces_env_secrets_and_url_passwords(monkeypatch):
    monkeypatch.setenv("SOME_API_TOKEN", "tok-123456789")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")  # matches *TOKEN*, not a secret
    assert redact("a tok-123456789 b") == "a *** b"
    assert redact("postgresql://u:pa55word@db/x") == "postgresql://u:***@db/x"
    assert redact("evaluate_test: false") == "evaluate_test: false"
    assert is_credential_key("data.aws_secret_access_key")
    assert not is_credential_key("model.backbone.model_kwargs.reg_tokens")


# -- the embedded store -----------------------------------------------------------------------


def test_log_stage_nests_runs_with_epoch_history_and_reuses_them(
    trained, store, tmp_path, monkeypatch
):
    out, params = trained
    uri, root = store
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root would be ./mlruns
    parent = tracking.start_pipeline_run(uri, "exp", "demo", {"pipeline_run_id": "run-1"})
    assert tracking.start_pipeline_run(uri, "exp", "demo", pipeline_run_id="run-1") == parent
    child = tracking.log_stage("train", out, parent, params, uri)

    c = client(uri)
    run = c.get_run(child)
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.tags["pipeline_stage"] == "train" and run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == "2"
    assert run.data.params["model.exits.blocks"] == "[2, 4, 6]"
    assert len(run.data.tags["config_hash"]) == 64

    log = json.loads((out / "train_log.json").read_text())["epochs"]
    for k in range(3):
        for key, name in [(k, k) for k in ("train_loss", "val_accuracy")] + [
            ("loss_weights", "schedule/loss_weights")
        ]:
            history = c.get_metric_history(child, f"{name}_exit{k}")
            assert [(h.step, h.value) for h in history] == [
                (e["epoch"], pytest.approx(e[key][k])) for e in log
            ]
    assert [h.step for h in c.get_metric_history(child, "schedule/lr")] == [1, 2]
    assert [h.step for h in c.get_metric_history(child, "time/epoch_seconds")] == [1, 2]
    # MLflow charts a run's metrics sorted by name, the names without a "/" first: those are
    # the learning curves, so the run opens on them (not on the epoch's time or the schedule).
    first_section = sorted(m for m in run.data.metrics if "/" not in m)
    assert first_section and all(m.startswith(("train_", "val_")) for m in first_section)
    # One name per number: the final accuracy is the history's last point, not a copy; the
    # settings metrics.json restates are params; the parent holds the params and no copies.
    final = json.loads((out / "metrics.json").read_text())
    assert run.data.metrics["val_accuracy_exit2"] == pytest.approx(final["val_accuracy"][2])
    assert not [m for m in run.data.metrics if "." in m or m in ("epochs", "block_exit0")]
    assert run.data.params["block_exit0"] == "2" and run.data.params["epochs"] == "2"
    parent_run = c.get_run(parent)
    assert parent_run.data.metrics == {}
    assert parent_run.data.params["train.epochs"] == "2"

    arts = all_artifacts(c, child)
    assert {"manifest.json", "metrics.json", "train_log.json"} <= set(arts)
    assert {"model/model_config.json", "model/adapter_model.safetensors"} <= set(arts)
    assert not any(a.startswith("checkpoints") for a in arts)
    # Artifacts land beside the database, not in ./mlruns.
    assert (root / "artifacts").is_dir() and not (tmp_path / "mlruns").exists()

    # Logging the same stage again reuses the child run and adds no points.
    assert tracking.log_stage("train", out, parent, params, uri) == child
    assert [r.info.run_id for r in child_runs(c, parent)] == [child]
    assert len(c.get_metric_history(child, "train_loss_exit0")) == len(log)


def test_a_stage_run_spans_the_time_the_stage_ran(trained, store, tmp_path):
    """Logged minutes after the stage ended (``dyn-adapter track`` after ``dvc repro``), its
    run still starts and ends when the stage's command did (its timing record)."""
    import shutil
    import time

    from dyn_adapter.manifest import read_timing, write_timing

    out = tmp_path / "train"
    shutil.copytree(trained[0], out)
    write_timing(out, time.time() - 600)
    start, end = read_timing(out)
    uri, _ = store
    parent = tracking.start_pipeline_run(uri, "exp", pipeline_run_id="timed")
    run = client(uri).get_run(tracking.log_stage("train", out, parent, trained[1], uri))
    assert (run.info.start_time, run.info.end_time) == (start, end)
    assert 599_000 <= end - start <= 601_000


def test_the_pipeline_run_is_not_another_run_with_its_id(store):
    """Stage and registration runs carry the pipeline run id too: none is taken for the
    pipeline's own run, even when it is older."""
    uri, _ = store
    first = tracking.start_pipeline_run(uri, "exp", pipeline_run_id="run-0")
    c = client(uri)
    experiment = c.get_run(first).info.experiment_id
    registration = c.create_run(experiment, tags={"pipeline_run_id": "run-2"}).info.run_id
    parent = tracking.start_pipeline_run(uri, "exp", pipeline_run_id="run-2")
    assert parent != registration
    assert tracking.start_pipeline_run(uri, "exp", pipeline_run_id="run-2") == parent


def test_changed_params_in_the_same_pipeline_run_are_refused(trained, store):
    from dyn_adapter.errors import ConfigError

    out, params = trained
    uri, _ = store
    parent = tracking.start_pipeline_run(uri, "exp", pipeline_run_id="run-2")
    tracking.log_stage("train", out, parent, params, uri)
    changed = {**params, "train": {**params["train"], "epochs": 3}}
    with pytest.raises(ConfigError, match="train.epochs='2', now '3'"):
        tracking.log_stage("train", out, parent, changed, uri)


def test_no_secret_reaches_params_tags_metrics_or_artifacts(trained, store, tmp_path, monkeypatch):
    out, params = trained
    uri, root = store
    for name, value in FAKE_SECRETS.items():
        monkeypatch.setenv(name, value)
    secret = FAKE_SECRETS["AWS_SECRET_ACCESS_KEY"]
    # A stage directory that leaks: a secret in the model card, a metric name, a binary plot.
    leaky = tmp_path / "train"
    shutil.copytree(out, leaky)
    (leaky / "model_card.md").write_text(f"endpoint http://u:{URL_PASSWORD}@minio key {secret}\n")
    metrics = json.loads((leaky / "metrics.json").read_text())
    metrics[f"leak_{FAKE_SECRETS['MLFLOW_TRACKING_TOKEN']}"] = 1.0
    (leaky / "metrics.json").write_text(json.dumps(metrics))
    (leaky / "plots").mkdir()
    (leaky / "plots" / "leak.png").write_bytes(
        b"\x89PNG" + FAKE_SECRETS["AWS_SESSION_TOKEN"].encode()
    )
    leaky_params = {
        **params,
        "data": {
            "path": f"s3://bucket/{FAKE_SECRETS['AWS_ACCESS_KEY_ID']}/x",
            "s3_endpoint_url": f"http://user:{URL_PASSWORD}@minio:9000",
            "aws_secret_access_key": "literal-in-config-abcdef",
        },
    }

    parent = tracking.start_pipeline_run(
        uri,
        "exp",
        pipeline_run_id="run-3",
        tags={"note": f"token {FAKE_SECRETS['MLFLOW_TRACKING_PASSWORD']}"},
    )
    child = tracking.log_stage(
        "train", leaky, parent, leaky_params, uri, tags={"who": FAKE_SECRETS["MY_SERVICE_SECRET"]}
    )

    needles = [*FAKE_SECRETS.values(), URL_PASSWORD, "literal-in-config-abcdef"]
    c = client(uri)
    for run_id in (parent, child):
        data = c.get_run(run_id).data
        logged = [*data.params.items(), *data.tags.items(), *((k, "") for k in data.metrics)]
        for key, value in logged:
            assert not any(n in key or n in value for n in needles), (key, value)
    assert c.get_run(child).data.params["data.aws_secret_access_key"] == "***"
    arts = all_artifacts(c, child)
    assert "model_card.md" in arts and "plots/leak.png" not in arts  # redacted / left out
    files = [p for p in (root / "artifacts").rglob("*") if p.is_file()] + [root / "mlflow.db"]
    assert len(files) > 5
    for path in files:
        data = path.read_bytes()
        assert not any(n.encode() in data for n in needles), path
    assert "***" in next((root / "artifacts").rglob("model_card.md")).read_text()


# -- a real tracking server -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, SIGKILL what is left after 10 s; the group may outlive its
    leader (the server's job runner), so wait until the group is empty."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader: a zombie still counts as a member
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture
def mlflow_server(tmp_path):
    """``mlflow server`` on loopback; its whole process group is killed afterwards."""
    port = free_port()
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            str(tmp_path / "server-artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=tmp_path,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the job runner outlives the server
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # 2 busy cores: it can take 20 s
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"mlflow server exited: {(tmp_path / 'server.log').read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("mlflow server did not answer /health within 120 s")
            time.sleep(0.3)
        yield url, tmp_path / "server-artifacts"
    finally:
        kill_group(proc)
        log.close()


@pytest.mark.integration
def test_log_stage_to_a_real_tracking_server(trained, mlflow_server):
    out, params = trained
    url, artifacts = mlflow_server
    parent = tracking.start_pipeline_run(url, "served", pipeline_run_id="kfp-123")
    child = tracking.log_stage("train", out, parent, params, url)
    assert tracking.log_stage("train", out, parent, params, url) == child

    c = client(url)
    assert [r.info.run_id for r in child_runs(c, parent)] == [child]
    assert c.get_run(child).data.tags["mlflow.parentRunId"] == parent
    assert [h.step for h in c.get_metric_history(child, "val_accuracy_exit0")] == [1, 2]
    assert "model/model_config.json" in all_artifacts(c, child)
    assert list(artifacts.rglob("model_config.json"))  # proxied into --artifacts-destination
