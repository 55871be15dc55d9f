"""Risk control's certified points, run on the test split: does each certificate hold there,
and how often would it fail over random calibration/test splits?"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from ..artifacts import RiskPoints
from ..data.prepared import PreparedData
from ..inference import Engine, dynamic_predictions
from ..policies import risk
from ..policies.thresholds import ExitScores
from .config import EvaluateConfig
from .speed import time_ratios
from .stats import accuracy_interval

logger = logging.getLogger(__name__)


def certified_points_on_test(
    engine: Engine,
    points: RiskPoints,
    scores: ExitScores,
    images: np.ndarray,
    labels: np.ndarray,
    timed_images: torch.Tensor,
    data: PreparedData,
    cfg: EvaluateConfig,
) -> dict[str, Any]:
    """Each certified point on the test split (real early exit: the realised risk, GFLOPs and
    time), and how often its certificate fails over random calibration/test splits of the
    calibration and test images pooled (cached scores: no network)."""
    if not points.points:
        return {"skipped": points.data.get("skipped"), "points": []}
    calibration = ExitScores.load(points.scores_path)
    pooled = calibration.concat(scores)
    last = scores.prediction[-1]
    rows = []
    for p in points.points:
        pred, exits = dynamic_predictions(
            engine, images, labels, data.data_config, p["thresholds"], cfg.batch_size
        )
        lost = pred != last if p["risk"] == "disagreement" else (pred != labels) & (last == labels)
        measured = float(scores.gflops[exits].mean())
        timing = time_ratios(engine, timed_images, p["thresholds"], repeats=cfg.speed_repeats)
        repeated = risk.violation_frequency(
            pooled,
            p["epsilon"],
            p["delta"],
            p["risk"],
            calibration_size=p["calibration_images"],
            splits=cfg.risk_splits,
            window_images=p.get("window_images"),
        )
        rows.append(
            {
                **{k: p[k] for k in ("risk", "epsilon", "delta", "threshold", "thresholds")},
                "window_images": p.get("window_images"),
                "calibration_risk": p["empirical_risk"],
                "risk_bound": p["risk_bound"],
                "test_risk": float(lost.mean()),
                "test_risk_interval": accuracy_interval(lost),
                "holds": bool(lost.mean() <= p["epsilon"]),
                "accuracy": float((pred == labels).mean()),
                "accuracy_interval": accuracy_interval(pred == labels),
                "gflops": measured,
                "gflops_ratio": measured / scores.full_gflops,
                "time_ratio_b64": timing["time_ratio_b64"],
                "time_ratio_b1": timing["time_ratio_b1"],
                "exit_fractions": (
                    np.bincount(exits, minlength=scores.num_exits) / len(labels)
                ).tolist(),
                "repeated_splits": repeated,
            }
        )
        logger.info(
            "risk control %s <= %g: test risk %.4f at %.3f of the GFLOPs; violated in %.0f%% "
            "of %d splits",
            p["risk"],
            p["epsilon"],
            rows[-1]["test_risk"],
            rows[-1]["gflops_ratio"],
            100 * repeated["violation_frequency"],
            repeated["splits"],
        )
    return {
        "calibration_images": points.data["calibration_images"],
        "split": points.data["split"],
        "assumption": points.data["assumption"],
        "points": rows,
    }
