"""Model registration, the promotion gate, promote/rollback, and MLflow pyfunc serving.

Unit tests use an embedded SQLite store in a temporary directory; the integration tests start a
real ``mlflow server`` (and ``mlflow models serve``) on loopback. No MLflow call is mocked.
"""

from __future__ import annotations

import base64
import io
import json
import math
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from browser import opens_on_model_training, rendered_dom, visible_text
from conftest import evaluation_metrics, tiny_model, tiny_params, write_prepared
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from PIL import Image
from servers import (
    MlflowServer,
    free_ports,
    mlflow_server,
    post_json,
    process,
    serving_env,
    wait_until_healthy,
)

from dyn_adapter.artifacts import Evaluation, OperatingPoint
from dyn_adapter.cli import main
from dyn_adapter.data.transforms import to_model_input
from dyn_adapter.errors import ConfigError
from dyn_adapter.mlops import champion
from dyn_adapter.mlops import pyfunc as serving
from dyn_adapter.mlops.config import RegisterConfig
from dyn_adapter.mlops.names import ui_url
from dyn_adapter.mlops.registry import gate
from dyn_adapter.mlops.store import (
    default_artifact_location,
    embedded_tracking_uri,
    redact_uri,
    resolve_tracking_uri,
)
from dyn_adapter.models import save_trainable
from dyn_adapter.models.checkpoint import load_for_inference
from dyn_adapter.params import Params
from dyn_adapter.stages import register

# Thresholds for the tiny 3-exit model: budget 0.5 sends (almost) everything to the first exit,
# budget 1.0 (almost) everything to the last.
POLICIES = [
    {"budget": 0.5, "thresholds": [0.0, 0.0, 0.0]},
    {"budget": 1.0, "thresholds": [1.01, 1.01, 0.0]},
]


