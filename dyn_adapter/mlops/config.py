"""The ``register`` section of ``params.yaml``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from ..config import check_choices
from ..errors import ConfigError
from ..urls import check_no_credentials
from .names import DEFAULT_EXPERIMENT, DEFAULT_MODEL_NAME

# Where MLflow reads credentials from, instead of a tracking URI.
MLFLOW_CREDENTIALS = "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN"


@dataclass
class RegisterConfig:
    """Model registration and the promotion gate.

    Attributes:
        model_name: Registered model name in the MLflow registry.
        tracking_uri: MLflow tracking (and registry) URI. ``None``: ``$MLFLOW_TRACKING_URI``
            if set, else an embedded SQLite store ``outputs/mlflow/mlflow.db`` with artifacts
            under ``outputs/mlflow/artifacts`` (:func:`~dyn_adapter.mlops.store.resolve_tracking_uri`). Never put
            credentials here: MLflow reads them from its environment variables.
        experiment: Experiment the registration runs are logged to.
        accuracy_tolerance: A candidate may not be below the current champion's test accuracy
            by more than this (absolute) to become champion. The accuracy compared is the test
            accuracy at the iso-accuracy budget, or at the largest budget when none reaches it.
        max_gflops_ratio: The candidate's ``iso_accuracy.gflops_ratio`` (GFLOPs over the full
            model's at iso accuracy) must be at most this to become champion; ``None`` disables
            the condition.
        gate_metric: What is compared with the champion's: ``accuracy``, or
            ``balanced_accuracy`` (the mean per-class recall: a class the model never
            predicts costs it, whatever the class proportions of the test split).
        gate_risk: ``None``: the GFLOPs condition reads the iso-accuracy budget. A level
            (one of ``calibrate.epsilons``): it reads the point certified at disagreement <=
            this instead, which must also have kept its level on the test split.
    """

    model_name: str = DEFAULT_MODEL_NAME
    tracking_uri: str | None = None
    experiment: str = DEFAULT_EXPERIMENT
    accuracy_tolerance: float = 0.005
    max_gflops_ratio: float | None = 0.6
    gate_metric: Literal["accuracy", "balanced_accuracy"] = "accuracy"
    gate_risk: float | None = None

    def __post_init__(self) -> None:
        if not self.model_name.strip():
            raise ConfigError("register.model_name: must not be empty")
        if not self.experiment.strip():
            raise ConfigError("register.experiment: must not be empty")
        if not (math.isfinite(self.accuracy_tolerance) and self.accuracy_tolerance >= 0):
            raise ConfigError(
                f"register.accuracy_tolerance: must be a number >= 0, got {self.accuracy_tolerance}"
            )
        if self.max_gflops_ratio is not None and not 0 < self.max_gflops_ratio <= 1:
            raise ConfigError(
                f"register.max_gflops_ratio: must be in (0, 1] or null, got {self.max_gflops_ratio}"
            )
        check_choices(self, "register")
        if self.gate_risk is not None and not 0 < self.gate_risk < 1:
            raise ConfigError(
                f"register.gate_risk: must be in (0, 1) or null, got {self.gate_risk}"
            )
        if self.tracking_uri is not None:
            check_no_credentials(self.tracking_uri, "register.tracking_uri", MLFLOW_CREDENTIALS)
