"""The ``calibrate`` stage: exit thresholds with a guarantee, certified on (unlabeled) images.

The model runs once over the calibration split with compaction off; every exit's confidence and
prediction are kept (not its logits), chunk by chunk, so memory grows with images x exits only
and an interrupted run resumes at its last saved chunk. On those cached scores Learn then Test
(:mod:`dyn_adapter.policies.risk`) picks, for each requested risk and level ``ε``, the lowest
shared threshold whose risk is at most ``ε`` with probability at least ``1 - δ``. Writes
``risk_points.json`` (the operating points), ``calibration_scores.npz`` (the cached scores, which
evaluate reuses for its repeated random splits), ``risk.md`` and the manifest.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from tqdm.auto import tqdm

from ..artifacts import (
    CALIBRATION_CHUNKS_DIR,
    CALIBRATION_SCORES,
    MANIFEST_FILE,
    RISK_MARKDOWN,
    RISK_POINTS_FILE,
)
from ..config import to_dict
from ..console import record_progress
from ..data.prepared import PreparedData
from ..errors import ConfigError
from ..files import atomic_path, sha256_file, write_json
from ..inference import Engine, exit_logits, load_engine, resolve_device
from ..manifest import stage_manifest
from ..models.checkpoint import WEIGHTS_FILE
from ..params import Params
from ..policies import risk
from ..policies.thresholds import ExitScores
from ..reporting.tables import risk_table

ASSUMPTION = (
    "the calibration images and the images served later are exchangeable (drawn from one "
    "distribution); the guarantee is over the draw of the calibration images"
)
METHOD = (
    "Learn then Test with fixed-sequence testing over one shared threshold (Angelopoulos et "
    "al. 2021), as in CALM (Schuster et al. 2022) and Jazbec et al. 2024; exact binomial "
    "p-values, Clopper-Pearson bounds"
)


@dataclass
class CalibrateResult:
    """What ``run`` wrote: ``risk_points.json``'s content."""

    out_dir: Path
    report: dict[str, Any]

    def metrics(self) -> dict[str, float]:
        out = {"calibration_images": float(self.report["calibration_images"])}
        for p in self.report["points"]:
            key = f"{p['risk']}_eps_{p['epsilon']:g}"
            out[f"gflops_ratio_{key}"] = p["gflops_ratio"]
            out[f"empirical_risk_{key}"] = p["empirical_risk"]
        return out


def run(
    params: Params, model_dir: str | Path, data_dir: str | Path, out_dir: str | Path
) -> CalibrateResult:
    """Certify exit thresholds for every (risk, ε) of ``params.calibrate`` on the calibration
    split, resuming from the score chunks a previous, interrupted run of the same model and
    images left in ``out_dir``.

    Raises:
        ConfigError: No such split, too few images for the smallest ``ε``, labels missing
            for ``accuracy_drop``, a model trained on other classes.
    """
    cfg = params.calibrate
    out = Path(out_dir)
    tic = time.perf_counter()
    engine = load_engine(model_dir, resolve_device(params.train.device), params.inference)
    model = engine.model
    gflops = [e.gflops_cumulative for e in model.exit_info]
    if not cfg.epsilons:
        report = _report(cfg, [], 0, gflops, time.perf_counter() - tic, "calibrate.epsilons is []")
        return _write(out, report, None, params, model_dir, data_dir)
    data = PreparedData(data_dir)
    data.check_model_classes(model.num_classes, model_dir)
    images, labels = data.split(cfg.split)
    if len(labels) < risk.needed_images(cfg):
        smallest = min(cfg.epsilons)
        raise ConfigError(
            f"{data_dir}: the {cfg.split} split has {len(labels)} images; certifying risk <= "
            f"{smallest:g} at delta {cfg.delta:g} needs at least {risk.needed_images(cfg)} (more the "
            "more the exits err): prepare more (data.calibration_size) or ask for a larger "
            "epsilon or delta"
        )
    key = _chunk_key(model_dir, data, cfg, engine.precision)
    scores = streamed_scores(
        engine,
        images,
        np.asarray(labels),
        data.data_config,
        cfg,
        out / CALIBRATION_CHUNKS_DIR / key,
    )
    points = [
        risk.calibrate(
            scores, epsilon, cfg.delta, cast(risk.Risk, name), cfg.window_images
        ).to_dict()
        for name in cfg.risks
        for epsilon in cfg.epsilons
    ]
    report = _report(cfg, points, len(labels), gflops, time.perf_counter() - tic)
    result = _write(out, report, scores, params, model_dir, data_dir)
    shutil.rmtree(out / CALIBRATION_CHUNKS_DIR, ignore_errors=True)  # complete: not needed
    return result


