"""The ``search`` stage: per-exit thresholds for a list of FLOPs budgets, on cached logits.

The model runs once over the validation split; its per-exit logits are cached and every
candidate policy after that is a few numpy operations (:mod:`dyn_adapter.policies.search`).
Writes ``thresholds.json`` (the policy per budget, the geometric curve, the oracle), the Pareto
table and the Optuna studies.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..artifacts import PARETO_FILE, STUDY_FILE, THRESHOLDS_FILE
from ..data.prepared import PreparedData
from ..files import write_json
from ..params import Params
from ..policies.search import make_storage, quiet_optuna, save_studies, search_budgets
from ..policies.thresholds import oracle
from ..reporting.tables import pareto_table


@dataclass
class SearchResult:
    """What ``run`` wrote: ``thresholds.json``'s content."""

    out_dir: Path
    thresholds: dict[str, Any]

    def metrics(self) -> dict[str, float]:
        out = {
            "search_seconds": self.thresholds["search_seconds"],
            "oracle_accuracy": self.thresholds["oracle"]["accuracy"],
        }
        for row in self.thresholds["budgets"]:
            out[f"val_accuracy_budget_{row['budget']:g}"] = row["accuracy"]
        return out


def run(
    params: Params, model_dir: str | Path, data_dir: str | Path, out_dir: str | Path
) -> SearchResult:
    """Cache validation logits, then search every budget (``params.search``); write the
    thresholds and the Pareto table."""
    import optuna

    from ..inference import load_engine, resolve_device, split_scores

    cfg = params.search
    quiet_optuna(logging.getLogger().isEnabledFor(logging.DEBUG))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = PreparedData(data_dir)
    # Scored as served: merged, by the inference engine, at the serving precision.
    engine = load_engine(model_dir, resolve_device(params.train.device), params.inference)
    data.check_model_classes(engine.model.num_classes, model_dir)
    gflops = [e.gflops_cumulative for e in engine.model.exit_info]
    scores = split_scores(engine, data, "val", params.train.eval_batch_size)
    labels = scores.labels
    tic = time.perf_counter()  # from here on, cached scores only
    storage = make_storage(cfg.storage) or optuna.storages.InMemoryStorage()
    rows, curve = search_budgets(scores, cfg, storage)
    search_seconds = time.perf_counter() - tic
    if cfg.storage is None:
        save_studies(storage, out / STUDY_FILE)
    result = {
        "search_seconds": search_seconds,
        "full_gflops": scores.full_gflops,
        "exit_gflops": gflops,
        "budgets": rows,
        "oracle": asdict(oracle(scores)),
        "geometric_curve": [asdict(r) for r in curve],
        "static_exits": [
            {"gflops": g, "accuracy": float((scores.prediction[k] == labels).mean())}
            for k, g in enumerate(gflops)
        ],
    }
    write_json(out / THRESHOLDS_FILE, result)
    (out / PARETO_FILE).write_text(pareto_table(rows, scores.full_gflops))
    return SearchResult(out, result)


def report(result: SearchResult, out_dir: Path) -> tuple[Path, str]:
    """The Markdown report the command shows, and what it is."""
    return out_dir / PARETO_FILE, "thresholds per budget"


def describe(result: SearchResult, out_dir: Path) -> str:
    """The command's result line: the oracle's bound."""
    best = result.thresholds["oracle"]
    return f"oracle: accuracy {best['accuracy']:.4f} at {best['gflops']:.3f} GFLOPs"
