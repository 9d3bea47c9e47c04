"""GPU smoke run of the LM at the 7B shapes with random bf16 weights (not a pytest test).

    python tests/engine/lm/gpu_smoke.py [batch sizes...]

Prints load time, memory, prefill and join time, and eager step time per batch size with
fresh slots and with every slot's window full. Needs torch, numpy and safetensors only.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from voicegate.engine.base import SamplingParams
from voicegate.engine.lm import LM, LMConfig, VoicePrompt


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


def main(batches: list[int]) -> None:
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


if __name__ == "__main__":
    main([int(b) for b in sys.argv[1:]] or [1, 8, 32])
