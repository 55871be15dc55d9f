"""Every stage output: its file names, its layout, and one typed reader each.

A stage writes its own output directory; any other code that needs a file of it asks here, so
no stage imports another stage to learn a file name, and a missing or foreign file is refused in
one place, naming the file and the command that writes it. The prepared data has its reader in
:mod:`dyn_adapter.data.prepared` (:class:`~dyn_adapter.data.prepared.PreparedData`), the model
directory's files are :mod:`dyn_adapter.models.checkpoint`'s.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from .errors import ConfigError
from .evaluation_report import EvaluationReport

# -- names and layout -------------------------------------------------------------------------

MANIFEST_FILE = "manifest.json"  # every stage: config hash, code and library versions
TIMING_FILE = "timing.json"  # when the stage's command ran (the CLI, a KFP component)
METRICS_FILE = "metrics.json"  # train, sparsify, evaluate, vtab: the stage's final numbers
MODEL_DIR = "model"  # train, sparsify: the trained weights and config
CHECKPOINTS_DIR = "checkpoints"  # train: resumable per-epoch state, never logged
TRAIN_LOG = "train_log.json"  # train: one record per epoch
CANDIDATES_DIR = "candidates"  # sparsify: one training output per candidate
CANDIDATES_TABLE = "candidates.json"
CANDIDATES_MARKDOWN = "candidates.md"
CANDIDATE_ROW = "row.json"  # a sparsity candidate's row of the table (KFP fan-out)
THRESHOLDS_FILE = "thresholds.json"  # search: the policy per budget
PARETO_FILE = "pareto.md"
STUDY_FILE = "optuna.db"
RISK_POINTS_FILE = "risk_points.json"  # calibrate: the certified operating points
RISK_MARKDOWN = "risk.md"
CALIBRATION_SCORES = "calibration_scores.npz"  # calibrate: per-exit confidence and prediction
CALIBRATION_CHUNKS_DIR = "score_chunks"  # calibrate: resumable partial scores, never logged
CARD_FILE = "model_card.md"  # evaluate
PLOTS_DIR = "plots"
ACCURACY_PLOT = "accuracy_vs_gflops.png"
CONFUSION_FILE = "confusion_matrix.json"
TASK_FILE = "task.txt"  # evaluate, in the VTAB pipeline: the task it evaluated
VTAB_TABLE = "vtab.json"
VTAB_MARKDOWN = "vtab.md"
REGISTRATION_FILE = "registration.json"  # register
PREPROCESS_FILE = "preprocess.json"
MODEL_CODE_FILE = "dyn_adapter_pyfunc.py"
TRACKING_FILE = "tracking.json"  # track


def read_json(path: Path, stage: str) -> dict[str, Any]:
    """A stage's JSON output; a missing or broken file names the command that writes it."""
    if not path.is_file():
        raise ConfigError(f"{path}: missing; run `dyn-adapter {stage}` first")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(
            f"{path}: not valid JSON ({e}); run `dyn-adapter {stage}` again"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object; run `dyn-adapter {stage}` again")
    return data


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# -- search -------------------------------------------------------------------------------------


class Thresholds:
    """The search stage's ``thresholds.json``: one exit policy per budget, checked once.

    Every policy must have one threshold per exit, each a number >= 0 (not NaN); a hand-edited or
    foreign file is refused naming the file, the budget and the value.

    Args:
        path: ``thresholds.json``, or the search output directory holding it.
        num_exits: The model's exits (``None``: only the counts' agreement is checked).
    """

    def __init__(self, path: str | Path, num_exits: int | None = None) -> None:
        path = Path(path)
        self.path = path / THRESHOLDS_FILE if path.is_dir() else path
        self.data = read_json(self.path, "search")
        rows = self.data.get("budgets")
        if not isinstance(rows, list) or not rows:
            self._refuse("'budgets' must be a non-empty list")
        for i, row in enumerate(rows):
            budget = row.get("budget") if isinstance(row, dict) else None
            if not _number(budget):
                self._refuse(f"budgets[{i}]: no numeric 'budget'")
        self.budgets: list[dict[str, Any]] = sorted(rows, key=lambda r: float(r["budget"]))
        self.num_exits = (
            num_exits if num_exits is not None else len(self.budgets[0]["thresholds"] or [])
        )
        for row in self.budgets:
            where = f"budget {row['budget']:g}"
            self._check(row.get("thresholds"), f"{where} thresholds")
            if row.get("geometric") is not None:
                self._check(_thresholds_of(row["geometric"]), f"{where} geometric thresholds")
        curve = self.data.get("geometric_curve", [])
        if not isinstance(curve, list):
            self._refuse("'geometric_curve' must be a list")
        for i, policy in enumerate(curve):
            self._check(_thresholds_of(policy), f"geometric_curve[{i}] thresholds")
        self.geometric_curve: list[dict[str, Any]] = curve

    def _refuse(self, what: str) -> NoReturn:
        raise ConfigError(f"{self.path}: {what}; fix the file or run `dyn-adapter search` again")

    def _check(self, value: Any, where: str) -> None:
        if not (isinstance(value, list) and all(_number(t) for t in value)):
            self._refuse(f"{where}: expected a list of numbers, got {value!r}")
        if len(value) != self.num_exits:
            self._refuse(
                f"{where}: thresholds: need one per exit ({self.num_exits}), got {len(value)} "
                "(searched for another model?)"
            )
        for k, t in enumerate(value):
            if math.isnan(t) or t < 0:
                self._refuse(f"{where}: thresholds[{k}] = {t}: thresholds must be numbers >= 0")

    @property
    def oracle(self) -> dict[str, Any] | None:
        return self.data.get("oracle")


def _thresholds_of(policy: Any) -> Any:
    return policy.get("thresholds") if isinstance(policy, dict) else None


# -- calibrate ----------------------------------------------------------------------------------


class RiskPoints:
    """The calibrate stage's ``risk_points.json``: certified operating points, checked once.

    Every point needs its risk, ``epsilon`` and one threshold per exit (numbers >= 0).

    Args:
        path: The calibrate output directory (or its ``risk_points.json``).
        num_exits: The model's exits (``None``: not checked).
    """

    def __init__(self, path: str | Path, num_exits: int | None = None) -> None:
        path = Path(path)
        self.dir = path if path.is_dir() else path.parent
        self.path = self.dir / RISK_POINTS_FILE
        self.data = read_json(self.path, "calibrate")
        points = self.data.get("points")
        if not isinstance(points, list):
            self._refuse("'points' must be a list")
        for i, p in enumerate(points):
            ok = (
                isinstance(p, dict) and _number(p.get("epsilon")) and isinstance(p.get("risk"), str)
            )
            thresholds = p.get("thresholds") if ok else None
            if not (
                isinstance(thresholds, list) and all(_number(t) and t >= 0 for t in thresholds)
            ):
                self._refuse(f"points[{i}]: needs risk, epsilon and thresholds (numbers >= 0)")
            if num_exits is not None and len(thresholds) != num_exits:
                self._refuse(
                    f"points[{i}]: {len(thresholds)} thresholds for a model with {num_exits} "
                    "exits (calibrated for another model?)"
                )
        self.points: list[dict[str, Any]] = points

    def _refuse(self, what: str) -> NoReturn:
        raise ConfigError(f"{self.path}: {what}; run `dyn-adapter calibrate` again")

    @property
    def scores_path(self) -> Path:
        return self.dir / CALIBRATION_SCORES


# -- evaluate -----------------------------------------------------------------------------------


@dataclass
class OperatingPoint:
    """The accuracy the registry gates on: at the iso-accuracy budget, else the largest one.

    Attributes:
        accuracy: Test accuracy at ``budget``.
        budget: The budget that accuracy was measured at.
        gflops_ratio: ``iso_accuracy.gflops_ratio``; ``None`` when no budget reaches it.
        full_gflops: GFLOPs of the full model (last exit).
        balanced_accuracy: Test balanced accuracy at ``budget`` (``None`` in an evaluation
            made before it was measured).
        risk_points: The risk-controlled points as evaluate ran them on test (``test_risk``,
            ``gflops_ratio``); empty without a calibration.
    """

    accuracy: float
    budget: float
    gflops_ratio: float | None
    full_gflops: float
    balanced_accuracy: float | None = None
    risk_points: list[dict[str, Any]] = field(default_factory=list)


class Evaluation:
    """The evaluate stage's output directory: its report (``metrics.json``, typed), plots, card,
    task label."""

    def __init__(self, out_dir: str | Path) -> None:
        self.dir = Path(out_dir)
        self.metrics_path = self.dir / METRICS_FILE
        self.report = EvaluationReport.from_dict(
            read_json(self.metrics_path, "evaluate"), str(self.metrics_path)
        )

    @property
    def card_path(self) -> Path:
        return self.dir / CARD_FILE

    @property
    def accuracy_plot(self) -> Path:
        return self.dir / PLOTS_DIR / ACCURACY_PLOT

    def operating_point(self) -> OperatingPoint:
        r = self.report
        iso = r.iso_accuracy
        if iso.accuracy is not None and iso.budget is not None and iso.gflops_ratio is not None:
            return OperatingPoint(
                iso.accuracy,
                iso.budget,
                iso.gflops_ratio,
                r.full.gflops,
                iso.balanced_accuracy,
                r.risk_points,
            )
        if not r.budgets:
            raise ConfigError(f"{self.metrics_path}: no budgets; run `dyn-adapter evaluate` again")
        largest = max(r.budgets, key=lambda b: b.budget)
        return OperatingPoint(
            largest.accuracy,
            largest.budget,
            None,
            r.full.gflops,
            largest.balanced_accuracy,
            r.risk_points,
        )

    def headline(self) -> dict[str, float]:
        """The numbers worth a glance (the KFP UI's metrics, the run summary): finite only."""
        r = self.report
        out: dict[str, Any] = {
            "full_accuracy": r.full.accuracy,
            "full_gflops": r.full.gflops,
            "full_balanced_accuracy": r.full.balanced_accuracy,
            "static_petl_accuracy": r.static_petl.accuracy,
            "static_petl_balanced_accuracy": r.static_petl.balanced_accuracy,
            "iso_accuracy": r.iso_accuracy.accuracy,
            "iso_gflops_ratio": r.iso_accuracy.gflops_ratio,
            "time_ratio_b1": r.speed.time_ratio_b1,
            "time_ratio_b64": r.speed.time_ratio_b64,
        }
        for p in r.risk_points:
            key = f"{p['risk']}_eps_{p['epsilon']:g}"
            out[f"test_risk_{key}"] = p["test_risk"]
            out[f"gflops_ratio_{key}"] = p["gflops_ratio"]
            out[f"violation_frequency_{key}"] = p["repeated_splits"]["violation_frequency"]
            out[f"pool_violation_frequency_{key}"] = p["repeated_splits"][
                "pool_violation_frequency"
            ]
        for b in r.budgets:
            out[f"accuracy_budget_{b.budget:g}"] = b.accuracy
            out[f"gflops_ratio_budget_{b.budget:g}"] = b.gflops_ratio
        return {k: float(v) for k, v in out.items() if _number(v) and math.isfinite(v)}

    def confusion(self) -> tuple[list[str], list[list[int]]]:
        """Class names and the confusion matrix (rows: true class)."""
        data = read_json(self.dir / PLOTS_DIR / CONFUSION_FILE, "evaluate")
        return data["classes"], data["matrix"]

    @property
    def task(self) -> str:
        """The VTAB task this output evaluated (its ``task.txt``)."""
        label = self.dir / TASK_FILE
        if not label.is_file():
            raise ConfigError(f"{self.dir}: no {TASK_FILE}; evaluate each VTAB task with its name")
        return label.read_text().strip()


def write_task_label(out_dir: str | Path, task: str) -> None:
    (Path(out_dir) / TASK_FILE).write_text(task + "\n")


# -- train and sparsify -------------------------------------------------------------------------


class TrainedModel:
    """A train or sparsify output directory: the model and its final-epoch accuracies."""

    def __init__(self, out_dir: str | Path, stage: str = "train") -> None:
        self.dir = Path(out_dir)
        self.model_dir = self.dir / MODEL_DIR
        self.metrics = read_json(self.dir / METRICS_FILE, stage)
        self.val_accuracy: list[float] = list(self.metrics.get("val_accuracy") or [])
        test = self.metrics.get("test_accuracy")
        self.test_accuracy: list[float] | None = list(test) if test else None


def accuracy_metrics(val: Sequence[float], test: Sequence[float] | None) -> dict[str, float]:
    """Per-exit accuracies as flat metric names (``val_accuracy_exit0``, ...)."""
    out = {f"val_accuracy_exit{k}": float(a) for k, a in enumerate(val)}
    out |= {f"test_accuracy_exit{k}": float(a) for k, a in enumerate(test or [])}
    return out


ABLATION_SPLITS = ("test", "selection")  # the held-out splits ablate scores on
ABLATION_STUDIES = ("sparsity", "last-exit")  # stages.ablate.STUDIES (the CLI starts without it)


def ablation_files(split: str, study: str = "sparsity") -> tuple[str, str]:
    """``ablate``'s table and report for the study it ran and the split it scored:
    ``ablation.json`` / ``ablation.md`` for the sparsity study on test, ``<study>.json`` for
    another study, ``-<split>`` appended on another split (``last-exit-selection.md``)."""
    stem = "ablation" if study == "sparsity" else study
    stem = stem if split == "test" else f"{stem}-{split}"
    return f"{stem}.json", f"{stem}.md"
