"""The KFP pipelines: compiled YAML up to date, whole DAGs on the real local runner, submit."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml
from conftest import TINY_PARAMS
from pipelines import tiny_pipeline_params, write_vtab_task

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("kind", ["demo", "vtab"])
def test_compiled_pipeline_is_up_to_date(tmp_path, kind):
    from pipeline.runner import COMPILED, compile_pipeline

    fresh = compile_pipeline(kind, tmp_path / f"{kind}.yaml", REPO / "params.yaml")
    committed = REPO / COMPILED[kind]
    # Parsed, not text: the header comment prints the params dict in protobuf map order.
    assert yaml.safe_load(committed.read_text()) == yaml.safe_load(fresh.read_text()), (
        f"{committed} is stale: run `dyn-adapter pipeline compile`"
    )


def test_compiled_pipeline_shape():
    spec = yaml.safe_load((REPO / "pipeline/dyn_adapter_pipeline.yaml").read_text())
    tasks = spec["root"]["dag"]["tasks"]
    components = {t["componentRef"]["name"] for t in tasks.values()}
    for name in ["prepare-data", "train-model", "sparsify-select", "search-thresholds"]:
        assert any(c.startswith(f"comp-{name}") for c in components), name
    # three trainings (ours and both baselines) hang off the same prepared data
    trains = [t for t in tasks.values() if t["componentRef"]["name"].startswith("comp-train-model")]
    assert len(trains) == 3
    assert any("iteratorPolicy" in t or "parameterIterator" in t for t in tasks.values())
    # the risk-controlled points reach evaluation and the registered model
    for consumer in ("evaluate-model", "register-model"):
        inputs = tasks[consumer]["inputs"]["artifacts"]["risk_points"]["taskOutputArtifact"]
        assert inputs == {
            "outputArtifactKey": "risk_points",
            "producerTask": "calibrate-thresholds",
        }
    executors = spec["deploymentSpec"]["executors"]
    for ex in executors.values():
        container = ex["container"]
        assert container["image"] == "dyn-adapter:0.1.0"
        assert "pip install" not in " ".join(container["command"])  # nothing installed at run time
    vtab = yaml.safe_load((REPO / "pipeline/vtab_pipeline.yaml").read_text())
    text = json.dumps(vtab)
    assert "nvidia.com/gpu" in text and "accelerator" in text


def test_bad_params_are_refused_before_compiling(tmp_path):
    from dyn_adapter.errors import ConfigError
    from pipeline.runner import compile_pipeline

    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump({"train": {"epochz": 3}}))
    with pytest.raises(ConfigError, match="epochz"):
        compile_pipeline("demo", tmp_path / "x.yaml", bad)
    assert not (tmp_path / "x.yaml").exists()


@pytest.mark.integration
@pytest.mark.slow
def test_vtab_pipeline_runs_locally(tmp_path, capsys):
    """Two tiny VTAB-layout tasks through the real KFP local runner (`pipeline run --kind
    vtab`), into the VTAB table, with the concise run view."""
    from mlflow.tracking import MlflowClient

    from dyn_adapter.mlops.store import embedded_tracking_uri
    from pipeline.runner import run_local
    from pipeline.summary import format_summary

    root = tmp_path / "vtab"
    for k, task in enumerate(["eurosat", "dtd"]):
        write_vtab_task(root / task, seed=k)
    params_path = tiny_pipeline_params(tmp_path, "vtab", root / "eurosat")
    params = yaml.safe_load(params_path.read_text())
    params["data"]["test_size"] = 6  # a demo-style subset: VTAB tasks must ignore it
    params_path.write_text(yaml.safe_dump(params))
    uri = embedded_tracking_uri(tmp_path / "mlflow")
    summary = run_local(
        params_path,
        pipeline_root=tmp_path / "kfp",
        tracking_uri=uri,
        kind="vtab",
        arguments={"tasks": ["eurosat", "dtd"], "data_root": str(root)},
    )
    table = json.loads((Path(summary["table_dir"]) / "vtab.json").read_text())
    assert [r["task"] for r in table["tasks"]] == ["eurosat", "dtd"]
    for r in table["tasks"]:  # each task against both baselines, with intervals
        assert r["static_petl_accuracy"] is not None and len(r["frozen_probe_exits"]) == 3
        assert r["accuracy_interval"][0] <= r["accuracy"] <= r["accuracy_interval"][1]
        assert r["half_gflops_vs_static_petl"]["level"] == 0.95
        assert r["above_frozen_probe_resolved"] in (True, False)
    assert table["mean_static_petl"] is not None
    # one line per step on the terminal, each task's branch named by its task; logs in a file
    shown = capsys.readouterr().out
    assert len(summary["steps"]) == 17 and "step 17 of 17: VTAB table" in shown
    assert "evaluate [dtd]" in shown and "Got executor_input" not in shown
    assert "Got executor_input" in Path(summary["log"]).read_text()
    assert "mean of tasks" in format_summary(summary)
    evaluations = sorted((tmp_path / "kfp").glob("*/*/evaluate-model/evaluation/metrics.json"))
    assert len(evaluations) == 2
    assert all(json.loads(m.read_text())["test_images"] == 24 for m in evaluations)
    # one MLflow run for the pipeline, a child per task's evaluation and the table; finished
    runs = MlflowClient(uri).search_runs(
        [MlflowClient(uri).get_experiment_by_name("dyn-adapter").experiment_id]
    )
    stages = {r.data.tags.get("pipeline_stage") for r in runs} - {None}
    assert stages == {"evaluate-eurosat", "evaluate-dtd", "vtab"}
    (parent,) = [r for r in runs if "pipeline_stage" not in r.data.tags]
    assert parent.info.status == "FINISHED"
    assert "vtab.mean_of_tasks" in parent.data.metrics
    assert set(table["group_means"]) == {"specialized", "natural"}
    accs = [r["accuracy"] for r in table["tasks"]]
    assert table["mean_of_tasks"] == pytest.approx(sum(accs) / 2)
    assert all(0.0 <= a <= 1.0 for a in accs)


class _Recorder(BaseHTTPRequestHandler):
    requests: list[tuple[str, str, bytes]] = []

    def _reply(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 (http.server API)
        self.requests.append(("GET", self.path, b""))
        if "experiments" in self.path:
            self._reply(
                {"experiments": [{"experiment_id": "exp-1", "display_name": "dyn-adapter"}]}
            )
        else:
            self._reply({})

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.requests.append(("POST", self.path, body))
        if self.path.endswith("/runs"):
            self._reply({"run_id": "run-42", "display_name": "r"})
        else:
            self._reply({"experiment_id": "exp-1", "display_name": "dyn-adapter"})

    def log_message(self, *args):
        pass


@pytest.fixture
def kfp_api() -> Iterator[str]:
    """A recording stand-in for the KFP API on loopback; its URL."""
    _Recorder.requests = []
    server = HTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def posted_runs() -> list[dict]:
    return [json.loads(b) for m, p, b in _Recorder.requests if m == "POST" and p.endswith("/runs")]


@pytest.mark.integration
def test_submit_sends_the_compiled_pipeline(kfp_api):
    """Submit to a recording HTTP server on loopback: the run request carries our spec."""
    from pipeline.runner import submit

    run_id = submit(
        kfp_api,
        REPO / "pipeline/dyn_adapter_pipeline.yaml",
        {"overrides": ["train.epochs=3"]},
        pipeline_root="s3://artifacts/kfp",
    )
    assert run_id == "run-42"
    (body,) = posted_runs()
    assert body["pipeline_spec"]["pipelineInfo"]["name"] == "dyn-adapter"
    assert body["runtime_config"]["parameters"]["overrides"] == ["train.epochs=3"]
    assert body["runtime_config"]["pipeline_root"] == "s3://artifacts/kfp"
    assert body["experiment_id"] == "exp-1"


@pytest.mark.integration
def test_cli_submits_the_vtab_pipeline_with_its_arguments(kfp_api, capsys):
    from dyn_adapter.cli import main

    code = main(
        [
            "pipeline",
            "submit",
            "--host",
            kfp_api,
            "--package",
            str(REPO / "pipeline/vtab_pipeline.yaml"),
            "--arg",
            "tasks=[dtd, eurosat]",
            "--arg",
            "data_root=s3://datasets/vtab-1k",
            "--set",
            "train.epochs=100",
        ]
    )
    assert code == 0 and "run run-42" in capsys.readouterr().out
    (body,) = posted_runs()
    assert body["pipeline_spec"]["pipelineInfo"]["name"] == "dyn-adapter-vtab"
    assert body["runtime_config"]["parameters"] == {
        "tasks": ["dtd", "eurosat"],
        "data_root": "s3://datasets/vtab-1k",
        "overrides": ["train.epochs=100"],
    }


def test_cli_refuses_a_malformed_pipeline_argument(capsys):
    from dyn_adapter.cli import main

    code = main(["pipeline", "submit", "--host", "http://127.0.0.1:9", "--arg", "tasks"])
    assert code == 2 and "--arg 'tasks': expected NAME=VALUE" in capsys.readouterr().err


def test_vtab_tasks_take_their_whole_test_split():
    """VTAB-1k scores each task on its whole test split, whatever the demo's data.test_size."""
    from components.vtab import task_overrides
    from dyn_adapter.params import params_from_dict

    defaults = {"data": {"test_size": 5000}}
    p = params_from_dict(defaults, task_overrides([], "s3://b/vtab/", "dtd"))
    assert p.data.test_size is None
    assert (p.data.source, p.data.path) == ("vtab", "s3://b/vtab/dtd")
    # an explicit override of the pipeline still wins
    p = params_from_dict(defaults, task_overrides(["data.test_size=100"], "/v", "dtd"))
    assert p.data.test_size == 100


