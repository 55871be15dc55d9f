"""Balanced exit heads: capacity that decreases with depth.

Shallow features need more help to reach class semantics, so early exits get real heads and
late exits little more than a classifier. The backbone stays frozen; the heads do the
abstraction (the "disentangled" part of Dyn-Adapter). Two kinds of head:

- ``conv`` (default): the patch tokens, projected to a small width, go through ConvNeXt-style
  blocks on the patch grid (depthwise 3x3 mixing, then a residual MLP) and are averaged. Shallow
  ViT tokens are local descriptors; mixing neighbours before pooling is what turns them into
  shapes (as in LGViT's convolutional exit heads).
- ``mlp``: the tokens are pooled first, then residual MLP blocks refine the pooled vector.

A head of depth 0 is a LayerNorm + Linear probe on the pooled tokens.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .config import HeadType, PoolType


def pool_tokens(x: torch.Tensor, pool: PoolType, num_prefix_tokens: int) -> torch.Tensor:
    """Pool ``[B, N, D]`` tokens into ``[B, D]`` (or ``[B, 2D]`` for ``token_avg``)."""
    if pool == "token":
        return x[:, 0]
    avg = x[:, num_prefix_tokens:].mean(dim=1)
    if pool == "avg":
        return avg
    return torch.cat([x[:, 0], avg], dim=-1)


class ResidualMlp(nn.Module):
    """Pre-norm residual bottleneck MLP: ``x + fc2(gelu(fc1(norm(x))))``."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.drop(self.act(self.fc1(self.norm(x)))))


class ConvBlock(nn.Module):
    """ConvNeXt-style block on ``[B, H*W, C]`` patch tokens: depthwise 3x3 mixing, residual MLP."""

    def __init__(self, dim: int, grid: tuple[int, int], mlp_ratio: int = 2) -> None:
        super().__init__()
        self.grid = grid
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)
        self.mlp = ResidualMlp(dim, mlp_ratio * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        # The tokens seen as a channels-last image: a view, not a copy, and the depthwise
        # convolution runs on NHWC data (on a GPU the NCHW copy and kernel cost more than it).
        grid = x.reshape(b, *self._grid(n), c).permute(0, 3, 1, 2)
        mixed = self.dwconv(grid).permute(0, 2, 3, 1).reshape(b, n, c)
        return self.mlp(x + mixed)

    def _grid(self, n: int) -> tuple[int, int]:
        if n == self.grid[0] * self.grid[1]:
            return self.grid
        side = math.isqrt(n)  # another input size (timm's dynamic_img_size): square inputs only
        if side * side != n:
            raise ValueError(
                f"a conv exit head built for a {self.grid[0]}x{self.grid[1]} patch grid got {n} "
                "patch tokens: use square images or the input size the model was built for"
            )
        return side, side


class ExitHead(nn.Module):
    """One exit: ``classify(features(tokens))``.

    ``features`` is parameter-free (pooling, or dropping the prefix tokens), so what it returns
    for a frozen backbone can be cached and the head trained on the cache.

    Args:
        embed_dim: Token width of the backbone.
        num_classes: Classifier outputs.
        depth: Head blocks (0: a LayerNorm + Linear probe on the pooled tokens).
        hidden: ``conv``: the width the patch tokens are projected to; ``mlp``: the hidden
            width of each residual MLP block.
        kind: ``conv`` (blocks on the patch grid, then average) or ``mlp`` (pool, then blocks).
        pool: Pooling of ``mlp`` heads and probes: ``token`` (CLS), ``avg`` (mean of patch
            tokens) or ``token_avg`` (both, concatenated). ``conv`` heads average patch tokens.
        num_prefix_tokens: Class/register tokens to leave out of the patch tokens.
        grid: Patch grid ``(rows, cols)``; needed by ``conv`` heads.
        drop: Dropout on the head's input (forward half of bidirectional sparsity).
    """

    def __init__(
        self,
        embed_dim: int,
        num_classes: int,
        depth: int = 0,
        hidden: int = 0,
        kind: HeadType = "mlp",
        pool: PoolType = "token",
        num_prefix_tokens: int = 1,
        grid: tuple[int, int] | None = None,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        assert depth >= 0 and (depth == 0 or hidden > 0), "a head with blocks needs hidden > 0"
        self.kind: HeadType = kind if depth > 0 else "mlp"
        self.pool = pool
        self.num_prefix_tokens = num_prefix_tokens
        self.drop = nn.Dropout(drop)
        if self.kind == "conv":
            assert grid is not None, "a conv head needs the patch grid"
            dim = hidden
            self.proj: nn.Module = nn.Linear(embed_dim, dim)
            self.blocks = nn.Sequential(*[ConvBlock(dim, grid) for _ in range(depth)])
        else:
            dim = 2 * embed_dim if pool == "token_avg" else embed_dim
            self.proj = nn.Identity()
            self.blocks = nn.Sequential(*[ResidualMlp(dim, hidden) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_classes)

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        """The head's parameter-free input: patch tokens (``conv``) or pooled tokens."""
        if self.kind == "conv":
            return tokens[:, self.num_prefix_tokens :]
        return pool_tokens(tokens, self.pool, self.num_prefix_tokens)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.proj(self.drop(features)))
        if self.kind == "conv":
            x = x.mean(dim=1)
        return self.fc(self.norm(x))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(tokens))
