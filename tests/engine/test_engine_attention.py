"""The 8-bit KV cache (per-vector scales) and the Triton decode kernel (interpreted on the CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from voicegate.engine.base import SamplingParams
from voicegate.engine.lm import LM, LMConfig, VoicePrompt, masked_sdpa
from voicegate.engine.lm._ops import dequantize_vectors, quantize_vectors

ROOT = Path(__file__).resolve().parents[2]
GREEDY = SamplingParams(0.0, 25, 0.0, 250)


def test_quantized_vectors_round_trip_within_e4m3_precision() -> None:
    x = (
        torch.randn(5, 3, 64, generator=torch.Generator().manual_seed(0))
        * torch.logspace(-3, 2, 5)[:, None, None]
    )
    q, scale = quantize_vectors(x, torch.float8_e4m3fn)
    assert q.dtype == torch.float8_e4m3fn and scale.shape == x.shape[:-1]
    back = dequantize_vectors(q, scale, torch.float32)
    # e4m3: 3 mantissa bits, so each element within 1/16 of its own size (or of the vector's
    # smallest normal step), whatever the vector's magnitude
    err = (back - x).abs() / x.abs().amax(-1, keepdim=True)
    assert err.max().item() < 1 / 16
    assert torch.equal(
        dequantize_vectors(
            *quantize_vectors(torch.zeros(2, 8), torch.float8_e4m3fn), torch.float32
        ),
        torch.zeros(2, 8),
    )


def _greedy_logits(lm: LM, kv_dtype: torch.dtype | None, steps: int) -> list[torch.Tensor]:
    prompt = lm.prefill(VoicePrompt.from_codes(torch.arange(16).view(2, 8)), [1, 2, 3])
    state = lm.new_state(2, kv_dtype=kv_dtype)
    lm.load_slot(state, 0, prompt, GREEDY)
    lm.load_slot(state, 1, prompt, GREEDY)
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(steps):
        codes = torch.randint(0, lm.config.audio_card, (2, 8), generator=gen)
        step = lm.step(state, codes, np.array([True, False]), return_logits=True)
        assert step.text_logits is not None
        out.append(step.text_logits[0])
    return out


def test_fp8_cache_keeps_scales_and_stays_close_to_the_full_precision_cache() -> None:
    lm = LM.random(LMConfig.tiny(), "cpu", torch.float32, seed=3)
    state = lm.new_state(2, kv_dtype=torch.float8_e4m3fn)
    c = lm.config
    assert state.kv.dtype == torch.float8_e4m3fn
    assert state.kv_scales is not None
    assert state.kv_scales.shape == (c.num_layers, 2, 2, c.num_heads, c.context + 1)
    full = lm.new_state(2)
    # 1 byte per element plus a 2-byte scale per head_dim-vector, against 4 bytes (float32)
    expected = (1 + 2 / c.head_dim) / 4
    assert state.kv_bytes_per_slot == pytest.approx(full.kv_bytes_per_slot * expected)
    exact = _greedy_logits(lm, None, 6)
    fp8 = _greedy_logits(lm, torch.float8_e4m3fn, 6)
    # a plain cast without scales moved first-step logits ~3% here; with scales, well under
    first = (fp8[0] - exact[0]).abs().max() / exact[0].abs().max()
    assert 0 < first.item() < 2e-2
    # the idle row (slot 1) was never advanced: its scales stay those of its prompt
    assert int(state.positions_host[1]) == 0


def test_masked_sdpa_reads_scaled_columns() -> None:
    gen = torch.Generator().manual_seed(1)
    k, v = torch.randn(2, 2, 9, 16, generator=gen), torch.randn(2, 2, 9, 16, generator=gen)
    q = torch.randn(2, 2, 1, 16, generator=gen)
    filled = torch.tensor([3, 8])
    mask = (torch.arange(8)[None] < filled[:, None])[:, None, None]
    kq, ks = quantize_vectors(k, torch.float8_e4m3fn)
    vq, vs = quantize_vectors(v, torch.float8_e4m3fn)
    got = masked_sdpa(q, kq, vq, filled, mask, k_scale=ks, v_scale=vs)
    want = masked_sdpa(
        q,
        dequantize_vectors(kq, ks, torch.float32),
        dequantize_vectors(vq, vs, torch.float32),
        filled,
        mask,
    )
    torch.testing.assert_close(got, want)


KERNEL_CHECK = textwrap.dedent(
    """
    import torch
    from voicegate.engine.attention_decode import LONG_KV, SPLIT, TritonDecodeAttention
    from voicegate.engine.lm import masked_sdpa
    from voicegate.engine.lm._ops import quantize_vectors

    gen = torch.Generator().manual_seed(0)
    att = TritonDecodeAttention(manual_fp8=True)
    # the short launch shape, then the long one (attention past LONG_KV columns)
    for c, part in ((SPLIT + 100, 70), (LONG_KV + 200, 1030)):
        b, h, d = 3, 2, 32
        assert att.launch_config(c)[0] < c
        cache = torch.randn(2, b, h, c + 1, d, generator=gen)
        q = torch.randn(b, h, 1, d, generator=gen)
        filled = torch.tensor([1, part, c])  # one column, part of a split, past a split
        mask = (torch.arange(c)[None] < filled[:, None])[:, None, None]
        want = masked_sdpa(q, cache[0], cache[1], filled, mask)
        got = att(q, cache[0], cache[1], filled, mask)
        assert (got - want).abs().max().item() < 1e-5, (got - want).abs().max()
        kq, s = quantize_vectors(cache, torch.float8_e4m3fn)
        s = s.to(torch.bfloat16)  # the cache keeps bf16 scales
        want8 = masked_sdpa(q, kq[0], kq[1], filled, mask, k_scale=s[0], v_scale=s[1])
        got8 = att(q, kq[0], kq[1], filled, mask, k_scale=s[0], v_scale=s[1])
        assert (got8 - want8).abs().max().item() < 1e-5, (got8 - want8).abs().max()
        # garbage past a slot's filled columns changes nothing
        cache[:, 1, :, part:] = 1e4
        assert torch.equal(att(q, cache[0], cache[1], filled, mask)[1], got[1])
    print("ok")
    """
)


def test_triton_kernel_matches_masked_sdpa_when_interpreted() -> None:
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", KERNEL_CHECK],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
