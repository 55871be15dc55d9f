"""The calibrate stage on a tiny trained model: certified points, resume, errors, evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_params, write_prepared

from dyn_adapter.artifacts import (
    CALIBRATION_CHUNKS_DIR,
    CALIBRATION_SCORES,
    CARD_FILE,
    RISK_POINTS_FILE,
)
from dyn_adapter.console import PROGRESS_FILE_ENV
from dyn_adapter.data.prepared import PreparedData
from dyn_adapter.errors import ConfigError
from dyn_adapter.inference import exit_logits, load_engine, split_scores
from dyn_adapter.policies import risk
from dyn_adapter.policies.thresholds import ExitScores
from dyn_adapter.stages import calibrate, evaluate, search, train

SIZES = {"train": 128, "val": 64, "test": 96, "calibration": 600}
CALIBRATE = ["calibrate.epsilons=[0.05, 0.1]", "calibrate.chunk_images=256"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained for one epoch, and its prepared data with a calibration split."""
    root = tmp_path_factory.mktemp("calibrate")
    data = write_prepared(root / "prepared", sizes=SIZES)
    p = tiny_params(root, "train.epochs=1", "train.evaluate_test=false")
    train.run(p, "dyn", data, root / "train")
    return root / "train" / "model", data


def params(tmp_path, *overrides):
    return tiny_params(tmp_path, *CALIBRATE, *overrides)


def one_pass_scores(model_dir, data_dir, split: str) -> ExitScores:
    engine = load_engine(model_dir, torch.device("cpu"))
    return split_scores(engine, PreparedData(data_dir), split, 64)


def counting_exit_logits(monkeypatch, fail_on: int | None = None) -> list[int]:
    """Count the chunks ``calibrate`` computes; raise KeyboardInterrupt on call ``fail_on``."""
    calls: list[int] = []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if fail_on is not None and len(calls) == fail_on:
            raise KeyboardInterrupt
        return exit_logits(*args, **kwargs)

    monkeypatch.setattr(calibrate, "exit_logits", wrapped)
    return calls


def test_points_are_those_learn_then_test_gives_on_the_split(tmp_path, trained, monkeypatch):
    model_dir, data_dir = trained
    monkeypatch.setenv(PROGRESS_FILE_ENV, str(tmp_path / "progress.jsonl"))
    report = calibrate.run(params(tmp_path), model_dir, data_dir, tmp_path / "out").report
    # The run view's progress: the images scored so far, chunk by chunk (256 a chunk).
    records = [json.loads(x) for x in (tmp_path / "progress.jsonl").read_text().splitlines()]
    n = SIZES["calibration"]
    assert [(r["stage"], r["done"], r["total"]) for r in records] == [
        ("calibrate", min(stop, n), n) for stop in range(256, n + 256, 256)
    ]
    assert [(p["risk"], p["epsilon"]) for p in report["points"]] == [
        ("disagreement", 0.05),
        ("disagreement", 0.1),
    ]
    # The same certificate from scores computed here in one pass, not chunk by chunk.
    scores = one_pass_scores(model_dir, data_dir, "calibration")
    for point in report["points"]:
        expected = risk.calibrate(scores, point["epsilon"], 0.05, "disagreement")
        assert point["threshold"] == expected.threshold
        assert point["empirical_risk"] == pytest.approx(expected.empirical_risk)
        assert point["empirical_risk"] <= point["risk_bound"] and point["p_value"] <= 0.05
        assert point["calibration_images"] == SIZES["calibration"]
    low, high = report["points"]
    assert low["threshold"] >= high["threshold"]  # a stricter level exits no earlier
    assert low["gflops"] >= high["gflops"]
    saved = ExitScores.load(tmp_path / "out" / CALIBRATION_SCORES)
    np.testing.assert_allclose(saved.confidence, scores.confidence, rtol=1e-6)
    assert not (tmp_path / "out" / CALIBRATION_CHUNKS_DIR).exists()  # complete: chunks gone


def test_too_few_images_say_how_many_are_needed_and_write_nothing(tmp_path, trained, monkeypatch):
    model_dir, data_dir = trained
    calls = counting_exit_logits(monkeypatch)
    with pytest.raises(ConfigError, match=r"calibration split has 600 images; .* at least 2995"):
        calibrate.run(
            params(tmp_path, "calibrate.epsilons=[0.001]"), model_dir, data_dir, tmp_path / "out"
        )
    assert not calls and not (tmp_path / "out").exists()