def streamed_scores(
    engine: Engine,
    images: np.ndarray,
    labels: np.ndarray,
    data_config: dict[str, Any],
    cfg: risk.CalibrateConfig,
    chunk_dir: Path,
) -> ExitScores:
    """Every exit's confidence and prediction over ``images``, ``cfg.chunk_images`` at a time;
    each chunk is saved to ``chunk_dir`` (atomically) and read back instead of recomputed."""
    chunk_dir.mkdir(parents=True, exist_ok=True)
    gflops = [e.gflops_cumulative for e in engine.model.exit_info]
    confidence, prediction = [], []
    n = len(labels)
    with tqdm(total=n, desc="calibration scores", unit="img", disable=None) as bar:
        for start in range(0, n, cfg.chunk_images):
            stop = min(start + cfg.chunk_images, n)
            path = chunk_dir / f"{start:09d}-{stop:09d}.npz"
            if path.is_file():
                with np.load(path) as saved:
                    conf, pred = saved["confidence"], saved["prediction"]
            else:
                logits = exit_logits(
                    engine,
                    np.asarray(images[start:stop]),
                    labels[start:stop],
                    data_config=data_config,
                    batch_size=cfg.batch_size,
                )
                chunk = ExitScores.from_logits(logits, labels[start:stop], gflops)
                conf, pred = chunk.confidence, chunk.prediction.astype(np.int32)
                with atomic_path(path) as tmp, open(tmp, "wb") as f:
                    np.savez(f, confidence=conf, prediction=pred)
            confidence.append(conf)
            prediction.append(pred)
            bar.update(stop - start)
            record_progress("calibrate", done=stop, total=n, unit="calibration images")
    return ExitScores(
        np.concatenate(confidence, axis=1),
        np.concatenate(prediction, axis=1),
        labels,
        np.asarray(gflops, dtype=np.float64),
    )


def _chunk_key(
    model_dir: str | Path, data: PreparedData, cfg: risk.CalibrateConfig, precision: str
) -> str:
    """Names the chunks of one model on one split: another model, other images, another
    chunking or another precision never reads them."""
    h = hashlib.sha256()
    h.update(sha256_file(Path(model_dir) / WEIGHTS_FILE).encode())
    h.update(str(data.manifest["splits"][cfg.split].get("sha256")).encode())
    h.update(f"{cfg.split}:{cfg.chunk_images}:{precision}".encode())
    return h.hexdigest()[:16]


def _report(
    cfg: risk.CalibrateConfig,
    points: list[dict[str, Any]],
    n: int,
    gflops: list[float],
    seconds: float,
    skipped: str | None = None,
) -> dict[str, Any]:
    return {
        "split": cfg.split,
        "calibration_images": n,
        "delta": cfg.delta,
        "window_images": cfg.window_images,
        "epsilons": list(cfg.epsilons),
        "risks": list(cfg.risks),
        "exit_gflops": gflops,
        "full_gflops": gflops[-1],
        "points": points,
        "method": METHOD,
        "assumption": ASSUMPTION,
        "seconds": seconds,
        "skipped": skipped,
    }


def _write(
    out: Path,
    report: dict[str, Any],
    scores: ExitScores | None,
    params: Params,
    model_dir: str | Path,
    data_dir: str | Path,
) -> CalibrateResult:
    out.mkdir(parents=True, exist_ok=True)
    if scores is not None:
        scores.save(out / CALIBRATION_SCORES)
    else:
        (out / CALIBRATION_SCORES).unlink(missing_ok=True)
    with atomic_path(out / RISK_MARKDOWN) as tmp:
        tmp.write_text(risk_table(report))
    write_json(out / RISK_POINTS_FILE, report)
    write_json(
        out / MANIFEST_FILE,
        stage_manifest(
            "calibrate",
            {"calibrate": to_dict(params.calibrate), "inference": to_dict(params.inference)},
            model=str(model_dir),
            data=str(data_dir),
        ),
    )
    return CalibrateResult(out, report)


def report(result: CalibrateResult, out_dir: Path) -> tuple[Path, str]:
    """The Markdown report the command shows, and what it is."""
    return out_dir / RISK_MARKDOWN, "risk-controlled thresholds"


def describe(result: CalibrateResult, out_dir: Path) -> str:
    """The command's result line: how many points were certified."""
    return f"{len(result.report['points'])} operating point(s) certified -> {out_dir}"