# -- fixtures: a tiny model and its stage outputs, without training -----------------------


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models on a small shared machine: more intra-op threads only spin (100x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> Path:
    """A prepared dataset, a saved (untrained) tiny model and its ``thresholds.json``."""
    root = tmp_path_factory.mktemp("outputs")
    write_prepared(root / "prepared", sizes={"train": 8, "val": 8, "test": 8})
    save_trainable(tiny_model(num_classes=4), root / "model")
    (root / "search").mkdir()
    (root / "search" / "thresholds.json").write_text(
        json.dumps({"full_gflops": 0.0055, "budgets": POLICIES})
    )
    return root


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One embedded SQLite store per module (creating its tables takes seconds); tests use
    their own registered model names."""
    return embedded_tracking_uri(tmp_path_factory.mktemp("store"))


@pytest.fixture
def name(request) -> str:
    return "m-" + request.node.name.replace("[", "-").replace("]", "")


def write_metrics(root: Path, accuracy: float, ratio: float | None) -> Path:
    """An evaluate output with the numbers the gate reads (and the sections every evaluate
    output has, which its reader requires)."""
    root.mkdir(parents=True, exist_ok=True)
    iso = None if ratio is None else (0.5, accuracy, ratio)
    metrics = evaluation_metrics(
        accuracy, 0.0055, [(0.5, accuracy, 0.5), (1.0, accuracy, 1.0)], iso
    )
    (root / "metrics.json").write_text(json.dumps(metrics))
    (root / "model_card.md").write_text("# Model card\n")
    return root


def register_run(
    outputs: Path,
    store: str,
    name: str,
    run_id: str,
    accuracy: float,
    ratio: float | None = 0.4,
    **cfg,
) -> dict:
    evaluate_dir = write_metrics(outputs / "evaluate" / name / run_id, accuracy, ratio)
    return register.run(
        Params(register=RegisterConfig(model_name=name, **cfg)),
        outputs / "model",
        outputs / "search",
        evaluate_dir,
        outputs / "prepared",
        outputs / "register" / name / run_id,
        pipeline_run_id=run_id,
        tracking_uri=store,
    )


def alias(client: MlflowClient, name: str, which: str = "champion") -> str | None:
    version = client.get_registered_model(name).aliases.get(which)
    return None if version is None else str(version)


# -- the gate, pure -----------------------------------------------------------------------


CFG = RegisterConfig(accuracy_tolerance=0.01, max_gflops_ratio=0.6)


@pytest.mark.parametrize(
    ("accuracy", "ratio", "champ", "passed", "says"),
    [
        (0.80, 0.5, None, True, "no champion yet"),
        (0.80, 0.7, None, False, "ratio 0.700 > 0.6"),
        (0.80, None, None, False, "no budget reaches iso accuracy"),
        (0.895, 0.5, ("3", 0.90), True, ">= champion v3's 0.9000 - tolerance 0.01"),
        (0.885, 0.5, ("3", 0.90), False, "< champion v3's 0.9000"),
        (0.99, 0.5, ("3", None), False, "has no accuracy tag"),
    ],
)
def test_gate_decisions_say_why(accuracy, ratio, champ, passed, says):
    decision = gate(OperatingPoint(accuracy, 0.5, ratio, 1.0), champ, CFG)
    assert decision.passed is passed
    assert decision.reason.startswith("gate pass" if passed else "gate fail")
    assert says in decision.reason


def test_the_gate_can_compare_balanced_accuracy():
    """A candidate that is more accurate but never predicts a minority class: accuracy passes
    it, balanced accuracy stops it."""
    candidate = OperatingPoint(0.92, 0.5, 0.5, 1.0, balanced_accuracy=0.70)
    assert gate(candidate, ("3", 0.90), CFG).passed
    cfg = RegisterConfig(accuracy_tolerance=0.01, gate_metric="balanced_accuracy")
    decision = gate(candidate, ("3", 0.88), cfg)
    assert not decision.passed
    assert "test balanced accuracy 0.7000 (budget 0.5) < champion v3's 0.8800" in decision.reason
    with pytest.raises(ConfigError, match="gate_metric"):
        RegisterConfig(gate_metric="f1")  # type: ignore[arg-type]


def test_gate_without_gflops_limit():
    cfg = RegisterConfig(max_gflops_ratio=None)
    assert gate(OperatingPoint(0.5, 1.0, None, 1.0), None, cfg).passed


def test_candidate_falls_back_to_the_largest_budget(tmp_path):
    path = write_metrics(tmp_path, 0.7, None) / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["budgets"][1]["accuracy"] = 0.75
    path.write_text(json.dumps(metrics))
    c = Evaluation(tmp_path).operating_point()
    assert (c.accuracy, c.budget, c.gflops_ratio) == (0.75, 1.0, None)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "metrics.json").write_text(json.dumps({"full": {}}))
    with pytest.raises(ConfigError, match="not an evaluate stage output"):
        Evaluation(tmp_path / "bad").operating_point()


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("max_gflops_ratio", 1.5, "max_gflops_ratio"),
        ("accuracy_tolerance", -0.1, "accuracy_tolerance"),
        ("model_name", " ", "model_name"),
        ("tracking_uri", "https://bob:s3cret@mlflow.example.com", "carries credentials"),
    ],
)
def test_register_config_is_validated(key, value, match):
    with pytest.raises(ConfigError, match=match):
        RegisterConfig(**{key: value})


def test_params_yaml_has_a_register_section():
    from dyn_adapter.params import load_params

    p = load_params(Path(__file__).parents[1] / "params.yaml")
    assert p.register.model_name and p.register.max_gflops_ratio == 0.6


def test_embedded_store_paths(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = resolve_tracking_uri(root=tmp_path)
    assert uri == f"sqlite:///{tmp_path.resolve()}/outputs/mlflow/mlflow.db"
    assert (
        default_artifact_location(uri)
        == (tmp_path.resolve() / "outputs" / "mlflow" / "artifacts").as_uri()
    )
    assert default_artifact_location("http://127.0.0.1:5000") is None
    assert redact_uri("https://u:p@host:1/x?token=t") == "https://host:1/x"


def test_the_tracking_store_precedence(tmp_path, monkeypatch):
    """--tracking-uri, then register.tracking_uri, then $MLFLOW_TRACKING_URI, then embedded."""
    flag, configured, env = "http://flag:1", "http://configured:2", "http://env:3"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env)
    assert resolve_tracking_uri(flag, configured) == flag
    assert resolve_tracking_uri(None, configured) == configured
    assert resolve_tracking_uri(None, None) == env
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert resolve_tracking_uri(root=tmp_path).startswith("sqlite:///")
    with pytest.raises(ConfigError, match="^register.tracking_uri: the URL carries credentials"):
        resolve_tracking_uri(None, "https://bob:s3cret@host")
    with pytest.raises(ConfigError, match="^--tracking-uri: the URL carries credentials"):
        resolve_tracking_uri("https://bob:s3cret@host", configured)


# -- registration on the embedded store ---------------------------------------------------


def test_first_registration_becomes_champion(outputs, store, name):
    result = register_run(outputs, store, name, "run-1", accuracy=0.9)
    assert result["version"] == "1" and result["promoted"] and not result["reused"]
    assert result["aliases"] == ["candidate", "champion"]
    assert result["gate"] == "pass" and "no champion yet" in result["reason"]
    assert result["model_uri"] == f"models:/{name}/1"
    saved = json.loads((outputs / "register" / name / "run-1" / "registration.json").read_text())
    assert saved == result

    c = MlflowClient(store)
    v = c.get_model_version(name, "1")
    sha = json.loads((outputs / "model" / "model_config.json").read_text())["backbone_sha256"]
    assert v.tags["pipeline_run_id"] == "run-1" and v.tags["backbone_sha256"] == sha
    assert float(v.tags["accuracy"]) == 0.9 and float(v.tags["gflops_ratio"]) == 0.4
    assert float(v.tags["full_gflops"]) == 0.0055
    assert v.description.startswith("gate pass")
    assert json.loads(c.get_registered_model(name).tags["champion_history"]) == ["1"]
    # Artifacts sit beside the database, not in ./mlruns of whatever the working directory was.
    exp = c.get_experiment_by_name("dyn-adapter")
    assert exp.artifact_location == default_artifact_location(store)


def test_worse_or_costlier_candidate_gets_only_the_candidate_alias(outputs, store, name):
    register_run(outputs, store, name, "run-1", accuracy=0.9)
    worse = register_run(outputs, store, name, "run-2", accuracy=0.8)
    costly = register_run(outputs, store, name, "run-3", accuracy=0.95, ratio=0.7)
    c = MlflowClient(store)
    assert alias(c, name) == "1"
    assert (worse["version"], worse["gate"], worse["promoted"]) == ("2", "fail", False)
    assert "0.8000 (budget 0.5) < champion v1's 0.9000" in worse["reason"]
    assert costly["gate"] == "fail" and "ratio 0.700 > 0.6" in costly["reason"]
    assert costly["aliases"] == ["candidate"]
    for v in ("2", "3"):
        assert c.get_model_version(name, v).description.startswith("gate fail")
    assert alias(c, name, "candidate") == "3"
    # Within the tolerance (0.005 by default) passes.
    close = register_run(outputs, store, name, "run-4", accuracy=0.896)
    assert close["promoted"] and alias(c, name) == "4"


def test_same_pipeline_run_id_reuses_its_version(outputs, store, name):
    first = register_run(outputs, store, name, "run-1", accuracy=0.9)
    again = register_run(outputs, store, name, "run-1", accuracy=0.5)  # numbers are not re-read
    assert again["version"] == first["version"] and again["reused"]
    assert again["reason"] == first["reason"] and again["aliases"] == first["aliases"]
    assert not again["promoted"] and again["accuracy"] == 0.9  # as recorded the first time
    assert len(MlflowClient(store).search_model_versions(f"name = '{name}'")) == 1


def test_promote_and_rollback_move_the_champion(outputs, store, name):
    register_run(outputs, store, name, "run-1", accuracy=0.9)
    register_run(outputs, store, name, "run-2", accuracy=0.5)  # fails the gate
    c = MlflowClient(store)
    assert alias(c, name) == "1"

    promoted = champion.promote(name, 2, tracking_uri=store)
    assert (promoted["version"], promoted["previous"], promoted["history"]) == (
        "2",
        "1",
        ["1", "2"],
    )
    assert alias(c, name) == "2"

    back = champion.rollback(name, tracking_uri=store)
    assert (back["version"], back["previous"], back["history"]) == ("1", "2", ["1"])
    assert alias(c, name) == "1"
    with pytest.raises(ConfigError, match="no champion before v1"):
        champion.rollback(name, tracking_uri=store)

    # A passing version, rolled back, is not promoted again by re-running its pipeline run.
    assert register_run(outputs, store, name, "run-3", accuracy=0.95)["promoted"]
    assert champion.rollback(name, tracking_uri=store)["version"] == "1"
    rerun = register_run(outputs, store, name, "run-3", accuracy=0.95)
    assert rerun["reused"] and not rerun["promoted"] and alias(c, name) == "1"

    with pytest.raises(ConfigError, match="has no version '9'"):
        champion.promote(name, 9, tracking_uri=store)
    with pytest.raises(ConfigError, match="no registered model 'nope'"):
        champion.rollback("nope", tracking_uri=store)


def test_no_credentials_are_written(outputs, store, name, monkeypatch):
    secrets = {
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEKEY123456",
        "AWS_SECRET_ACCESS_KEY": "aws-secret-do-not-log-42",
        "MLFLOW_TRACKING_TOKEN": "tracking-token-do-not-log-42",
    }
    for key, value in secrets.items():
        monkeypatch.setenv(key, value)
    result = register_run(outputs, store, name, "run-1", accuracy=0.9)
    c = MlflowClient(store)
    v = c.get_model_version(name, result["version"])
    run = c.get_run(result["run_id"])
    out = outputs / "register" / name / "run-1"
    written = json.dumps(
        [
            v.tags,
            v.description,
            c.get_registered_model(name).tags,
            run.data.params,
            run.data.tags,
            (out / "registration.json").read_text(),
            (out / "manifest.json").read_text(),
            (out / "preprocess.json").read_text(),
        ]
    )
    for value in secrets.values():
        assert value not in written
    with pytest.raises(ConfigError, match="carries credentials"):
        register.run(
            Params(),
            outputs / "model",
            outputs / "search",
            out,
            outputs / "prepared",
            out,
            "run-x",
            tracking_uri="http://alice:pw@127.0.0.1:5000",
        )


def test_cli_register_promote_rollback(outputs, store, tmp_path, capsys):
    write_metrics(tmp_path / "evaluate", 0.9, 0.4)
    common = ["--params", str(tmp_path / "none.yaml"), "--tracking-uri", store]
    (tmp_path / "none.yaml").write_text("register:\n  model_name: cli-model\n")
    args = [
        "register",
        *common,
        "--model",
        str(outputs / "model"),
        "--search",
        str(outputs / "search"),
        "--evaluate",
        str(tmp_path / "evaluate"),
        "--data",
        str(outputs / "prepared"),
        "--out",
        str(tmp_path / "register"),
    ]
    assert main(args) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("registered cli-model v1 (aliases: candidate, champion; gate pass")
    run_id = json.loads((tmp_path / "register" / "registration.json").read_text())[
        "pipeline_run_id"
    ]
    assert run_id.startswith("local-")  # derived from the inputs: the same inputs, the same id
    assert main(args) == 0 and "v1" in capsys.readouterr().out

    assert main(["promote", *common, "--version", "1"]) == 0
    assert capsys.readouterr().out.strip() == "cli-model: champion is v1 (was v1)"
    assert main(["rollback", *common]) == 2  # nothing before v1: a clear error, exit code 2
    assert "no champion before v1" in capsys.readouterr().err


# -- the pyfunc model in-process ----------------------------------------------------------


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def pyfunc(outputs) -> serving.DynAdapterPyfunc:
    from dyn_adapter.data.prepared import PreparedData

    pre = serving.write_preprocess(
        PreparedData(outputs / "prepared"), outputs / "serving" / "preprocess.json"
    )
    model = serving.DynAdapterPyfunc()
    model.setup(outputs / "model", outputs / "search" / "thresholds.json", pre, device="cpu")
    return model


def test_pyfunc_predicts_like_forward_dynamic(outputs, pyfunc):
    images = np.load(outputs / "prepared" / "test_images.npy")
    frame = pd.DataFrame({"image": [serving.encode_image(im) for im in images]})
    model = load_for_inference(outputs / "model", "cpu")
    x = to_model_input(torch.from_numpy(images), pyfunc.data_config)
    for budget, policy in ((0.5, POLICIES[0]), (0.99, POLICIES[0]), (1.0, POLICIES[1])):
        out = pyfunc.predict(None, frame, params={"budget": budget})
        ref = model.forward_dynamic(x, policy["thresholds"])
        assert list(out.columns) == list(serving.OUTPUT_COLUMNS) and len(out) == len(images)
        assert out["label_index"].tolist() == ref.prediction.tolist()
        assert out["exit_index"].tolist() == ref.exit_index.tolist()
        np.testing.assert_allclose(out["confidence"], ref.confidence.numpy(), rtol=1e-5)
        assert out["label"].tolist() == [f"class_{i}" for i in ref.prediction.tolist()]
        assert out["exit_block"].tolist() == [[2, 4, 6][k] for k in ref.exit_index.tolist()]
    cheap = pyfunc.predict(None, frame, params={"budget": 0.5})
    full = pyfunc.predict(None, frame)  # default budget 1.0
    assert cheap["gflops"].sum() < full["gflops"].sum()
    assert set(full["exit_index"]) == {2} and set(cheap["exit_index"]) == {0}
    # Each answer says which policy gave it.
    assert set(cheap["policy"]) == {"budget 0.5 (asked 0.5)"}
    assert set(full["policy"]) == {"budget 1 (default)"}
    assert set(pyfunc.predict(None, frame, params={"budget": 0.99})["policy"]) == {
        "budget 0.5 (asked 0.99)"
    }
    with pytest.raises(MlflowException, match="give one, a fraction of the GFLOPs or a risk"):
        pyfunc.predict(None, frame, params={"budget": 0.5, "max_disagreement": 0.1})


def test_a_lower_budget_is_served_from_strictly_earlier_exits(tmp_path):
    """Real searched policies that must differ: a trained tiny model whose first exit only
    guesses (its head zeroed: every answer class 0 at confidence 1/4). Only the first exit fits
    budget 0.45, so its policy answers there; at 1.0 the search has the deeper, trained exits.
    Served, the low budget's answers come from strictly earlier exits, and cost less."""
    from safetensors.torch import load_file, save_file

    from dyn_adapter.data.prepared import PreparedData
    from dyn_adapter.stages import search, train

    data = write_prepared(tmp_path / "prepared", sizes={"train": 128, "val": 64, "test": 32})
    p = tiny_params(
        tmp_path, "train.epochs=1", "train.evaluate_test=false", "search.trials=10",
        "search.budgets=[0.45, 1.0]",
    )  # fmt: skip
    model_dir = train.run(p, "dyn", data, tmp_path / "train").model_dir
    (weights,) = Path(model_dir).glob("*.safetensors")
    tensors = load_file(weights)
    save_file(
        {k: v.zero_() if k.startswith("heads.0.") else v for k, v in tensors.items()}, weights
    )
    rows = search.run(p, model_dir, data, tmp_path / "search").thresholds["budgets"]
    assert [r["budget"] for r in rows] == [0.45, 1.0] and rows[0]["gflops_ratio"] <= 0.45

    served = serving.DynAdapterPyfunc()
    pre = serving.write_preprocess(PreparedData(data), tmp_path / "preprocess.json")
    served.setup(model_dir, tmp_path / "search" / "thresholds.json", pre, device="cpu")
    images = np.load(data / "test_images.npy")
    frame = pd.DataFrame({"image": [serving.encode_image(im) for im in images]})
    low, high = (served.predict(None, frame, params={"budget": b}) for b in (0.45, 1.0))
    assert low["exit_index"].mean() < high["exit_index"].mean()
    assert low["gflops"].sum() < high["gflops"].sum()


def test_pyfunc_accepts_grey_rgba_16bit_and_jpeg(pyfunc):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)  # another size: resized to 28x28
    grey16 = np.full((28, 28), 65535, dtype=np.uint16)
    jpeg = io.BytesIO()
    Image.fromarray(rgb).save(jpeg, format="JPEG")
    cells = [
        png_bytes(rgb[:28, :28, 0]),  # grey
        png_bytes(np.dstack([rgb, np.full((40, 30), 128, np.uint8)])),  # RGBA
        png_bytes(grey16),  # 16-bit grey: scaled to 255, not clipped
        jpeg.getvalue(),
    ]
    decoded = [serving.decode_image(base64.b64encode(c).decode(), (28, 28)) for c in cells]
    assert all(d.shape == (28, 28, 3) and d.dtype == np.uint8 for d in decoded)
    assert (decoded[2] == 255).all()
    assert (decoded[0][..., 0] == decoded[0][..., 2]).all()
    # A data: URL and line-wrapped base64 work too.
    text = base64.encodebytes(cells[0]).decode()
    assert "\n" in text
    frame = pd.DataFrame({"image": [text, "data:image/png;base64," + text.replace("\n", "")]})
    assert len(pyfunc.predict(None, frame)) == 2


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        (pd.DataFrame({"img": ["x"]}), "needs a column 'image'"),
        (pd.DataFrame({"image": [None]}), "row 0: 'image' is a NoneType"),
        (pd.DataFrame({"image": ["", "!!not base64!!"]}), "row 0: 'image' is empty"),
        (pd.DataFrame({"image": ["QUJD", "!!not base64!!"]}), "row 0: not a decodable image"),
    ],
)
def test_malformed_input_names_the_row(pyfunc, frame, match):
    with pytest.raises(MlflowException, match=match) as e:
        pyfunc.predict(None, frame)
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"


