"""Settings of the evaluate stage."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EvaluateConfig:
    """Evaluation settings.

    Attributes:
        iso_tolerance: Validation accuracy (absolute) the dynamic model may lose against the
            static PETL model at the iso-accuracy budget, which is chosen on validation.
        speed_images: Test images timed for the wall-clock ratios (accuracy always uses all).
        speed_repeats: Timed repeats (medians are reported).
        batch_size: Images per forward pass.
        risk_splits: Random calibration/test splits over which each risk-controlled point is
            re-certified, to count how often its realised risk exceeds its level.
    """

    iso_tolerance: float = 0.005
    speed_images: int = 256
    speed_repeats: int = 5
    batch_size: int = 256
    risk_splits: int = 100
