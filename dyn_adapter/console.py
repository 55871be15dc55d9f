"""How a command talks to the person who ran it: in full at the CLI, briefly under ``dvc repro``.

DVC runs each stage's command with ``$DVC_STAGE`` set and passes its output straight through,
after its own ``Running stage '<name>':`` line. There a stage says only what a person follows a
run by: the epoch lines of training, warnings and errors, the command's one result line, and
its time. Everything it logs goes, in full, to ``outputs/logs/dvc/<stage>.log``; reports a
command prints at the CLI (the model card, the Pareto table) are named by path instead.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

STAGE_ENV = "DVC_STAGE"  # DVC sets it for every stage command it runs
LOG_DIR = Path("outputs/logs/dvc")
# Loggers whose INFO lines are a run's progress: shown on the terminal in the brief view.
PROGRESS_LOGGERS = ("dyn_adapter.training.trainer",)
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# A JSON-lines file that a run's view follows (the pipeline runner sets it for its tasks).
PROGRESS_FILE_ENV = "DYN_ADAPTER_PROGRESS_FILE"


def dvc_stage() -> str | None:
    """The DVC stage this command runs as, if ``dvc repro`` started it."""
    return os.environ.get(STAGE_ENV) or None


def brief() -> bool:
    return dvc_stage() is not None


def stage_log_path(stage: str) -> Path:
    """``outputs/logs/dvc/<stage>.log`` (``dvc.yaml:train`` and ``a@b`` made file names)."""
    name = re.sub(r"[^\w.-]+", "_", stage.rsplit(":", 1)[-1])
    return LOG_DIR / f"{name}.log"


class _Progress(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name.startswith(PROGRESS_LOGGERS)


def configure_logging(verbose: bool) -> Path | None:
    """Log to stderr; in the brief view only progress lines there, all of it to the stage's
    log file (returned)."""
    level = logging.DEBUG if verbose else logging.INFO
    stage = dvc_stage()
    if stage is None:
        logging.basicConfig(level=level, format=FORMAT, stream=sys.stderr)
        return None
    path = stage_log_path(stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(path, mode="w")
    to_terminal = logging.StreamHandler(sys.stderr)
    to_terminal.addFilter(_Progress())
    logging.basicConfig(level=level, format=FORMAT, handlers=[to_file, to_terminal])
    # MLflow logs through its own handlers: its INFO lines (database set-up, signature checks)
    # and its download bars are not a run's progress.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return path


def show_report(path: Path, what: str) -> None:
    """Print the report at ``path`` in full, or in the brief view only where it is."""
    if brief():
        print(f"{what}: {path}")
    else:
        print(path.read_text())


def finished(started: float, log: Path | None, error: str | None = None) -> None:
    """The brief view's closing line: the stage, its time and where its whole log is (named,
    so that it reads alone under ``dvc repro --quiet``); a failed stage's error goes into the
    log too."""
    if log is None:
        return
    seconds = time.monotonic() - started
    took = f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"
    if error is None:
        print(f"{log.stem}: done in {took}; whole log: {log}")
    else:
        logging.getLogger(__name__).info("failed: %s", error)  # the file only: stderr has it
        print(f"{log.stem}: failed after {took}; whole log: {log}", file=sys.stderr)


def record_progress(stage: str, **fields: Any) -> None:
    """Append ``{"stage": stage, **fields}`` as one line to ``$DYN_ADAPTER_PROGRESS_FILE``,
    if set: progress as data for whoever shows it (the pipeline's run view), not log text to
    parse. A line is written with one ``write`` in append mode, so concurrent writers do not
    interleave; a file that cannot be written is skipped (the work goes on)."""
    path = os.environ.get(PROGRESS_FILE_ENV)
    if not path:
        return
    line = json.dumps({"stage": stage, "time": time.time(), **fields}) + "\n"
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)
    except OSError as e:  # a view that cannot follow is no reason to stop the work
        logging.getLogger(__name__).debug("progress record not written to %s: %s", path, e)
