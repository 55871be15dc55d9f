"""Threshold search on cached exit logits: Optuna's seeded TPE per FLOPs budget.

For each budget (a fraction of the full model's GFLOPs) the search maximises accuracy subject
to expected GFLOPs within the budget. Each study is seeded with the best geometric (MSDNet)
policy that fits the budget and with the policy found for the next smaller budget, so the search
matches or beats that baseline and accuracy never falls as the budget grows. A few hundred
validation images make small gains mostly noise: the searched policy replaces the incumbent
only when a one-sided sign test on the images where the two disagree says so (level ``max_p``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..console import record_progress
from ..errors import ConfigError
from ..files import atomic_path
from .config import SearchConfig
from .thresholds import ExitScores, PolicyResult, correct, geometric_curve, sign_test_p, simulate

logger = logging.getLogger(__name__)

SQLITE_TIMEOUT = 60.0  # seconds a worker waits for another's write to a shared SQLite study


def quiet_optuna(verbose: bool = False) -> None:
    """Optuna logs every trial at INFO and resets its level when imported: entry points call
    this after importing it."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.DEBUG if verbose else optuna.logging.WARNING)


def make_storage(storage: Any) -> Any:
    """``storage`` as Optuna takes it; a SQLite URL becomes an ``RDBStorage`` that several
    processes can share (other URLs and storages pass through):

    * connections wait up to :data:`SQLITE_TIMEOUT` for a lock (the driver's default, 5 s,
      makes workers fail with "database is locked");
    * every transaction takes the write lock as it begins (``BEGIN IMMEDIATE``), so Optuna's
      read-then-update steps are atomic: SQLite ignores the ``SELECT ... FOR UPDATE`` they rely
      on, and two workers could pop the same enqueued trial ("Cannot tell a COMPLETE trial");
    * workers that start together on a new file all create its tables and stamp its schema
      version; the losers (UNIQUE constraint, table exists) try again and find it done.
    """
    import optuna
    from sqlalchemy import event
    from sqlalchemy.exc import IntegrityError, OperationalError

    if not (isinstance(storage, str) and storage.startswith("sqlite:")):
        return storage
    connect_args = {"timeout": SQLITE_TIMEOUT, "isolation_level": None}  # BEGIN: ours, below
    for attempt in range(1, 6):
        try:
            rdb = optuna.storages.RDBStorage(storage, engine_kwargs={"connect_args": connect_args})
            break
        except (IntegrityError, OperationalError):
            if attempt == 5:
                raise
            time.sleep(0.2 * attempt)
    event.listen(rdb.engine, "begin", _begin_immediate)
    return rdb


