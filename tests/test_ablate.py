"""The ablation stage: every variant scored on a held-out split, paired to the reference, seeds
averaged image by image, and a rerun that continues instead of starting over."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_params, write_prepared

from dyn_adapter.artifacts import ABLATION_STUDIES
from dyn_adapter.errors import ConfigError
from dyn_adapter.models.config import HEAD_SETTINGS
from dyn_adapter.stages import ablate
from dyn_adapter.training.config import TrainConfig


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    root = tmp_path_factory.mktemp("ablate")
    data = write_prepared(
        root / "prepared", sizes={"train": 64, "val": 32, "test": 96, "calibration": 80}
    )
    params = tiny_params(root, "train.epochs=1", "train.warmup_epochs=0")
    table = ablate.run(params, data, root / "out", seeds=[0, 1])
    return root, data, params, table


def test_every_variant_and_seed_is_scored_on_test(ablation):
    root, _, _, table = ablation
    assert table == json.loads((root / "out" / "ablation.json").read_text())
    assert table["split"] == "test" and table["images"] == 96 and table["seeds"] == [0, 1]
    assert [(r["variant"], r["seed"]) for r in table["rows"]] == [
        (v.name, seed) for seed in (0, 1) for v in ablate.STUDIES["sparsity"]
    ]
    for row in table["rows"]:
        correct = np.load(
            next(
                (root / "out" / "runs" / f"seed-{row['seed']}").glob(
                    f"*/{ablate.scores_file('test')}"
                )
            )
        )["correct"]
        assert correct.shape[1] == 96
        for acc, (lo, hi) in zip(row["accuracy"], row["interval"], strict=True):
            assert lo <= acc <= hi
    md = (root / "out" / "ablation.md").read_text()
    assert "96 images" in md and "Over the seeds" in md
    assert "\n| none | 0, 1 | " in md  # each averaged row says over which seeds


def test_a_variant_run_under_fewer_seeds_says_so():
    """A candidate trained under one seed beside a reference under two: its averaged row names
    its one seed, and one seed's resolved difference is not marked as resolved under several."""
    from dyn_adapter.reporting.tables import ablation_table
    from dyn_adapter.training.config import TrainConfig

    d = {"difference": -0.004, "interval": [-0.006, -0.001], "resolved": True, "pairs": 1}
    table = {
        "split": "selection", "images": 100, "seeds": [0, 1], "reference": "joint",
        "rows": [
            {"variant": "joint", "seed": 0, "changes": {}, "accuracy": [0.8, 0.9],
             "interval": [[0.7, 0.9]] * 2, "mean": 0.85, "vs_reference": None},
            {"variant": "late", "seed": 0, "changes": {"x": 1}, "accuracy": [0.8, 0.89],
             "interval": [[0.7, 0.9]] * 2, "mean": 0.845, "vs_reference": [d, d]},
        ],
        "summary": [
            {"variant": "joint", "seeds": [0, 1], "accuracy": [0.8, 0.9], "mean": 0.85},
            {"variant": "late", "seeds": [0], "accuracy": [0.8, 0.89], "mean": 0.845,
             "averaged": [d, d], "mean_difference": d, "resolved": ["worse", "worse"]},
        ],
    }  # fmt: skip
    md = ablation_table(table, TrainConfig())
    averaged = md.split("Over the seeds")[1]
    (late,) = [line for line in averaged.splitlines() if line.startswith("| late | 0 |")]
    assert "-0.40 [-0.60, -0.10]*" in late and "†" not in late
    assert "| joint | 0, 1 |" in averaged


def test_the_seeds_are_averaged_image_by_image_with_an_interval(ablation):
    _, _, _, table = ablation
    for entry in table["summary"][1:]:
        runs = [r for r in table["rows"] if r["variant"] == entry["variant"]]
        per_exit = []
        for k, d in enumerate(entry["averaged"]):
            per_exit.append(np.mean([r["vs_reference"][k]["difference"] for r in runs]))
            assert d["difference"] == pytest.approx(per_exit[-1]) and d["pairs"] == 2
            assert d["interval"][0] <= d["difference"] <= d["interval"][1]
        assert entry["mean_difference"]["difference"] == pytest.approx(np.mean(per_exit))
        assert entry["mean_difference"]["pairs"] == 2 * len(per_exit)


def test_each_variant_is_paired_to_the_reference_of_its_own_seed(ablation):
    root, _, _, table = ablation
    for seed in (0, 1):
        runs = sorted((root / "out" / "runs" / f"seed-{seed}").iterdir())
        ref = np.load(runs[0] / ablate.scores_file("test"))["correct"]
        rows = [r for r in table["rows"] if r["seed"] == seed]
        assert rows[0]["vs_reference"] is None
        for run, row in zip(runs[1:], rows[1:], strict=True):
            mine = np.load(run / ablate.scores_file("test"))["correct"]
            for k, d in enumerate(row["vs_reference"]):
                assert d["difference"] == pytest.approx(mine[k].mean() - ref[k].mean())
                assert d["only_a_right"] == int(np.sum(mine[k] & ~ref[k]))


