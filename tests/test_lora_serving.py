"""Dyn-LoRA end to end on the tiny model, and the budget chosen per request over HTTP.

train -> search -> evaluate (LoRA merged into the frozen weights) -> register -> a real
``mlflow models serve`` of ``@champion``, asked with a low budget, the full budget, and none.
"""

from __future__ import annotations

import dataclasses
import json
import sys

import numpy as np
import pytest
import torch
from conftest import tiny_evaluated
from servers import free_ports, post_json, process, serving_env, wait_until_healthy

from dyn_adapter.data.transforms import to_model_input
from dyn_adapter.mlops.pyfunc import encode_image
from dyn_adapter.mlops.store import embedded_tracking_uri
from dyn_adapter.models import create_dyn_adapter
from dyn_adapter.models.checkpoint import load_for_inference, read_config
from dyn_adapter.params import load_params
from dyn_adapter.stages import register

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LOW, FULL = 0.5, 1.0


@pytest.fixture(scope="module")
def lora(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    overrides = ["model.petl.method=lora", f"search.budgets=[{LOW}, {FULL}]"]
    model_dir, data = tiny_evaluated(root, overrides=overrides)
    params = load_params(root / "params.yaml", [*overrides, "register.model_name=tiny-lora"])
    uri = embedded_tracking_uri(root / "mlflow")
    registration = register.run(
        params,
        model_dir,
        root / "search",
        root / "evaluate",
        data,
        root / "register",
        pipeline_run_id="lora-e2e",
        tracking_uri=uri,
    )
    return {"root": root, "model_dir": model_dir, "data": data, "uri": uri, "reg": registration}


def test_lora_is_evaluated_merged(lora):
    metrics = json.loads((lora["root"] / "evaluate" / "metrics.json").read_text())
    cfg, _ = read_config(lora["model_dir"])
    assert cfg.petl.method == "lora"
    plain = create_dyn_adapter(
        dataclasses.replace(cfg, petl=dataclasses.replace(cfg.petl, method="none"))
    )
    # Merged, LoRA costs nothing at inference: exactly the plain backbone with the same heads.
    assert metrics["full"]["gflops"] == pytest.approx(plain.exit_info[-1].gflops_cumulative)
    assert lora["reg"]["aliases"] == ["candidate", "champion"]


def test_registered_lora_model_loads_and_predicts_like_forward_dynamic(lora, monkeypatch):
    import mlflow
    import pandas as pd

    monkeypatch.setenv("MLFLOW_TRACKING_URI", lora["uri"])
    served = mlflow.pyfunc.load_model("models:/tiny-lora@champion")
    rows = json.loads((lora["root"] / "search" / "thresholds.json").read_text())["budgets"]
    images = np.load(lora["data"] / "test_images.npy")[:24]
    frame = pd.DataFrame({"image": [encode_image(im) for im in images]})
    model = load_for_inference(lora["model_dir"], "cpu")  # merged, as served
    data_config = json.loads((lora["data"] / "manifest.json").read_text())["data_config"]
    x = to_model_input(torch.from_numpy(images), data_config)
    for row in rows:
        got = served.predict(frame, params={"budget": row["budget"]})
        ref = model.forward_dynamic(x, row["thresholds"])
        assert got["label_index"].tolist() == ref.prediction.tolist()
        assert got["exit_index"].tolist() == ref.exit_index.tolist()


def test_served_budget_picks_the_policy_and_none_means_the_full_model(lora, tmp_path):
    """Over HTTP, with policies whose exits are known: the low budget's sends every image to
    the first exit, the full budget's every image to the last."""
    search = tmp_path / "search"
    search.mkdir()
    thresholds = json.loads((lora["root"] / "search" / "thresholds.json").read_text())
    policy = {LOW: [0.0, 0.0, 0.0], FULL: [1.01, 1.01, 0.0]}
    for row in thresholds["budgets"]:
        row["thresholds"], row["geometric"] = policy[row["budget"]], None
    (search / "thresholds.json").write_text(json.dumps(thresholds))
    params = load_params(lora["root"] / "params.yaml", ["register.model_name=tiny-budgets"])
    register.run(
        params,
        lora["model_dir"],
        search,
        lora["root"] / "evaluate",
        lora["data"],
        tmp_path / "register",
        pipeline_run_id="budgets",
        tracking_uri=lora["uri"],
    )
    images = np.load(lora["data"] / "test_images.npy")
    port = free_ports(1)[0]
    url = f"http://127.0.0.1:{port}"
    cmd = [
        *(sys.executable, "-m", "mlflow", "models", "serve"),
        *("-m", "models:/tiny-budgets@champion", "--env-manager", "local"),
        *("-h", "127.0.0.1", "-p", str(port)),
    ]

    def ask(**params) -> list[dict]:
        frame = {"columns": ["image"], "data": [[encode_image(im)] for im in images]}
        body = json.dumps({"dataframe_split": frame, "params": params}).encode()
        status, answer = post_json(f"{url}/invocations", body)
        assert status == 200, answer
        return answer["predictions"]

    with process(cmd, tmp_path / "serve.log", serving_env(MLFLOW_TRACKING_URI=lora["uri"])) as proc:
        wait_until_healthy(proc, f"{url}/ping", tmp_path / "serve.log", timeout=150)
        low, full, omitted, between = ask(budget=LOW), ask(budget=FULL), ask(), ask(budget=0.8)

    assert {p["exit_index"] for p in low} == {0}
    assert {p["exit_index"] for p in full} == {2}
    assert sum(p["gflops"] for p in low) < sum(p["gflops"] for p in full)
    answers = lambda rows: [{k: v for k, v in p.items() if k != "policy"} for p in rows]  # noqa: E731
    assert answers(between) == answers(low)  # the largest searched budget not above 0.8
    assert answers(omitted) == answers(full)  # no budget: the full model's policy
    # ... and each answer says which policy gave it
    assert {p["policy"] for p in between} == {f"budget {LOW:g} (asked 0.8)"}
    assert {p["policy"] for p in omitted} == {f"budget {FULL:g} (default)"}
    # What the server answered is real early exit with those thresholds.
    model = load_for_inference(lora["model_dir"], "cpu")
    data_config = json.loads((lora["data"] / "manifest.json").read_text())["data_config"]
    x = to_model_input(torch.from_numpy(images), data_config)
    ref = model.forward_dynamic(x, policy[FULL])
    assert [p["label_index"] for p in full] == ref.prediction.tolist()
