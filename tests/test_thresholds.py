"""Exit policies on cached logits agree with real dynamic inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import randomize_trainable, tiny_model

from dyn_adapter.policies.thresholds import (
    ExitScores,
    exit_indices,
    geometric_curve,
    geometric_thresholds,
    oracle,
    simulate,
)


@pytest.fixture(scope="module")
def cached():
    model = tiny_model("adapter")
    randomize_trainable(model, std=0.5)
    images = torch.randn(64, 3, 28, 28, generator=torch.Generator().manual_seed(3))
    labels = np.arange(64) % model.num_classes
    with torch.no_grad():
        logits = model.forward_exits(images)
    gflops = [e.gflops_cumulative for e in model.exit_info]
    return model, images, ExitScores.from_logits(logits, labels, gflops)


def test_simulation_matches_forward_dynamic(cached):
    model, images, scores = cached
    for q in (0.3, 1.0, 2.0):
        thr = geometric_thresholds(scores, q)
        # Nudge thresholds off the exact confidences (batch-size rounding could tip those).
        thr = [t - 1e-5 if 0 < t <= 1 else t for t in thr]
        sim = simulate(scores, thr)
        out = model.forward_dynamic(images, thr)
        np.testing.assert_array_equal(exit_indices(scores, thr), out.exit_index.numpy())
        acc = float((out.prediction.numpy() == scores.labels).mean())
        assert sim.accuracy == pytest.approx(acc)
        measured = float(np.mean([scores.gflops[k] for k in out.exit_index.numpy()]))
        assert sim.gflops == pytest.approx(measured)


def test_geometric_distribution(cached):
    _, _, scores = cached
    n = len(scores.labels)
    for q in (0.5, 1.0, 2.0):
        sim = simulate(scores, geometric_thresholds(scores, q))
        p = q ** np.arange(3)
        p /= p.sum()
        assert sim.exit_fractions == pytest.approx(p.tolist(), abs=2 / n)


def test_geometric_curve_spans_cost(cached):
    _, _, scores = cached
    curve = geometric_curve(scores, [0.05, 1.0, 20.0])
    costs = [r.gflops for r in curve]
    assert costs == sorted(costs)
    assert costs[0] < costs[-1] <= scores.full_gflops


def test_extreme_thresholds(cached):
    _, _, scores = cached
    assert simulate(scores, [0, 0, 0]).exit_fractions == [1.0, 0.0, 0.0]
    last = simulate(scores, [1.1, 1.1, 0])
    assert last.exit_fractions == [0.0, 0.0, 1.0] and last.gflops == pytest.approx(
        scores.full_gflops
    )


def test_oracle_bounds_every_policy(cached):
    _, _, scores = cached
    best = oracle(scores)
    assert best.accuracy >= max((scores.prediction == scores.labels).mean(axis=1))
    for q in (0.3, 1.0, 3.0):
        sim = simulate(scores, geometric_thresholds(scores, q))
        assert best.accuracy >= sim.accuracy


def test_search_matches_or_beats_geometric_on_its_data(cached, tmp_path):
    from dyn_adapter.policies.config import SearchConfig
    from dyn_adapter.policies.search import best_geometric, search_budget

    model, images, scores = cached
    cfg = SearchConfig(trials=40)
    curve = geometric_curve(scores, cfg.geometric_qs)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    for budget in (0.5, 0.8):
        geo = best_geometric(curve, budget * scores.full_gflops)
        policy = search_budget(scores, budget, cfg, storage, f"b{budget}", [geo] if geo else [])
        assert policy.gflops <= budget * scores.full_gflops + 1e-12
        assert geo is None or policy.accuracy >= geo.accuracy
        assert simulate(scores, policy.thresholds).accuracy == pytest.approx(policy.accuracy)


def test_search_rejects_budget_below_first_exit(cached, tmp_path):
    from dyn_adapter.errors import ConfigError
    from dyn_adapter.policies.config import SearchConfig
    from dyn_adapter.policies.search import search_budget

    model, images, scores = cached
    tiny_budget = 0.5 * scores.gflops[0] / scores.full_gflops
    with pytest.raises(ConfigError, match="raise the budget"):
        search_budget(
            scores,
            tiny_budget,
            SearchConfig(trials=5),
            f"sqlite:///{tmp_path / 's.db'}",
            "b",
        )


def test_sign_test_counts_only_disagreements():
    import numpy as np

    from dyn_adapter.policies.thresholds import sign_test_p

    both = np.ones(100, dtype=bool)
    assert sign_test_p(both, both) == 1.0  # no disagreement, no evidence
    challenger = np.r_[np.ones(10, dtype=bool), np.zeros(2, dtype=bool), both[:88]]
    incumbent = np.r_[np.zeros(10, dtype=bool), np.ones(2, dtype=bool), both[:88]]
    # 10 vs 2 among 12 disagreements: P(X >= 10 | 12, 1/2) = 79 / 4096
    assert sign_test_p(challenger, incumbent) == pytest.approx(79 / 4096)
    assert sign_test_p(incumbent, challenger) == pytest.approx(1 - 13 / 4096)  # 2 vs 10
