"""The ``ablate`` stage: Dyn-Adapter's training strategies one at a time, on held-out images.

A study is a list of variants, each trained from scratch with the same recipe but for what it
changes. The ``sparsity`` study: which halves of bidirectional sparsity are on (none / forward
/ backward / both, at ``train.sparsity``'s rates) and whether the exits' loss weights follow
the schedule or stay constant. The ``last-exit`` study: what keeps the last exit as accurate as
the static PETL model, which it trains beside the joint recipe it started from and the
candidates (``train.exit_gradient``, ``train.distill``, ``train.loss_weights``,
``model.exits.heads``). Every exit of every variant is scored on a large held-out split
(thousands of images, not validation's 200): the test split to report, or the selection split
(training images that train, val and calibration leave) to choose a default reading neither
test nor the calibration images that certify the chosen model. Each variant is compared with
the study's first on the same images and the same training seed: a paired interval and
McNemar's test per exit (and, in the last-exit study, each last exit with the static model's).
With several seeds each difference is also averaged over them, image by image, with a
bootstrap interval over the images; and it counts as resolved under every seed only when each
seed resolves it with the same sign.

A rerun continues: finished trainings are not repeated (``train`` resumes), and an exit's
correctness on a split is kept beside its model, keyed by the weights' hash.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import ABLATION_SPLITS, MANIFEST_FILE, ablation_files
from ..data.prepared import POOL_SPLITS, PreparedData
from ..errors import ConfigError
from ..evaluation.stats import accuracy_interval, averaged_paired_difference, paired_difference
from ..files import atomic_path, sha256_file, write_json
from ..inference.config import InferenceConfig
from ..models.config import ModelConfig
from ..params import Params
from ..reporting.tables import ablation_table
from ..training.config import TrainConfig
from ..training.trainer import train
from .train import static_petl

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Variant:
    """One training of a study.

    Attributes:
        name: As the tables show it.
        slug: Its run directory, ``runs/seed-<seed>/<slug>``.
        train: ``train.*`` values it changes, by dotted key (``sparsity.mode``).
        static: The static PETL model (the last exit alone) instead of ``params.model``.
        heads: A named exit-head setting (``model.exits.heads``) instead of the model's.
    """

    name: str
    slug: str
    train: dict[str, Any] = field(default_factory=dict)
    static: bool = False
    heads: str | None = None

    def changes(self) -> dict[str, Any]:
        """What it changes, as the tables show it."""
        return {**self.train, **({"model.exits.heads": self.heads} if self.heads else {})}


# The last exit's final loss weight before the last-exit study chose 3.
_WEIGHT_1 = {"loss_weights.final_floor": 1.0}

# The first variant of a study is the reference every other one is compared with.
STUDIES: dict[str, tuple[Variant, ...]] = {
    # Which halves of bidirectional sparsity help, and does the loss-weight schedule.
    "sparsity": (
        Variant("none", "0-none-schedule", {"sparsity.mode": "none"}),
        Variant("forward", "1-forward-schedule", {"sparsity.mode": "forward"}),
        Variant("backward", "2-backward-schedule", {"sparsity.mode": "backward"}),
        Variant("both", "3-both-schedule", {"sparsity.mode": "both"}),
        Variant(
            "none, constant λ",
            "4-none-constant",
            {"sparsity.mode": "none", "loss_weights.shape": "constant"},
        ),
        Variant(
            "both, constant λ",
            "5-both-constant",
            {"sparsity.mode": "both", "loss_weights.shape": "constant"},
        ),
    ),
    # Which recipe keeps the last exit as accurate as the static PETL model: the joint
    # training the study started from against the static model and the candidates: no
    # early-exit gradient in the shared blocks (alone, and with the early exits distilled from
    # the last), a third of it, a schedule that ends on the last exit (the winner, now the
    # default), that schedule with compact heads, and no early-exit gradient at constant
    # weights. Every variant pins the last exit's final weight, so a rerun compares the same
    # recipes whatever the default.
    "last-exit": (
        Variant("joint", "joint", _WEIGHT_1),
        Variant("static", "static", _WEIGHT_1, static=True),
        Variant("exit gradient 0", "exit-gradient-0", {**_WEIGHT_1, "exit_gradient": 0.0}),
        Variant(
            "exit gradient 0, distill",
            "exit-gradient-0-distill",
            {**_WEIGHT_1, "exit_gradient": 0.0, "distill.weight": 1.0},
        ),
        Variant("exit gradient 0.3", "exit-gradient-0.3", {**_WEIGHT_1, "exit_gradient": 0.3}),
        # A loss-weight schedule that ends on the last exit: its weight falls to 3 (not 1)
        # while the early exits' rise to 1, so the blocks are shaped mostly for it throughout.
        Variant("last-exit weight 3", "last-weight-3", {"loss_weights.final_floor": 3.0}),
        # The default with one narrow block per early-exit head: less capacity in the heads,
        # so more of each early exit's fit is asked of the PETL modules it shares with the last.
        Variant(
            "last-exit weight 3, compact heads",
            "last-weight-3-compact",
            {"loss_weights.final_floor": 3.0},
            heads="compact",
        ),
        # Exit gradient 0 with every weight held at 1: the PETL modules then train exactly as
        # the static model's (up to the shallow stages' gradient masks). Under the schedule the
        # last exit's weight falls 3.7 -> 1, and AdamW, which divides each step by the gradient
        # history, shrinks the late steps of the modules only the last exit reaches.
        Variant(
            "constant λ, exit gradient 0",
            "constant-exit-gradient-0",
            {**_WEIGHT_1, "loss_weights.shape": "constant", "exit_gradient": 0.0},
        ),
    ),
}


def scores_file(split: str) -> str:
    """Per exit and image of ``split``: right or wrong."""
    return f"{split}_correct.npz"


def variant_model(model: ModelConfig, variant: Variant) -> ModelConfig:
    """``model`` as the variant trains it."""
    if variant.static:
        return static_petl(model)
    if variant.heads:
        return dataclasses.replace(model, exits=model.exits.with_heads(variant.heads))
    return model


def variant_config(train: TrainConfig, variant: Variant, seed: int) -> TrainConfig:
    """``train`` with the variant's changes, its seed, and no test evaluation."""
    cfg = dataclasses.replace(train, evaluate_test=False, seed=seed)
    for key, value in variant.train.items():
        cfg = _replaced(cfg, key.split("."), value)
    return cfg


