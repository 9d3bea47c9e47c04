# mypy: disable-error-code=no-untyped-call
"""GPU smoke run of the LM at the 7B shapes with random bf16 weights (not a pytest test).

    python tests/engine/lm/gpu_smoke.py [batch sizes...]

Prints load time, memory, prefill and join time, and eager step time per batch size with
fresh slots and with every slot's window full. Needs torch, numpy and safetensors only.
"""

from __future__ import annotations

import gc
import sys
import time

import numpy as np
import torch

from voicegate.engine.base import SamplingParams
from voicegate.engine.lm import LM, LMConfig, LMState, VoicePrompt


def _time_steps(
    lm: LM, state: object, codes: torch.Tensor, active: np.ndarray, n: int
) -> list[float]:
    times = []
    for _ in range(n):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        lm.step(state, codes, active)  # type: ignore[arg-type]
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


def _snapshot(state: LMState) -> list[torch.Tensor]:
    return [t.clone() for t in _tensors(state)]


def _tensors(state: LMState) -> list[torch.Tensor]:
    return [
        getattr(state, f) for f in LMState.__slots__ if isinstance(getattr(state, f), torch.Tensor)
    ]


def _check_cuda_graph(lm: LM, prompt: object, batch: int, kv_len: int) -> None:
    """Capture ``step_tensors`` once, replay it, and compare with eager steps bit for bit."""
    eager, graphed = lm.new_state(batch), lm.new_state(batch)
    for st in (eager, graphed):
        for slot in range(batch):
            lm.load_slot(st, slot, prompt, SamplingParams(), seed=slot)  # type: ignore[arg-type]
    initial = _snapshot(graphed)
    codes = torch.zeros(batch, 8, dtype=torch.long, device="cuda")
    active = torch.ones(batch, dtype=torch.bool, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            lm.step_tensors(graphed, codes, active, kv_len)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = lm.step_tensors(graphed, codes, active, kv_len, return_logits=True)
    for dst, src in zip(_tensors(graphed), initial, strict=True):
        dst.copy_(src)
    inputs = [torch.randint(0, 2048, (batch, 8), device="cuda") for _ in range(20)]
    same, first_err = 0, -1.0
    times = []
    for frame in inputs:
        ref = lm.step_tensors(eager, frame, active, kv_len, return_logits=True)
        codes.copy_(frame)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
        same += int(
            torch.equal(ref.agent_codes, out.agent_codes)
            and torch.equal(ref.text_tokens, out.text_tokens)
        )
        if first_err < 0:  # same state and input: only kernel rounding may differ
            assert ref.text_logits is not None and out.text_logits is not None
            diff = (ref.text_logits.float() - out.text_logits.float()).abs().max()
            first_err = (diff / ref.text_logits.float().abs().max()).item()
    print(
        f"cuda graph batch {batch:3d} kv_len {kv_len}: replay p50 {np.median(times[2:]):6.2f} ms "
        f"p99 {np.percentile(times[2:], 99):6.2f} ms | steps equal to eager {same}/{len(inputs)}, "
        f"first-step text logits max rel diff {first_err:.2e}"
    )
    del graph, out, eager, graphed
    gc.collect()
    torch.cuda.empty_cache()


def main(batches: list[int], graph_batches: tuple[int, ...] = (1, 8)) -> None:
    config = LMConfig.personaplex_7b()
    t0 = time.perf_counter()
    lm = LM.random(config, "cuda", torch.bfloat16, seed=0)
    torch.cuda.synchronize()
    print(
        f"random 7B bf16 on {torch.cuda.get_device_name()}: {time.perf_counter() - t0:.1f} s, "
        f"{torch.cuda.memory_allocated() / 2**30:.2f} GiB"
    )
    voice = VoicePrompt.from_codes(torch.randint(0, 2048, (125, 8)))  # a 10 s clip
    text = list(range(100, 160))  # 60 text tokens
    for attempt in range(2):
        t0 = time.perf_counter()
        prompt = lm.prefill(voice, text)
        torch.cuda.synchronize()
        print(
            f"prefill {prompt.length} positions (run {attempt}): {(time.perf_counter() - t0) * 1e3:.1f} ms"
        )
    for batch in batches:
        state = lm.new_state(batch)
        joins = []
        for slot in range(batch):
            t0 = time.perf_counter()
            lm.load_slot(state, slot, prompt, SamplingParams(), seed=slot)
            torch.cuda.synchronize()
            joins.append((time.perf_counter() - t0) * 1e3)
        codes = torch.randint(0, 2048, (batch, 8), device="cuda")
        active = np.ones(batch, bool)
        _time_steps(lm, state, codes, active, 3)
        fresh = _time_steps(lm, state, codes, active, 20)
        state.positions[:] = config.context + 7  # every window full (a call past 240 s)
        state.positions_host[:] = config.context + 7
        _time_steps(lm, state, codes, active, 2)
        full = _time_steps(lm, state, codes, active, 20)
        out = lm.step(state, codes, active)
        print(
            f"batch {batch:3d}: join p50 {np.median(joins):6.1f} ms | step fresh p50 {np.median(fresh):6.1f} "
            f"p99 {np.percentile(fresh, 99):6.1f} ms | full window p50 {np.median(full):6.1f} "
            f"p99 {np.percentile(full, 99):6.1f} ms | kv/slot {state.kv_bytes_per_slot / 2**30:.2f} GiB | "
            f"mem {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB | valid {bool(out.is_valid.all())} "
            f"text[0] {int(out.text_tokens[0])}"
        )
        del state
        torch.cuda.empty_cache()
    for batch in graph_batches:  # two states each: keep within an H100
        for kv_len in (256, config.context):
            _check_cuda_graph(lm, prompt, batch, kv_len)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--graphs-only"]:
        main([], tuple(int(b) for b in sys.argv[2:]))
    else:
        main([int(b) for b in sys.argv[1:]] or [1, 8, 32])
