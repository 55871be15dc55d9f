"""The evaluate stage's report, ``metrics.json``, as typed records: ``evaluate`` builds an
:class:`EvaluationReport` and writes it with :meth:`EvaluationReport.write`; every reader (the
model card, the plots, the VTAB table, the run summary, registration's gate) gets it from
:meth:`EvaluationReport.read`, so a new number is one field here, not a key spelled in five
modules. Fields appear in the file in the order they are declared.

A paired difference (:func:`~dyn_adapter.evaluation.stats.paired_difference`) and risk
control's record (:mod:`~dyn_adapter.evaluation.certified`) stay the dicts their owners make.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import from_dict, to_dict
from .errors import ConfigError

Difference = dict[str, Any]  # a paired difference: difference, interval, resolved, ...
# A field left out of the file when None (the static model's numbers when there is none).
_OMITTED_WHEN_NONE = {"omitted_when_none": True}


@dataclass
class FullModel:
    """The Dyn-Adapter model's last exit on test (and its validation accuracy)."""

    accuracy: float
    accuracy_interval: list[float]
    balanced_accuracy: float
    per_class_recall: list[float | None]
    val_accuracy: float
    gflops: float


@dataclass
class StaticPetl:
    """The static PETL model (one exit) on test; ``accuracy`` None when it was not given."""

    accuracy: float | None = None
    accuracy_interval: list[float] | None = field(default=None, metadata=_OMITTED_WHEN_NONE)
    balanced_accuracy: float | None = field(default=None, metadata=_OMITTED_WHEN_NONE)
    per_class_recall: list[float | None] | None = field(default=None, metadata=_OMITTED_WHEN_NONE)
    val_accuracy: float | None = field(default=None, metadata=_OMITTED_WHEN_NONE)


@dataclass
class Exit:
    """One exit of the model, every image leaving there."""

    block: int
    accuracy: float
    accuracy_interval: list[float]
    balanced_accuracy: float
    gflops_cumulative: float


@dataclass
class ProbeExit:
    """One exit of the frozen-probe baseline, every image leaving there."""

    accuracy: float
    accuracy_interval: list[float]
    balanced_accuracy: float
    gflops_cumulative: float


@dataclass
class FrozenProbe:
    exits: list[ProbeExit] | None = None


@dataclass
class Budget:
    """A searched budget's policy run for real on test, beside what the cached logits
    predicted, the geometric policy and the frozen probe at that budget."""

    budget: float
    thresholds: list[float]
    accuracy: float
    accuracy_interval: list[float]
    balanced_accuracy: float
    val_accuracy: float
    val_gflops_ratio: float
    disagreement: float  # answers unlike the full model's: what risk control bounds
    gflops: float
    gflops_ratio: float
    exit_fractions: list[float]
    simulated_accuracy: float
    simulated_gflops: float
    geometric_accuracy: float | None = None
    frozen_probe_accuracy: float | None = None
    frozen_probe_gflops: float | None = None
    vs_frozen_probe: Difference | None = None


@dataclass
class Oracle:
    accuracy: float
    gflops: float
    exit_fractions: list[float]


@dataclass
class TestRead:
    """The iso-accuracy rule applied to the test curve: a second reading, not a choice."""

    chosen_on: str
    reference_accuracy: float
    budget: float | None
    accuracy: float | None
    accuracy_interval: list[float] | None
    balanced_accuracy: float | None
    gflops_ratio: float | None


@dataclass
class IsoAccuracy:
    """The cheapest budget whose validation accuracy keeps the reference's (all None when no
    budget does), and its test numbers."""

    chosen_on: str
    reference_val_accuracy: float
    budget: float | None
    accuracy: float | None
    accuracy_interval: list[float] | None
    balanced_accuracy: float | None
    gflops_ratio: float | None
    tolerance: float
    test_read: TestRead


@dataclass
class HalfGflops:
    """The policy searched under the largest budget <= ``max_budget``."""

    max_budget: float
    budget: float | None
    accuracy: float | None
    accuracy_interval: list[float] | None
    balanced_accuracy: float | None
    gflops_ratio: float | None


@dataclass
class Speed:
    """Wall-clock of the timed policy against the full model (medians over repeats)."""

    seconds_full_b64: float
    seconds_dynamic_b64: float
    time_ratio_b64: float
    seconds_full_b1: float
    seconds_dynamic_b1: float
    time_ratio_b1: float
    budget: float
    images: int
    engine: str
    precision: str
    machine: dict[str, Any]


@dataclass
class EvaluationReport:
    """``metrics.json``."""

    flops_unit: str
    full: FullModel
    static_petl: StaticPetl
    frozen_probe: FrozenProbe
    exits: list[Exit]
    budgets: list[Budget]
    oracle: Oracle
    iso_accuracy: IsoAccuracy
    half_gflops: HalfGflops
    comparisons: dict[str, Difference]
    risk_control: dict[str, Any] | None
    speed: Speed
    test_images: int
    class_shift: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The file's content (fields marked so are left out when None)."""
        return as_json(self)

    def write(self, path: Path) -> None:
        from .files import write_json

        write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> EvaluationReport:
        """The report in ``data`` (read from ``where``); one of another shape is refused,
        naming the key."""
        try:
            return from_dict(cls, data)
        except ConfigError as e:
            raise ConfigError(
                f"{where}: not an evaluate stage output ({e}); run `dyn-adapter evaluate` again"
            ) from None

    @property
    def risk_points(self) -> list[dict[str, Any]]:
        return list((self.risk_control or {}).get("points", []))


def as_json(obj: Any) -> Any:
    """A report, or any part of it, as it reads in the file (plain JSON data)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: as_json(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if not (f.metadata.get("omitted_when_none") and getattr(obj, f.name) is None)
        }
    if isinstance(obj, list):
        return [as_json(v) for v in obj]
    return to_dict(obj)