def test_malformed_second_row_is_named(pyfunc, outputs):
    good = serving.encode_image(np.load(outputs / "prepared" / "test_images.npy")[0])
    with pytest.raises(MlflowException, match="row 1: 'image' is not valid base64"):
        pyfunc.predict(None, pd.DataFrame({"image": [good, "@@@@"]}))
    truncated = base64.b64encode(base64.b64decode(good)[:60]).decode()
    with pytest.raises(MlflowException, match="row 1: not a decodable image"):
        pyfunc.predict(None, pd.DataFrame({"image": [good, truncated]}))


@pytest.mark.parametrize(
    ("budget", "chosen"), [(0.5, 0.5), (0.75, 0.5), (1.0, 1.0), (1.0 - 1e-12, 1.0), (3.0, 1.0)]
)
def test_budget_picks_the_largest_searched_budget_not_above_it(budget, chosen):
    assert serving.select_policy(POLICIES, budget)["budget"] == chosen


RISK_POINTS = [
    {"risk": "disagreement", "epsilon": 0.01, "gflops": 0.9, "thresholds": [0.99, 0.99, 0.0]},
    {"risk": "disagreement", "epsilon": 0.05, "gflops": 0.6, "thresholds": [0.9, 0.9, 0.0]},
    {"risk": "accuracy_drop", "epsilon": 0.05, "gflops": 0.4, "thresholds": [0.8, 0.8, 0.0]},
]


