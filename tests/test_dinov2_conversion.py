"""The packaged DINOv2 ViT-S/14 converts into timm weights that compute what ONNX Runtime does."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dyn_adapter.models import (
    BackboneConfig,
    ModelConfig,
    create_backbone,
    create_dyn_adapter,
    dinov2_onnx,
)

pytestmark = pytest.mark.slow

POS_OUTPUT = "/backbone/embeddings/Concat_6_output_0"  # class + interpolated patch positions


@pytest.fixture(scope="module")
def onnx_session():
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    graph = onnx.load(str(dinov2_onnx.packaged_onnx_path()))
    for name in (dinov2_onnx.FEATURES_OUTPUT, POS_OUTPUT):
        graph.graph.output.append(
            onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        )
    return ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])


def test_features_match_onnx_runtime(onnx_session):
    # The ONNX graph takes 224 px; timm builds the same model at 224 px from our weights.
    model = create_backbone(BackboneConfig(img_size=224)).eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    features, pos = onnx_session.run(
        [dinov2_onnx.FEATURES_OUTPUT, POS_OUTPUT], {"input_image": x.numpy()}
    )

    # Our 37x37 position grid, resampled the way the ONNX graph does (bicubic, no antialias),
    # gives the graph's position embedding: the grid itself was converted correctly.
    from safetensors.torch import load_file

    grid = load_file(str(dinov2_onnx.packaged_weights()))["pos_embed"]
    patch = grid[:, 1:].reshape(1, 37, 37, -1).permute(0, 3, 1, 2)
    patch = F.interpolate(patch, size=(16, 16), mode="bicubic", align_corners=False)
    resampled = torch.cat([grid[:, :1], patch.permute(0, 2, 3, 1).reshape(1, 256, -1)], dim=1)
    torch.testing.assert_close(resampled, torch.from_numpy(pos), rtol=0, atol=1e-5)

    # With that position embedding (timm resamples with antialias), every other weight gives
    # ONNX Runtime's features.
    with torch.no_grad():
        model.pos_embed.copy_(torch.from_numpy(pos))
        ours = model.forward_features(x)
    assert (ours - torch.from_numpy(features)).abs().max().item() <= 1e-4


def test_packaged_weights_are_cached_with_their_hash():
    path = dinov2_onnx.packaged_weights()
    from dyn_adapter.files import sha256_file

    assert path.with_suffix(".sha256").read_text().strip() == sha256_file(path)
    assert dinov2_onnx.packaged_weights() == path  # second call: served from the cache


def test_packaged_backbone_hash_is_recorded(tmp_path):
    import json

    from dyn_adapter.models import save_trainable

    model = create_dyn_adapter(ModelConfig(backbone=BackboneConfig(img_size=112)))
    save_trainable(model, tmp_path)
    meta = json.loads((tmp_path / "model_config.json").read_text())
    assert len(meta["backbone_sha256"]) == 64
    assert meta["model"]["backbone"]["weights"] == "packaged"
    assert [e.block for e in model.exit_info] == [3, 6, 9, 12]
