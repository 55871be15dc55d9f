"""The pipeline's stages as one table: what each reads, where it writes, how it is called.

One row per stage (``dyn_adapter.stages.<name>``, whose ``run(params, ...)`` the CLI, DVC and
KFP all call). From the rows come the ``dyn-adapter <stage>`` sub-commands
(:func:`dyn_adapter.cli.add_stage_parser`), :data:`STAGE_SECTIONS` (the params.yaml
keys a stage reads: its MLflow params and its ``dvc.yaml`` params) and, through
:mod:`dyn_adapter.dvc_stages`, ``dvc.yaml``. Adding a stage is one module under ``stages/``
(``run``, ``describe``), one row here (naming its KFP components), its component module
(``components/<stage>.py``) and its place in the DAGs. Nothing here imports a stage, so
``--help`` stays light and editing a row re-runs no ``dvc.yaml`` stage but ``track`` (which
logs each stage's params with :func:`stage_params`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .artifacts import ABLATION_SPLITS, ABLATION_STUDIES
from .cli_options import TRACKING_HELP, int_list, str_list


@dataclass(frozen=True)
class Option:
    """One option of a stage's command.

    Attributes:
        flag: ``--model``.
        param: The keyword of the stage's ``run`` it fills (``model_dir``).
        help: Its ``--help`` line.
        default: Its value when not given (a stage output's usual path, for inputs).
        argparse: Other ``add_argument`` keywords (``type``, ``choices``, ``metavar``).
    """

    flag: str
    param: str
    help: str
    default: Any = None
    argparse: Mapping[str, Any] = field(default_factory=dict)

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class Variant:
    """A stage run another way, chosen by a flag (``train --static``), reading its own keys."""

    name: str
    flag: str
    help: str
    sections: tuple[str, ...]


@dataclass(frozen=True)
class Stage:
    """One stage.

    Attributes:
        name: The sub-command, the module under ``dyn_adapter.stages`` and the MLflow stage.
        sections: The params.yaml keys (dotted) its ``run`` reads.
        help: Its line in ``dyn-adapter --help`` (empty: no sub-command; another stage or the
            pipeline calls it).
        description: Its ``--help`` text.
        out: Its default output directory.
        inputs: The stage outputs it reads, as options (``--model``); ``dvc.yaml`` passes
            each the path of the stage that writes it.
        options: Its other options.
        variants: Other ways to run it (its ``run`` gets ``variant``; default ``default``).
        default: The variant when no variant flag is given.
        components: Its KFP components (functions under ``components/``; none: it does not
            run in the pipelines, or, as ``track``, the components do its work as they run).
    """

    name: str
    sections: tuple[str, ...]
    help: str = ""
    description: str = ""
    out: str = ""
    inputs: tuple[Option, ...] = ()
    options: tuple[Option, ...] = ()
    variants: tuple[Variant, ...] = ()
    default: str = ""
    components: tuple[str, ...] = ()

    @property
    def module(self) -> str:
        return f"dyn_adapter.stages.{self.name}"


def _data() -> Option:
    return Option("--data", "data_dir", "prepared data (default: %(default)s)", "outputs/prepared")


def _model(default: str, param: str = "model_dir") -> Option:
    return Option("--model", param, "model directory (default: %(default)s)", default)


def _output(flag: str, param: str, default: str | None, help: str) -> Option:
    return Option(flag, param, help, default, {} if default else {"metavar": "DIR"})


TUNED = "outputs/sparsify/model"
SEARCH = _output("--search", "search_dir", "outputs/search", "search output (default: %(default)s)")
TRACKING = Option("--tracking-uri", "tracking_uri", TRACKING_HELP)

# Sparsity candidates start from a trained model with their own epochs, lr, warm-up and
# sparsity (sparsify.*); of train.* they read the rest of the recipe.
SPARSIFY_TRAIN_KEYS = tuple(
    f"train.{k}"
    for k in (
        "batch_size",
        "head_lr_scale",
        "min_lr",
        "weight_decay",
        "label_smoothing",
        "augment",
        "loss_weights",
        "exit_gradient",
        "distill",
        "amp",
        "device",
        "eval_batch_size",
        "seed",
    )
)

STAGES: tuple[Stage, ...] = (
    Stage(
        "prepare",
        ("data", "model.backbone.name", "model.backbone.img_size"),
        help="prepare train/val/test splits from the configured source",
        description="Read the data source in params.yaml (data.*) into class-balanced, "
        "seeded splits with checksums and the backbone's preprocessing config.",
        out="outputs/prepared",
        components=("prepare_data",),
    ),
    Stage(
        "train",
        ("model", "train"),
        help="multi-exit training with adaptive loss weights",
        description="Train the PETL modules and exit heads (params: model.*, train.*). "
        "Started again on the same --out, it resumes from the last epoch checkpoint.",
        out="outputs/train",
        inputs=(_data(),),
        options=(
            Option(
                "--init-from",
                "init_from",
                "start from a saved model's PETL and head weights",
                argparse={"metavar": "MODEL_DIR"},
            ),
        ),
        variants=(
            Variant(
                "probe",
                "--probe",
                "train the frozen-probe baseline instead: no PETL, a linear head per exit",
                # no PETL, a linear probe after each exit block
                ("model.backbone", "model.exits.blocks", "model.exits.pool", "train"),
            ),
            Variant(
                "static",
                "--static",
                "train the static PETL baseline instead: the same PETL method, only the final exit",
                # one exit: a LayerNorm + Linear head on pooled tokens
                ("model.backbone", "model.petl", "model.exits.pool", "train"),
            ),
        ),
        default="dyn",
        components=("train_model",),
    ),
    Stage(
        "sparsify",
        ("model", *SPARSIFY_TRAIN_KEYS, "sparsify"),
        help="tune bidirectional sparsity by short fine-tuning runs",
        description="Fine-tune the trained model once per sparsity candidate "
        "(params: sparsify.*), keep the best on validation.",
        out="outputs/sparsify",
        inputs=(_data(), _model("outputs/train/model", "init_model")),
        components=("sparsity_grid", "sparsify_candidate", "sparsify_select"),
    ),
    Stage(
        "search",
        ("search", "train.eval_batch_size", "train.device", "inference"),
        help="per-exit thresholds for FLOPs budgets (Optuna on cached logits)",
        description="Cache the validation logits of every exit once, then search thresholds "
        "that maximise accuracy within each budget (params: search.*); also the geometric "
        "baseline and the oracle.",
        out="outputs/search",
        inputs=(_data(), _model(TUNED)),
        components=("search_thresholds",),
    ),
    Stage(
        "calibrate",
        ("calibrate", "train.device", "inference"),
        help="risk-controlled exit thresholds, certified on unlabeled calibration images",
        description="Run the model once over the calibration split (data.calibration_size "
        "images of the training pool that train and val leave; labels unused for the "
        "disagreement risk) and certify, for each calibrate.epsilons, the lowest shared exit "
        "threshold whose risk is at most epsilon with probability >= 1 - calibrate.delta "
        "(Learn then Test). Started again on the same --out, it resumes from the saved score "
        "chunks. Writes risk_points.json and risk.md.",
        out="outputs/calibrate",
        inputs=(_data(), _model(TUNED)),
        components=("calibrate_thresholds",),
    ),
    Stage(
        "evaluate",
        ("evaluate", "train.device", "inference"),
        help="real dynamic inference on the test split for every searched budget, with baselines",
        description="Evaluate the searched thresholds with real early exit on the test split: "
        "accuracy, measured GFLOPs, exit fractions, wall-clock; baselines; plots; model card "
        "(params: evaluate.*).",
        out="outputs/evaluate",
        inputs=(
            _data(),
            _model(TUNED),
            SEARCH,
            _output(
                "--static",
                "static_dir",
                None,
                "`train --static` output: the static PETL accuracy to keep",
            ),
            _output("--probe-model", "probe_model_dir", None, "frozen-probe model"),
            _output("--probe-search", "probe_search_dir", None, "its search output"),
            _output(
                "--calibrate",
                "risk_dir",
                None,
                "`calibrate` output: its risk-controlled points are run on test and "
                "re-certified over evaluate.risk_splits random splits",
            ),
        ),
        components=("evaluate_model",),
    ),
    Stage(
        "ablate",
        ("model", "train", "inference"),
        help="studies of the training recipe (sparsity halves, loss weights; what keeps the "
        "last exit as good as the static model), scored on held-out images",
        description="Train one model per variant of a study (--study) and each training "
        "seed; score every exit on a held-out split (--split) and compare each variant with "
        "the first on the same images (paired interval, McNemar; over several seeds, the "
        "difference averaged image by image with its interval). The sparsity study: none / "
        "forward / backward / both, scheduled vs constant loss weights. The last-exit study: "
        "the joint recipe it started from (train.loss_weights.final_floor 1), the static PETL "
        "model, and candidates (train.exit_gradient 0, alone and with train.distill, and 0.3; "
        "final_floor 3, the winner and now the default, alone and with model.exits.heads "
        "compact), each last exit compared with the static model's. A rerun continues where "
        "it stopped.",
        out="outputs/ablation",
        inputs=(_data(),),
        options=(
            Option(
                "--study",
                "study",
                "which variants to train: sparsity (ablation*.json) or last-exit "
                "(last-exit*.json) (default: %(default)s)",
                "sparsity",
                {"choices": ABLATION_STUDIES},
            ),
            Option(
                "--seeds",
                "seeds",
                "comma-separated training seeds (default: train.seed)",
                argparse={"type": int_list},
            ),
            Option(
                "--variants",
                "only",
                "comma-separated run-directory names of the variants to train (e.g. "
                "joint,static; default: the whole study); the table also takes in the variants "
                "an earlier run finished for these seeds",
                argparse={"type": str_list},
            ),
            Option(
                "--split",
                "split",
                "the images every exit is scored on: test, to report (ablation.md), or "
                "selection (data.selection_size: training images that train, val and "
                "calibration leave), to choose a default reading neither test nor calibration "
                "(ablation-selection.md); the same trainings serve both (default: test)",
                "test",
                {"choices": ABLATION_SPLITS},
            ),
        ),
    ),
    Stage(
        "register",
        ("register", "inference"),
        help="log the searched model as an MLflow pyfunc, register it, gate the champion alias",
        description="Log model, thresholds and preprocessing as an MLflow pyfunc model, "
        "register a version (alias candidate) and move the champion alias only if the gate "
        "passes (params: register.*). Writes registration.json.",
        out="outputs/register",
        inputs=(
            _data(),
            _model(TUNED),
            SEARCH,
            _output(
                "--evaluate",
                "evaluate_dir",
                "outputs/evaluate",
                "evaluate output (default: %(default)s)",
            ),
            _output(
                "--calibrate",
                "risk_dir",
                None,
                "`calibrate` output: the model carries its risk-controlled points, and "
                "requests can ask for params.max_disagreement",
            ),
        ),  # fmt: skip
        options=(
            Option(
                "--pipeline-run-id",
                "pipeline_run_id",
                "identifies this pipeline run; registering it again reuses its version "
                "(default: a hash of the weights, thresholds and test metrics)",
            ),
            TRACKING,
        ),
        components=("register_model",),
    ),
    Stage(
        "track",
        ("register.experiment", "register.tracking_uri"),
        help="log the stages' outputs (dvc repro's layout) to MLflow as one pipeline run",
        description="Log every stage's output directory under outputs/ as one MLflow run with "
        "a nested run per stage (params, per-epoch metrics, plots, model card, manifests), as "
        "the KFP pipeline does while it runs; the last stage of dvc.yaml. Writes "
        "tracking.json.",
        out="outputs/tracking",
        options=(
            Option(
                "--pipeline-run-id",
                "pipeline_run_id",
                "the pipeline run to log into (default: the one outputs/register registered)",
            ),
            TRACKING,
        ),
    ),
    # The VTAB table reads only the tasks' evaluations; its pipeline calls it.
    Stage("vtab", (), components=("vtab_table",)),
)

BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}

# What each stage reads from params.yaml (dotted paths): its MLflow params, and the `params:` of
# its dvc.yaml stage. A variant is keyed `<stage>-<variant>` (train-static).
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {s.name: s.sections for s in STAGES} | {
    f"{s.name}-{v.name}": v.sections for s in STAGES for v in s.variants
}


def stage_params(params: Mapping[str, Any], stage: str) -> dict[str, Any]:
    """The parts of a parsed ``params.yaml`` that ``stage`` reads (all of it for unknown stages).

    Args:
        params: ``params.yaml`` as a nested dict.
        stage: A stage or variant (``train``, ``train-static``); another name is looked up by
            the part before its first ``-`` (``search-probe`` reads what ``search`` reads).
    """
    sections = STAGE_SECTIONS.get(stage, STAGE_SECTIONS.get(stage.split("-", 1)[0]))
    if sections is None:
        return dict(params)
    out: dict[str, Any] = {}
    for dotted in sections:
        *parents, last = dotted.split(".")
        src: Any = params
        dst = out
        for part in parents:
            src = src.get(part, {}) if isinstance(src, Mapping) else {}
            dst = dst.setdefault(part, {})
        if isinstance(src, Mapping) and last in src:
            dst[last] = src[last]
    return out