def test_real_scale_params_compile_the_vtab_pipeline(tmp_path, capsys):
    """params-vtab.yaml (ViT-B/16 IN-21k at 224 px) is valid and compiles for a CUDA image."""
    from dyn_adapter.cli import main

    out = tmp_path / "vtab-vit-b16.yaml"
    image = "registry.example.com/dyn-adapter:0.1.0-cuda"
    args = ["pipeline", "compile", "--kind", "vtab", "--params", str(REPO / "params-vtab.yaml")]
    assert main([*args, "--image", image, "--out", str(out)]) == 0
    spec = yaml.safe_load(out.read_text())
    defaults = spec["root"]["inputDefinitions"]["parameters"]["params"]["defaultValue"]
    assert defaults["model"]["backbone"]["name"] == "vit_base_patch16_224.orig_in21k"
    assert defaults["model"]["backbone"]["img_size"] == 224
    executors = spec["deploymentSpec"]["executors"].values()
    assert {e["container"]["image"] for e in executors} == {image}
    assert any(e["container"].get("resources", {}).get("accelerator") for e in executors)
    # --out names one file
    assert main([*args, "--kind", "demo", "--out", str(out)]) == 2
    assert "--out names one file" in capsys.readouterr().err


def test_submit_without_package_is_a_clear_error(tmp_path):
    from dyn_adapter.errors import ConfigError
    from pipeline.runner import submit

    with pytest.raises(ConfigError, match="pipeline compile"):
        submit("http://127.0.0.1:9", tmp_path / "missing.yaml")


