"""``dvc repro`` of the real dvc.yaml on a tiny project; DVC push/pull to a real S3 server."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import yaml
from conftest import TINY_PARAMS
from servers import seaweedfs
from test_prepare import make_fashion_mnist

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
KEY_ID = "AKIADVCREMOTETEST"
SECRET = "dvc-remote-test-secret-0123456789"


def run(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    env = dict(env or os.environ)
    # dvc runs stage commands through the shell: they must find this venv's dyn-adapter.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def dvc(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    return run(cwd, sys.executable, "-m", "dvc", *args, env=env)


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([\w:]+)'", output))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A git + DVC project with the real dvc.yaml, the package sources it depends on, tiny
    params and a tiny Fashion-MNIST; ``dvc repro`` has run once."""
    root = tmp_path_factory.mktemp("project")
    shutil.copy(REPO / "dvc.yaml", root)
    shutil.copy(REPO / ".dvcignore", root)
    shutil.copytree(
        REPO / "dyn_adapter", root / "dyn_adapter", ignore=shutil.ignore_patterns("__pycache__")
    )
    # 40 a class: 60 go to train and val, 300 of the rest to the calibration split
    make_fashion_mnist(root / "data" / "fashion-mnist", per_class=40, test_per_class=3)
    # The real params.yaml (dvc needs every section a stage declares), scaled down.
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    tiny = json.loads(json.dumps(TINY_PARAMS))
    # Tiny model values over the real ones: every key a stage declares stays present.
    for section, values in tiny["model"].items():
        params["model"][section].update(values)
    params["train"].update(tiny["train"], device="cpu")
    params["data"].update(
        path="data/fashion-mnist", train_size=40, val_size=20, test_size=None, calibration_size=300
    )
    params["calibrate"].update(epsilons=[0.01, 0.05], window_images=None)  # 300 images
    params["sparsify"].update(forward_rates=[0.1], backward_keeps=[0.5], epochs=1)
    params["search"].update(budgets=[0.5, 1.0], trials=10)
    params["evaluate"].update(speed_images=8, speed_repeats=1)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    run(root, "git", "init", "-q")
    dvc(root, "init", "-q")
    shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")  # the committed remote
    dvc(root, "add", "-q", "data")
    out = dvc(root, "repro")
    assert stages_run(out) == set(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
    (root.parent / "first-repro.txt").write_text(out)
    return root


def test_repro_shows_each_stage_briefly_and_logs_it_in_full(project):
    out = (project.parent / "first-repro.txt").read_text()
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for stage in stages:
        log = f"outputs/logs/dvc/{stage}.log"
        assert f"whole log: {log}" in out
        assert (project / log).is_file()
    # the epoch lines stay on the terminal; the model card and MLflow's chatter go to files
    assert "epoch 1/2" in out
    assert "# Model card" not in out and "model card: outputs/evaluate/model_card.md" in out
    assert "Downloading artifacts" not in out and "mlflow.store.db.utils" not in out
    assert "stage prepare" in (project / "outputs/logs/dvc/track.log").read_text()


def test_repro_runs_every_stage_then_nothing(project):
    metrics = json.loads((project / "outputs/evaluate/metrics.json").read_text())
    assert 0.0 <= metrics["full"]["accuracy"] <= 1.0
    # the calibration split reached calibrate, and its points evaluate
    risk = json.loads((project / "outputs/calibrate/risk_points.json").read_text())
    assert risk["calibration_images"] == 300 and len(risk["points"]) == 2
    assert [p["epsilon"] for p in metrics["risk_control"]["points"]] == [0.01, 0.05]
    reg = json.loads((project / "outputs/register/registration.json").read_text())
    assert "candidate" in reg["aliases"]
    out = dvc(project, "repro")
    assert stages_run(out) == set()
    assert "up to date" in out


def test_a_param_change_reruns_only_its_stage_and_later_ones(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["evaluate"]["speed_repeats"] = 2
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    assert stages_run(dvc(project, "repro")) == {"evaluate", "register", "track"}

    params["search"]["trials"] = 12
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    assert stages_run(dvc(project, "repro")) == {
        "search",
        "search_probe",
        "evaluate",
        "register",
        "track",
    }


def test_repro_logs_one_mlflow_run_with_a_child_per_stage(project):
    from mlflow.tracking import MlflowClient

    record = json.loads((project / "outputs/tracking/tracking.json").read_text())
    reg = json.loads((project / "outputs/register/registration.json").read_text())
    assert record["pipeline_run_id"] == reg["pipeline_run_id"]
    c = MlflowClient(f"sqlite:///{project / 'outputs/mlflow/mlflow.db'}")
    parent = c.get_run(record["mlflow_run_id"])
    assert parent.info.status == "FINISHED"
    children = c.search_runs(
        [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    stages = {r.data.tags["pipeline_stage"]: r for r in children}
    assert set(stages) == set(record["stages"])
    train = stages["train-dyn"]
    assert train.data.params["train.epochs"] == str(TINY_PARAMS["train"]["epochs"])
    assert c.get_metric_history(train.info.run_id, "val_accuracy_exit0")
    # The pipeline's run holds the params, the dataset and the registered model, whose
    # numbers are its metrics; no run stands beside it.
    assert parent.data.params["train.epochs"] == str(TINY_PARAMS["train"]["epochs"])
    assert parent.inputs.dataset_inputs
    assert parent.data.metrics["accuracy"] == pytest.approx(float(reg["accuracy"]))
    version = c.get_model_version(reg["name"], reg["version"])
    assert version.run_id == parent.info.run_id == reg["run_id"]
    mine = c.search_runs(
        [parent.info.experiment_id], f"tags.pipeline_run_id = '{record['pipeline_run_id']}'"
    )
    assert [r.info.run_id for r in mine if "mlflow.parentRunId" not in r.data.tags] == [
        parent.info.run_id
    ]


def test_the_raw_data_is_tracked_not_written(project):
    status = dvc(project, "status", "data.dvc")
    assert "up to date" in status or status.strip() == ""


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_push_and_pull_through_a_real_s3_server(project, tmp_path):
    with seaweedfs(tmp_path / "weed", KEY_ID, SECRET) as endpoint:
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=KEY_ID,
            aws_secret_access_key=SECRET,
            region_name="us-east-1",
        )
        # The committed default remote; only its endpoint is set, in .dvc/config.local.
        bucket, _, prefix = dvc(project, "remote", "list").split()[1][len("s3://") :].partition("/")
        s3.create_bucket(Bucket=bucket)
        dvc(project, "remote", "modify", "--local", "storage", "endpointurl", endpoint, env=env)
        assert endpoint not in (project / ".dvc/config").read_text()
        assert SECRET not in (project / ".dvc/config.local").read_text()
        dvc(project, "push", env=env)
        assert s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("KeyCount", 0) > 0

        before = {d: _digest(project / d) for d in ("data", "outputs/evaluate")}
        shutil.rmtree(project / ".dvc" / "cache")
        shutil.rmtree(project / "data")
        shutil.rmtree(project / "outputs" / "evaluate")
        dvc(project, "pull", env=env)
        assert {d: _digest(project / d) for d in before} == before
        assert stages_run(dvc(project, "repro")) == set()
