"""The ``search`` and ``calibrate`` sections of ``params.yaml``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np

from ..config import check_choices
from ..errors import ConfigError

Risk = Literal["disagreement", "accuracy_drop"]
RISKS: tuple[str, ...] = get_args(Risk)


@dataclass
class SearchConfig:
    """Threshold search settings.

    Attributes:
        budgets: Expected-GFLOPs budgets as fractions of the full model (``(0, 1]``).
        trials: Optuna trials per budget.
        geometric_qs: Ratios ``q`` of the geometric baseline's sweep (``p_k ∝ q^k``).
        storage: Optuna storage (any SQLAlchemy URL, so several workers can share a study);
            ``None``: SQLite in the output directory, written once when the search ends (the
            trials themselves run in memory: SQLite round-trips cost 10x the search).
        seed: Seed of the TPE sampler.
        max_p: The searched policy replaces the incumbent (the geometric policy, or a smaller
            budget's choice) only if a one-sided sign test on the validation images where they
            disagree gives p below this (1.0: whenever it is more accurate at all).
    """

    budgets: Sequence[float] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    trials: int = 200
    geometric_qs: Sequence[float] = field(
        default_factory=lambda: [float(q) for q in np.geomspace(0.05, 20.0, 41)]
    )
    storage: str | None = None
    seed: int = 0
    max_p: float = 0.05

    def __post_init__(self) -> None:
        bad = [b for b in self.budgets if not 0 < b <= 1]
        if bad or not self.budgets:
            raise ConfigError(f"search.budgets: each must be in (0, 1], got {list(self.budgets)}")
        if self.trials < 1:
            raise ConfigError(f"search.trials: must be >= 1, got {self.trials}")
        if not 0 < self.max_p <= 1:
            raise ConfigError(f"search.max_p: must be in (0, 1], got {self.max_p}")


@dataclass
class CalibrateConfig:
    """Settings of the ``calibrate`` stage.

    Attributes:
        split: The prepared split calibrated on (``calibration``: ``data.calibration_size``
            images of the training pool that train and val leave). Its labels are read only
            for the ``accuracy_drop`` risk.
        risks: Which risks to certify: ``disagreement`` (with the last exit; no labels) and/or
            ``accuracy_drop`` (wrong where the last exit is right; labels).
        epsilons: Risk levels to certify, each in (0, 1); empty: the stage certifies nothing
            (and computes nothing).
        delta: The probability a certificate may fail, in (0, 1).
        window_images: ``None``: the certificate bounds the expected risk (Learn then
            Test's guarantee). m: it bounds the realised risk of any m fresh images (a test
            split, a day's traffic), at some cost in compute: the expected risk is certified
            below ε by the binomial spread of m images.
        batch_size: Images per forward pass.
        chunk_images: Exit scores are saved every this many images, so an interrupted run
            resumes where it stopped.
    """

    split: str = "calibration"
    risks: list[Risk] = field(default_factory=lambda: ["disagreement"])
    epsilons: list[float] = field(default_factory=list)
    delta: float = 0.05
    window_images: int | None = None
    batch_size: int = 64
    chunk_images: int = 2048

    def __post_init__(self) -> None:
        check_choices(self, "calibrate")
        check_level("calibrate.delta", self.delta)
        for epsilon in self.epsilons:
            check_level("calibrate.epsilons", epsilon)
        for key in ("batch_size", "chunk_images"):
            if getattr(self, key) < 1:
                raise ConfigError(f"calibrate.{key}: must be >= 1, got {getattr(self, key)}")
        if self.window_images is not None:
            check_window(self.window_images, "calibrate.window_images")


def check_window(value: int, name: str) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        raise ConfigError(f"{name} {value!r}: must be a whole number of images >= 1, or null")


def check_level(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and 0 < value < 1):
        raise ConfigError(f"{name} {value!r}: must be strictly between 0 and 1")