@pytest.mark.integration
@pytest.mark.slow
def test_demo_pipeline_runs_locally_end_to_end(subprocess_dag):
    """The whole demo DAG on the real KFP local runner: every stage, both baselines, the
    registration, one MLflow run with a nested run per stage, and the UI's visualisations."""
    from mlflow.tracking import MlflowClient

    from pipeline.summary import format_summary

    summary, uri = subprocess_dag.summary, subprocess_dag.tracking_uri

    assert summary["registered"]["version"] == "1"
    assert "candidate" in summary["registered"]["aliases"]
    assert len(summary["exits"]) == 3 and summary["static_petl_accuracy"] is not None
    assert "registered dyn-adapter version 1" in format_summary(summary)

    client = MlflowClient(uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "dyn-adapter"]
    runs = client.search_runs([experiment.experiment_id])
    parents = [
        r
        for r in runs
        if "mlflow.parentRunId" not in r.data.tags and "pipeline_stage" not in r.data.tags
    ]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len({r.data.tags["mlflow.parentRunId"] for r in children}) == 1
    assert {r.data.tags["pipeline_stage"] for r in children} >= {
        "prepare",
        "train-dyn",
        "train-static",
        "train-probe",
        "sparsify",
        "search",
        "search-probe",
        "calibrate",
        "evaluate",
        "register",
    }
    parent = client.get_run(children[0].data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FINISHED"
    assert parents  # the pipeline's own run

    root = subprocess_dag.root
    assert list(root.glob("*/evaluate-model/plot")), "HTML plot for the KFP UI"
    card = next(root.glob("*/evaluate-model/model_card"))
    assert "Dyn-Adapter" in card.read_text()
    # two sparsity candidates fanned out, plus the input model, in the selection table
    table = next(root.glob("*/sparsify-select/table")).read_text()
    assert table.count("\n") >= 2 + 3


def test_local_run_shows_steps_and_keeps_the_whole_log(subprocess_dag):
    """The run's view is one line per step; the executor logs went to the file it names."""
    from pipeline.summary import format_summary

    summary = subprocess_dag.summary
    log = Path(summary["log"])
    assert log.parent == subprocess_dag.root / "logs" and "full task logs" in format_summary(
        summary
    )
    text = log.read_text()
    assert "Executing task" in text and "Got executor_input" in text
    steps = summary["steps"]
    assert all(s["status"] == "SUCCESS" for s in steps)
    names = [s["task"] for s in steps]
    assert names[0] == "resolve-params" and names[-1] == "register-model"
    # 12 tasks of the DAG's own, the loop's body once per sparsity candidate (2)
    assert len(names) == 14 and names.count("sparsify-candidate") == 2
    assert len(set(names)) == 13
    evaluate = next(s for s in steps if s["task"] == "evaluate-model")
    assert "full_accuracy" in evaluate["metrics"]


def test_run_form_is_typed_with_defaults_and_descriptions():
    """What the KFP UI's run form shows: the compiled YAML's inputDefinitions, read as the UI
    reads them."""
    from components.shim import RUN_FORM

    spec = yaml.safe_load((REPO / "pipeline/dyn_adapter_pipeline.yaml").read_text())
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    params = yaml.safe_load((REPO / "params.yaml").read_text())

    def value(key):
        node = params
        for part in key.split("."):
            node = node[part]
        return node

    types = {
        "data_source": "STRING",
        "data_path": "STRING",
        "petl_method": "STRING",
        "epochs": "NUMBER_INTEGER",
        "budgets": "LIST",
        "model_name": "STRING",
    }
    assert set(types) == set(RUN_FORM)
    for name, kind in types.items():
        assert inputs[name]["parameterType"] == kind, name
        assert inputs[name]["defaultValue"] == value(RUN_FORM[name]), name
    # The blob, the free-form overrides and the MLflow server stay.
    assert inputs["params"]["parameterType"] == "STRUCT"
    assert inputs["overrides"]["parameterType"] == "LIST"
    assert inputs["tracking_uri"]["parameterType"] == "STRING"
    for name, spec_ in inputs.items():
        assert spec_.get("description"), f"{name}: no description for the UI"
        assert "\n" not in spec_["description"], f"{name}: the description is wrapped"
    # Every task applies the resolved overrides, so a form field reaches every stage.
    tasks = spec["root"]["dag"]["tasks"]
    resolve = next(
        n for n, t in tasks.items() if t["componentRef"]["name"] == "comp-resolve-params"
    )
    for name, task in tasks.items():
        overrides = task.get("inputs", {}).get("parameters", {}).get("overrides")
        if name != resolve and overrides is not None:
            assert overrides["taskOutputParameter"]["producerTask"] == resolve, name


def test_run_form_applies_over_params_and_under_overrides(tmp_path):
    from components import shim
    from dyn_adapter.errors import ConfigError
    from dyn_adapter.params import params_from_dict

    params = json.loads(json.dumps(TINY_PARAMS))
    form = {"epochs": 7.0, "budgets": [0.5, 1.0], "petl_method": "lora", "data_path": "/d"}
    merged = shim.run_form_overrides(params, ["train.epochs=3"], form)
    p = params_from_dict(params, merged)
    assert p.train.epochs == 3  # overrides apply last
    assert p.model.petl.method == "lora" and p.data.path == "/d"
    assert p.search.budgets == [0.5, 1.0]
    with pytest.raises(ConfigError, match="method"):
        shim.run_form_overrides(params, [], {"petl_method": "loraa"})
    with pytest.raises(ConfigError, match="unknown field"):
        shim.run_form_overrides(params, [], {"lr": 0.1})


def test_a_user_error_in_a_component_is_one_line_and_exit_2(capsys):
    from components import shim
    from dyn_adapter.errors import ConfigError

    with pytest.raises(SystemExit) as exit_info, shim.user_errors("prepare"):
        raise ConfigError("data.path /nowhere: no such directory")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == "dyn-adapter prepare: error: data.path /nowhere: no such directory\n"
    with pytest.raises(KeyError), shim.user_errors("prepare"):  # bugs keep their traceback
        raise KeyError("x")


def test_compile_takes_an_image_by_digest(tmp_path):
    from dyn_adapter.errors import ConfigError
    from pipeline.runner import compile_pipeline

    digest = "127.0.0.1:5000/dyn-adapter@sha256:" + "ab" * 32
    out = compile_pipeline("demo", tmp_path / "demo.yaml", REPO / "params.yaml", digest)
    executors = yaml.safe_load(out.read_text())["deploymentSpec"]["executors"]
    assert {e["container"]["image"] for e in executors.values()} == {digest}
    with pytest.raises(ConfigError, match="64 hex"):
        compile_pipeline("demo", tmp_path / "bad.yaml", REPO / "params.yaml", digest[:-1])
    assert not (tmp_path / "bad.yaml").exists()
