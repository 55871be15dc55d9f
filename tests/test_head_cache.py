"""Exit heads: conv heads on the patch grid, head training on cached tokens, the frozen path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_model, tiny_params

from dyn_adapter.data.config import AugmentConfig
from dyn_adapter.data.prepared import PreparedData
from dyn_adapter.inference import EagerEngine, exit_logits
from dyn_adapter.models.dyn_vit import DynAdapterViT
from dyn_adapter.models.heads import ExitHead
from dyn_adapter.models.petl import petl_parameters
from dyn_adapter.stages import train
from dyn_adapter.training import trainer
from dyn_adapter.training.head_cache import (
    HeadWarmupConfig,
    backbone_is_frozen,
    cache_head_inputs,
    cached_logits,
    warm_up_heads,
)

params = tiny_params


def test_conv_head_mixes_neighbouring_patches():
    torch.manual_seed(0)
    head = ExitHead(16, 3, depth=1, hidden=8, kind="conv", grid=(2, 3)).eval()
    tokens = torch.randn(4, 1 + 6, 16)
    features = head.features(tokens)
    assert torch.equal(features, tokens[:, 1:])  # parameter-free: the CLS token dropped
    torch.testing.assert_close(head(tokens), head.classify(features))
    # The depthwise conv sees the layout: permuting the patches changes the prediction, which
    # a pooled (order-blind) head could never do.
    perm = torch.tensor([5, 1, 2, 3, 4, 0])
    with torch.no_grad():
        assert not torch.allclose(head.classify(features[:, perm]), head.classify(features))
    bad = ExitHead(16, 3, depth=1, hidden=8, kind="conv", grid=(2, 3))
    with pytest.raises(ValueError, match="patch grid"):
        bad(torch.randn(1, 1 + 5, 16))


def test_probe_heads_stay_pooled_linear():
    head = ExitHead(16, 3, depth=0, kind="conv", pool="avg")
    assert head.kind == "mlp" and len(head.blocks) == 0
    tokens = torch.randn(2, 5, 16)
    torch.testing.assert_close(head.features(tokens), tokens[:, 1:].mean(1))


def _inputs(prepared, split):
    data = PreparedData(prepared)
    images, labels = data.split(split)
    return data, images, np.asarray(labels)


def test_cache_holds_what_the_untrained_model_feeds_its_heads(prepared):
    model = tiny_model()  # PETL updates start at zero: the tokens are the frozen backbone's
    data, images, labels = _inputs(prepared, "val")
    cache = cache_head_inputs(
        model,
        images,
        labels,
        data_config=data.data_config,
        views=1,
        augment=None,
        generator=torch.Generator().manual_seed(0),
        batch_size=16,
        device=torch.device("cpu"),
    )
    assert len(cache) == len(labels) and cache.features[0].dtype == torch.float16
    engine = EagerEngine(model, torch.device("cpu"), None)
    expected = exit_logits(engine, images, labels, data_config=data.data_config, batch_size=16)
    for got, want in zip(cached_logits(model, cache, 32), expected, strict=True):
        torch.testing.assert_close(got, want, atol=2e-2, rtol=2e-2)  # float16 cache


def test_warm_up_trains_the_heads_and_nothing_else(prepared):
    model = tiny_model()
    data, images, labels = _inputs(prepared, "train")
    petl_before = [p.detach().clone() for p in petl_parameters(model.backbone)]
    heads_before = [p.detach().clone() for p in model.heads.parameters()]
    cache = cache_head_inputs(
        model,
        images,
        labels,
        data_config=data.data_config,
        views=2,
        augment=AugmentConfig(),
        generator=torch.Generator().manual_seed(0),
        batch_size=32,
        device=torch.device("cpu"),
    )
    assert len(cache) == 2 * len(labels)
    assert not torch.equal(cache.features[0][: len(labels)], cache.features[0][len(labels) :])
    history = warm_up_heads(
        model,
        cache,
        HeadWarmupConfig(epochs=5, lr=3e-3),
        lr=3e-3,
        min_lr=1e-6,
        weight_decay=1e-4,
        batch_size=32,
        seed=0,
        device=torch.device("cpu"),
    )
    assert len(history) == 5
    assert all(late < early for early, late in zip(history[0].loss, history[-1].loss, strict=True))
    assert all(
        torch.equal(a, b) for a, b in zip(petl_before, petl_parameters(model.backbone), strict=True)
    )
    assert all(
        not torch.equal(a, b) for a, b in zip(heads_before, model.heads.parameters(), strict=True)
    )


def test_frozen_backbone_trains_on_the_cache_alone(tmp_path, prepared, monkeypatch):
    """The frozen blocks run once per cached view, however many epochs the heads train."""
    calls = {"n": 0}
    embed = DynAdapterViT.embed

    def counting(self, x):
        calls["n"] += 1
        return embed(self, x)

    monkeypatch.setattr(DynAdapterViT, "embed", counting)
    counts = {}
    for epochs in (1, 3):
        p = params(tmp_path, "train.evaluate_test=false", f"train.epochs={epochs}")
        calls["n"] = 0
        train.run(p, "probe", prepared, tmp_path / f"probe{epochs}")
        counts[epochs] = calls["n"]
    assert counts[1] == counts[3] > 0
    log = json.loads((tmp_path / "probe3" / "train_log.json").read_text())["epochs"]
    assert len(log) == 3 and log[-1]["val_accuracy"][-1] > 0.5  # 4 classes: chance is 0.25
    # What the cache said about validation is what the saved model does on the images.
    monkeypatch.setattr(DynAdapterViT, "embed", embed)
    val = trainer.evaluate_split(tmp_path / "probe3" / "model", prepared, "val", p.train)
    n_val = len(PreparedData(prepared).split("val")[1])
    for cached, real in zip(log[-1]["val_accuracy"], val, strict=True):
        assert abs(cached - real) <= 1.0 / n_val + 1e-9  # float16 cache: at most one image


def test_backbone_is_frozen_only_without_petl():
    assert backbone_is_frozen(tiny_model("none"))
    assert not backbone_is_frozen(tiny_model("adapter"))
