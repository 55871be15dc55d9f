"""The inference engines: the compiled engine answers exactly as the model's own early exit."""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from conftest import PETL_METHODS, randomize_trainable, tiny_model

from dyn_adapter.errors import ConfigError
from dyn_adapter.inference import (
    CompiledEngine,
    EagerEngine,
    InferenceConfig,
    bucket_sizes,
    cast_matmul_weights,
    create_engine,
)
from dyn_adapter.params import params_from_dict

CPU = torch.device("cpu")


def median_thresholds(engine, x) -> list[float]:
    """Thresholds at each early exit's median confidence: every exit answers some samples."""
    conf = [t.softmax(-1).max(-1).values for t in engine.exits(x)]
    return [float(c.median()) for c in conf[:-1]] + [0.0]


def merged_model(petl: str):
    model = tiny_model(petl)
    randomize_trainable(model)
    if petl != "adapter":
        model.merge()
    return model


@pytest.mark.parametrize("petl", PETL_METHODS)
@pytest.mark.parametrize("pad", [False, True], ids=["exact", "padded"])
def test_compiled_answers_as_the_eager_model_does(petl, pad):
    torch.manual_seed(1)
    model = merged_model(petl)
    x = torch.randn(37, 3, 28, 28)
    eager = EagerEngine(model, CPU, None)
    thresholds = median_thresholds(eager, x)
    # max_batch 16: 37 images go through in three passes, the last one padded up to 6.
    compiled = CompiledEngine(model, CPU, None, max_batch=16, pad=pad)
    want, got = eager.dynamic(x, thresholds), compiled.dynamic(x, thresholds)
    assert len(set(want.exit_index.tolist())) == model.num_exits  # every exit answered some
    assert torch.equal(got.exit_index, want.exit_index)
    assert torch.equal(got.prediction, want.prediction)
    torch.testing.assert_close(got.confidence, want.confidence)
    torch.testing.assert_close(got.logits, want.logits)
    for a, b in zip(compiled.exits(x), eager.exits(x), strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(compiled.static(x), eager.static(x))


@pytest.mark.parametrize("thresholds", [[0.0, 0.0, 0.0], [2.0, 2.0, 0.0]], ids=["first", "last"])
def test_everyone_leaving_at_one_exit(thresholds):
    model = merged_model("adapter")
    x = torch.randn(9, 3, 28, 28)
    out = CompiledEngine(model, CPU, None, pad=True).dynamic(x, thresholds)
    exit_taken = 0 if thresholds[0] == 0.0 else model.num_exits - 1
    assert out.exit_index.tolist() == [exit_taken] * 9
    logits = EagerEngine(model, CPU, None).exits(x)[exit_taken]
    assert torch.equal(out.prediction, logits.argmax(-1))


def test_bf16_weights_cast_once_give_what_autocast_gives():
    """Matmul weights stored in bf16 (as served) change no number against autocast casting
    them on every call (the training-time model)."""
    model = merged_model("lora")
    x = torch.randn(20, 3, 28, 28)
    eager = EagerEngine(model, CPU, torch.bfloat16)
    served = copy.deepcopy(model)
    assert cast_matmul_weights(served, torch.bfloat16) > 0
    compiled = CompiledEngine(served, CPU, torch.bfloat16, pad=True)
    thresholds = median_thresholds(eager, x)
    want, got = eager.dynamic(x, thresholds), compiled.dynamic(x, thresholds)
    assert torch.equal(got.exit_index, want.exit_index)
    assert torch.equal(got.logits, want.logits)
    assert served.heads[0].fc.weight.dtype == torch.bfloat16
    assert served.heads[0].norm.weight.dtype == torch.float32  # autocast keeps norms in fp32


def host_reads(fn) -> int:
    """Operations that make the host wait for a result: a decision read back, a boolean mask
    used to index (its size is only known once computed)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    names = ("aten::nonzero", "aten::_local_scalar_dense")  # what item(), bool(), masks call
    return sum(e.count for e in prof.key_averages() if e.key in names)


def test_one_host_read_per_early_exit():
    """What a GPU waits on: the compiled engine reads back one number per early exit (how many
    samples go on), the op-by-op early exit several per exit."""
    model = merged_model("adapter")
    x = torch.randn(32, 3, 28, 28)
    eager = EagerEngine(model, CPU, None)
    thresholds = median_thresholds(eager, x)
    compiled = CompiledEngine(model, CPU, None, pad=True)
    compiled.dynamic(x, thresholds)  # segments built once, not counted
    assert host_reads(lambda: compiled.dynamic(x, thresholds)) == model.num_exits - 1
    assert host_reads(lambda: eager.dynamic(x, thresholds)) > 2 * (model.num_exits - 1)


def test_concurrent_callers_get_their_own_answers():
    """A model server calls one engine from several request threads at once: every call must
    answer as if it ran alone, though all passes share the engine's buffers."""
    model = merged_model("adapter")
    engine = CompiledEngine(model, CPU, None, pad=True)
    gen = torch.Generator().manual_seed(3)
    inputs = [torch.randn(int(n), 3, 28, 28, generator=gen) for n in (5, 9, 13, 17, 3, 11)]
    policies = [median_thresholds(engine, x) for x in inputs]
    alone = [engine.dynamic(x, t) for x, t in zip(inputs, policies, strict=True)]
    static_alone = [engine.static(x) for x in inputs]

    def call(i: int):
        x, t = inputs[i % len(inputs)], policies[i % len(inputs)]
        if i % 3 == 2:
            return engine.static(x)
        return engine.dynamic(x, t)

    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(call, range(60)))
    for i, got in enumerate(answers):
        j = i % len(inputs)
        if i % 3 == 2:
            assert torch.equal(got, static_alone[j]), f"call {i}: static logits changed"
        else:
            assert torch.equal(got.exit_index, alone[j].exit_index), f"call {i}: exits changed"
            assert torch.equal(got.logits, alone[j].logits), f"call {i}: logits changed"


