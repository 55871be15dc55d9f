"""A concise view of a local pipeline run, the full task logs kept in a file.

The KFP local runner prints everything to ``sys.stdout``: each task's executor JSON, its logs,
its outputs. While a run is in flight :class:`RunView` stands in for ``sys.stdout``: every line
goes to the log file, and the terminal gets one line per finished step (its time and headline
metric) and, on a terminal, a live line for the step in flight (its epoch, or the images or
budgets done, and time left). Progress comes as data: the tasks append records
(``console.record_progress``: ``epoch``/``epochs`` from training, ``done``/``total``/``unit``
from the other long stages) to a file the view follows, whose path :func:`run_view` hands them
in ``$DYN_ADAPTER_PROGRESS_FILE``.
"""

from __future__ import annotations

import ast
import io
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from dyn_adapter.console import PROGRESS_FILE_ENV

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_START = re.compile(r"Executing task '(?P<task>[^']+)'")
_FINISH = re.compile(r"Task '(?P<task>[^']+)' finished with status (?P<status>\w+)")
_METADATA = re.compile(r"metadata=(?P<meta>\{.*\})")
_ITERATION = re.compile(r"-iteration-(?P<k>\d+)$")
# A loop body of several tasks keeps their names; the iteration shows in their output paths.
_LOOP_PATH = re.compile(r"-iteration-(?P<k>\d+)/(?P<task>[\w-]+)/")
_FOLD_LIMIT = 5000  # an executor input longer than this is cut off there (its braces unbalanced)
_USER_ERROR = re.compile(r"dyn-adapter [\w-]+: error: .*")
# The one number worth a glance per kind of step: the first of these its Metrics carry (a
# per-exit accuracy: the last exit's).
HEADLINES = (
    "iso_gflops_ratio",
    "test_accuracy_exit",
    "score",
    "val_accuracy_exit",
    "oracle_accuracy",
    "mean_of_tasks",
    "train_images",
)


def task_labels(pipeline: Any) -> dict[str, str]:
    """``{task name: display name}`` of every task in a compiled pipeline (loops included)."""
    spec = pipeline.pipeline_spec
    labels = {k: t.task_info.name for k, t in spec.root.dag.tasks.items()}
    for comp in spec.components.values():
        if comp.HasField("dag"):
            labels |= {k: t.task_info.name for k, t in comp.dag.tasks.items()}
    return labels


def executor_tasks(pipeline: Any, loop_iterations: int) -> int:
    """How many tasks the local runner executes: the DAG's own, a loop's once per item."""
    spec = pipeline.pipeline_spec
    loops = {
        name: len(comp.dag.tasks) for name, comp in spec.components.items() if comp.HasField("dag")
    }
    total = 0
    for task in spec.root.dag.tasks.values():
        body = loops.get(task.component_ref.name)
        total += 1 if body is None else body * loop_iterations
    return total


def _headline(metrics: dict[str, Any]) -> str:
    """The step's one number, named with its split: ``val accuracy, last exit 0.83``."""
    for key in HEADLINES:
        label = key.replace("_", " ")
        if key.endswith("_exit"):
            exits = sorted(int(k[len(key) :]) for k in metrics if re.fullmatch(rf"{key}\d+", k))
            # Exits count from 0 by position; the last one is the full model's answer.
            label = f"{key[: -len('_exit')].replace('_', ' ')}, last exit"
            key = f"{key}{exits[-1]}" if exits else key
        if isinstance(metrics.get(key), int | float):
            return f", {label} {metrics[key]:.4g}"
    return ""


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


