"""What a logged stage tells MLflow about itself: a model-training experiment, and the prepared
dataset it read as a dataset input (name, digest, source), not only a hash in a param."""

from __future__ import annotations

import json

import pytest
from conftest import write_prepared

from dyn_adapter.mlops.runs import log_stage, start_pipeline_run
from dyn_adapter.mlops.store import (
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING,
    embedded_tracking_uri,
    mlflow_client,
)


@pytest.fixture
def logged(tmp_path):
    data = write_prepared(tmp_path / "prepared")
    uri = embedded_tracking_uri(tmp_path / "mlflow")
    parent = start_pipeline_run(uri, "records", pipeline_run_id="run-1")
    child = log_stage("prepare", data, parent, {"data": {"seed": 0}}, uri, data_dir=data)
    return mlflow_client(uri), child, data


def test_the_experiment_says_it_holds_model_training(logged):
    client, child, _ = logged
    experiment = client.get_experiment(client.get_run(child).info.experiment_id)
    assert experiment.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING


def test_the_prepared_dataset_is_the_runs_dataset_input(logged):
    client, child, data = logged
    manifest = json.loads((data / "manifest.json").read_text())
    (entry,) = client.get_run(child).inputs.dataset_inputs
    assert entry.dataset.name == manifest["source"]
    assert entry.dataset.source == manifest["path"]
    assert len(entry.dataset.digest) == 16
    profile = json.loads(entry.dataset.profile)
    assert {k: v["count"] for k, v in profile.items()} == {
        k: v["count"] for k, v in manifest["splits"].items()
    }
    assert {t.key: t.value for t in entry.tags}["mlflow.data.context"] == "training"


def test_logging_again_adds_no_second_dataset_input(logged, tmp_path):
    client, child, data = logged
    parent = client.get_run(child).data.tags["mlflow.parentRunId"]
    uri = embedded_tracking_uri(tmp_path / "mlflow")
    again = log_stage("prepare", data, parent, {"data": {"seed": 0}}, uri, data_dir=data)
    assert again == child
    assert len(client.get_run(child).inputs.dataset_inputs) == 1
