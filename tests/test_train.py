"""Multi-exit training: schedules, sparsity, determinism, outputs, resumption, sparsity tuning."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import tiny_model, tiny_params
from safetensors.torch import load_file

from dyn_adapter.errors import ConfigError
from dyn_adapter.models.petl import petl_layers
from dyn_adapter.params import load_params
from dyn_adapter.stages import sparsify, train
from dyn_adapter.training import trainer
from dyn_adapter.training.config import DistillConfig
from dyn_adapter.training.loop import exit_losses
from dyn_adapter.training.schedules import LossWeightsConfig, cosine_lr, loss_weights
from dyn_adapter.training.sparsity import (
    GradientMasker,
    SparsityConfig,
    apply_forward_sparsity,
    stage_dropout_rates,
    stage_keep_ratios,
)

params = tiny_params


# -- schedules ----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["linear", "cosine"])
@pytest.mark.parametrize("floor", [1.0, 3.0])
def test_loss_weights_shift_priority_keeping_the_sum(shape, floor):
    cfg = LossWeightsConfig(shape=shape, early_start=0.1, final_floor=floor)
    series = [loss_weights(cfg, 4, e, 10) for e in range(10)]
    assert all(sum(w) == pytest.approx(3 + floor) for w in series)
    assert series[0][0] == pytest.approx(0.1) and series[-1][0] == pytest.approx(1.0)
    # The last exit starts with what the early exits have not yet got and ends on the floor.
    assert series[0][-1] == pytest.approx(floor + 2.7) and series[-1][-1] == pytest.approx(floor)
    early = [w[0] for w in series]
    assert early == sorted(early)


def test_constant_loss_weights():
    assert loss_weights(LossWeightsConfig(shape="constant"), 3, 4, 10) == [1.0, 1.0, 1.0]


def test_cosine_lr_warms_up_then_decays():
    lrs = [cosine_lr(s, 100, 10, 1e-3, 1e-6) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert lrs[10:] == sorted(lrs[10:], reverse=True) and lrs[-1] < 1e-5


# -- bidirectional sparsity ---------------------------------------------------------------


def test_sparsity_is_strongest_in_shallow_stages():
    cfg = SparsityConfig(mode="both", forward_rate=0.3, backward_keep=0.5)
    assert stage_dropout_rates(cfg, 4) == pytest.approx([0.3, 0.2, 0.1, 0.0])
    assert stage_keep_ratios(cfg, 4) == pytest.approx([0.5, 2 / 3, 5 / 6, 1.0])
    off = SparsityConfig(mode="none", forward_rate=0.3, backward_keep=0.5)
    assert stage_dropout_rates(off, 4) == [0.0] * 4 and stage_keep_ratios(off, 4) == [1.0] * 4


def test_forward_sparsity_sets_dropout_per_stage():
    model = tiny_model("adapter")
    apply_forward_sparsity(model, SparsityConfig(mode="forward", forward_rate=0.4))
    rates = [layer.drop.p for layer in petl_layers(model)]  # 6 blocks, exits after 2, 4, 6
    assert rates == pytest.approx([0.4, 0.4, 0.2, 0.2, 0.0, 0.0])
    assert [h.drop.p for h in model.heads] == pytest.approx([0.4, 0.2, 0.0])


def test_gradient_masks_keep_the_expected_update():
    model = tiny_model("adapter")
    masker = GradientMasker(model, SparsityConfig(mode="backward", backward_keep=0.5))
    first = model.heads[0].fc.weight
    last = model.heads[-1].fc.weight
    torch.manual_seed(0)
    total, zeros = torch.zeros_like(first), 0.0
    draws = 400
    for _ in range(draws):
        for p in model.trainable_parameters():
            p.grad = torch.ones_like(p)
        masker()
        total += first.grad
        zeros += float((first.grad == 0).float().mean())
        assert torch.equal(last.grad, torch.ones_like(last))  # keep = 1 at the last stage
    assert zeros / draws == pytest.approx(0.5, abs=0.02)  # half the entries dropped
    assert (total / draws).mean().item() == pytest.approx(1.0, abs=0.02)  # unbiased


# -- the train stage ----------------------------------------------------------------------


@pytest.mark.slow  # trains
def test_train_writes_outputs_and_learns(tmp_path, prepared):
    p = params(tmp_path, "train.epochs=4")
    result = trainer.train(p.model, p.train, prepared, tmp_path / "out")
    out = tmp_path / "out"
    assert (out / "model" / "adapter_model.safetensors").is_file()
    log = json.loads((out / "train_log.json").read_text())["epochs"]
    assert [e["epoch"] for e in log] == [1, 2, 3, 4]
    assert all(len(e["loss_weights"]) == 3 and len(e["val_accuracy"]) == 3 for e in log)
    assert log[0]["loss_weights"][0] < log[-1]["loss_weights"][0]  # the schedule moved
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] == result.test_accuracy and len(metrics["exits"]) == 3
    assert metrics["val_accuracy"] == log[-1]["val_accuracy"]  # final epoch, not the best
    assert max(result.test_accuracy) > 0.5  # 4 classes: chance is 0.25
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "train" and len(manifest["config_hash"]) == 64
    assert manifest["inputs"]["backbone_sha256"]


@pytest.mark.slow  # trains
def test_train_is_deterministic(tmp_path, prepared):
    p = params(tmp_path, "train.sparsity.mode=both", "train.evaluate_test=false")
    train.run(p, "dyn", prepared, tmp_path / "a")
    train.run(p, "dyn", prepared, tmp_path / "b")
    a = load_file(tmp_path / "a" / "model" / "adapter_model.safetensors")
    b = load_file(tmp_path / "b" / "model" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # trains
def test_rerun_on_a_finished_run_is_a_resume(tmp_path, prepared):
    p = params(tmp_path, "train.evaluate_test=false")
    first = train.run(p, "dyn", prepared, tmp_path / "out")
    again = train.run(p, "dyn", prepared, tmp_path / "out")
    assert again.val_accuracy == first.val_accuracy


@pytest.mark.slow  # trains
def test_changed_config_does_not_resume_silently(tmp_path, prepared):
    p = params(tmp_path, "train.evaluate_test=false")
    train.run(p, "dyn", prepared, tmp_path / "out")
    p2 = params(tmp_path, "train.evaluate_test=false", "train.lr=0.01")
    with pytest.raises(ConfigError, match="another config"):
        train.run(p2, "dyn", prepared, tmp_path / "out")


def test_frozen_probe_trains_linear_heads_only(tmp_path, prepared):
    p = params(tmp_path, "train.evaluate_test=false", "train.epochs=1")
    probe = train.frozen_probe(p.model)
    assert probe.petl.method == "none" and list(probe.exits.head_depths) == [0, 0, 0]
    train.run(p, "probe", prepared, tmp_path / "probe")
    weights = load_file(tmp_path / "probe" / "model" / "adapter_model.safetensors")
    assert all(k.startswith("heads.") for k in weights)


@pytest.mark.slow  # trains
def test_resume_trains_only_the_remaining_epochs(tmp_path, prepared, monkeypatch):
    """Killed after epoch 1 of 3, a run started again on the same directory trains epochs 2
    and 3 only (counted where the epochs run) and ends with the uninterrupted run's weights."""
    p = params(tmp_path, "train.epochs=3", "train.sparsity.mode=both", "train.evaluate_test=false")
    train.run(p, "dyn", prepared, tmp_path / "full")

    real_save = trainer.save_training_state

    def killed_after_first_epoch(root, epoch, *args, **kwargs):
        real_save(root, epoch, *args, **kwargs)
        raise KeyboardInterrupt  # the process dies right after writing checkpoint 1

    monkeypatch.setattr(trainer, "save_training_state", killed_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train.run(p, "dyn", prepared, tmp_path / "killed")
    assert not (tmp_path / "killed" / "model").exists()
    monkeypatch.setattr(trainer, "save_training_state", real_save)

    epochs_run = []
    real_epoch = trainer.train_epoch

    def counting_epoch(*args, first_step, **kwargs):
        epochs_run.append(first_step)
        return real_epoch(*args, first_step=first_step, **kwargs)

    monkeypatch.setattr(trainer, "train_epoch", counting_epoch)
    result = train.run(p, "dyn", prepared, tmp_path / "killed")
    steps_per_epoch = -(-128 // p.train.batch_size)
    assert epochs_run == [1 * steps_per_epoch, 2 * steps_per_epoch]  # epochs 2 and 3, not 1
    log = json.loads((tmp_path / "killed" / "train_log.json").read_text())["epochs"]
    assert [e["session"] for e in log] == [0, 1, 1]
    assert result.epochs_run == 3
    a = load_file(tmp_path / "full" / "model" / "adapter_model.safetensors")
    b = load_file(tmp_path / "killed" / "model" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.integration
def test_sigkill_then_resume_matches_uninterrupted(tmp_path, tiny_params_file):
    """A real SIGKILL, at whatever point training has reached once its first checkpoint exists."""
    from conftest import write_prepared

    data = write_prepared(tmp_path / "data", sizes={"train": 1536, "val": 64})
    args = [
        sys.executable,
        "-m",
        "dyn_adapter.cli",
        "train",
        "--params",
        str(tiny_params_file),
        "--data",
        str(data),
        "--set",
        "train.epochs=3",
        "--set",
        "train.sparsity.mode=both",
        "--set",
        "train.evaluate_test=false",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = {"check": True, "env": env, "capture_output": True, "timeout": 600}
    subprocess.run([*args, "--out", str(tmp_path / "full")], **run)

    proc = subprocess.Popen(
        [*args, "--out", str(tmp_path / "killed")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        ckpts = tmp_path / "killed" / "checkpoints"
        deadline = time.monotonic() + 300
        while not list(ckpts.glob("epoch-0001")) and time.monotonic() < deadline:
            assert proc.poll() is None, "training ended before it could be killed"
            time.sleep(0.01)  # polling for the checkpoint, not waiting for the process
        assert proc.poll() is None, "training finished before the kill: make the epochs longer"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert not (tmp_path / "killed" / "model").exists()

    subprocess.run([*args, "--out", str(tmp_path / "killed")], **run)
    # Epochs are recorded with the process that ran them: the killed one ran the first (or
    # more), the second only the rest; a restart would have run all three again.
    log = json.loads((tmp_path / "killed" / "train_log.json").read_text())["epochs"]
    sessions = [e["session"] for e in log]
    assert [e["epoch"] for e in log] == [1, 2, 3]
    assert sessions[0] == 0 and sessions[-1] == 1 and sessions == sorted(sessions), sessions
    a = load_file(tmp_path / "full" / "model" / "adapter_model.safetensors")
    b = load_file(tmp_path / "killed" / "model" / "adapter_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # trains
def test_sparsify_tunes_and_keeps_the_best(tmp_path, prepared):
    p = params(
        tmp_path,
        "train.evaluate_test=false",
        "train.epochs=1",
        "sparsify.epochs=1",
        "sparsify.forward_rates=[0.1, 0.3]",
        "sparsify.backward_keeps=[0.6]",
    )
    train.run(p, "dyn", prepared, tmp_path / "train")
    best = sparsify.run(p, prepared, tmp_path / "train" / "model", tmp_path / "sp").best
    table = json.loads((tmp_path / "sp" / "candidates.json").read_text())
    names = [c["name"] for c in table["candidates"]]
    assert names == ["input (no sparsity tuning)", "f0.1-b0.6", "f0.3-b0.6"]
    assert best["score"] == max(c["score"] for c in table["candidates"])
    assert (tmp_path / "sp" / "model" / "adapter_model.safetensors").is_file()
    assert "(best)" in (tmp_path / "sp" / "candidates.md").read_text()


# -- params.yaml --------------------------------------------------------------------------


def test_params_file_in_repo_is_valid():
    from pathlib import Path

    p = load_params(Path(__file__).parents[1] / "params.yaml")
    assert p.model.exits.blocks == [3, 6, 9, 12] and p.train.epochs >= 1


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("train.epoch=3", "train.epoch: unknown key"),
        ("train.epochs=three", "train.epochs: expected an integer"),
        ("model.petl.method=prefix", "model.petl.method: 'prefix' is not one of"),
        ("train.lr=-1", "train.lr: must be > 0"),
        ("nonsense", "expected KEY=VALUE"),
    ],
)
def test_params_errors_name_the_key(tmp_path, override, match):
    with pytest.raises(ConfigError, match=match):
        params(tmp_path, override)


def test_yaml_syntax_error_names_the_file(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("train:\n  epochs: [1,\n")
    with pytest.raises(ConfigError, match="params.yaml: not valid YAML"):
        load_params(bad)


def test_static_petl_has_only_the_final_exit(tmp_path):
    from dyn_adapter.models import create_dyn_adapter

    p = params(tmp_path)
    model = create_dyn_adapter(train.static_petl(p.model))
    assert model.exit_blocks == [6] and model.petl_cfg.method == "adapter"


@pytest.mark.parametrize("stages", [2, 3, 4, 5, 7])
def test_last_stage_rates_are_exact(stages):
    # A rate of -1e-17 from rounding would make nn.Dropout refuse it.
    for rate in (0.1, 0.2, 0.3, 0.7):
        cfg = SparsityConfig(mode="both", forward_rate=rate, backward_keep=rate)
        assert stage_dropout_rates(cfg, stages)[-1] == 0.0
        assert stage_keep_ratios(cfg, stages)[-1] == 1.0
        assert min(stage_dropout_rates(cfg, stages)) >= 0.0


def test_self_distillation_teaches_the_early_exits_the_last_exits_answer():
    """Each early exit's loss gains weight x T^2 x KL(last exit's softened answer || its own);
    the last exit's loss, and its gradient, stay the cross-entropy alone."""
    g = torch.Generator().manual_seed(0)
    logits = [torch.randn(8, 5, generator=g, requires_grad=True) for _ in range(3)]
    y = torch.arange(8) % 5
    plain = exit_losses(logits, y)
    distilled = exit_losses(logits, y, distill=DistillConfig(weight=0.5, temperature=2.0))
    teacher = torch.softmax(logits[-1].detach() / 2.0, -1)
    for k in range(2):
        student = torch.softmax(logits[k].detach() / 2.0, -1)
        kl = (teacher * (teacher.log() - student.log())).sum(-1).mean()
        torch.testing.assert_close(distilled[k], plain[k] + 0.5 * 4.0 * kl)
    assert distilled[-1] == plain[-1]
    (last_grad,) = torch.autograd.grad(distilled.sum(), logits[-1])
    (plain_grad,) = torch.autograd.grad(plain.sum(), logits[-1])
    torch.testing.assert_close(last_grad, plain_grad)  # the teacher is a target, not a student
    assert torch.equal(exit_losses(logits, y, distill=DistillConfig(weight=0.0)), plain)


def test_distillation_settings_are_checked():
    with pytest.raises(ConfigError, match="train.distill.temperature: must be > 0"):
        DistillConfig(temperature=0.0)
    with pytest.raises(ConfigError, match="train.distill.weight: must be >= 0"):
        DistillConfig(weight=-1.0)
