"""The ``ablate`` stage: Dyn-Adapter's training strategies one at a time, on held-out images.

Each variant trains from scratch with the same recipe, changing one thing: which halves of
bidirectional sparsity are on (none / forward / backward / both, at ``train.sparsity``'s
rates) and whether the exits' loss weights follow the schedule or stay constant. Every exit
of every variant is scored on a large held-out split (thousands of images, not validation's
200): the test split to report, or the selection split (training images that train, val
and calibration leave) to choose a default reading neither test nor the calibration images
that certify the chosen model. Each variant is compared with the first (the configured
recipe without sparsity) on the same images and the same training seed: a paired interval
and McNemar's test per exit. With several seeds each difference is also averaged over them,
image by image, with a bootstrap interval over the images; and it counts as resolved under
every seed only when each seed resolves it with the same sign.

A rerun continues: finished trainings are not repeated (``train`` resumes), and an exit's
correctness on a split is kept beside its model, keyed by the weights' hash.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import ABLATION_SPLITS, ablation_files
from ..data.prepared import POOL_SPLITS, PreparedData
from ..errors import ConfigError
from ..evaluation.stats import accuracy_interval, averaged_paired_difference, paired_difference
from ..files import atomic_path, sha256_file, write_json
from ..inference.config import InferenceConfig
from ..params import Params
from ..training.config import SparsityMode, TrainConfig
from ..training.schedules import WeightShape
from ..training.trainer import train

logger = logging.getLogger(__name__)

# (name, sparsity mode, loss-weight shape or None for the configured schedule); the first is
# the reference every other variant is compared with.
VARIANTS: list[tuple[str, SparsityMode, WeightShape | None]] = [
    ("none", "none", None),
    ("forward", "forward", None),
    ("backward", "backward", None),
    ("both", "both", None),
    ("none, constant λ", "none", "constant"),
    ("both, constant λ", "both", "constant"),
]


def scores_file(split: str) -> str:
    """Per exit and image of ``split``: right or wrong."""
    return f"{split}_correct.npz"


def variant_config(
    train: TrainConfig, mode: SparsityMode, shape: WeightShape | None, seed: int
) -> TrainConfig:
    sparsity = dataclasses.replace(train.sparsity, mode=mode)
    weights = (
        train.loss_weights
        if shape is None
        else dataclasses.replace(train.loss_weights, shape=shape)
    )
    return dataclasses.replace(
        train, sparsity=sparsity, loss_weights=weights, evaluate_test=False, seed=seed
    )


def exit_correctness(
    model_dir: Path, data: PreparedData, cfg: TrainConfig, split: str, inference: InferenceConfig
) -> np.ndarray:
    """``[exits, images of split]``: whether each exit of the saved model is right, as served
    (merged where the PETL method merges, by the inference engine). Kept beside the model,
    keyed by its weights' hash and the precision it was scored at."""
    from ..inference import amp_dtype, exit_logits, load_engine, precision_name, resolve_device
    from ..models.checkpoint import WEIGHTS_FILE

    cache = model_dir.parent / scores_file(split)
    weights = sha256_file(model_dir / WEIGHTS_FILE)
    device = resolve_device(cfg.device)
    precision = precision_name(amp_dtype(device, inference.amp))
    if cache.is_file():
        with np.load(cache) as saved:
            same = str(saved["weights_sha256"]) == weights
            if same and str(saved.get("precision", "fp32")) == precision:
                return saved["correct"]
    engine = load_engine(model_dir, device, inference)
    images, labels = data.split(split)
    logits = exit_logits(
        engine, images, labels, data_config=data.data_config, batch_size=cfg.eval_batch_size
    )
    correct = np.stack([t.argmax(-1).numpy() == labels for t in logits])
    with atomic_path(cache) as tmp, open(tmp, "wb") as f:
        np.savez(f, correct=correct, weights_sha256=np.array(weights), precision=precision)
    return correct


def run(
    params: Params,
    data_dir: str | Path,
    out_dir: str | Path,
    seeds: Sequence[int] | None = None,
    split: str = "test",
) -> dict[str, Any]:
    """Train every variant of ``params.model`` and ``params.train`` under each training seed
    (default: ``train.seed``), score it on ``split``, compare it with the reference; write
    the table and report of ``artifacts.ablation_files``."""
    out = Path(out_dir)
    data = PreparedData(data_dir)
    if split not in ABLATION_SPLITS:
        raise ConfigError(
            f"ablate: split must be one of {', '.join(ABLATION_SPLITS)}, got {split!r}"
        )
    if split not in data.manifest.get("splits", {}):
        raise ConfigError(
            f"{data_dir}: no {split} split; the ablation is scored on thousands of held-out "
            "images (validation's are too few to tell the variants apart): prepare the data "
            f"with {POOL_SPLITS.get(split, 'data.test_size')} > 0"
        )
    table_file, report_file = ablation_files(split)
    recipe = params.train
    seeds = list(seeds) if seeds else [recipe.seed]
    rows: list[dict[str, Any]] = []
    scores: dict[tuple[int, str], np.ndarray] = {}  # (seed, variant) -> [exits, images]
    for seed in seeds:
        reference = None
        for i, (name, mode, shape) in enumerate(VARIANTS):
            cfg = variant_config(recipe, mode, shape, seed)
            logger.info("ablation seed %d, %d/%d: %s", seed, i + 1, len(VARIANTS), name)
            run_dir = out / "runs" / f"seed-{seed}" / f"{i}-{mode}-{shape or 'schedule'}"
            result = train(params.model, cfg, data_dir, run_dir)
            correct = exit_correctness(result.model_dir, data, cfg, split, params.inference)
            scores[seed, name] = correct
            reference = correct if reference is None else reference
            rows.append(
                {
                    "variant": name,
                    "seed": seed,
                    "sparsity": mode,
                    "loss_weights": shape or recipe.loss_weights.shape,
                    "val_accuracy": result.val_accuracy,
                    "accuracy": [float(c.mean()) for c in correct],
                    "interval": [accuracy_interval(c) for c in correct],
                    "mean": float(correct.mean()),
                    "vs_reference": None
                    if i == 0
                    else [paired_difference(c, r) for c, r in zip(correct, reference, strict=True)],
                }
            )
            table = {
                "epochs": recipe.epochs,
                "seeds": seeds,
                "split": split,
                "images": int(correct.shape[1]),
                "reference": VARIANTS[0][0],
                "rows": rows,
                "summary": summary(rows, scores),
            }
            write_json(out / table_file, table)
    with atomic_path(out / report_file) as tmp:
        tmp.write_text(markdown(table, recipe))
    return table


