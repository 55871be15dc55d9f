"""The evaluate stage on tiny trained models: real dynamic inference agrees with the cache."""

from __future__ import annotations

import json

import pytest
from test_train import params

from dyn_adapter.stages import evaluate, search, train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import write_prepared

    root = tmp_path_factory.mktemp("evaluate")
    data = write_prepared(root / "prepared")
    p = params(
        root,
        "train.epochs=2",
        "search.trials=15",
        "search.budgets=[0.5, 0.8, 1.0]",
        "evaluate.speed_images=32",
        "evaluate.speed_repeats=1",
    )
    for variant, out in (("dyn", "train"), ("static", "static"), ("probe", "probe")):
        train.run(p, variant, data, root / out)
    search.run(p, root / "train" / "model", data, root / "search")
    search.run(p, root / "probe" / "model", data, root / "probe_search")
    return root, data, p


@pytest.mark.slow
def test_evaluate_writes_metrics_plots_and_card(trained):
    root, data, p = trained
    m = evaluate.run(
        p,
        root / "train" / "model",
        root / "search",
        data,
        root / "eval",
        static_dir=root / "static",
        probe_model_dir=root / "probe" / "model",
        probe_search_dir=root / "probe_search",
    ).to_dict()
    saved = json.loads((root / "eval" / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(m))
    for key in ("full", "static_petl", "exits", "budgets", "iso_accuracy", "speed", "flops_unit"):
        assert key in saved
    assert {"accuracy", "gflops"} <= saved["full"].keys()
    assert saved["static_petl"]["accuracy"] is not None
    for b in saved["budgets"]:
        # Real early exit agrees with what the cached logits predict.
        assert b["accuracy"] == pytest.approx(b["simulated_accuracy"], abs=1 / 64)
        assert b["gflops"] == pytest.approx(b["simulated_gflops"], rel=0.05)
        # ... and its GFLOPs are those of the exits it took, weighted by how often
        taken = sum(
            f * e["gflops_cumulative"]
            for f, e in zip(b["exit_fractions"], saved["exits"], strict=True)
        )
        assert b["gflops"] == pytest.approx(taken, rel=1e-9)
        assert sum(b["exit_fractions"]) == pytest.approx(1.0)
        assert b["frozen_probe_accuracy"] is not None
        assert {"geometric_accuracy", "gflops_ratio", "budget"} <= b.keys()
    probe_exits = saved["frozen_probe"]["exits"]
    assert len(probe_exits) == len(saved["exits"])
    assert all(0.0 <= e["accuracy"] <= 1.0 for e in probe_exits)
    assert {"time_ratio_b1", "time_ratio_b64"} <= saved["speed"].keys()
    # The static PETL model is scored here on the same images: what train measured
    static_trained = json.loads((root / "static" / "metrics.json").read_text())
    assert saved["static_petl"]["accuracy"] == pytest.approx(static_trained["test_accuracy"][-1])
    # Every accuracy with its interval, balanced accuracy and per-class recall
    for m in [saved["full"], saved["static_petl"], *saved["exits"], *saved["budgets"]]:
        low, high = m["accuracy_interval"]
        assert low <= m["accuracy"] <= high and 0.0 <= m["balanced_accuracy"] <= 1.0
    assert len(saved["full"]["per_class_recall"]) == len(saved["static_petl"]["per_class_recall"])
    assert saved["full"]["accuracy"] == saved["exits"][-1]["accuracy"]
    # The headline is chosen on validation; the test-curve reading is a second, labelled number
    iso = saved["iso_accuracy"]
    assert iso["chosen_on"] == "validation"
    assert iso["reference_val_accuracy"] == saved["static_petl"]["val_accuracy"]
    qualifying = [
        b
        for b in saved["budgets"]
        if b["val_accuracy"] >= iso["reference_val_accuracy"] - iso["tolerance"]
    ]
    cheapest = min(qualifying, key=lambda b: b["val_gflops_ratio"]) if qualifying else None
    assert iso["budget"] == (cheapest["budget"] if cheapest else None)
    if cheapest:
        assert iso["accuracy"] == cheapest["accuracy"]
    assert iso["test_read"]["chosen_on"].startswith("test")
    assert saved["half_gflops"]["budget"] == 0.5
    for name in ("last_exit_vs_static_petl", "half_gflops_vs_static_petl"):
        c = saved["comparisons"][name]
        assert c["interval"][0] <= c["difference"] <= c["interval"][1]
    assert all(b["vs_frozen_probe"] is not None for b in saved["budgets"])
    for name in (
        "accuracy_vs_gflops.png",
        "exit_distribution.png",
        "confusion_matrix.png",
        "accuracy_vs_gflops.json",
    ):
        assert (root / "eval" / "plots" / name).stat().st_size > 0
    card = (root / "eval" / "model_card.md").read_text()
    assert "sha256" in card and "| budget |" in card
    assert "balanced accuracy" in card and "paired bootstrap" in card and "Per-class recall" in card
    # Artifacts are named by their place in the run, not by this machine's paths.
    assert "`thresholds.json`" in card and str(root / "search") not in card


@pytest.mark.slow
def test_repadapter_is_evaluated_merged(tmp_path):
    from conftest import write_prepared

    data = write_prepared(tmp_path / "prepared")
    p = params(
        tmp_path,
        "train.epochs=1",
        "model.petl.method=repadapter",
        "search.trials=5",
        "search.budgets=[1.0]",
        "train.evaluate_test=false",
        "evaluate.speed_images=16",
        "evaluate.speed_repeats=1",
    )
    train.run(p, "dyn", data, tmp_path / "train")
    search.run(p, tmp_path / "train" / "model", data, tmp_path / "search")
    m = evaluate.run(
        p,
        tmp_path / "train" / "model",
        tmp_path / "search",
        data,
        tmp_path / "eval",
    ).to_dict()
    import dataclasses

    from dyn_adapter.models import create_dyn_adapter, load_model

    unmerged = load_model(tmp_path / "train" / "model").exit_info[-1].gflops_cumulative
    no_petl = dataclasses.replace(p.model, petl=dataclasses.replace(p.model.petl, method="none"))
    plain = create_dyn_adapter(dataclasses.replace(no_petl, num_classes=4)).exit_info[-1]
    # Merged, the adapters cost nothing: exactly the plain backbone (and the same heads).
    assert m["full"]["gflops"] == pytest.approx(plain.gflops_cumulative)
    assert m["full"]["gflops"] < unmerged


def _with_validation_curve(root, name, rows):
    """The search output with its validation columns (accuracy, GFLOPs ratio per budget)
    replaced by ``rows``: {budget: (accuracy, gflops_ratio)}."""
    thresholds = json.loads((root / "search" / "thresholds.json").read_text())
    for row in thresholds["budgets"]:
        row["accuracy"], row["gflops_ratio"] = rows[row["budget"]]
    out = root / name
    out.mkdir()
    (out / "thresholds.json").write_text(json.dumps(thresholds))
    return out


@pytest.mark.slow
def test_the_operating_point_is_chosen_on_validation_at_the_tolerance_boundary(trained):
    """Constructed validation curves against the real test curve: a budget exactly at
    reference - tolerance qualifies, one just below does not though it is cheaper, and the test
    column (which, at tolerance 1, every budget passes) is never read; with no budget
    qualifying there is no iso point and the middle budget is timed."""
    import dataclasses

    root, data, p = trained
    model = root / "train" / "model"
    r = evaluate.run(p, model, root / "search", data, root / "eval-r")
    r = r.iso_accuracy.reference_val_accuracy
    tolerant = dataclasses.replace(p, evaluate=dataclasses.replace(p.evaluate, iso_tolerance=1.0))
    boundary = r - 1.0
    search_dir = _with_validation_curve(
        root, "search-boundary", {0.5: (boundary, 0.5), 0.8: (boundary - 0.01, 0.2), 1.0: (r, 1.0)}
    )
    m = evaluate.run(tolerant, model, search_dir, data, root / "eval-boundary").to_dict()
    assert m["iso_accuracy"]["budget"] == 0.5
    assert m["iso_accuracy"]["test_read"]["budget"] is not None  # test would qualify some budget
    assert m["speed"]["budget"] == 0.5

    strict = dataclasses.replace(p, evaluate=dataclasses.replace(p.evaluate, iso_tolerance=0.0))
    search_dir = _with_validation_curve(
        root, "search-none", {0.5: (r - 0.2, 0.5), 0.8: (r - 0.1, 0.8), 1.0: (r - 0.01, 1.0)}
    )
    m = evaluate.run(strict, model, search_dir, data, root / "eval-none").to_dict()
    assert m["iso_accuracy"]["budget"] is None and m["iso_accuracy"]["accuracy"] is None
    assert m["speed"]["budget"] == 0.8
    from dyn_adapter.artifacts import Evaluation

    assert Evaluation(root / "eval-none").operating_point().budget == 1.0
