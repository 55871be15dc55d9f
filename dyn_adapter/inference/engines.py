"""Inference engines: the same early exit, run op by op or segment by segment.

Both answer three questions about a batch of model inputs: every exit's logits (:meth:`exits`),
early-exit predictions under thresholds (:meth:`dynamic`) and the static model's logits
(:meth:`static`).

- :class:`EagerEngine` calls the model's own ``forward_dynamic``: the reference.
- :class:`CompiledEngine` runs each exit segment as one unit: the stem (first segment), the
  blocks up to the exit, the head, the exit decision, the answers of the samples that leave,
  and the compaction of the ones that go on into the next segment's input. Between segments the
  host reads one number back, how many samples go on, which picks the next segment's batch
  size. On CUDA each segment is captured once per bucketed batch size as a CUDA graph (the
  samples padded up to the bucket), so a segment costs one launch instead of hundreds, and
  nothing but that one read happens on the host between two segments: at small batches a GPU
  spends most of an eager forward waiting for launches, and early exit multiplies them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..models import DynAdapterViT, DynamicOutput
from ..models.dyn_vit import check_thresholds
from .precision import autocast, precision_name


class Engine:
    """Runs a model's exits on one device at one precision.

    Args:
        model: The model; the engine puts it in eval mode.
        device: Where it runs (the model must already be there).
        dtype: Autocast dtype (``None``: float32).
    """

    name = "engine"

    def __init__(self, model: DynAdapterViT, device: torch.device, dtype: torch.dtype | None):
        self.model = model
        self.device = device
        self.dtype = dtype

    @property
    def num_exits(self) -> int:
        return self.model.num_exits

    @property
    def precision(self) -> str:
        """``bf16``, ``fp16`` or ``fp32``: what the numbers are computed in."""
        return precision_name(self.dtype)

    def exits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every exit's logits (float32) for model inputs ``x [B, 3, H, W]``, no sample leaving."""
        raise NotImplementedError

    def dynamic(self, x: torch.Tensor, thresholds: Sequence[float]) -> DynamicOutput:
        """Early exit: each sample answered by the first exit whose confidence reaches its
        threshold (see :meth:`DynAdapterViT.forward_dynamic`)."""
        raise NotImplementedError

    def static(self, x: torch.Tensor) -> torch.Tensor:
        """The last exit's logits (float32), no early head evaluated: the static model."""
        raise NotImplementedError


