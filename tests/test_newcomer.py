"""A newcomer's path after the demo, on the tiny pipeline: read the run summary, start the
MLflow UI it names and open its link in a real browser, serve the champion, send good and bad
requests."""

from __future__ import annotations

import json
import re
import shlex
import sys

import numpy as np
import pytest
from browser import opens_on_model_training, rendered_dom, visible_text
from servers import free_ports, post_json, process, serving_env, wait_until_healthy

from dyn_adapter.mlops import pyfunc as serving
from dyn_adapter.mlops.names import LOCAL_UI, SERVE_PORT, ui_url


def test_serving_and_the_ui_do_not_share_a_port():
    """A user looks at the runs while serving: `dyn-adapter serve` and `mlflow ui` both start
    with their defaults."""
    assert int(LOCAL_UI.rsplit(":", 1)[1]) != SERVE_PORT


@pytest.mark.integration
@pytest.mark.slow
def test_after_the_demo(subprocess_dag, tmp_path):
    from pipeline.summary import format_summary

    summary = format_summary(subprocess_dag.summary)
    # 1. The summary says how to look at the run: the UI's command, then the run's page.
    (line,) = [x for x in summary.splitlines() if x.startswith("see the run: ")]
    found = re.fullmatch(r"see the run: `(mlflow ui [^`]+)`, then (\S+)", line)
    assert found, line
    command, link = found.groups()
    assert link.startswith(f"{LOCAL_UI}/#/experiments/")

    ui_port, serve_port = free_ports(2)
    ui = f"http://127.0.0.1:{ui_port}"
    ui_cmd = [sys.executable, "-m", *shlex.split(command), "--port", str(ui_port)]
    with process(ui_cmd, tmp_path / "ui.log", serving_env()) as proc:
        wait_until_healthy(proc, f"{ui}/health", tmp_path / "ui.log", timeout=180)
        run_page = rendered_dom(link.replace(LOCAL_UI, ui), tmp_path / "profile")
        experiment_page = rendered_dom(
            ui_url(ui, re.search(r"/experiments/(\w+)/", link)[1]), tmp_path / "profile"
        )
    registered = subprocess_dag.summary["registered"]
    # The pipeline's run: its params, its dataset and the registered model, each stage nested.
    run_text = visible_text(run_page)
    name = re.search(r"\|(pipeline \w+)\|", run_text)
    assert name, run_text[-3000:]
    assert "|train.epochs|2|" in run_text and re.search(r"\|Datasets\|vtab \(\w+\)\|", run_text)
    assert re.search(
        rf"\|Registered models\|\s*{registered['name']}\s*\|v{registered['version']}\|", run_text
    )
    children = re.search(r"\|Child runs\|(.*?)\|Source\|", run_text)
    assert children and {"train-dyn", "evaluate", "register"} <= set(children[1].split("|"))
    # The experiment opens on its training runs, not MLflow 3's GenAI overview.
    experiment_text = visible_text(experiment_page)
    assert opens_on_model_training(experiment_text), experiment_text[-2000:]
    assert opens_on_model_training(run_text)
    assert f"|{name[1]}|" in experiment_text

    # 2. Serve the champion as the README says: nothing activated, no variable set.
    cmd = [
        *(sys.executable, "-m", "dyn_adapter.cli", "serve", "--name", registered["name"]),
        *("--tracking-uri", subprocess_dag.tracking_uri, "--port", str(serve_port)),
        *("--max-batch", "4"),
    ]
    env = {k: v for k, v in serving_env().items() if k != "MLFLOW_TRACKING_URI"}
    env["PATH"] = "/usr/bin:/bin"
    url = f"http://127.0.0.1:{serve_port}/invocations"
    images = np.load(next(subprocess_dag.root.rglob("test_images.npy")))[:3]
    rows = [[serving.encode_image(im)] for im in images]
    with process(cmd, tmp_path / "serve.log", env) as proc:
        wait_until_healthy(proc, url.replace("invocations", "ping"), tmp_path / "serve.log", 180)
        status, answer = post_json(url, _body(rows, budget=0.5))
        assert status == 200, answer
        assert [p["policy"] for p in answer["predictions"]] == ["budget 0.5 (asked 0.5)"] * 3
        # 3. Bad requests: each refused with what to do, the request not echoed back.
        status, answer = post_json(url, _body(rows, bugdet=0.5))
        assert status == 400 and "unknown parameter(s) bugdet" in answer["message"]
        status, answer = post_json(url, _body(rows + rows))
        assert status == 413 and "batches of at most 4" in answer["message"]
        status, answer = post_json(url, _body([rows[0], ["@@not an image@@"]]))
        assert status == 400 and "row 1" in answer["message"]
        assert "not an image" not in answer["message"]
        assert proc.poll() is None


def _body(data: list, **params: object) -> bytes:
    return json.dumps(
        {"dataframe_split": {"columns": ["image"], "data": data}, "params": params}
    ).encode()