@pytest.mark.parametrize(("level", "chosen"), [(0.01, 0.9), (0.03, 0.9), (0.05, 0.6), (0.5, 0.6)])
def test_max_disagreement_picks_the_cheapest_point_certified_within_it(level, chosen):
    assert serving.select_risk_point(RISK_POINTS, level)["gflops"] == chosen


@pytest.mark.parametrize(
    ("points", "level", "match"),
    [
        (RISK_POINTS, 0.001, "no point is certified at or below it; certified levels: 0.01, 0.05"),
        (RISK_POINTS, "abc", "not a number"),
        (RISK_POINTS, math.nan, "no point is certified"),
        ([], 0.05, "registered without risk-controlled points"),
    ],
)
def test_max_disagreement_outside_the_certified_levels_is_refused(points, level, match):
    with pytest.raises(MlflowException, match=match):
        serving.select_risk_point(points, level)


def _risk_candidate(test_risk: float, ratio: float) -> OperatingPoint:
    point = {"risk": "disagreement", "epsilon": 0.02, "test_risk": test_risk, "gflops_ratio": ratio}
    return OperatingPoint(0.9, 0.5, 0.3, 1.0, risk_points=[{**point, "holds": test_risk <= 0.02}])


@pytest.mark.parametrize(
    ("candidate", "level", "passed", "says"),
    [
        (
            _risk_candidate(0.01, 0.4),
            0.02,
            True,
            "disagreement <= 0.02: test 0.0100, GFLOPs ratio 0.400 <= 0.6",
        ),
        (_risk_candidate(0.01, 0.7), 0.02, False, "GFLOPs ratio 0.700 > 0.6"),
        (_risk_candidate(0.03, 0.4), 0.02, False, "the certificate failed on test"),
        (_risk_candidate(0.01, 0.4), 0.05, False, "no point certified at disagreement <= 0.05"),
    ],
)
def test_the_gate_can_be_stated_as_a_risk_level(candidate, level, passed, says):
    decision = gate(candidate, None, RegisterConfig(gate_risk=level, max_gflops_ratio=0.6))
    assert decision.passed is passed and says in decision.reason