class EagerEngine(Engine):
    """The model's own forward passes under autocast: op by op, as written."""

    name = "eager"

    @torch.no_grad()
    def exits(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.model.eval()
        with autocast(self.device, self.dtype):
            return [t.float() for t in self.model.forward_exits(x)]

    @torch.no_grad()
    def dynamic(self, x: torch.Tensor, thresholds: Sequence[float]) -> DynamicOutput:
        self.model.eval()
        with autocast(self.device, self.dtype):
            return self.model.forward_dynamic(x, thresholds)

    @torch.no_grad()
    def static(self, x: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        with autocast(self.device, self.dtype):
            return self.model.forward_final(x).float()


def bucket_sizes(max_batch: int) -> list[int]:
    """Batch sizes segments are captured at: 1 to 4, then four steps per doubling, so padding a
    batch up to its bucket wastes at most a fifth of the work; ``max_batch`` is the last."""
    sizes = {1, 2, 3, 4, max_batch}
    base = 4
    while base < max_batch:
        step = base // 4
        sizes.update(s for s in range(base, 2 * base, step) if s <= max_batch)
        base *= 2
    return sorted(s for s in sizes if s <= max_batch)


class _Segment:
    """A function of the engine's buffers, run directly or captured once as a CUDA graph.

    Capturing runs the function once first (on a side stream, as CUDA asks, for lazy library
    set-up); it writes what a replay then writes again, so the warm-up changes no result.
    """

    def __init__(
        self, fn: Callable[[], torch.Tensor], autocast_to: tuple[torch.device, torch.dtype | None]
    ) -> None:
        self.fn = fn
        self.autocast_to = autocast_to
        self.graph: torch.cuda.CUDAGraph | None = None

    def capture(self, pool: Any) -> None:  # torch.cuda.graph_pool_handle()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), autocast(*self.autocast_to):
            self.fn()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool), autocast(*self.autocast_to):
            self.output = self.fn()

    def __call__(self) -> torch.Tensor:
        """The function's result; a captured one's lives in memory that the next replay of any
        segment may reuse: consume it before running another segment."""
        if self.graph is None:
            with autocast(*self.autocast_to):
                return self.fn()
        self.graph.replay()
        return self.output


class CompiledEngine(Engine):
    """Exit segments as single units with one host read per exit; CUDA graphs on CUDA.

    Args:
        model: The model (eval mode; for the fastest path merged and with matmul weights in
            ``dtype``, see :func:`~dyn_adapter.inference.load_engine`).
        device: Where it runs.
        dtype: Autocast dtype (``None``: float32).
        max_batch: Largest batch one pass takes; larger inputs are split.
        graphs: Capture CUDA graphs (default: on CUDA).
        pad: Pad batches up to :func:`bucket_sizes` (default: where graphs are captured; on the
            CPU padding would only add work, but it can be switched on to test that padded
            rows never change an answer).

    One pass runs at a time: every pass goes through the engine's buffers, so concurrent
    callers (a model server's request threads) take turns.
    """

    name = "compiled"

    def __init__(
        self,
        model: DynAdapterViT,
        device: torch.device,
        dtype: torch.dtype | None,
        *,
        max_batch: int = 256,
        graphs: bool | None = None,
        pad: bool | None = None,
    ) -> None:
        super().__init__(model, device, dtype)
        self.graphs = device.type == "cuda" if graphs is None else graphs
        if self.graphs and device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        self.pad = self.graphs if pad is None else pad
        self.max_batch = max_batch
        self.buckets = bucket_sizes(max_batch)
        model.eval()
        self._stages = model.stages()
        self._pool = torch.cuda.graph_pool_handle() if self.graphs else None
        self._segments: dict[tuple[str, int, int], _Segment] = {}
        self._lock = threading.Lock()
        self._allocate_buffers()

    def _allocate_buffers(self) -> None:
        """Every tensor a segment reads or writes outside its own temporaries: what a CUDA graph
        needs at fixed addresses."""
        model, n, dev = self.model, self.max_batch, self.device
        h, w = model.backbone.patch_embed.img_size
        self._images = torch.zeros(n, 3, h, w, device=dev)
        self._real = torch.zeros((), dtype=torch.long, device=dev)  # samples in the pass
        self._order = torch.arange(n, device=dev)
        # Segment k > 0 reads its tokens and the samples' slots from entry k - 1 of these; segment
        # k - 1 writes there the samples that go on first, in order, then the others (padding,
        # slot -1).
        with torch.no_grad(), autocast(dev, self.dtype):  # the residual stream's dtype
            tokens = self._stages[0](model.embed(self._images[:1]))
        later = range(model.num_exits - 1)
        self._tokens = [tokens.new_zeros(n, *tokens.shape[1:]) for _ in later]
        self._slots = [torch.full((n,), -1, dtype=torch.long, device=dev) for _ in later]
        self._going_on = torch.zeros(model.num_exits, dtype=torch.long, device=dev)
        self._thresholds = torch.zeros(model.num_exits, device=dev)
        self._loaded: list[float] | None = None
        # The answers: one slot per sample of a pass, then one spare slot per batch row where
        # the rows that do not leave (and padding) write, so no two rows share a slot.
        self._spare = torch.arange(n, 2 * n, device=dev)
        self._prediction = torch.zeros(2 * n, dtype=torch.long, device=dev)
        self._confidence = torch.zeros(2 * n, device=dev)
        self._exit = torch.zeros(2 * n, dtype=torch.long, device=dev)
        self._logits = torch.zeros(2 * n, model.num_classes, device=dev)

    # -- the units that run ---------------------------------------------------------------

    def _exit_fn(self, k: int, size: int) -> Callable[[], torch.Tensor]:
        """Segment ``k`` at batch ``size``: returns the exit's logits."""
        model, stage, head = self.model, self._stages[k], self.model.heads[k]
        last = k == self.num_exits - 1

        def run() -> torch.Tensor:
            if k == 0:
                order = self._order[:size]
                rows = torch.where(order < self._real, order, -1)
                h = stage(model.embed(self._images[:size]))
            else:
                rows = self._slots[k - 1][:size]
                h = stage(self._tokens[k - 1][:size])
            logits = head(model.backbone.norm(h) if last else h).float()
            confidence, prediction = logits.softmax(-1).max(-1)
            real = rows >= 0
            leave = real if last else real & (confidence >= self._thresholds[k])
            slot = torch.where(leave, rows, self._spare[:size])
            self._prediction.index_copy_(0, slot, prediction)
            self._confidence.index_copy_(0, slot, confidence)
            self._exit.index_fill_(0, slot, k)
            self._logits.index_copy_(0, slot, logits)
            if not last:  # compaction: the samples that go on first, in order
                stay = (real & ~leave).long()
                going_on = stay.sum()
                to = torch.where(stay > 0, stay.cumsum(0), going_on + (1 - stay).cumsum(0)) - 1
                self._tokens[k].index_copy_(0, to, h)
                self._slots[k].index_copy_(0, to, torch.where(stay > 0, rows, -1))
                self._going_on[k] = going_on
            return logits

        return run

    def _static_fn(self, size: int) -> Callable[[], torch.Tensor]:
        return lambda: self.model.forward_final(self._images[:size]).float()

    def _bucket(self, n: int) -> int:
        return next(b for b in self.buckets if b >= n) if self.pad else n

    def _run(self, kind: str, k: int, size: int) -> torch.Tensor:
        key = (kind, k, size)
        segment = self._segments.get(key)
        if segment is None:
            fn = self._static_fn(size) if kind == "static" else self._exit_fn(k, size)
            segment = self._segments[key] = _Segment(fn, (self.device, self.dtype))
            if self._pool is not None:
                segment.capture(self._pool)
        return segment()

    def _start(self, x: torch.Tensor) -> int:
        """Load one pass's images; returns its batch size."""
        n = x.shape[0]
        if x.shape[1:] != self._images.shape[1:]:
            raise ValueError(
                f"the compiled engine was built for inputs of shape {list(self._images.shape[1:])}"
                f", got {list(x.shape[1:])}: resize the images to the model's input size (the "
                "eager engine takes other sizes)"
            )
        self._images[:n].copy_(x)
        self._real.fill_(n)
        return self._bucket(n)

    # -- the three passes -----------------------------------------------------------------

    @torch.no_grad()
    def exits(self, x: torch.Tensor) -> list[torch.Tensor]:
        with self._lock:
            return self._exits(x)

    def _exits(self, x: torch.Tensor) -> list[torch.Tensor]:
        self._load_thresholds([float("inf")] * self.num_exits)  # no sample leaves early
        chunks = []
        for c in x.split(self.max_batch):
            size = self._start(c)
            # Nobody leaves, so every segment keeps the samples in order: no host read needed.
            chunks.append(
                [self._run("exit", k, size)[: len(c)].clone() for k in range(self.num_exits)]
            )
        return [torch.cat(per_exit) for per_exit in zip(*chunks, strict=True)]

    @torch.no_grad()
    def dynamic(self, x: torch.Tensor, thresholds: Sequence[float]) -> DynamicOutput:
        values = check_thresholds(thresholds, self.num_exits)
        with self._lock:
            self._load_thresholds(values)
            parts = [self._dynamic_chunk(c) for c in x.split(self.max_batch)]
        if len(parts) == 1:
            return parts[0]
        return DynamicOutput(
            torch.cat([p.prediction for p in parts]),
            torch.cat([p.confidence for p in parts]),
            torch.cat([p.exit_index for p in parts]),
            torch.cat([p.logits for p in parts]),
        )

    def _dynamic_chunk(self, x: torch.Tensor) -> DynamicOutput:
        n, size = x.shape[0], self._start(x)
        for k in range(self.num_exits):
            self._run("exit", k, size)
            if k == self.num_exits - 1:
                break
            going_on = int(self._going_on[k])  # the exit's one host read
            if going_on == 0:
                break
            size = self._bucket(going_on)
        return DynamicOutput(
            self._prediction[:n].clone(),
            self._confidence[:n].clone(),
            self._exit[:n].clone(),
            self._logits[:n].clone(),
        )

    @torch.no_grad()
    def static(self, x: torch.Tensor) -> torch.Tensor:
        with self._lock:
            chunks = x.split(self.max_batch)
            return torch.cat(
                [self._run("static", 0, self._start(c))[: len(c)].clone() for c in chunks]
            )

    def _load_thresholds(self, thresholds: list[float]) -> None:
        if thresholds != self._loaded:  # a host-to-device copy only when the policy changes
            self._thresholds.copy_(torch.tensor(thresholds, dtype=torch.float32))
            self._loaded = list(thresholds)

    @property
    def captured(self) -> int:
        """CUDA graphs captured so far (one per segment and bucket met)."""
        return sum(s.graph is not None for s in self._segments.values())