def _replaced(obj: Any, path: list[str], value: Any) -> Any:
    head, *rest = path
    return dataclasses.replace(
        obj, **{head: _replaced(getattr(obj, head), rest, value) if rest else value}
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


def study_variants(study: str, only: Sequence[str] | None = None) -> tuple[Variant, ...]:
    """The study's variants in its order; with ``only`` (slugs), just those."""
    if study not in STUDIES:
        raise ConfigError(f"ablate: study must be one of {', '.join(STUDIES)}, got {study!r}")
    variants = STUDIES[study]
    if not only:
        return variants
    slugs = [v.slug for v in variants]
    unknown = [s for s in only if s not in slugs]
    if unknown:
        raise ConfigError(
            f"ablate: no variant {', '.join(unknown)} in the {study} study; "
            f"its variants are {', '.join(slugs)}"
        )
    return tuple(v for v in variants if v.slug in only)


def run(
    params: Params,
    data_dir: str | Path,
    out_dir: str | Path,
    seeds: Sequence[int] | None = None,
    split: str = "test",
    study: str = "sparsity",
    only: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Train every variant of ``study`` (or those whose slugs ``only`` names) from ``params.model`` and ``params.train`` under each
    training seed (default: ``train.seed``), score it on ``split``, compare it with the
    reference (and, where the study trains it, its last exit with the static model); write
    the table and report of ``artifacts.ablation_files``."""
    variants = study_variants(study)
    chosen = study_variants(study, only)
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
    table_file, report_file = ablation_files(split, study)
    runs = out / ("runs" if study == "sparsity" else f"runs-{study}")
    recipe = params.train
    seeds = list(seeds) if seeds else [recipe.seed]
    rows: list[dict[str, Any]] = []
    scores: dict[tuple[int, str], np.ndarray] = {}  # (seed, variant) -> [exits, images]
    for seed in seeds:
        # The named variants train; the others join the table where an earlier run finished
        # them (resuming a finished run only reloads it), so the table compares all that ran.
        todo = [v for v in variants if v in chosen or _finished(runs / f"seed-{seed}" / v.slug)]
        for i, variant in enumerate(todo):
            cfg = variant_config(recipe, variant, seed)
            logger.info("%s study, seed %d, %d/%d: %s", study, seed, i + 1, len(todo), variant.name)
            model = variant_model(params.model, variant)
            result = train(model, cfg, data_dir, runs / f"seed-{seed}" / variant.slug)
            correct = exit_correctness(result.model_dir, data, cfg, split, params.inference)
            scores[seed, variant.name] = correct
            rows.append(
                {
                    "variant": variant.name,
                    "seed": seed,
                    "changes": variant.changes(),
                    "static": variant.static,
                    "val_accuracy": result.val_accuracy,
                    "accuracy": [float(c.mean()) for c in correct],
                    "interval": [accuracy_interval(c) for c in correct],
                    "mean": float(correct.mean()),
                }
            )
    # Written once, when every row is in: a run stopped part-way leaves the last complete
    # table as it was (its finished trainings and scores are kept and reload on the rerun).
    checked = compared(rows, scores, variants)
    table = {
        "study": study,
        "epochs": recipe.epochs,
        "seeds": seeds,
        "split": split,
        "images": int(correct.shape[1]),
        "reference": variants[0].name,
        "static": static_name(variants),
        "rows": checked,
        "summary": summary(checked, scores, variants),
    }
    write_json(out / table_file, table)
    with atomic_path(out / report_file) as tmp:
        tmp.write_text(ablation_table(table, recipe))
    return table


def _finished(run_dir: Path) -> bool:
    """Whether a training run wrote its final model (``train`` writes the manifest last)."""
    return (run_dir / MANIFEST_FILE).is_file()


def static_name(variants: Sequence[Variant]) -> str | None:
    """The study's static-model variant, if it trains one."""
    return next((v.name for v in variants if v.static), None)


def compared(
    rows: list[dict[str, Any]],
    scores: dict[tuple[int, str], np.ndarray],
    variants: Sequence[Variant],
) -> list[dict[str, Any]]:
    """``rows`` with their paired differences on the same images and seed: per exit to the
    reference (``vs_reference``; None for the reference and the static model), and the last
    exit's to the static model's (``last_vs_static``, where the study trains one)."""
    reference = variants[0].name
    static = static_name(variants)
    out = []
    for r in rows:
        mine, seed = scores[r["seed"], r["variant"]], r["seed"]
        ref = scores.get((seed, reference))
        row = dict(r)
        row["vs_reference"] = (
            None
            if r["variant"] == reference or r["static"] or ref is None
            else [paired_difference(c, f) for c, f in zip(mine, ref, strict=True)]
        )
        if static is not None and not r["static"]:
            base = scores.get((seed, static))
            row["last_vs_static"] = None if base is None else paired_difference(mine[-1], base[-1])
        out.append(row)
    return out


def summary(
    checked: list[dict[str, Any]],
    scores: dict[tuple[int, str], np.ndarray],
    variants: Sequence[Variant],
) -> list[dict[str, Any]]:
    """Per variant of ``checked`` (rows with their comparisons, see :func:`compared`):
    accuracy per exit averaged over the seeds run; per exit (and over
    all exits) its difference from the reference averaged over those seeds, with its
    interval; per exit whether the difference is resolved the same way under every seed;
    and, where the study trains the static model, the last exit's difference to it."""
    reference = variants[0].name
    static = static_name(variants)
    out = []
    for variant in variants:
        name = variant.name
        runs = [r for r in checked if r["variant"] == name]
        if not runs:
            continue
        exits = len(runs[0]["accuracy"])
        entry: dict[str, Any] = {
            "variant": name,
            "seeds": [r["seed"] for r in runs],
            "accuracy": [float(np.mean([r["accuracy"][k] for r in runs])) for k in range(exits)],
            "mean": float(np.mean([r["mean"] for r in runs])),
        }
        paired = [r for r in runs if r["vs_reference"] is not None]
        if paired:
            pairs = [
                [(scores[r["seed"], name][k], scores[r["seed"], reference][k]) for r in paired]
                for k in range(exits)
            ]
            entry["averaged"] = [averaged_paired_difference(p) for p in pairs]
            # Every exit of every seed, averaged per image: the variant's mean over exits.
            entry["mean_difference"] = averaged_paired_difference(sum(pairs, []))
            entry["resolved"] = [
                _verdict([r["vs_reference"][k] for r in paired]) for k in range(exits)
            ]
        with_static = [r for r in runs if r.get("last_vs_static") is not None]
        if static is not None and with_static:
            entry["last_vs_static"] = averaged_paired_difference(
                [(scores[r["seed"], name][-1], scores[r["seed"], static][-1]) for r in with_static]
            )
            entry["last_vs_static_resolved"] = _verdict([r["last_vs_static"] for r in with_static])
        out.append(entry)
    return out


def _verdict(diffs: list[dict[str, Any]]) -> str:
    """``better`` / ``worse`` when resolved with that sign under every seed, else ``n.s.``."""
    if not diffs:
        return "n.s."
    if all(d["resolved"] and d["difference"] > 0 for d in diffs):
        return "better"
    if all(d["resolved"] and d["difference"] < 0 for d in diffs):
        return "worse"
    return "n.s."


def report(table: dict[str, Any], out_dir: Path) -> tuple[Path, str]:
    """The Markdown report the command shows, and what it is."""
    return out_dir / ablation_files(table["split"], table["study"])[1], "ablation table"


def describe(table: dict[str, Any], out_dir: Path) -> str:
    """The command's result line: what was compared, and where the table lies."""
    return (
        f"{table['study']} study: {len(table['rows'])} training(s) scored on "
        f"{table['images']} {table['split']} images -> "
        f"{out_dir / ablation_files(table['split'], table['study'])[0]}"
    )
