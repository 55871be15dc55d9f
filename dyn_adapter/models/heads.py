"""Balanced exit heads: capacity that decreases with depth.

Shallow features need more help to reach class semantics, so early exits get residual MLP
stacks and late exits little more than a classifier. The backbone stays frozen; the heads do
the abstraction (the "disentangled" part of Dyn-Adapter).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn

PoolType = Literal["token", "avg", "token_avg"]


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


class ExitHead(nn.Module):
    """One exit: pool tokens, ``depth`` residual MLP blocks of width ``hidden``, LayerNorm, Linear.

    Args:
        embed_dim: Token width of the backbone.
        num_classes: Classifier outputs.
        depth: Number of residual MLP blocks (0: a LayerNorm + Linear probe).
        hidden: Hidden width of each MLP block.
        pool: ``token`` (CLS), ``avg`` (mean of patch tokens) or ``token_avg`` (both, concatenated).
        num_prefix_tokens: Class/register tokens to leave out of the average.
        drop: Dropout on the pooled features (forward half of bidirectional sparsity).
    """

    def __init__(
        self,
        embed_dim: int,
        num_classes: int,
        depth: int = 0,
        hidden: int = 0,
        pool: PoolType = "token",
        num_prefix_tokens: int = 1,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        assert depth >= 0 and (depth == 0 or hidden > 0), "an MLP head needs hidden > 0"
        self.pool = pool
        self.num_prefix_tokens = num_prefix_tokens
        dim = 2 * embed_dim if pool == "token_avg" else embed_dim
        self.drop = nn.Dropout(drop)
        self.blocks = nn.Sequential(*[ResidualMlp(dim, hidden) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = pool_tokens(tokens, self.pool, self.num_prefix_tokens)
        x = self.blocks(self.drop(x))
        return self.fc(self.norm(x))