class RunView(io.TextIOBase):
    """``sys.stdout`` for the length of a run: lines to ``log``, a summary of them to ``out``.

    Args:
        log: The file every line is written to.
        labels: Display names of the tasks (:func:`task_labels`).
        total: Tasks the run executes (:func:`executor_tasks`).
        out: Where the concise view goes (the real standard output).
        items: What the run's loop iterates over, named: a task of iteration k is shown with
            ``items[k]`` (the VTAB task, the sparsity candidate).
        progress: The progress records' file (JSON lines), followed as the run goes.
    """

    def __init__(
        self,
        log: TextIO,
        labels: dict[str, str],
        total: int,
        out: TextIO,
        items: list[str] | None = None,
        progress: Path | None = None,
    ) -> None:
        super().__init__()
        self.progress, self._progress_offset = progress, 0
        self.log, self.labels, self.total, self.out = log, labels, total, out
        self.items = items or []
        self.live = out.isatty()
        self._partial = ""
        self._folded: int | None = None  # lines of an executor input dump folded so far
        self._depth = 0
        self.step = 0
        self.current: str | None = None
        self.iteration: int | None = None  # of the step in flight, when in a loop
        self.started = 0.0
        self.epochs: list[float] = []
        self.finished: list[dict[str, Any]] = []
        self._pending: dict[str, Any] | None = None  # a finished step whose outputs follow
        self.user_errors: list[str] = []  # the one-line errors the tasks ended with

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for raw in lines:
            line = _ANSI.sub("", raw)
            self._log(line)
            self._line(line)
        self._follow_progress()
        return len(text)

    def _log(self, line: str) -> None:
        """``line`` into the log file, without colour codes; a task's executor input (a JSON
        dump of a hundred lines or more) folded into one line saying so."""
        if self._folded is not None:
            self._folded += 1
            self._depth += line.count("{") + line.count("[") - line.count("}") - line.count("]")
            if self._depth > 0 and self._folded < _FOLD_LIMIT:
                return
            self.log.write(f"    ({self._folded} lines of executor input folded)\n")
            self._folded = None
            return
        self.log.write(line + "\n")
        if line.rstrip().endswith("Got executor_input:"):
            self._folded, self._depth = 0, 0

    def _follow_progress(self) -> None:
        """Read the records appended since the last look (a line still being written waits)."""
        # Called on every write of the runner's output: one stat, the file opened only if it grew.
        if self.progress is None or not self.progress.is_file():
            return
        if self.progress.stat().st_size <= self._progress_offset:
            return
        with open(self.progress, encoding="utf-8") as f:
            f.seek(self._progress_offset)
            chunk = f.read()
        complete = chunk[: chunk.rfind("\n") + 1]
        self._progress_offset += len(complete.encode("utf-8"))
        for line in complete.splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "epoch" in record:
                self._epoch(record)
            elif isinstance(record, dict) and {"done", "total", "unit"} <= set(record):
                self._count(record)

    def _epoch(self, record: dict[str, Any]) -> None:
        if self.current is None:
            return
        self.epochs.append(time.monotonic())
        epoch, epochs = int(record["epoch"]), int(record["epochs"])
        per_epoch = (self.epochs[-1] - self.started) / len(self.epochs)
        left = per_epoch * (epochs - epoch)
        acc = record.get("val_accuracy") or []
        self._show(
            f"step {self.step} of {max(self.total, self.step)}: "
            f"{self.label(self.current, self.iteration)}, "
            f"epoch {epoch}/{epochs} (val acc last exit "
            f"{f'{acc[-1]:.3f}' if acc else '?'}), {_minutes(left)} left"
        )

    def _count(self, record: dict[str, Any]) -> None:
        """Work counted in units (calibration images, searched budgets): done of total, and the
        time left at the rate since the step started."""
        if self.current is None:
            return
        done, total = int(record["done"]), int(record["total"])
        left = (time.monotonic() - self.started) / max(done, 1) * (total - done)
        self._show(
            f"step {self.step} of {max(self.total, self.step)}: "
            f"{self.label(self.current, self.iteration)}, {done}/{total} {record['unit']}, "
            f"{_minutes(left)} left"
        )

    def flush(self) -> None:
        self.log.flush()
        self.out.flush()

    def label(self, task: str, iteration: int | None = None) -> str:
        name = _ITERATION.sub("", task)
        label = self.labels.get(name, name)
        if m := _ITERATION.search(task):
            iteration = int(m["k"])
        if iteration is not None and iteration < len(self.items):
            label += f" [{self.items[iteration]}]"
        return label

    def _line(self, line: str) -> None:
        if m := _USER_ERROR.search(line):
            self.user_errors.append(m.group(0))
        if m := _START.search(line):
            self._close_pending()
            self.step += 1
            self.current, self.started, self.epochs = m["task"], time.monotonic(), []
            self.iteration = None
            self._show(f"step {self.step} of {max(self.total, self.step)}: {self.label(m['task'])}")
        elif m := _FINISH.search(line):
            self._close_pending()
            seconds = time.monotonic() - self.started
            self._pending = {"task": m["task"], "status": m["status"], "seconds": seconds}
            if self.iteration is not None:
                self._pending["iteration"] = self.iteration
        elif self._pending is not None and (m := _METADATA.search(line)):
            try:
                meta = ast.literal_eval(m["meta"])
            except (ValueError, SyntaxError):
                meta = {}
            if isinstance(meta, dict):
                self._pending.setdefault("metrics", {}).update(meta)
        elif line.startswith("-" * 40):
            self._close_pending()
        elif (
            self.iteration is None and (m := _LOOP_PATH.search(line)) and m["task"] == self.current
        ):
            self.iteration = int(m["k"])

    def _close_pending(self) -> None:
        if self._pending is None:
            return
        done, self._pending = self._pending, None
        self.finished.append(done)
        extra = _headline(done.get("metrics", {}))
        status = "" if done["status"] == "SUCCESS" else f" {done['status']}"
        self._show(
            f"  done{status}: {self.label(done['task'], done.get('iteration'))} "
            f"({_minutes(done['seconds'])}{extra})",
            final=True,
        )

    def _show(self, text: str, final: bool = False) -> None:
        if self.live:
            self.out.write("\r\x1b[2K" + text + ("\n" if final else ""))
        elif final or (text.startswith("step ") and "epoch" not in text):
            self.out.write(text + "\n")
        self.out.flush()

    def close_view(self) -> None:
        self._close_pending()
        if self._partial:
            line = _ANSI.sub("", self._partial)
            self._log(line)
            self._line(line)
            self._partial = ""
        if self._folded is not None:
            self.log.write(f"    ({self._folded} lines of executor input folded)\n")
            self._folded = None
        if self.live:
            self.out.write("\r\x1b[2K")
        self.flush()


