"""Wall-clock of dynamic against full inference: medians over repeats, warm-up excluded."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ..inference import Engine


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_ratios(
    engine: Engine,
    images: torch.Tensor,
    thresholds: Sequence[float],
    *,
    b1_samples: int = 64,
    repeats: int = 5,
    warmup: int = 1,
) -> dict[str, float]:
    """Seconds of early-exit inference and of the static full forward (all blocks, the last
    head only), both run by ``engine``, over ``images`` in batches of 64 and one by one (the
    first ``b1_samples``), and their ratios.

    Full and dynamic passes alternate and each ratio is the median of the per-repeat ratios,
    so a slow stretch of a shared machine slows both sides of a pair alike. Seconds are
    medians over the repeats; warm-up passes are not timed.
    """
    device = images.device

    def runner(batches: list[torch.Tensor], dynamic: bool) -> Callable[[], None]:
        def go() -> None:
            for x in batches:
                engine.dynamic(x, thresholds) if dynamic else engine.static(x)
            if device.type == "cuda":
                torch.cuda.synchronize()

        return go

    out: dict[str, float] = {}
    for name, batches in (
        ("b64", list(images.split(64))),
        ("b1", list(images[:b1_samples].split(1))),
    ):
        full, dynamic = runner(batches, False), runner(batches, True)
        for _ in range(warmup):
            full()
            dynamic()
        pairs = [(_seconds(full), _seconds(dynamic)) for _ in range(repeats)]
        out[f"seconds_full_{name}"] = statistics.median(f for f, _ in pairs)
        out[f"seconds_dynamic_{name}"] = statistics.median(d for _, d in pairs)
        out[f"time_ratio_{name}"] = statistics.median(d / f for f, d in pairs)
    return out


def cpu_name() -> str:
    """The processor's model name (``AMD EPYC ...``); the architecture where it is not known."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict[str, object]:
    """Where a timing was taken: CPU, threads, GPU and torch version."""
    return {
        "cpu": cpu_name(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__,
    }