def summary(
    rows: list[dict[str, Any]], scores: dict[tuple[int, str], np.ndarray]
) -> list[dict[str, Any]]:
    """Per variant: accuracy per exit averaged over the seeds run; per exit (and over
    all exits) its difference from the reference averaged over those seeds, with its
    interval; and per exit whether the difference is resolved the same way under every seed."""
    reference = VARIANTS[0][0]
    out = []
    for name, *_ in VARIANTS:
        runs = [r for r in rows if r["variant"] == name]
        if not runs:
            continue
        exits = len(runs[0]["accuracy"])
        entry: dict[str, Any] = {
            "variant": name,
            "seeds": [r["seed"] for r in runs],
            "accuracy": [float(np.mean([r["accuracy"][k] for r in runs])) for k in range(exits)],
            "mean": float(np.mean([r["mean"] for r in runs])),
        }
        if runs[0]["vs_reference"] is not None:
            pairs = [
                [(scores[r["seed"], name][k], scores[r["seed"], reference][k]) for r in runs]
                for k in range(exits)
            ]
            entry["averaged"] = [averaged_paired_difference(p) for p in pairs]
            # Every exit of every seed, averaged per image: the variant's mean over exits.
            entry["mean_difference"] = averaged_paired_difference(sum(pairs, []))
            entry["resolved"] = [
                _verdict([r["vs_reference"][k] for r in runs]) for k in range(exits)
            ]
        out.append(entry)
    return out


def _verdict(diffs: list[dict[str, Any]]) -> str:
    """``better`` / ``worse`` when resolved with that sign under every seed, else ``n.s.``."""
    if all(d["resolved"] and d["difference"] > 0 for d in diffs):
        return "better"
    if all(d["resolved"] and d["difference"] < 0 for d in diffs):
        return "worse"
    return "n.s."


def markdown(table: dict[str, Any], train: TrainConfig) -> str:
    rows = table["rows"]
    n = len(rows[0]["accuracy"])
    lines = [
        f"Final-epoch {table['split']} accuracy, {table['images']} images ({train.epochs} epochs; "
        f"seeds {', '.join(map(str, table['seeds']))}; sparsity rates: forward "
        f"{train.sparsity.forward_rate:g}, backward keep {train.sparsity.backward_keep:g}). "
        f"Differences are to `{table['reference']}` with the same seed on the same images "
        "(paired bootstrap 95% interval; * resolved: the interval excludes 0 and McNemar p < 0.05).",
        "",
        "| variant | seed | loss weights | "
        + " | ".join(f"exit {k}" for k in range(n))
        + " | mean |",
        "|---" * (n + 4) + "|",
    ]
    for r in rows:
        cells = []
        for k in range(n):
            lo, hi = r["interval"][k]
            cell = f"{100 * r['accuracy'][k]:.2f} [{100 * lo:.1f}, {100 * hi:.1f}]"
            if r["vs_reference"] is not None:
                cell += f"; {_difference(r['vs_reference'][k])}"
            cells.append(cell)
        lines.append(
            f"| {r['variant']} | {r['seed']} | {r['loss_weights']} | {' | '.join(cells)} "
            f"| {100 * r['mean']:.2f} |"
        )
    if len(table["seeds"]) > 1:
        lines += [
            "",
            "Over the seeds: accuracy averaged over them and the difference to the reference "
            "averaged image by image over them (bootstrap 95% interval over the images; "
            "* the interval excludes 0; † resolved with the same sign under every seed).",
            "",
            "| variant | " + " | ".join(f"exit {k}" for k in range(n)) + " | mean over exits |",
            "|---" * (n + 2) + "|",
        ]
        for s in table["summary"]:
            cells = [f"{100 * a:.2f}" for a in s["accuracy"]] + [f"{100 * s['mean']:.2f}"]
            if "averaged" in s:
                verdicts = [*s["resolved"], None]
                for k, (d, v) in enumerate(
                    zip([*s["averaged"], s["mean_difference"]], verdicts, strict=True)
                ):
                    cells[k] += f"; {_difference(d)}{'†' if v in ('better', 'worse') else ''}"
            lines.append(f"| {s['variant']} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def _difference(d: dict[str, Any]) -> str:
    """``+d [low, high]``, in points, starred when resolved."""
    a, b = d["interval"]
    star = "*" if d["resolved"] else ""
    return f"{100 * d['difference']:+.2f} [{100 * a:+.2f}, {100 * b:+.2f}]{star}"