def start_progress_file(log_path: Path) -> Path:
    """An empty ``<log_path>.progress.jsonl`` that the run's tasks may append to (in a
    container too: anyone may write it)."""
    progress = log_path.with_name(log_path.name + ".progress.jsonl")
    progress.parent.mkdir(parents=True, exist_ok=True)
    progress.write_text("")
    progress.chmod(0o666)
    return progress


@contextmanager
def run_view(
    log_path: Path,
    labels: dict[str, str],
    total: int,
    items: list[str] | None = None,
    progress: Path | None = None,
) -> Iterator[RunView]:
    """Route ``sys.stdout`` through a :class:`RunView` writing ``log_path``; the tasks' progress
    records go to ``progress`` (default: :func:`start_progress_file`); both restored after."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    progress = progress or start_progress_file(log_path)
    real, before = sys.stdout, os.environ.get(PROGRESS_FILE_ENV)
    os.environ[PROGRESS_FILE_ENV] = str(progress.resolve())
    with open(log_path, "w", buffering=1) as log, _logging_to(log):
        view = RunView(log, labels, total, real, items, progress)
        sys.stdout = view
        try:
            yield view
        finally:
            sys.stdout = real
            view.close_view()
            if before is None:
                os.environ.pop(PROGRESS_FILE_ENV, None)
            else:
                os.environ[PROGRESS_FILE_ENV] = before


@contextmanager
def _logging_to(log: TextIO) -> Iterator[None]:
    """Log records into the run's log; the terminal keeps only warnings and errors (the local
    runner logs each task's input resolution at INFO)."""
    root = logging.getLogger()
    terminals = [h for h in root.handlers if type(h) is logging.StreamHandler]
    levels = [h.level for h in terminals]
    to_log = logging.StreamHandler(log)
    to_log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(to_log)
    for h in terminals:
        h.setLevel(max(h.level, logging.WARNING))
    try:
        yield
    finally:
        root.removeHandler(to_log)
        for h, level in zip(terminals, levels, strict=True):
            h.setLevel(level)
