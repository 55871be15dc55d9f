"""Settings of inference (params.yaml ``inference``): which engine runs the exits, at what precision."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from ..config import check_choices
from ..errors import ConfigError

EngineName = Literal["eager", "compiled"]
AmpMode = Literal["auto", "bf16", "off"]
ENGINES: tuple[str, ...] = get_args(EngineName)
AMP_MODES: tuple[str, ...] = get_args(AmpMode)


@dataclass
class InferenceConfig:
    """How evaluate, calibrate, search and the served model run a trained model.

    Attributes:
        engine: ``compiled`` (default): each exit segment (blocks, head, exit decision) runs
            as one unit with one host read per exit; on CUDA every segment is captured as a
            CUDA graph per bucketed batch size, the samples padded to the bucket. ``eager``:
            the model's own ``forward_dynamic``, op by op (the reference the engine is tested
            against).
        amp: ``auto`` (bf16 on CUDA, float32 on the CPU), ``bf16`` (bf16 autocast on either)
            or ``off`` (float32).
        max_batch: Largest batch one forward pass takes (larger inputs are split); on CUDA the
            largest bucket a graph is captured for.
    """

    engine: EngineName = "compiled"
    amp: AmpMode = "auto"
    max_batch: int = 256

    def __post_init__(self) -> None:
        check_choices(self, "inference")
        if self.max_batch < 1:
            raise ConfigError(f"inference.max_batch: must be >= 1, got {self.max_batch}")
