"""Exits, dynamic inference, FLOPs, checkpoints and the errors users can hit."""

from __future__ import annotations

import itertools
import json

import pytest
import timm
import torch
from conftest import PETL_METHODS, TINY_VIT, randomize_trainable, tiny_config, tiny_model

from dyn_adapter.errors import ConfigError
from dyn_adapter.models import (
    BackboneConfig,
    DynAdapterViT,
    create_backbone,
    create_dyn_adapter,
    load_model,
    load_trainable,
    save_trainable,
)
from dyn_adapter.training.config import TrainConfig


@pytest.fixture
def model():
    m = tiny_model("adapter")
    randomize_trainable(m, std=0.5)  # spread the heads' confidences
    return m


def test_forward_exits_shapes(model, images):
    logits = model.forward_exits(images)
    assert [tuple(t.shape) for t in logits] == [(16, 5)] * 3
    assert model.exit_blocks == [2, 4, 6]


def _grads(model, x, y, exit_gradient, which=None):
    """Gradients of the trainable weights: of every exit's loss summed, or of exit ``which``."""
    model.zero_grad(set_to_none=True)
    logits = model.forward_exits(x, exit_gradient)
    picked = logits if which is None else [logits[which]]
    sum(torch.nn.functional.cross_entropy(t, y) for t in picked).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("share", [0.0, 0.5])
def test_exit_gradient_scales_what_early_exits_send_into_the_blocks(images, share):
    """Block (PETL) gradients: the last exit's plus ``share`` of the early exits'; head
    gradients: unchanged. At 0 the PETL modules learn exactly what the last exit asks."""
    model = tiny_model()
    randomize_trainable(model)
    model.train()
    y = torch.arange(len(images)) % model.num_classes
    joint, scaled = _grads(model, images, y, 1.0), _grads(model, images, y, share)
    last = _grads(model, images, y, 1.0, which=model.num_exits - 1)
    blocks = [n for n in joint if n.startswith("backbone.")]
    assert blocks and any(not torch.allclose(joint[n], last[n]) for n in blocks)
    for n in blocks:
        torch.testing.assert_close(scaled[n], last[n] + share * (joint[n] - last[n]))
    for n in joint:
        if n.startswith("heads."):
            torch.testing.assert_close(scaled[n], joint[n])


def test_exit_gradient_is_a_share():
    with pytest.raises(ConfigError, match=r"train.exit_gradient: must be in \[0, 1\]"):
        TrainConfig(exit_gradient=1.5)


def test_default_exits_every_third_block():
    cfg = tiny_config(blocks=None, head_depths=[2, 1, 0, 0], head_widths=[16, 8, 0, 0])
    assert create_dyn_adapter(cfg).exit_blocks == [3, 6]


def test_heads_are_balanced(model):
    sizes = model.head_param_counts()
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > sizes[-1]


def test_named_head_settings_fill_the_sizes_left_unset():
    compact = create_dyn_adapter(tiny_config(heads="compact", head_depths=[], head_widths=[]))
    # written for 4 exits; 3 exits keep the first two and the last (see ExitsConfig.resolve)
    assert (compact.head_depths, compact.head_widths) == ([1, 1, 0], [48, 40, 0])
    assert compact.config.exits.head_depths == [1, 1, 1, 0]  # a checkpoint records the sizes
    balanced = create_dyn_adapter(tiny_config(head_depths=[], head_widths=[]))
    assert (balanced.head_depths, balanced.head_widths) == ([2, 1, 0], [96, 96, 0])
    assert sum(compact.head_param_counts()) < sum(balanced.head_param_counts())
    # sizes given explicitly win over the setting's
    custom = create_dyn_adapter(tiny_config(heads="compact", head_widths=[8, 8, 0]))
    assert (custom.head_depths, custom.head_widths) == ([2, 1, 0], [8, 8, 0])
    assert compact.config.exits.head_setting() == "compact"
    assert custom.config.exits.head_setting() == "custom"


def test_unknown_head_setting_names_the_choices():
    with pytest.raises(
        ConfigError, match=r"exits.heads: 'tiny' is not one of \['balanced', 'compact'\]"
    ):
        tiny_config(heads="tiny")


def test_dynamic_threshold_zero_exits_first(model, images):
    out = model.forward_dynamic(images, [0.0, 0.0, 0.0])
    assert (out.exit_index == 0).all()
    torch.testing.assert_close(out.prediction, model.forward_exits(images)[0].argmax(-1))


