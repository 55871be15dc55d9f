"""``params.yaml``: the single source of truth, validated into typed config.

Unknown keys and wrong types are refused with the dotted key's name. Overrides use the same
``a.b=c`` syntax as ``dvc exp run -S``; values are parsed as YAML (``3``, ``0.5``, ``true``,
``[3, 6, 12]``, ``null``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config import from_dict
from .data.config import DataConfig
from .errors import ConfigError
from .evaluation.config import EvaluateConfig
from .inference.config import InferenceConfig
from .mlops.config import RegisterConfig
from .models import ModelConfig
from .policies.config import CalibrateConfig, SearchConfig
from .training.config import SparsifyConfig, TrainConfig

DEFAULT_PARAMS = Path("params.yaml")


@dataclass
class Params:
    """Every stage's settings; each stage reads only its own sections."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sparsify: SparsifyConfig = field(default_factory=SparsifyConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    calibrate: CalibrateConfig = field(default_factory=CalibrateConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    register: RegisterConfig = field(default_factory=RegisterConfig)


def parse_assignment(item: str, what: str, expected: str) -> tuple[str, Any]:
    """``NAME=VALUE`` as ``(NAME, VALUE parsed as YAML)``; ``what`` and ``expected`` word the
    errors (``override``, ``KEY=VALUE, e.g. train.epochs=5``)."""
    name, sep, text = item.partition("=")
    if not sep or not name.strip():
        raise ConfigError(f"{what} {item!r}: expected {expected}")
    try:
        return name.strip(), yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {item!r}: value is not valid YAML ({e})") from e


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Set ``a.b.c=value`` overrides on a nested dict (values parsed as YAML)."""
    for item in overrides:
        key, value = parse_assignment(item, "override", "KEY=VALUE, e.g. train.epochs=5")
        node = raw
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {'.'.join(parts[: i + 1])} is not a section")
            node = child
        node[parts[-1]] = value
    return raw


def read_params_file(path: str | Path) -> dict[str, Any]:
    """``params.yaml`` as a nested dict, not yet validated: the only reader of the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such parameters file (pass --params PATH)")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping of sections at the top level")
    return raw


def load_params(path: str | Path | None = DEFAULT_PARAMS, overrides: Sequence[str] = ()) -> Params:
    """Read and validate ``params.yaml`` (defaults for anything it leaves out)."""
    raw = read_params_file(path) if path is not None else {}
    try:
        return params_from_dict(raw, overrides)
    except ConfigError as e:
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"{where}{e}") from e


def params_from_dict(raw: dict[str, Any], overrides: Sequence[str] = ()) -> Params:
    """Validate an already-parsed ``params.yaml`` (as a KFP pipeline receives it)."""
    return from_dict(Params, apply_overrides(copy.deepcopy(raw), overrides))