def test_bucket_sizes_bound_the_padding():
    sizes = bucket_sizes(256)
    assert sizes[:4] == [1, 2, 3, 4] and sizes[-1] == 256
    for n in range(1, 257):
        bucket = next(b for b in sizes if b >= n)
        assert bucket <= max(4, 1.25 * n)  # at most a fifth of a padded batch is padding
    assert bucket_sizes(3) == [1, 2, 3]
    assert bucket_sizes(100)[-1] == 100


def test_inputs_of_another_size_are_refused_by_name():
    engine = CompiledEngine(merged_model("adapter"), CPU, None)
    with pytest.raises(
        ValueError, match=r"built for inputs of shape \[3, 28, 28\], got \[3, 56, 56\]"
    ):
        engine.dynamic(torch.randn(2, 3, 56, 56), [0.5, 0.5, 0.0])


def test_graphs_need_cuda():
    with pytest.raises(ValueError, match="CUDA"):
        CompiledEngine(merged_model("adapter"), CPU, None, graphs=True)


def test_inference_params_are_validated_by_key():
    assert params_from_dict({}).inference == InferenceConfig()
    with pytest.raises(ConfigError, match="inference.engine"):
        params_from_dict({"inference": {"engine": "jit"}})
    with pytest.raises(ConfigError, match="inference.amp"):
        params_from_dict({"inference": {"amp": "fp8"}})
    with pytest.raises(ConfigError, match="inference.max_batch"):
        params_from_dict({"inference": {"max_batch": 0}})
    engine = create_engine(merged_model("adapter"), CPU, InferenceConfig(engine="eager"))
    assert isinstance(engine, EagerEngine) and engine.precision == "fp32"
    engine = create_engine(merged_model("adapter"), CPU, InferenceConfig(amp="bf16"))
    assert isinstance(engine, CompiledEngine) and engine.precision == "bf16"
    assert not engine.graphs and not engine.pad  # on the CPU: no graphs, no padding


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [None, torch.bfloat16], ids=["fp32", "bf16"])
def test_cuda_graphs_answer_as_the_eager_model_does(dtype):
    gpu = torch.device("cuda")
    model = merged_model("adapter").to(gpu)
    x = torch.randn(45, 3, 28, 28, device=gpu)
    eager = EagerEngine(model, gpu, dtype)
    served = copy.deepcopy(model)
    cast_matmul_weights(served, dtype)
    compiled = CompiledEngine(served, gpu, dtype, max_batch=32)
    thresholds = median_thresholds(eager, x)
    for _ in range(2):  # captured, then replayed
        want, got = eager.dynamic(x, thresholds), compiled.dynamic(x, thresholds)
        assert (got.exit_index == want.exit_index).float().mean() >= 0.95
        assert (got.prediction == want.prediction).float().mean() >= 0.95
    assert compiled.captured > 0
