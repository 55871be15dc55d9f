"""MLflow artifacts on an S3-compatible store: a real SeaweedFS behind a real ``mlflow server``.

The server holds the S3 endpoint and credentials (``MLFLOW_S3_ENDPOINT_URL``, ``AWS_*``) in its
environment and proxies artifact uploads and downloads; the clients (registration, stage
logging, a fresh process loading the champion) have no S3 credentials at all. The key id and the
secret must never reach params, tags, descriptions, artifacts, the database or the server log.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import servers
import torch
from conftest import TINY_PARAMS
from servers import MlflowServer, mlflow_server, seaweedfs, serving_env
from test_register import predict_like_forward_dynamic

from dyn_adapter.mlops import runs as tracking
from dyn_adapter.mlops.config import RegisterConfig
from dyn_adapter.params import Params
from dyn_adapter.stage_table import stage_params
from dyn_adapter.stages import register

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY_ID = "AKIAMLFLOWS3STORETEST"
SECRET = "mlflow-s3-store-secret-0123456789abcdef"
BUCKET = "mlflow"
PREFIX = "artifacts"
MODEL_NAME = "tiny"  # FRESH_PROCESS loads models:/tiny@champion
PIPELINE_RUN_ID = "s3-store-1"
# Everything that could hand a client S3 access (or point it at the store) besides the server.
S3_CLIENT_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "MLFLOW_S3_ENDPOINT_URL",
)


def no_aws_files(base: Path) -> dict[str, str]:
    """No ~/.aws and no instance metadata: credentials only from the environment, if at all."""
    return {
        "AWS_CONFIG_FILE": str(base / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(base / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def s3_client(endpoint: str):
    return servers.s3_client(endpoint, KEY_ID, SECRET)


def list_keys(s3, prefix: str = f"{PREFIX}/") -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def s3_prefix(artifact_uri: str) -> str:
    """The bucket key prefix of a proxied ``mlflow-artifacts:/...`` location."""
    scheme = "mlflow-artifacts:"
    assert artifact_uri.startswith(scheme), artifact_uri
    return f"{PREFIX}/{artifact_uri[len(scheme) :].lstrip('/')}"


@dataclass
class Stack:
    root: Path
    endpoint: str
    server: MlflowServer


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    """SeaweedFS with bucket ``mlflow``, and an ``mlflow server`` proxying artifacts to
    ``s3://mlflow/artifacts``; the server is not waited for here (it starts while the model
    trains, see :func:`registered`)."""
    root = tmp_path_factory.mktemp("s3-mlflow")
    with seaweedfs(root / "weed", KEY_ID, SECRET) as endpoint:
        s3 = s3_client(endpoint)
        deadline = time.monotonic() + 30
        while True:  # the volume server may register a moment after the gateway answers
            try:
                s3.create_bucket(Bucket=BUCKET)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        server_env = {
            "MLFLOW_S3_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_DEFAULT_REGION": "us-east-1",
            **no_aws_files(root),
        }
        with mlflow_server(
            root / "mlflow", f"s3://{BUCKET}/{PREFIX}", server_env, wait=False
        ) as server:
            yield Stack(root, endpoint, server)


@pytest.fixture(scope="module")
def registered(stack) -> dict:
    """Train (1 epoch), search and evaluate a tiny model, then, from an environment without
    any S3 credentials, log the train stage and register the model on the server."""
    from conftest import tiny_evaluated

    root = stack.root / "pipeline"
    root.mkdir()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on 2 shared cores: more threads only spin
    try:
        with pytest.MonkeyPatch.context() as mp:
            for var in S3_CLIENT_VARS:
                mp.delenv(var, raising=False)
            for var, value in no_aws_files(root).items():
                mp.setenv(var, value)
            model_dir, data = tiny_evaluated(
                root, sizes={"train": 64, "val": 32, "test": 32}, speed_images=8
            )
            url = stack.server.ready()
            parent = tracking.start_pipeline_run(url, pipeline_run_id=PIPELINE_RUN_ID)
            stage = tracking.log_stage(
                "train", root / "train", parent, stage_params(TINY_PARAMS, "train"), url
            )
            result = register.run(
                Params(register=RegisterConfig(model_name=MODEL_NAME, max_gflops_ratio=None)),
                model_dir,
                root / "search",
                root / "evaluate",
                data,
                root / "register",
                pipeline_run_id=PIPELINE_RUN_ID,
                tracking_uri=url,
            )
    finally:
        torch.set_num_threads(threads)
    return {
        "url": url,
        "model_dir": model_dir,
        "data": data,
        "search": root / "search",
        "parent": parent,
        "stage": stage,
        "registration": result,
    }


def test_artifacts_go_to_s3_and_the_champion_loads_without_s3_credentials(
    stack, registered, tmp_path, monkeypatch
):
    from mlflow import MlflowClient

    for var in S3_CLIENT_VARS:
        monkeypatch.delenv(var, raising=False)
    url = registered["url"]
    reg = registered["registration"]
    assert reg["aliases"] == ["candidate", "champion"] and reg["tracking_uri"] == url

    # Every artifact is in the bucket, under the prefix the server was given; none on its disk.
    c = MlflowClient(url)
    keys = list_keys(s3_client(stack.endpoint))
    stage_prefix = s3_prefix(c.get_run(registered["stage"]).info.artifact_uri)
    assert f"{stage_prefix}/model/model_config.json" in keys
    assert any(k.startswith(f"{stage_prefix}/model/") and k.endswith(".safetensors") for k in keys)
    assert f"{stage_prefix}/train_log.json" in keys
    register_prefix = s3_prefix(c.get_run(reg["run_id"]).info.artifact_uri)
    assert f"{register_prefix}/evaluate/metrics.json" in keys
    # The version's source is its logged model, models:/<model id> (REST versions carry no
    # model_id field in MLflow 3).
    source = c.get_model_version(MODEL_NAME, reg["version"]).source
    assert source.startswith("models:/m-"), source
    logged = c.get_logged_model(source.removeprefix("models:/"))
    model_prefix = s3_prefix(logged.artifact_location)
    model_keys = [k for k in keys if k.startswith(f"{model_prefix}/")]
    assert f"{model_prefix}/MLmodel" in model_keys
    assert any(k.endswith("/model_config.json") for k in model_keys)
    assert any(k.endswith(".safetensors") for k in model_keys)
    assert not list(stack.server.log.parent.glob("mlartifacts*"))  # the server's default

    # A fresh process with no S3 credentials, endpoint or AWS config: only the tracking URI.
    images = np.load(registered["data"] / "test_images.npy")[:2]
    np.save(tmp_path / "two.npy", images)
    rows = json.loads((registered["search"] / "thresholds.json").read_text())["budgets"]
    env = {k: v for k, v in serving_env(MLFLOW_TRACKING_URI=url).items() if k not in S3_CLIENT_VARS}
    env.update(no_aws_files(tmp_path))
    predict_like_forward_dynamic(
        tmp_path / "two.npy", rows, registered["model_dir"], registered["data"], env, tmp_path
    )


def test_s3_credentials_never_reach_mlflow(stack, registered):
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    c = MlflowClient(registered["url"])
    texts: list[str] = []
    experiments = c.search_experiments(view_type=ViewType.ALL)
    exp_ids = [e.experiment_id for e in experiments]
    for e in experiments:
        texts += [e.name, e.artifact_location, json.dumps(e.tags)]
    runs = c.search_runs(exp_ids, run_view_type=ViewType.ALL, max_results=1000)
    assert len(runs) >= 2  # the pipeline run (holding the registered model), its train stage
    for r in runs:
        d = r.data
        texts += [r.info.artifact_uri, r.info.run_name or "", json.dumps(d.params)]
        texts += [json.dumps(d.tags), json.dumps(sorted(d.metrics))]
    for m in c.search_logged_models(exp_ids):
        texts += [m.artifact_location, json.dumps(m.tags), json.dumps(m.params)]
    models = c.search_registered_models()
    assert [m.name for m in models] == [MODEL_NAME]
    for m in models:
        texts += [m.description or "", json.dumps(m.tags)]
        for v in c.search_model_versions(f"name = '{m.name}'"):
            texts += [v.description or "", json.dumps(v.tags), v.source or ""]
    text = "\n".join(texts)
    assert SECRET not in text and KEY_ID not in text

    s3 = s3_client(stack.endpoint)
    keys = list_keys(s3)
    assert len(keys) >= 10
    blobs = {f"s3://{BUCKET}/{k}": s3.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys}
    db_dir = stack.server.log.parent
    blobs |= {str(p): p.read_bytes() for p in db_dir.glob("mlflow.db*")}
    blobs[str(stack.server.log)] = stack.server.log.read_bytes()
    # The scan reads real content: the database holds the run ids, the bucket the model.
    assert str(db_dir / "mlflow.db") in blobs
    assert any(PIPELINE_RUN_ID.encode() in b for w, b in blobs.items() if "mlflow.db" in w)
    assert any(w.endswith("/MLmodel") and b"python_function" in b for w, b in blobs.items())
    for where, blob in blobs.items():
        assert SECRET.encode() not in blob, f"the S3 secret is in {where}"
        assert KEY_ID.encode() not in blob, f"the S3 key id is in {where}"
