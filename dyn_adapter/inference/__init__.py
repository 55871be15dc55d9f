"""Inference: device and precision, the engines that run the exits, whole splits through them.

Search, calibrate, evaluate, ablate, the served model and the benchmarks run models through
here; ``training`` keeps only the fit. The names below load on first use, so that the config
(``inference.config``, read by ``params.py``) imports without torch.
"""

from __future__ import annotations

from ..lazy import lazy_getattr

_WHERE = {
    "AMP_MODES": "config",
    "ENGINES": "config",
    "CompiledEngine": "engines",
    "EagerEngine": "engines",
    "Engine": "engines",
    "InferenceConfig": "config",
    "amp_dtype": "precision",
    "autocast": "precision",
    "bucket_sizes": "engines",
    "cast_matmul_weights": "precision",
    "create_engine": "load",
    "dynamic_predictions": "splits",
    "exit_logits": "splits",
    "load_engine": "load",
    "precision_name": "precision",
    "resolve_device": "precision",
    "split_scores": "splits",
}

__all__ = sorted(_WHERE)


__getattr__ = lazy_getattr(__name__, _WHERE)