def _begin_immediate(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def best_geometric(curve: Sequence[PolicyResult], budget_gflops: float) -> PolicyResult | None:
    """The most accurate geometric policy within the budget (cheapest on ties)."""
    fitting = [r for r in curve if r.gflops <= budget_gflops]
    return max(fitting, key=lambda r: (r.accuracy, -r.gflops)) if fitting else None


def search_budget(
    scores: ExitScores,
    budget: float,
    cfg: SearchConfig,
    storage: Any,
    study_name: str,
    starts: Sequence[PolicyResult] = (),
) -> PolicyResult:
    """Optuna over the thresholds for one budget; returns the best feasible policy.
    ``starts`` are policies tried first. ``storage``: an Optuna storage or URL (``None``: in
    memory)."""
    import optuna

    budget_gflops = budget * scores.full_gflops

    def evaluate(trial: optuna.trial.BaseTrial) -> PolicyResult:
        thr = [trial.suggest_float(f"t{k}", 0.0, 1.0) for k in range(scores.num_exits - 1)]
        return simulate(scores, [*thr, 0.0])

    def objective(trial: optuna.trial.Trial) -> float:
        result = evaluate(trial)
        excess = result.gflops - budget_gflops
        trial.set_constraint("gflops_over_budget", excess)
        trial.set_user_attr("gflops", result.gflops)
        # Infeasible trials rank below every feasible one, closer to the budget first.
        return result.accuracy if excess <= 0 else -excess / budget_gflops

    study = optuna.create_study(
        study_name=study_name,
        storage=make_storage(storage),
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=cfg.seed),
        load_if_exists=True,
    )
    if not study.trials:
        for start in starts:
            study.enqueue_trial({f"t{k}": min(1.0, t) for k, t in enumerate(start.thresholds[:-1])})
    remaining = cfg.trials - len(study.trials)
    if remaining > 0:
        # Workers sharing the storage stop once the study holds cfg.trials trials in all
        # (theirs and others', running ones included), not after cfg.trials each.
        study.optimize(
            objective,
            n_trials=remaining,
            callbacks=[optuna.study.MaxTrialsCallback(cfg.trials, states=None)],
        )
    feasible = [t for t in study.trials if t.value is not None and t.value >= 0]
    if not feasible:
        first = scores.gflops[0] / scores.full_gflops
        raise ConfigError(
            f"search: no thresholds meet the budget {budget:g} x full GFLOPs; the first exit alone "
            f"costs {first:.2f} x full: raise the budget"
        )
    best = max(feasible, key=lambda t: (t.value, -t.user_attrs["gflops"]))
    return evaluate(optuna.trial.FixedTrial(best.params))


def search_budgets(
    scores: ExitScores, cfg: SearchConfig, storage: Any
) -> tuple[list[dict[str, Any]], list[PolicyResult]]:
    """Every budget of ``cfg``, smallest first: the Optuna policy where a sign test on these
    images says it beats the incumbent, else the incumbent (the best geometric policy within
    the budget, or a smaller budget's choice if better). Returns the table rows and the
    geometric curve."""
    curve = geometric_curve(scores, cfg.geometric_qs)
    rows = []
    found: list[PolicyResult] = []  # smaller budgets' choices
    for budget in sorted(cfg.budgets):
        limit = budget * scores.full_gflops
        geo = best_geometric(curve, limit)
        previous = [f for f in found if f.gflops <= limit][-1:]  # fits this budget too
        policy = search_budget(
            scores,
            budget,
            cfg,
            storage,
            f"budget-{budget:g}",
            starts=([geo] if geo else []) + previous,
        )
        # Optuna must beat the incumbent significantly: on a few hundred images most gains are
        # noise.
        incumbents = ([(geo, "geometric")] if geo else []) + [
            (p, "smaller budget's") for p in previous
        ]
        source, p_value = "optuna", None
        if incumbents:
            best, best_source = max(incumbents, key=lambda c: c[0].accuracy)
            p_value = sign_test_p(
                correct(scores, policy.thresholds), correct(scores, best.thresholds)
            )
            if policy.accuracy <= best.accuracy or p_value >= cfg.max_p:
                policy, source = best, best_source
        found.append(policy)
        record_progress("search", done=len(found), total=len(cfg.budgets), unit="budgets")
        rows.append(
            {
                "budget": budget,
                **asdict(policy),
                "source": source,
                "optuna_p_value": p_value,
                "gflops_ratio": policy.gflops / scores.full_gflops,
                "geometric": asdict(geo) if geo else None,
            }
        )
        logger.info(
            "budget %.2f: val accuracy %.4f at %.3f GFLOPs (geometric %s)",
            budget,
            policy.accuracy,
            policy.gflops,
            f"{geo.accuracy:.4f}" if geo else "n/a",
        )
    return rows, curve


def save_studies(memory: Any, path: Path) -> None:
    """Copy every in-memory study into a fresh SQLite file, then move it into place."""
    import optuna

    with atomic_path(path) as tmp:
        tmp.unlink()
        for summary in optuna.get_all_study_summaries(memory):
            optuna.copy_study(
                from_study_name=summary.study_name,
                from_storage=memory,
                to_storage=f"sqlite:///{tmp}",
            )
