"""Which exit head? Heads trained on frozen DINOv2 ViT-S/14 tokens after blocks 3 and 6.

The question behind the default heads: how much of an early exit's accuracy is the head's
doing? On the frozen backbone (no PETL, so the tokens are fixed and can be cached), each
head is trained on the same 800 Fashion-MNIST training images (4 augmented views, the
head warm-up's recipe) and scored on 2,000 other images of the training pool: the test split
is never touched. Writes ``bench/results/exit_heads.json``: per block and head, parameters,
GFLOPs (1 multiply-add = 1 FLOP) and held-out accuracy.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dyn_adapter.data.config import AugmentConfig
from dyn_adapter.data.prepare import balanced_quota
from dyn_adapter.data.sources import BadData, load_fashion_mnist
from dyn_adapter.data.transforms import resolve_data_config, to_model_input
from dyn_adapter.evaluation.speed import machine_info
from dyn_adapter.files import write_json
from dyn_adapter.models import BackboneConfig
from dyn_adapter.models.backbone import create_backbone
from dyn_adapter.models.flops import FLOPS_UNIT, count_gflops
from dyn_adapter.models.heads import ExitHead
from dyn_adapter.training.schedules import cosine_lr

RESULTS = Path(__file__).parent / "results" / "exit_heads.json"
HEADS = {  # name: (kind, depth, width)
    "linear probe": ("mlp", 0, 0),
    "mlp 2x24 (pooled)": ("mlp", 2, 24),
    "mlp 2x384 (pooled)": ("mlp", 2, 384),
    "conv 1x48": ("conv", 1, 48),
    "conv 1x96": ("conv", 1, 96),
    "conv 2x96": ("conv", 2, 96),
    "conv 2x192": ("conv", 2, 192),
}


def draw(labels: np.ndarray, sizes: list[int], seed: int) -> list[np.ndarray]:
    """Disjoint class-balanced index sets of the given sizes."""
    rng = np.random.default_rng(seed)
    classes = int(labels.max()) + 1
    pools = [rng.permutation(np.flatnonzero(labels == c)) for c in range(classes)]
    out, used = [], np.zeros(classes, dtype=int)
    for size in sizes:
        quota = balanced_quota(size, classes)
        out.append(
            np.concatenate([p[u : u + q] for p, u, q in zip(pools, used, quota, strict=True)])
        )
        used += quota
    return out


@torch.no_grad()
def tokens_after(
    backbone, images, data_config, blocks, views, augment, seed
) -> dict[int, torch.Tensor]:
    """float16 tokens after each of ``blocks`` for ``views`` passes over the images."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[int, list[torch.Tensor]] = {b: [] for b in blocks}
    for _ in range(views):
        for i in range(0, len(images), 64):
            x = to_model_input(torch.from_numpy(images[i : i + 64]), data_config, augment, gen)
            h = backbone.norm_pre(backbone.patch_drop(backbone._pos_embed(backbone.patch_embed(x))))
            for b, block in enumerate(backbone.blocks[: max(blocks)], start=1):
                h = block(h)
                if b in out:
                    out[b].append(h.half())
    return {b: torch.cat(t) for b, t in out.items()}


def train_head(head, x, y, epochs, lr, seed) -> None:
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = -(-len(y) // 64)
    total = epochs * steps_per_epoch
    step = 0
    head.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y)).split(64):
            for g in opt.param_groups:
                g["lr"] = cosine_lr(step, total, 0, lr, 1e-6)
            loss = F.cross_entropy(head(x[idx].float()), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
    head.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/fashion-mnist"))
    parser.add_argument("--blocks", default="3,6")
    parser.add_argument("--heads", default=",".join(HEADS), help="comma-separated names")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    blocks = [int(b) for b in args.blocks.split(",")]

    layout = load_fashion_mnist(args.data, BadData("error", str(args.data)))
    pool = layout.pools["train"]
    train_idx, dev_idx = draw(pool.labels, [800, 2000], args.seed)
    grey = pool.images
    train_x = np.repeat(grey[train_idx][..., None], 3, -1)
    dev_x = np.repeat(grey[dev_idx][..., None], 3, -1)
    train_y = torch.from_numpy(np.tile(pool.labels[train_idx], args.views))
    dev_y = torch.from_numpy(pool.labels[dev_idx])

    cfg = BackboneConfig(name="vit_small_patch14_dinov2", weights="packaged", img_size=112)
    backbone = create_backbone(cfg).eval()
    data_config = resolve_data_config(cfg)
    train_t = tokens_after(backbone, train_x, data_config, blocks, args.views, AugmentConfig(), 0)
    dev_t = tokens_after(backbone, dev_x, data_config, blocks, 1, None, 0)
    grid = tuple(backbone.patch_embed.grid_size)
    dim = backbone.embed_dim

    rows = []
    for b in blocks:
        for name in args.heads.split(","):
            kind, depth, width = HEADS[name]
            torch.manual_seed(args.seed)
            head = ExitHead(dim, 10, depth=depth, hidden=width, kind=kind, pool="avg", grid=grid)
            tic = time.perf_counter()
            train_head(head, train_t[b], train_y, args.epochs, args.lr, args.seed)
            with torch.no_grad():
                pred = torch.cat([head(t.float()).argmax(-1) for t in dev_t[b].split(256)])
                one = dev_t[b][:1].float()
                gflops, _ = count_gflops(lambda h=head, x=one: h(x))
            row = {
                "block": b,
                "head": name,
                "kind": kind,
                "depth": depth,
                "width": width,
                "params": sum(p.numel() for p in head.parameters()),
                "gflops": gflops,
                "dev_accuracy": float((pred == dev_y).float().mean()),
                "train_seconds": time.perf_counter() - tic,
            }
            rows.append(row)
            print(
                f"block {b:2d}  {name:20s} {row['params']:7d} params  dev {row['dev_accuracy']:.4f}"
            )
    write_json(
        args.out,
        {
            "backbone": cfg.name,
            "img_size": cfg.img_size,
            "train_images": 800,
            "views": args.views,
            "dev_images": len(dev_idx),
            "epochs": args.epochs,
            "lr": args.lr,
            "flops_unit": FLOPS_UNIT,
            "machine": machine_info(torch.device("cpu")),
            "results": rows,
        },
    )


if __name__ == "__main__":
    main()