@pytest.mark.parametrize("budget", [0.49, 0.0, -1.0, math.nan, math.inf, "abc", None])
def test_budget_out_of_range_is_refused_with_the_range(budget):
    with pytest.raises(MlflowException, match=r"allowed: a finite number >= 0.5") as e:
        serving.select_policy(POLICIES, budget)
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"


# -- integration: a real tracking server, a fresh process, `mlflow models serve` ----------


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory) -> Iterator[MlflowServer]:
    """A real ``mlflow server`` on loopback; started here, waited for by :func:`pipeline` (it
    creates its database while the tiny model trains)."""
    root = tmp_path_factory.mktemp("mlflow-server")
    with mlflow_server(root, str(root / "artifacts"), serving_env(), wait=False) as server:
        yield server


RISK_LEVELS = ("calibrate.epsilons=[0.05, 0.1]",)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, tracking_server) -> dict:
    """Train (1 epoch), search and evaluate a tiny model, then register it on the server."""
    from conftest import tiny_evaluated, tiny_params

    from dyn_adapter.stages import calibrate

    root = tmp_path_factory.mktemp("pipeline")
    sizes = {"train": 128, "val": 64, "test": 64, "calibration": 400}
    model_dir, data = tiny_evaluated(root, sizes=sizes)
    calibrate.run(tiny_params(root, *RISK_LEVELS), model_dir, data, root / "calibrate")
    url = tracking_server.ready()
    result = register.run(
        Params(register=RegisterConfig(model_name="tiny", max_gflops_ratio=None)),
        model_dir,
        root / "search",
        root / "evaluate",
        data,
        root / "register",
        pipeline_run_id="integration-1",
        tracking_uri=url,
        risk_dir=root / "calibrate",
    )
    return {"root": root, "model_dir": model_dir, "data": data, "registration": result, "url": url}