def test_dynamic_threshold_above_one_exits_last(model, images):
    out = model.forward_dynamic(images, [1.01, 1.01, 1.01])
    assert (out.exit_index == model.num_exits - 1).all()
    torch.testing.assert_close(out.prediction, model.forward_exits(images)[-1].argmax(-1))


@pytest.mark.parametrize("seed", range(5))
def test_dynamic_matches_static_exits(model, images, seed):
    with torch.no_grad():
        probs = [t.softmax(-1) for t in model.forward_exits(images)]
    conf = torch.stack([p.max(-1).values for p in probs])  # [exits, B]
    # Thresholds between two neighbouring confidences, so every exit gets some samples and no
    # sample sits on a threshold (batch-size-dependent rounding could tip it either way).
    g = torch.Generator().manual_seed(seed)
    thr = []
    for k in range(3):
        c = conf[k].sort().values
        j = int(torch.randint(1, len(c), (1,), generator=g))
        thr.append(float(c[j - 1] + c[j]) / 2)
    out = model.forward_dynamic(images, thr)
    for i in range(len(images)):
        first = next(k for k in range(3) if k == 2 or conf[k, i] >= thr[k])
        assert out.exit_index[i] == first
        assert out.prediction[i] == probs[first][i].argmax()
        torch.testing.assert_close(out.confidence[i], conf[first, i], rtol=0, atol=1e-5)


def test_dynamic_uses_every_exit_for_median_thresholds(model, images):
    with torch.no_grad():
        conf = torch.stack([t.softmax(-1).max(-1).values for t in model.forward_exits(images)])
    out = model.forward_dynamic(images, [float(conf[0].median()), float(conf[1].median()), 0.0])
    assert set(out.exit_index.tolist()) == {0, 1, 2}
    assert (out.exit_index == 0).sum() >= len(images) // 2


def _median_thresholds(model, images):
    """Thresholds that send about half the batch out at each early exit."""
    with torch.no_grad():
        conf = torch.stack([t.softmax(-1).max(-1).values for t in model.forward_exits(images)])
    return [float(conf[0].median()), float(conf[1].median()), 0.0]


def test_compaction_runs_later_blocks_only_on_samples_still_in_flight(model, images):
    """Every block sees exactly the samples that have not exited before it: counted with hooks
    on the backbone's blocks, not read from the model's own bookkeeping."""
    thresholds = _median_thresholds(model, images)
    rows = [0] * len(model.backbone.blocks)

    def counter(i):
        def hook(module, args):
            rows[i] += args[0].shape[0]

        return hook

    hooks = [b.register_forward_pre_hook(counter(i)) for i, b in enumerate(model.backbone.blocks)]
    try:
        out = model.forward_dynamic(images, thresholds)
    finally:
        for h in hooks:
            h.remove()
    exits = out.exit_index.tolist()
    bounds = [0, *model.exit_blocks]
    expected = []
    for k in range(model.num_exits):  # stage k: blocks after exit k-1, up to exit k
        in_flight = sum(e >= k for e in exits)
        expected += [in_flight] * (bounds[k + 1] - bounds[k])
    assert rows == expected
    assert expected[-1] < len(images)  # samples left early, so the last blocks ran on fewer


def test_measured_dynamic_gflops_equal_a_count_of_what_ran(model, images):
    """The FLOPs ``forward_dynamic`` executes on a batch (torch's counter, whole batch) equal the
    sum over samples of the cumulative GFLOPs of the exit each took: the number ``evaluate``
    reports as measured GFLOPs."""
    from dyn_adapter.models.flops import count_gflops, unfused_attention

    thresholds = _median_thresholds(model, images)
    model.eval()
    with unfused_attention(model):
        counted, out = count_gflops(lambda: model.forward_dynamic(images, thresholds))
    cumulative = [e.gflops_cumulative for e in model.exit_info]
    taken = sum(cumulative[k] for k in out.exit_index.tolist())
    assert counted == pytest.approx(taken, rel=1e-9)
    assert counted < 0.9 * len(images) * cumulative[-1]


def test_forward_intermediates_stops_when_no_sample_is_kept(model, images):
    steps = []
    for step in model.forward_intermediates(images):
        steps.append(step.index)
        step.keep = torch.zeros(len(step.rows), dtype=torch.bool)
    assert steps == [0]