def test_seeds_count_as_resolved_only_when_they_agree():
    better = {"resolved": True, "difference": 0.02}
    worse = {"resolved": True, "difference": -0.02}
    unresolved = {"resolved": False, "difference": 0.03}
    assert ablate._verdict([better, better]) == "better"
    assert ablate._verdict([worse, worse]) == "worse"
    assert ablate._verdict([better, worse]) == "n.s."
    assert ablate._verdict([better, unresolved]) == "n.s."


def test_a_rerun_continues_rather_than_retrains(ablation, monkeypatch):
    from dyn_adapter import inference
    from dyn_adapter.training import trainer

    root, data, params, table = ablation

    def fail(*args, **kwargs):
        raise AssertionError("the rerun trained or scored again")

    # Finished trainings resume past their last epoch; scores come from their cache.
    monkeypatch.setattr(trainer, "train_epoch", fail)
    monkeypatch.setattr(trainer, "cached_epoch", fail)
    monkeypatch.setattr(inference, "exit_logits", fail)
    assert ablate.run(params, data, root / "out", seeds=[0, 1])["rows"] == table["rows"]


def test_the_selection_split_scores_the_same_trainings_beside_the_test_table(ablation, monkeypatch):
    """Choosing a default without reading test or calibration: the data prepared again with a
    selection split (the others unchanged), the same models scored on it into their own table;
    nothing trains again and the test table is left as it was."""
    from dyn_adapter.training import trainer

    root, _, params, _ = ablation
    data = write_prepared(
        root / "prepared-selection",
        sizes={"train": 64, "val": 32, "test": 96, "calibration": 80, "selection": 72},
    )
    test_table = (root / "out" / "ablation.json").read_bytes()
    monkeypatch.setattr(trainer, "train_epoch", lambda *a, **k: pytest.fail("trained again"))
    table = ablate.run(params, data, root / "out", seeds=[0, 1], split="selection")
    assert table["split"] == "selection" and table["images"] == 72
    assert table == json.loads((root / "out" / "ablation-selection.json").read_text())
    assert "selection accuracy, 72 images" in (root / "out" / "ablation-selection.md").read_text()
    assert (root / "out" / "ablation.json").read_bytes() == test_table
    assert len(list((root / "out" / "runs").glob(f"*/*/{ablate.scores_file('selection')}"))) == 12


def test_a_missing_selection_split_says_how_to_prepare_it(ablation, tmp_path):
    _, data, params, _ = ablation
    with pytest.raises(ConfigError, match=r"no selection split; .* data\.selection_size > 0"):
        ablate.run(params, data, tmp_path / "out", split="selection")


def test_no_test_split_is_a_clear_error(tmp_path):
    data = write_prepared(tmp_path / "prepared", sizes={"train": 32, "val": 16})
    params = tiny_params(tmp_path, "train.epochs=1")
    with pytest.raises(ConfigError, match="no test split"):
        ablate.run(params, data, tmp_path / "out")


def test_the_studies_are_the_ones_the_cli_offers():
    assert tuple(ablate.STUDIES) == ABLATION_STUDIES
    for variants in ablate.STUDIES.values():
        assert len({v.slug for v in variants}) == len(variants)
        assert not variants[0].static  # the reference has every exit


def test_variant_changes_reach_the_training_recipe():
    recipe = TrainConfig()
    cfg = ablate.variant_config(
        recipe, ablate.Variant("x", "x", {"exit_gradient": 0.0, "distill.weight": 1.0}), seed=7
    )
    assert (cfg.exit_gradient, cfg.distill.weight, cfg.seed) == (0.0, 1.0, 7)
    assert cfg.distill.temperature == recipe.distill.temperature and not cfg.evaluate_test


def test_the_last_exit_study_reruns_the_recipes_it_compared_whatever_the_default():
    # It chose last-exit weight 3 over joint training at weight 1; with 3 now the default, a
    # rerun must still train joint (and the other candidates) at 1, and the winner at 3.
    recipe = TrainConfig()
    assert recipe.loss_weights.final_floor == 3.0
    floors = {
        v.name: ablate.variant_config(recipe, v, seed=0).loss_weights.final_floor
        for v in ablate.STUDIES["last-exit"]
    }
    assert (
        floors.pop("last-exit weight 3") == floors.pop("last-exit weight 3, compact heads") == 3.0
    )
    assert set(floors.values()) == {1.0}