FRESH_PROCESS = textwrap.dedent(
    """
    import json, sys
    import mlflow, numpy as np, pandas as pd
    from dyn_adapter.mlops.pyfunc import encode_image

    images = np.load(sys.argv[1])
    model = mlflow.pyfunc.load_model("models:/tiny@champion")
    frame = pd.DataFrame({"image": [encode_image(im) for im in images]})
    out = {b: model.predict(frame, params={"budget": float(b)}).to_dict("list") for b in sys.argv[3:]}
    open(sys.argv[2], "w").write(json.dumps(out))
    """
)


def predict_like_forward_dynamic(
    images_file: Path, rows: list[dict], model_dir: Path, data_dir: Path, env: dict, tmp_path: Path
) -> dict:
    """Load ``models:/tiny@champion`` in a fresh process (FRESH_PROCESS) and predict at every
    searched budget in ``rows``; assert it equals ``forward_dynamic`` in this process."""
    budgets = [str(r["budget"]) for r in rows]
    script = tmp_path / "predict.py"
    script.write_text(FRESH_PROCESS)
    proc = subprocess.run(
        [sys.executable, str(script), str(images_file), str(tmp_path / "out.json"), *budgets],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    model = load_for_inference(model_dir, "cpu")
    data_config = json.loads((data_dir / "manifest.json").read_text())["data_config"]
    x = to_model_input(torch.from_numpy(np.load(images_file)), data_config)
    for row, budget in zip(rows, budgets, strict=True):
        ref = model.forward_dynamic(x, row["thresholds"])
        got = out[budget]
        assert got["label_index"] == ref.prediction.tolist()
        assert got["exit_index"] == ref.exit_index.tolist()
        assert all(0 <= k < model.num_exits for k in got["exit_index"])
        np.testing.assert_allclose(got["confidence"], ref.confidence.numpy(), rtol=1e-5)
    return out


@pytest.mark.integration
def test_champion_loads_in_a_fresh_process_and_exits_early(pipeline, tmp_path):
    reg = pipeline["registration"]
    assert reg["aliases"] == ["candidate", "champion"] and reg["tracking_uri"] == pipeline["url"]
    rows = json.loads((pipeline["root"] / "search" / "thresholds.json").read_text())["budgets"]
    budgets = [str(r["budget"]) for r in rows]  # 0.5 and 1.0
    out = predict_like_forward_dynamic(
        pipeline["data"] / "test_images.npy",
        rows,
        pipeline["model_dir"],
        pipeline["data"],
        serving_env(MLFLOW_TRACKING_URI=pipeline["url"]),
        tmp_path,
    )
    # The low budget's policy answers from exits no later (the search may keep the low budget's
    # policy for the high one when nothing beats it on validation: then they are equal).
    (small, large), (early, late) = (
        [sum(out[b][key]) for b in budgets] for key in ("gflops", "exit_index")
    )
    assert small <= large and early <= late
    if rows[0]["thresholds"] != rows[1]["thresholds"]:
        assert small < large


@pytest.mark.integration
def test_the_experiment_opens_on_its_runs_in_a_browser(pipeline, tmp_path):
    """The link the run summary prints, in a real browser: the runs table with the pipeline's
    run, not MLflow 3's GenAI overview (which a plain experiment link opens on)."""
    reg = pipeline["registration"]
    dom = rendered_dom(ui_url(pipeline["url"], reg["experiment_id"]), tmp_path / "profile")
    assert f"pipeline {reg['pipeline_run_id']}" in dom
    assert opens_on_model_training(visible_text(dom))


@pytest.mark.integration
@pytest.mark.slow
def test_models_serve_answers_and_survives_bad_requests(pipeline, tmp_path):
    assert pipeline["registration"]["aliases"] == ["candidate", "champion"]
    port = free_ports(1)[0]
    # What the README says to run: the champion, from the store given, nothing activated.
    cmd = [
        *(sys.executable, "-m", "dyn_adapter.cli", "serve", "--name", "tiny"),
        *("--tracking-uri", pipeline["url"], "--port", str(port), "--max-batch", "4"),
    ]
    url = f"http://127.0.0.1:{port}"
    images = np.load(pipeline["data"] / "test_images.npy")[:3]
    rows = [[serving.encode_image(im)] for im in images]

    def body(data: list, **params) -> bytes:
        return json.dumps(
            {"dataframe_split": {"columns": ["image"], "data": data}, "params": params}
        ).encode()

    env = {k: v for k, v in serving_env().items() if k != "MLFLOW_TRACKING_URI"}
    env["PATH"] = "/usr/bin:/bin"  # not the venv's: serve finds uvicorn itself
    with process(cmd, tmp_path / "serve.log", env) as proc:
        wait_until_healthy(proc, f"{url}/ping", tmp_path / "serve.log", timeout=150)
        status, answer = post_json(f"{url}/invocations", body(rows, budget=0.5))
        assert status == 200, answer
        preds = answer["predictions"]
        assert len(preds) == 3 and set(preds[0]) == set(serving.OUTPUT_COLUMNS)
        assert preds[0]["policy"] == "budget 0.5 (asked 0.5)"
        status, answer = post_json(
            f"{url}/invocations", body(rows, budget=0.5, max_disagreement=0.1)
        )
        assert status == 400 and "give one" in answer["message"]

        status, answer = post_json(f"{url}/invocations", body([rows[0], ["@@not base64@@"]]))
        assert status == 400 and "row 1" in answer["message"]
        assert "not base64@@" not in answer["message"]  # the request is not echoed back
        status, answer = post_json(f"{url}/invocations", body(rows, bugdet=0.5))
        assert status == 400 and "unknown parameter(s) bugdet" in answer["message"]
        status, answer = post_json(f"{url}/invocations", body(rows + rows))
        assert status == 413 and "batches of at most 4" in answer["message"]
        status, answer = post_json(f"{url}/invocations", body(rows, budget=0.1))
        assert status == 400 and "allowed: a finite number >= 0.5" in answer["message"]
        assert 400 <= post_json(f"{url}/invocations", b"{not json")[0] < 500

        # A risk level instead of a budget: the point certified at the largest level <= it.
        points = json.loads((pipeline["root"] / "calibrate" / "risk_points.json").read_text())
        chosen = serving.select_risk_point(points["points"], 0.1)
        status, answer = post_json(f"{url}/invocations", body(rows, max_disagreement=0.1))
        assert status == 200, answer
        model = load_for_inference(pipeline["model_dir"], "cpu")
        data_config = json.loads((pipeline["data"] / "manifest.json").read_text())["data_config"]
        ref = model.forward_dynamic(
            to_model_input(torch.from_numpy(images), data_config), chosen["thresholds"]
        )
        assert [p["exit_index"] for p in answer["predictions"]] == ref.exit_index.tolist()
        assert [p["label_index"] for p in answer["predictions"]] == ref.prediction.tolist()
        status, answer = post_json(f"{url}/invocations", body(rows, max_disagreement=0.001))
        assert status == 400 and "certified levels: 0.05, 0.1" in answer["message"]

        assert proc.poll() is None  # still up
        status, answer = post_json(f"{url}/invocations", body(rows[:2]))
        assert status == 200 and len(answer["predictions"]) == 2
