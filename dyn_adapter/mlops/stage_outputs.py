"""What a stage's output directory gives MLflow: its artifacts, final and per-epoch metrics, tags.

Read from the directory after the stage ran, so the same logging serves stages run by the CLI,
DVC or a KFP component. Text artifacts are copied redacted; a binary holding a credential's
value is left out.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..artifacts import (
    CALIBRATION_CHUNKS_DIR,
    CHECKPOINTS_DIR,
    MANIFEST_FILE,
    METRICS_FILE,
    MODEL_DIR,
    RISK_POINTS_FILE,
    THRESHOLDS_FILE,
    TRAIN_LOG,
)
from ..errors import ConfigError
from .redaction import redact

logger = logging.getLogger(__name__)

# Stage outputs: these are logged as artifacts anywhere in the output directory ...
ARTIFACT_SUFFIXES = (".json", ".md", ".png")


# ... the model directory's weights and config (not the sparsity candidates' models) ...
MODEL_SUFFIXES = (".safetensors", ".json")


# ... and never these: resumable training and calibration state, half-written temporaries.
EXCLUDED_DIRS = frozenset({CHECKPOINTS_DIR, CALIBRATION_CHUNKS_DIR})


TEXT_SUFFIXES = frozenset({".json", ".md", ".txt", ".yaml", ".yml", ".csv", ".html"})


# A stage's final numbers: the first of these it wrote (search and calibrate write no
# metrics.json).
FINAL_METRICS_FILES = (METRICS_FILE, THRESHOLDS_FILE, RISK_POINTS_FILE)


# Per-epoch record keys of train_log.json -> metric names; lists get one metric per exit.
EPOCH_METRIC_NAMES = {
    "lr": "lr",
    "loss_weights": "lambda",
    "train_loss": "train_loss",
    "train_accuracy": "train_acc",
    "val_loss": "val_loss",
    "val_accuracy": "val_acc",
    "seconds": "epoch_seconds",
}


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested params to ``{"train.loss_weights.shape": "linear"}``; lists and scalars as JSON.

    Strings are kept as they are; everything else is JSON (``true``, ``null``, ``[3, 6]``).
    """
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten_params(value, f"{name}."))
            continue
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        if len(text) > MAX_PARAM_VAL_LENGTH:
            text = text[: MAX_PARAM_VAL_LENGTH - 3] + "..."
        out[name] = text
    return out


def flatten_metrics(data: Any, prefix: str = "") -> dict[str, float]:
    """Nested JSON to ``{"full.accuracy": 0.81, "exits.0.block": 3.0}``: finite numbers only.

    Strings, booleans, nulls, NaN and infinities are skipped.
    """
    out: dict[str, float] = {}
    if isinstance(data, Mapping):
        for k, v in data.items():
            out.update(flatten_metrics(v, f"{prefix}{k}."))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out.update(flatten_metrics(v, f"{prefix}{i}."))
    elif isinstance(data, int | float) and not isinstance(data, bool) and math.isfinite(data):
        out[prefix.rstrip(".")] = float(data)
    return out


def epoch_metrics(log: Mapping[str, Any], prefix: str = "") -> list[tuple[str, float, int]]:
    """``train_log.json``'s per-epoch records as ``(name, value, step=epoch)``.

    Lists become one metric per exit (``train_loss_exit0``, ``val_acc_exit2``,
    ``lambda_exit1``); scalars keep their (mapped) name (``lr``, ``epoch_seconds``).
    """
    out: list[tuple[str, float, int]] = []
    for i, record in enumerate(log.get("epochs", [])):
        step = int(record.get("epoch", i + 1))
        for key, value in record.items():
            if key in ("epoch", "session"):  # the step, and which process ran it
                continue
            name = prefix + EPOCH_METRIC_NAMES.get(key, key)
            values = value if isinstance(value, list) else [value]
            for k, v in enumerate(values):
                if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                    out.append((f"{name}_exit{k}" if isinstance(value, list) else name, v, step))
    return out


def _walk(out_dir: Path) -> Iterator[Path]:
    """Files under ``out_dir``, leaving out excluded and hidden directories (temporaries)."""
    for root, dirs, files in os.walk(out_dir):
        dirs[:] = sorted(d for d in dirs if d not in EXCLUDED_DIRS and not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(root) / name


def artifact_files(out_dir: str | os.PathLike[str], extra: Sequence[str] = ()) -> list[Path]:
    """The files of a stage's output directory that are logged, relative to it.

    Every ``*.json``, ``*.md`` and ``*.png`` (manifests, metrics, logs, model card, tables,
    plots), the model directory's ``*.safetensors`` and config; never ``checkpoints/``, the
    prepared arrays or ``optuna.db`` unless a glob in ``extra`` names them.

    Args:
        out_dir: The stage's output directory.
        extra: Further globs, relative to ``out_dir`` (``optuna.db``, ``candidates/*/model/*``).
    """
    root = Path(out_dir)
    picked = []
    for path in _walk(root):
        rel = path.relative_to(root)
        posix = rel.as_posix()
        if (
            path.suffix in ARTIFACT_SUFFIXES
            or (rel.parent == Path(MODEL_DIR) and path.suffix in MODEL_SUFFIXES)
            or any(fnmatch.fnmatch(posix, pattern) for pattern in extra)
        ):
            picked.append(rel)
    return picked


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: not readable JSON ({e})") from e


def stage_metrics(out: Path) -> tuple[dict[str, float], list[tuple[str, float, int]]]:
    """Final metrics (``metrics.json``, or search's ``thresholds.json``) and per-epoch ones
    (every ``train_log.json``)."""
    final: dict[str, float] = {}
    for name in FINAL_METRICS_FILES:
        if (out / name).is_file():
            final = flatten_metrics(_read_json(out / name))
            break
    epochs: list[tuple[str, float, int]] = []
    for path in _walk(out):
        if path.name == TRAIN_LOG:
            # Nested logs (the sparsity candidates' runs) are prefixed by their directory.
            rel = path.parent.relative_to(out).as_posix()
            epochs += epoch_metrics(_read_json(path), "" if rel == "." else f"{rel}/")
    return final, epochs


def manifest_tags(out: Path) -> dict[str, str]:
    if not (out / MANIFEST_FILE).is_file():
        return {}
    manifest = _read_json(out / MANIFEST_FILE)
    tags = {
        "config_hash": manifest.get("config_hash"),
        "code_version": manifest.get("code_version"),
        "manifest_stage": manifest.get("stage"),
    }
    return {k: str(v) for k, v in tags.items() if v is not None}


def stage_artifacts(out: Path, files: Iterable[Path], staging: Path, secrets: Sequence[str]) -> int:
    """Copy ``files`` into ``staging``: text redacted, binaries holding a secret left out."""
    needles = [s.encode() for s in secrets]
    count = 0
    for rel in files:
        src = out / rel
        if redact(rel.as_posix(), secrets) != rel.as_posix():
            logger.warning("not logging an artifact whose path holds a credential")
            continue
        dst = staging / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.suffix in TEXT_SUFFIXES:
            text = src.read_text(errors="replace")
            dst.write_text(redact(text, secrets))
        else:
            data = src.read_bytes()
            if any(n in data for n in needles):
                logger.warning("not logging %s: it contains a credential's value", rel)
                continue
            shutil.copyfile(src, dst)
        count += 1
    return count