@pytest.mark.parametrize(
    ("thresholds", "match"),
    [
        ([0.5, 0.5], "one per exit"),
        ([0.5, float("nan"), 0.5], "thresholds\\[1\\]"),
        ([0.5, -0.1, 0.2], ">= 0"),
    ],
)
def test_dynamic_rejects_bad_thresholds(model, images, thresholds, match):
    with pytest.raises(ConfigError, match=match):
        model.forward_dynamic(images, thresholds)


def test_cumulative_flops_increase_and_match_analytic():
    model = tiny_model("none")
    info = model.exit_info
    flops = [e.gflops_cumulative for e in info]
    assert all(b > a for a, b in itertools.pairwise(flops))
    # Analytic multiply-adds of the tiny ViT: 16 patches + CLS, width 64, MLP ratio 4.
    n, d, p = 17, 64, 7
    block = n * d * 3 * d + n * d * d + 2 * n * d * 4 * d + 2 * n * n * d
    embed = 16 * 3 * p * p * d
    heads = sum(e.head_gflops for e in info)
    assert flops[-1] == pytest.approx((embed + 6 * block) / 1e9 + heads, rel=1e-9)
    assert info[0].gflops_cumulative == pytest.approx(
        (embed + 2 * block) / 1e9 + info[0].head_gflops
    )


@pytest.mark.parametrize("petl", PETL_METHODS)
def test_save_load_roundtrip(tmp_path, petl, images):
    model = tiny_model(petl)
    randomize_trainable(model)
    save_trainable(model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "adapter_model.safetensors",
        "model_config.json",
    ]
    meta = json.loads((tmp_path / "model_config.json").read_text())
    assert meta["backbone_sha256"] == model.backbone_sha256
    assert meta["model"]["petl"]["method"] == petl
    loaded = load_model(tmp_path).eval()
    with torch.no_grad():
        for a, b in zip(model.forward_exits(images), loaded.forward_exits(images), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_load_refuses_other_class_count(tmp_path):
    save_trainable(tiny_model(num_classes=5), tmp_path)
    with pytest.raises(ConfigError, match="5 classes"):
        load_trainable(tiny_model(num_classes=7), tmp_path)


def test_load_refuses_other_backbone(tmp_path):
    save_trainable(tiny_model(), tmp_path)
    other = tiny_model()
    other.backbone_sha256 = "0" * 64
    with pytest.raises(ConfigError, match="backbone hash"):
        load_trainable(other, tmp_path)


def test_exit_block_out_of_range():
    with pytest.raises(ConfigError, match="block 9 is out of range"):
        tiny_model(blocks=[3, 9])


def test_last_exit_must_be_final_block():
    with pytest.raises(ConfigError, match="last exit must be the final block"):
        tiny_model(blocks=[2, 4])


def test_not_a_vit_is_refused():
    with pytest.raises(ConfigError, match="not a timm VisionTransformer"):
        DynAdapterViT(timm.create_model("resnet10t", num_classes=0), num_classes=3)
    with pytest.raises(ConfigError, match="ViT"):
        create_backbone(BackboneConfig(name="resnet10t", weights="none"))


def test_weights_file_that_does_not_fit(tmp_path):
    from safetensors.torch import save_file

    wrong = timm.create_model(
        "vit_tiny_patch16_224",
        num_classes=0,
        img_size=28,
        patch_size=7,
        embed_dim=32,
        depth=2,
        num_heads=2,
    )
    path = tmp_path / "wrong.safetensors"
    save_file(wrong.state_dict(), str(path))
    cfg = BackboneConfig(
        name="vit_tiny_patch16_224", weights=str(path), img_size=28, model_kwargs=dict(TINY_VIT)
    )
    with pytest.raises(ConfigError, match="does not fit"):
        create_backbone(cfg)


def test_missing_weights_file():
    with pytest.raises(ConfigError, match="neither one of"):
        create_backbone(BackboneConfig(name="vit_tiny_patch16_224", weights="/nonexistent.pth"))


def test_forward_final_is_the_last_exit(model, images):
    with torch.no_grad():
        torch.testing.assert_close(model.forward_final(images), model.forward_exits(images)[-1])


def test_other_input_sizes_work(model):
    # Built for 28 px; dynamic_img_size resamples the position embedding for 42 px (6x6 patches).
    out = model.forward_dynamic(torch.randn(3, 3, 42, 42), [0.5, 0.5, 0.0])
    assert out.prediction.shape == (3,)