def test_a_head_variant_trains_that_head_setting_and_says_so(tmp_path):
    model = tiny_params(tmp_path).model
    assert model.exits.heads == "balanced"
    variant = next(v for v in ablate.STUDIES["last-exit"] if v.heads == "compact")
    exits = ablate.variant_model(model, variant).exits
    compact = HEAD_SETTINGS["compact"]
    assert (exits.head_depths, exits.head_widths) == (list(compact.depths), list(compact.widths))
    assert exits.head_setting() == "compact"
    assert variant.changes() == {"loss_weights.final_floor": 3.0, "model.exits.heads": "compact"}
    assert ablate.variant_model(model, ablate.STUDIES["last-exit"][0]) == model


def test_the_last_exit_study_compares_each_last_exit_with_the_static_model(tmp_path):
    data = write_prepared(tmp_path / "prepared", sizes={"train": 48, "val": 16, "selection": 40})
    params = tiny_params(tmp_path, "train.epochs=1", "train.warmup_epochs=0")
    table = ablate.run(params, data, tmp_path / "out", split="selection", study="last-exit")
    assert table == json.loads((tmp_path / "out" / "last-exit-selection.json").read_text())
    assert [r["variant"] for r in table["rows"]] == [v.name for v in ablate.STUDIES["last-exit"]]
    runs = tmp_path / "out" / "runs-last-exit" / "seed-0"
    static = np.load(runs / "static" / ablate.scores_file("selection"))["correct"]
    assert static.shape == (1, 40)
    for row in table["rows"]:
        if row["static"]:
            assert row["vs_reference"] is None and "last_vs_static" not in row
            continue
        slug = next(v.slug for v in ablate.STUDIES["last-exit"] if v.name == row["variant"])
        mine = np.load(runs / slug / ablate.scores_file("selection"))["correct"]
        d = row["last_vs_static"]
        assert d["difference"] == pytest.approx(mine[-1].mean() - static[0].mean())
        assert d["only_a_right"] == int(np.sum(mine[-1] & ~static[0]))
    md = (tmp_path / "out" / "last-exit-selection.md").read_text()
    assert "last exit − static" in md and "exit_gradient=0.0" in md
    entry = next(s for s in table["summary"] if s["variant"] == "exit gradient 0")
    assert entry["last_vs_static"]["pairs"] == 1


def test_a_subset_of_variants_trains_only_those(tmp_path, monkeypatch):
    data = write_prepared(tmp_path / "prepared", sizes={"train": 48, "val": 16, "selection": 40})
    params = tiny_params(tmp_path, "train.epochs=1", "train.warmup_epochs=0")
    table = ablate.run(
        params, data, tmp_path / "out", split="selection", study="last-exit", only=["static"]
    )
    assert [r["variant"] for r in table["rows"]] == ["static"]
    assert [p.name for p in (tmp_path / "out" / "runs-last-exit" / "seed-0").iterdir()] == [
        "static"
    ]
    with pytest.raises(ConfigError, match=r"no variant statik .* its variants are joint, static"):
        ablate.run(params, data, tmp_path / "out", study="last-exit", only=["statik"])
    static_run = tmp_path / "out" / "runs-last-exit" / "seed-0" / "static"
    before = {p: p.stat().st_mtime_ns for p in static_run.rglob("*") if p.is_file()}
    # A run stopped after training the new variant, before reloading the finished one,
    # leaves the finished table as it was, not a table of the rows it had so far.
    table_file = tmp_path / "out" / "last-exit-selection.json"
    finished = table_file.read_bytes()
    scored = ablate.exit_correctness

    class Stopped(Exception):
        pass

    def stop_at_static(model_dir, *args, **kwargs):
        if Path(model_dir).is_relative_to(static_run):
            raise Stopped
        return scored(model_dir, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(ablate, "exit_correctness", stop_at_static)
        with pytest.raises(Stopped):
            ablate.run(
                params, data, tmp_path / "out", split="selection", study="last-exit", only=["joint"]
            )
    assert table_file.read_bytes() == finished
    # Run again, it trains nothing (the stopped run finished the new variant) and tables the
    # new variant with the finished one, which it only reloads (the static run's checkpoints
    # and model stay as they were).
    from dyn_adapter.training import trainer

    monkeypatch.setattr(trainer, "train_epoch", lambda *a, **k: pytest.fail("trained again"))
    table = ablate.run(
        params, data, tmp_path / "out", split="selection", study="last-exit", only=["joint"]
    )
    assert [r["variant"] for r in table["rows"]] == ["joint", "static"]
    assert table["rows"][0]["last_vs_static"] is not None
    checkpoints = static_run / "checkpoints"
    assert {p: p.stat().st_mtime_ns for p in checkpoints.rglob("*") if p.is_file()} == {
        p: t for p, t in before.items() if p.is_relative_to(checkpoints)
    }
