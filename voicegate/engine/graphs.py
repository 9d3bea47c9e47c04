"""CUDA graphs for the tick: one captured graph per attention-length bucket, replayed each tick.

An eager tick of the 7B model is bound by kernel launches and Python (tens of ms for little
arithmetic); replaying a captured graph removes both. The tick's device work reads and writes
only preallocated tensors (inputs, slot states, outputs), so it can be captured once at start
and replayed with new data in the same buffers. The attention length (``kv_len``: how many
key positions the step reads) is a Python int of the step, so there is one graph per bucket
of it; a tick uses the smallest bucket that covers every active slot (reading extra masked
positions is correct, just slower). All graphs share one memory pool: they never run at once.

``VOICEGATE_NO_CUDA_GRAPH=1`` turns graphs off (eager ticks, same results); on the CPU they
are always off.

Owns: TickGraphs, graphs_enabled, kv_buckets. Imports torch.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from torch.cuda import _POOL_HANDLE

__all__ = ["NO_CUDA_GRAPH_ENV", "TickGraphs", "graphs_enabled", "kv_buckets"]

log = logging.getLogger("voicegate.engine")

NO_CUDA_GRAPH_ENV = "VOICEGATE_NO_CUDA_GRAPH"
WARMUP_RUNS = 2  # eager runs on a side stream before capture (lazy init, autotuning)
SMALLEST_BUCKET = 256


def graphs_enabled(device: torch.device) -> bool:
    """True on CUDA unless VOICEGATE_NO_CUDA_GRAPH is set to something other than 0/empty."""
    return device.type == "cuda" and os.environ.get(NO_CUDA_GRAPH_ENV, "") in ("", "0")


def kv_buckets(context: int, block: int) -> list[int]:
    """Attention lengths to capture: powers of two from 256 below the window, then the window;
    each a multiple of ``block`` (what ``LM.kv_len_for`` rounds to)."""
    buckets = []
    size = SMALLEST_BUCKET
    while size < context:
        buckets.append(-(-size // block) * block)
        size *= 2
    buckets.append(context)
    return sorted(set(min(b, context) for b in buckets))


class TickGraphs:
    """Captured graphs of ``body(kv_len)``, one per bucket, replayed by ``run(kv_len)``."""

    def __init__(self, body: Callable[[int], None], buckets: list[int], device: torch.device):
        self._body = body
        self._buckets = buckets
        self._device = device
        self._graphs: dict[int, torch.cuda.CUDAGraph] = {}

    @property
    def buckets(self) -> list[int]:
        return list(self._buckets)

    def bucket_for(self, kv_len: int) -> int:
        for size in self._buckets:
            if size >= kv_len:
                return size
        return self._buckets[-1]

    def capture(self, pool: _POOL_HANDLE | None = None) -> float:
        """Warm up and capture every bucket; the body must leave the state unchanged here
        (the caller marks every slot inactive). ``pool``: a memory pool shared with other
        graphs that never run at the same time (default: one of their own). Returns the
        seconds it took."""
        started = time.perf_counter()
        if pool is None:
            pool = torch.cuda.graph_pool_handle()
        side = torch.cuda.Stream(self._device)  # type: ignore[no-untyped-call]
        for kv_len in self._buckets:
            side.wait_stream(torch.cuda.current_stream(self._device))
            with torch.cuda.stream(side):
                for _ in range(WARMUP_RUNS):
                    self._body(kv_len)
            torch.cuda.current_stream(self._device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
                self._body(kv_len)
            self._graphs[kv_len] = graph
        torch.cuda.synchronize(self._device)
        seconds = time.perf_counter() - started
        log.info(
            "cuda graphs: %d captured (kv_len %s) in %.1f s",
            len(self._graphs),
            self._buckets,
            seconds,
        )
        return seconds

    def run(self, kv_len: int) -> None:
        """Replay the graph of ``kv_len``'s bucket (enqueued on the current stream)."""
        self._graphs[self.bucket_for(kv_len)].replay()
