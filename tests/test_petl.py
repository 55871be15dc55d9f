"""PETL modules behave like peft's: identity at init, only they train, merge is exact."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from conftest import PETL_METHODS, randomize_trainable, tiny_config, tiny_model

from dyn_adapter.models import create_backbone, create_dyn_adapter
from dyn_adapter.models.petl import LoraLinear, ParallelAdapter, RepAdapterLinear, petl_layers


@pytest.mark.parametrize("petl", PETL_METHODS)
def test_identity_at_init(petl, images):
    model = tiny_model(petl)
    plain = create_backbone(tiny_config(petl).backbone).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            model.backbone.forward_features(images), plain.forward_features(images), rtol=0, atol=0
        )


@pytest.mark.parametrize(
    ("petl", "layer_type", "per_block"),
    [("adapter", ParallelAdapter, 1), ("lora", LoraLinear, 1), ("repadapter", RepAdapterLinear, 2)],
)
def test_injection_wraps_the_target_layers(petl, layer_type, per_block):
    model = tiny_model(petl)
    layers = petl_layers(model)
    assert len(layers) == per_block * len(model.backbone.blocks)
    assert all(type(m) is layer_type for m in layers)
    # The wrapped layer is kept as base_layer, frozen.
    assert all(not any(p.requires_grad for p in m.base_layer.parameters()) for m in layers)


def _loss(model, images):
    target = torch.arange(images.shape[0]) % model.num_classes
    return sum(F.cross_entropy(logits, target) for logits in model.forward_exits(images))


@pytest.mark.parametrize("petl", PETL_METHODS)
def test_step_changes_only_petl_and_heads(petl, images):
    model = tiny_model(petl).train()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("heads.") or ".base_layer." not in n for n in trainable)
    before = {n: t.clone() for n, t in model.state_dict().items()}
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    _loss(model, images).backward()
    opt.step()
    after = model.state_dict()
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed, "an optimizer step must change something"
    assert changed <= trainable
    for n in before.keys() - trainable:
        assert torch.equal(before[n], after[n]), f"frozen tensor {n} changed"


@pytest.mark.parametrize("petl", PETL_METHODS)
def test_every_trainable_parameter_gets_a_gradient(petl, images):
    model = tiny_model(petl).train()
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    # At step 0 the zero-initialised up-projections block the gradient of the down-projections:
    # take one step, then every trainable tensor must receive a non-zero gradient.
    _loss(model, images).backward()
    opt.step()
    opt.zero_grad()
    _loss(model, images).backward()
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{n} got no gradient"
        else:
            assert p.grad is None, f"frozen {n} got a gradient"


def _scaled(petl: str, scale: float):
    cfg = tiny_config(petl)
    torch.manual_seed(0)
    model = create_dyn_adapter(replace(cfg, petl=replace(cfg.petl, scale=scale))).eval()
    randomize_trainable(model)
    return model


@pytest.mark.parametrize("scale", [1.0, 2.5])
@pytest.mark.parametrize("petl", ["lora", "repadapter"])
def test_merged_equals_unmerged(petl, scale, images):
    model = _scaled(petl, scale)
    with torch.no_grad():
        unmerged = model.forward_exits(images)
        flops_unmerged = model.exit_info[-1].gflops_cumulative
        assert model.merge() == len(petl_layers(model))
        merged = model.forward_exits(images)
        # Merged, the blocks cost exactly the plain backbone's FLOPs.
        plain = tiny_model("none")
        assert model.exit_info[-1].gflops_cumulative == pytest.approx(
            plain.exit_info[-1].gflops_cumulative
        )
        assert model.exit_info[-1].gflops_cumulative < flops_unmerged
        model.unmerge()
        restored = model.forward_exits(images)
    for a, b, c in zip(unmerged, merged, restored, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-5)
        torch.testing.assert_close(c, a, rtol=0, atol=1e-5)
    assert not torch.allclose(unmerged[-1], tiny_model("none").forward_exits(images)[-1], atol=1e-3)
    if scale != 1.0:  # the scale reaches the update path, so merging had to fold it in
        with torch.no_grad():
            unscaled = _scaled(petl, 1.0).forward_exits(images)[-1]
        assert not torch.allclose(unmerged[-1], unscaled, atol=1e-3)


@pytest.mark.parametrize("petl", PETL_METHODS)
def test_training_moves_every_petl_tensor(petl, images):
    """Two steps (the zero-initialised up-projection moves first, then what feeds it): every
    tensor of every PETL layer has left its initial value."""
    model = tiny_model(petl).train()
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        _loss(model, images).backward()
        opt.step()
    petl_tensors = [n for n in before if not n.startswith("heads.") and ".base_layer." not in n]
    assert petl_tensors
    params = dict(model.named_parameters())
    for n in petl_tensors:
        assert not torch.equal(before[n], params[n]), f"{n} did not move"


def test_adapter_cannot_merge():
    with pytest.raises(ValueError, match="only LoRA and RepAdapter"):
        tiny_model("adapter").merge()


def test_lora_touches_only_its_targets(images):
    model = tiny_model("lora")
    randomize_trainable(model)
    layer = petl_layers(model)[0]
    dim = layer.base_layer.in_features
    x = torch.randn(3, dim)
    with torch.no_grad():
        delta = layer(x) - layer.base_layer(x)
    q, k, v = delta.split(dim, dim=-1)
    assert q.abs().max() > 0 and v.abs().max() > 0
    assert k.abs().max() == 0
