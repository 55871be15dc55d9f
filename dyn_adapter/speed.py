"""Wall-clock of dynamic against full inference: medians over repeats, warm-up excluded."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable, Sequence

import torch

from .models import DynAdapterViT


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_ratios(
    model: DynAdapterViT,
    images: torch.Tensor,
    thresholds: Sequence[float],
    *,
    b1_samples: int = 64,
    repeats: int = 5,
    warmup: int = 1,
) -> dict[str, float]:
    """Seconds of ``forward_dynamic`` and of the static full forward (``forward_final``) over
    ``images`` in batches of 64 and one by one (the first ``b1_samples``), and their ratios."""
    device = images.device

    def timed(batches: list[torch.Tensor], dynamic: bool) -> float:
        def go() -> None:
            with torch.no_grad():
                for x in batches:
                    model.forward_dynamic(x, thresholds) if dynamic else model.forward_final(x)
            if device.type == "cuda":
                torch.cuda.synchronize()

        return median_seconds(go, repeats, warmup)

    model.eval()
    b64 = list(images.split(64))
    b1 = list(images[:b1_samples].split(1))
    s = {
        "full_b64": timed(b64, False),
        "dynamic_b64": timed(b64, True),
        "full_b1": timed(b1, False),
        "dynamic_b1": timed(b1, True),
    }
    return {
        **{f"seconds_{k}": v for k, v in s.items()},
        "time_ratio_b64": s["dynamic_b64"] / s["full_b64"],
        "time_ratio_b1": s["dynamic_b1"] / s["full_b1"],
    }


def machine_info(device: torch.device) -> dict[str, object]:
    """Where a timing was taken: CPU, threads, GPU and torch version."""
    return {
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__,
    }
