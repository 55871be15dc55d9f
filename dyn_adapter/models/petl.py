"""Parameter-efficient tuning modules, injected peft-style.

Each module wraps the layer it adapts (kept as ``base_layer``, frozen) instead of patching its
``forward``. The update path is zero-initialised, so an adapted model equals the frozen one at
step 0. Trainable parameters are found by module type (:class:`PetlLayer`), never by name.

* :class:`ParallelAdapter` (AdaptFormer-style Adapter): ``mlp(x) + s * up(act(down(x)))``.
* :class:`LoraLinear`: a rank-``r`` update on chosen slices of a fused ``qkv`` projection.
* :class:`RepAdapterLinear` (RepAdapter): a linear, group-wise adapter on the *input* of a linear
  layer, ``base(x + s * up(down(x)))``. Being linear, it folds exactly into the base weights.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from .config import PetlConfig


class PetlLayer(nn.Module):
    """Base of every PETL wrapper: holds the frozen ``base_layer`` and a dropout on the update path.

    The dropout rate is the forward half of bidirectional sparsity; it is set per depth by
    :func:`set_petl_dropout`.
    """

    base_layer: nn.Module

    def __init__(self, base_layer: nn.Module, drop: float = 0.0) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.drop = nn.Dropout(drop)

    def petl_parameters(self) -> Iterator[nn.Parameter]:
        """The trainable parameters of the update path (everything but ``base_layer``)."""
        for name, p in self.named_parameters():
            if not name.startswith("base_layer."):
                yield p


class ParallelAdapter(PetlLayer):
    """Bottleneck adapter running parallel to a block's MLP (AdaptFormer).

    Args:
        base_layer: The block's MLP.
        dim: Embedding width.
        bottleneck: Width of the down-projection.
        scale: Scale of the adapter branch.
        act: Non-linearity between the projections.
        drop: Dropout on the adapter's input.
    """

    def __init__(
        self,
        base_layer: nn.Module,
        dim: int,
        bottleneck: int = 8,
        scale: float = 1.0,
        act: Literal["gelu", "relu"] = "gelu",
        drop: float = 0.0,
    ) -> None:
        super().__init__(base_layer, drop)
        self.down = nn.Linear(dim, bottleneck)
        self.act = nn.GELU() if act == "gelu" else nn.ReLU()
        self.up = nn.Linear(bottleneck, dim)
        self.scale = scale
        nn.init.kaiming_uniform_(self.down.weight, a=5**0.5)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x) + self.scale * self.up(self.act(self.down(self.drop(x))))


class MergeableLayer(PetlLayer):
    """A PETL layer around an ``nn.Linear`` whose update can be folded into the linear weights."""

    base_layer: nn.Linear

    def __init__(self, base_layer: nn.Linear, drop: float = 0.0) -> None:
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(
                f"{type(self).__name__} wraps an nn.Linear, got {type(base_layer).__name__}"
            )
        super().__init__(base_layer, drop)
        self.merged = False

    def delta_weight_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (weight, bias) to add to ``base_layer`` so it computes the adapted function."""
        raise NotImplementedError

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into ``base_layer`` (inference: exactly the backbone's cost)."""
        if self.merged:
            return
        dw, db = self.delta_weight_bias()
        if self.base_layer.bias is None:
            self.base_layer.bias = nn.Parameter(torch.zeros_like(db), requires_grad=False)
        self.base_layer.weight.add_(dw)
        self.base_layer.bias.add_(db)
        # The delta may depend on the base weights (RepAdapter): keep it to undo the merge.
        self._merged_delta = (dw, db)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Undo :meth:`merge` (to float rounding)."""
        if not self.merged:
            return
        dw, db = self._merged_delta
        self.base_layer.weight.sub_(dw)
        assert self.base_layer.bias is not None
        self.base_layer.bias.sub_(db)
        del self._merged_delta
        self.merged = False


class LoraLinear(MergeableLayer):
    """LoRA on a fused qkv projection: ``W x + s * B A x`` on the chosen q/k/v output slices.

    Args:
        base_layer: The attention's fused ``qkv`` linear (output width ``3 * dim``).
        rank: LoRA rank ``r``.
        scale: ``alpha / r``.
        targets: Which of q, k, v get an update.
        drop: Dropout on the LoRA input.
    """

    def __init__(
        self,
        base_layer: nn.Linear,
        rank: int = 8,
        scale: float = 1.0,
        targets: Sequence[str] = ("q", "v"),
        drop: float = 0.0,
    ) -> None:
        super().__init__(base_layer, drop)
        dim = base_layer.in_features
        assert base_layer.out_features == 3 * dim, "LoRA expects a fused qkv projection"
        self.targets = tuple(targets)
        self.scale = scale
        self.lora_A = nn.ParameterDict()
        self.lora_B = nn.ParameterDict()
        for t in self.targets:
            a = torch.empty(rank, dim)
            nn.init.kaiming_uniform_(a, a=5**0.5)
            self.lora_A[t] = nn.Parameter(a)
            self.lora_B[t] = nn.Parameter(torch.zeros(dim, rank))

    def _delta_rows(self) -> list[torch.Tensor]:
        dim = self.base_layer.in_features
        zero = self.base_layer.weight.new_zeros(dim, dim)
        return [
            (self.lora_B[t] @ self.lora_A[t]) * self.scale if t in self.targets else zero
            for t in ("q", "k", "v")
        ]

    def delta_weight_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        dw = torch.cat(self._delta_rows(), dim=0)
        return dw, dw.new_zeros(dw.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        if self.merged:
            return out
        h = self.drop(x)
        updates = [
            F.linear(F.linear(h, self.lora_A[t]), self.lora_B[t]) * self.scale
            if t in self.targets
            else None
            for t in ("q", "k", "v")
        ]
        dim = self.base_layer.in_features
        parts = out.split(dim, dim=-1)
        return torch.cat(
            [p if u is None else p + u for p, u in zip(parts, updates, strict=True)], dim=-1
        )


class RepAdapterLinear(MergeableLayer):
    """RepAdapter on the input of a linear layer: ``base(x + s * up(down(x)))``.

    ``down`` is dense, ``up`` is group-wise (block-diagonal), and there is no non-linearity,
    so ``merge`` rewrites ``W`` as ``W (I + s U D)`` and ``b`` as ``b + s W (U b_d + b_u)``.

    Args:
        base_layer: The linear layer to adapt (attention ``qkv`` or MLP ``fc1``).
        bottleneck: Width of the down-projection; must be divisible by ``groups``.
        scale: Scale of the adapter branch.
        groups: Group count of the up-projection.
        drop: Dropout on the adapter's input (training only; inference is linear).
    """

    def __init__(
        self,
        base_layer: nn.Linear,
        bottleneck: int = 8,
        scale: float = 1.0,
        groups: int = 2,
        drop: float = 0.0,
    ) -> None:
        super().__init__(base_layer, drop)
        dim = base_layer.in_features
        if bottleneck % groups or dim % groups:
            raise ConfigError(
                f"petl.groups={groups} must divide both the bottleneck ({bottleneck}) and the width ({dim})"
            )
        self.scale = scale
        self.groups = groups
        self.down = nn.Linear(dim, bottleneck)
        # Group-wise up-projection: groups x (dim/groups, bottleneck/groups) blocks.
        self.up_weight = nn.Parameter(torch.zeros(groups, dim // groups, bottleneck // groups))
        self.up_bias = nn.Parameter(torch.zeros(dim))
        nn.init.xavier_uniform_(self.down.weight)
        nn.init.zeros_(self.down.bias)

    def _up_dense(self) -> torch.Tensor:
        return torch.block_diag(*self.up_weight.unbind(0))

    def adapter(self, x: torch.Tensor) -> torch.Tensor:
        h = self.down(x)
        g = self.groups
        h = h.unflatten(-1, (g, -1))  # [..., g, bottleneck/g]
        u = torch.einsum("...gi,goi->...go", h, self.up_weight).flatten(-2) + self.up_bias
        return u

    def delta_weight_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.base_layer.weight
        m = self._up_dense() @ self.down.weight  # [dim, dim]
        c = self._up_dense() @ self.down.bias + self.up_bias
        return self.scale * (w @ m), self.scale * (w @ c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base_layer(x)
        return self.base_layer(x + self.scale * self.adapter(self.drop(x)))


def inject_petl(blocks: Sequence[Any], cfg: PetlConfig) -> None:
    """Wrap the target layers of each timm ViT ``Block`` with the configured PETL module."""
    for block in blocks:
        attn, mlp = block.attn, block.mlp
        if cfg.method == "adapter":
            dim = attn.qkv.in_features
            block.mlp = ParallelAdapter(mlp, dim, cfg.dim, cfg.scale, cfg.act)
        elif cfg.method == "lora":
            attn.qkv = LoraLinear(attn.qkv, cfg.dim, cfg.scale, cfg.lora_targets)
        elif cfg.method == "repadapter":
            attn.qkv = RepAdapterLinear(attn.qkv, cfg.dim, cfg.scale, cfg.groups)
            mlp.fc1 = RepAdapterLinear(mlp.fc1, cfg.dim, cfg.scale, cfg.groups)


def petl_layers(module: nn.Module) -> list[PetlLayer]:
    return [m for m in module.modules() if isinstance(m, PetlLayer)]


def petl_parameters(module: nn.Module) -> Iterator[nn.Parameter]:
    for layer in petl_layers(module):
        yield from layer.petl_parameters()


def set_petl_dropout(module: nn.Module, rate: float) -> None:
    """Set the update-path dropout of every PETL layer under ``module``."""
    for layer in petl_layers(module):
        layer.drop.p = rate


def merge_petl(module: nn.Module) -> int:
    """Fold every mergeable PETL layer under ``module`` into its base weights; returns the count.

    Raises:
        ValueError: if a layer cannot be merged (the Adapter has a non-linearity).
    """
    layers = petl_layers(module)
    unmergeable = [type(m).__name__ for m in layers if not isinstance(m, MergeableLayer)]
    if unmergeable:
        raise ValueError(
            f"cannot merge {unmergeable[0]}: only LoRA and RepAdapter fold into the weights"
        )
    for m in layers:
        assert isinstance(m, MergeableLayer)
        m.merge()
    return len(layers)


def unmerge_petl(module: nn.Module) -> None:
    for m in petl_layers(module):
        if isinstance(m, MergeableLayer):
            m.unmerge()