def test_an_interrupted_run_resumes_from_its_saved_chunks(tmp_path, trained, monkeypatch):
    model_dir, data_dir = trained
    out = tmp_path / "out"
    counting_exit_logits(monkeypatch, fail_on=2)
    with pytest.raises(KeyboardInterrupt):
        calibrate.run(params(tmp_path), model_dir, data_dir, out)
    assert not (out / RISK_POINTS_FILE).exists()  # nothing that looks finished
    calls = counting_exit_logits(monkeypatch)
    resumed = calibrate.run(params(tmp_path), model_dir, data_dir, out).report
    chunks = -(-SIZES["calibration"] // 256)
    assert len(calls) == chunks - 1  # the first chunk was read back, not recomputed
    fresh = calibrate.run(params(tmp_path), model_dir, data_dir, tmp_path / "fresh").report
    assert resumed["points"] == fresh["points"]


def test_no_levels_compute_nothing(tmp_path, trained, monkeypatch):
    model_dir, data_dir = trained
    calls = counting_exit_logits(monkeypatch)
    report = calibrate.run(
        params(tmp_path, "calibrate.epsilons=[]"), model_dir, data_dir, tmp_path / "out"
    ).report
    assert report["points"] == [] and "epsilons" in report["skipped"] and not calls
    assert json.loads((tmp_path / "out" / RISK_POINTS_FILE).read_text())["points"] == []


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("calibrate.epsilons=[0]", r"calibrate.epsilons 0.0: must be strictly between 0 and 1"),
        ("calibrate.delta=1.5", r"calibrate.delta 1.5: must be strictly between"),
        ("calibrate.risks=[coverage]", r"calibrate.risks\[0\]: 'coverage' is not one of"),
    ],
)
def test_bad_settings_name_the_key(tmp_path, override, match):
    with pytest.raises(ConfigError, match=match):
        params(tmp_path, override)


def test_evaluate_runs_each_point_on_test_and_repeats_the_split(tmp_path, trained):
    model_dir, data_dir = trained
    p = params(
        tmp_path,
        "search.trials=5",
        "search.budgets=[0.5, 1.0]",
        "evaluate.speed_images=8",
        "evaluate.speed_repeats=1",
        "evaluate.risk_splits=20",
        "calibrate.risks=[disagreement, accuracy_drop]",
        f"calibrate.window_images={SIZES['test']}",  # certified for the test split's realised risk
    )
    calibrate.run(p, model_dir, data_dir, tmp_path / "calibrate")
    search.run(p, model_dir, data_dir, tmp_path / "search")
    metrics = evaluate.run(
        p,
        model_dir,
        tmp_path / "search",
        data_dir,
        tmp_path / "eval",
        risk_dir=tmp_path / "calibrate",
    ).to_dict()
    control = metrics["risk_control"]
    assert control["calibration_images"] == SIZES["calibration"] and len(control["points"]) == 4
    test = one_pass_scores(model_dir, data_dir, "test")
    for point in control["points"]:
        # Real early exit agrees with what the cached test scores say the thresholds do.
        expected = risk.losses(test, point["thresholds"], point["risk"]).mean()
        assert point["test_risk"] == pytest.approx(expected)
        assert point["holds"] == (point["test_risk"] <= point["epsilon"])
        low, high = point["test_risk_interval"]
        assert low <= point["test_risk"] <= high
        repeated = point["repeated_splits"]
        assert repeated["splits"] == 20 and 0 <= repeated["violation_frequency"] <= 1
        assert repeated["calibration_images"] == SIZES["calibration"]
        assert repeated["test_images"] == SIZES["test"]
        assert point["window_images"] == repeated["window_images"] == SIZES["test"]
    for row in metrics["budgets"]:  # the budget policies' disagreement, for comparison
        expected = risk.losses(test, row["thresholds"], "disagreement").mean()
        assert row["disagreement"] == pytest.approx(expected)
    card = (tmp_path / "eval" / CARD_FILE).read_text()
    assert "Risk-controlled exits (certified on 600 calibration images)" in card
    assert f"the realised risk of any {SIZES['test']} fresh images <= epsilon" in card
