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
    read_json,
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


# One naming scheme for a stage's numbers in MLflow: a value per exit is ``<name>_exit<k>``
# (``val_accuracy_exit3``, per epoch and final alike, as the KFP metrics name them), per
# searched budget ``_budget<b>``, per certified risk level ``_risk<level>``; an interval
# ``[low, high]`` is ``<name>_low`` / ``<name>_high``. Per-epoch records keep their keys,
# except what is not a learning curve: MLflow draws a run's charts sorted by name, in a
# section per prefix before a "/" (names without one first), so the schedule and the epoch's
# wall time get sections of their own and a run opens on its accuracy and loss curves.
EPOCH_METRIC_NAMES = {
    "lr": "schedule/lr",
    "loss_weights": "schedule/loss_weights",
    "seconds": "time/epoch_seconds",
}


# Lists of records named by a field of each record (else by their index, ``exit<k>``); lists of
# records not named here (curves) stay in the JSON artifact.
KEYED_RECORDS = {
    "exits": ("exit", None),
    "budgets": ("budget", "budget"),
    "points": ("risk", "epsilon"),
}


# Lists of numbers indexed by something other than the exit.
INDEXED_BY = {"per_class_recall": "class"}


# Numbers that restate the configuration (how many epochs, which block an exit follows, the
# budgets and risk levels asked for): the run's params, not its metrics.
SETTINGS = frozenset(
    {"epochs", "block", "budget", "epsilon", "epsilons", "delta", "tolerance", "window_images"}
)


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


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def stage_numbers(data: Any) -> tuple[dict[str, float], dict[str, str]]:
    """A stage's result file (``metrics.json``, ``thresholds.json``, ...) as MLflow metrics and
    params, named by the scheme above: ``({"accuracy_exit0": 0.91, "full.accuracy_low": 0.9,
    "accuracy_budget0.5": 0.88}, {"block_exit0": "3", "epochs": "16"})``.

    Finite numbers only; strings, booleans, nulls, NaN and infinities are skipped, as are lists
    of records not in ``KEYED_RECORDS`` (curves: the JSON artifact has them).
    """
    metrics: dict[str, float] = {}
    settings: dict[str, str] = {}

    def put(name: str, value: Any, leaf: str) -> None:
        if _number(value):
            if leaf in SETTINGS:
                settings[name] = json.dumps(value)
            else:
                metrics[name] = float(value)

    def walk(node: Mapping[str, Any], prefix: str, suffix: str) -> None:
        for key, value in node.items():
            if isinstance(value, Mapping):
                walk(value, f"{prefix}{key}.", suffix)
            elif isinstance(value, list) and key in KEYED_RECORDS:
                label, field = KEYED_RECORDS[key]
                for i, record in enumerate(value):
                    if not isinstance(record, Mapping):
                        continue
                    tag = record.get(field) if field else i
                    tag = f"{tag:g}" if _number(tag) and field else tag
                    rest = {k: v for k, v in record.items() if k != field}  # it names them
                    walk(rest, prefix, f"{suffix}_{label}{tag}")
            elif isinstance(value, list) and not any(isinstance(v, Mapping | list) for v in value):
                if key.endswith("_interval") and len(value) == 2:
                    base = key.removesuffix("_interval")
                    put(f"{prefix}{base}_low{suffix}", value[0], base)
                    put(f"{prefix}{base}_high{suffix}", value[1], base)
                    continue
                if key in SETTINGS:
                    settings[f"{prefix}{key}{suffix}"] = json.dumps(value)
                    continue
                index = INDEXED_BY.get(key, "exit")
                for i, v in enumerate(value):
                    put(f"{prefix}{key}{suffix}_{index}{i}", v, key)
            else:
                put(f"{prefix}{key}{suffix}", value, key)

    if isinstance(data, Mapping):
        walk(data, "", "")
    return metrics, settings


def epoch_metrics(log: Mapping[str, Any], prefix: str = "") -> list[tuple[str, float, int]]:
    """``train_log.json``'s per-epoch records as ``(name, value, step=epoch)``.

    Lists become one metric per exit (``train_loss_exit0``, ``val_accuracy_exit2``,
    ``schedule/loss_weights_exit1``); scalars keep their name (``schedule/lr``,
    ``time/epoch_seconds``).
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
                if _number(v):
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


def stage_metrics(
    out: Path,
) -> tuple[dict[str, float], list[tuple[str, float, int]], dict[str, str]]:
    """Final metrics (``metrics.json``, or search's ``thresholds.json``, calibrate's
    ``risk_points.json``), per-epoch ones (every ``train_log.json``), and the settings the
    result file restates (params). A final value a per-epoch history already ends with (the
    last epoch's ``val_accuracy_exit0``) is not logged twice."""
    final: dict[str, float] = {}
    settings: dict[str, str] = {}
    for name in FINAL_METRICS_FILES:
        if (out / name).is_file():
            final, settings = stage_numbers(_read_json(out / name))
            break
    epochs: list[tuple[str, float, int]] = []
    for path in _walk(out):
        if path.name == TRAIN_LOG:
            # Nested logs (the sparsity candidates' runs) are prefixed by their directory.
            rel = path.parent.relative_to(out).as_posix()
            epochs += epoch_metrics(_read_json(path), "" if rel == "." else f"{rel}/")
    in_history = {name for name, _, _ in epochs}
    return {k: v for k, v in final.items() if k not in in_history}, epochs, settings


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


def dataset_input(data_dir: str | os.PathLike[str], stage: str) -> Any:
    """The prepared data as an MLflow dataset input: its source's name, a digest of its splits'
    checksums, where it was read from, and the images per split and class as its profile."""
    import hashlib

    from mlflow.entities import Dataset, DatasetInput, InputTag

    manifest = read_json(Path(data_dir) / MANIFEST_FILE, "prepare")
    splits = manifest.get("splits", {})
    digest = hashlib.sha256(
        json.dumps({k: v.get("sha256") for k, v in sorted(splits.items())}).encode()
    ).hexdigest()[:16]
    source = str(manifest.get("path", ""))
    dataset = Dataset(
        name=str(manifest.get("source", "prepared")),
        digest=digest,
        source_type="s3" if source.startswith("s3://") else "local",
        source=redact(source),
        profile=json.dumps(
            {
                k: {"count": v.get("count"), "class_counts": v.get("class_counts")}
                for k, v in splits.items()
            }
        ),
    )
    context = "evaluation" if stage.startswith(("evaluate", "search", "calibrate")) else "training"
    return DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)])
