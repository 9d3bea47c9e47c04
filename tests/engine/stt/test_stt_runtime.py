"""The batched STT's slots: isolation (a reset or another row's input never changes a row,
bit for bit), inactive rows stand still, and the window attends exactly ``context`` keys."""

from __future__ import annotations

import numpy as np
import torch

from voicegate.engine.stt import Stt, SttConfig, SttState
from voicegate.engine.stt.model import stt_kernels


def _run(
    stt: Stt, codes: torch.Tensor, active: list[list[bool]], resets: dict[int, int]
) -> list[torch.Tensor]:
    state = stt.new_state(codes.shape[0])
    for slot in range(codes.shape[0]):
        stt.reset_slot(state, slot)
    logits = []
    for t in range(codes.shape[-1]):
        if t in resets:
            stt.reset_slot(state, resets[t])
        out = stt.step(state, codes[:, :, t], np.array(active[t]), return_logits=True)
        assert out.text_logits is not None
        logits.append(out.text_logits.clone())
    return logits


def test_a_row_never_depends_on_the_others(parity_stt_config: SttConfig) -> None:
    stt = Stt.random(parity_stt_config, "cpu", torch.float32, seed=2)
    gen = torch.Generator().manual_seed(4)
    codes = torch.randint(0, 2048, (3, parity_stt_config.n_q, 30), generator=gen)
    other = codes.clone()
    other[1:] = torch.randint(0, 2048, other[1:].shape, generator=gen)
    on = [[True, True, True]] * 30
    churn = [[True, t % 4 != 0, t % 3 != 0] for t in range(30)]
    base = _run(stt, codes, on, {})
    mixed = _run(stt, other, churn, {7: 1, 19: 2, 20: 1})
    for t in range(30):
        assert torch.equal(mixed[t][0], base[t][0])  # bit for bit
    assert not torch.equal(mixed[10][1], base[10][1])  # the other rows did change


def test_an_inactive_row_stands_still(parity_stt_config: SttConfig) -> None:
    """Row 0 skips ticks 5-9 (no call frame): it then equals a run without those ticks."""
    stt = Stt.random(parity_stt_config, "cpu", torch.float32, seed=3)
    gen = torch.Generator().manual_seed(5)
    codes = torch.randint(0, 2048, (1, parity_stt_config.n_q, 30), generator=gen)
    gap = [[not 5 <= t < 10] for t in range(30)]
    with_gap = _run(stt, codes, gap, {})
    kept = [t for t in range(30) if not 5 <= t < 10]
    without = _run(stt, codes[:, :, kept], [[True]] * len(kept), {})
    for i, t in enumerate(kept):
        torch.testing.assert_close(with_gap[t], without[i], rtol=0, atol=1e-5)


def test_an_8bit_cache_keeps_scales_and_stays_close(parity_stt_config: SttConfig) -> None:
    """With the engine's fp8 KV cache the STT's cache is 8-bit too (half of bf16's bytes):
    one scale per vector; fed the same text, logits within 5% of the full-precision cache's
    (e4m3 keeps 3 mantissa bits: ~2% here at head_dim 16) and the same greedy text."""
    c = parity_stt_config
    stt = Stt.random(c, "cpu", torch.float32, seed=6)
    fp8 = stt.new_state(1, torch.float8_e4m3fn)
    assert fp8.kv.dtype == torch.float8_e4m3fn and fp8.kv_scales is not None
    assert fp8.kv_scales.shape == (c.num_layers, 2, 1, c.num_heads, c.context + 1)
    expected = SttState.bytes_per_slot(c, torch.float8_e4m3fn)
    assert expected == fp8.kv.numel() + 2 * fp8.kv_scales.numel() + 16
    full = stt.new_state(1)
    for state in (fp8, full):
        stt.reset_slot(state, 0)
    gen = torch.Generator().manual_seed(7)
    codes = torch.randint(0, 2048, (1, c.n_q, 40), generator=gen)
    worst, same = 0.0, 0
    for t in range(40):  # past the 16-frame window: scaled columns are overwritten in the ring
        out_a = stt.step(fp8, codes[:, :, t], np.ones(1, bool), return_logits=True)
        out_b = stt.step(full, codes[:, :, t], np.ones(1, bool), return_logits=True)
        a, b = out_a.text_logits, out_b.text_logits
        assert a is not None and b is not None
        same += int(torch.equal(out_a.text_tokens, out_b.text_tokens))
        worst = max(worst, ((a - b).abs().max() / b.abs().max()).item())
        fp8.text.copy_(full.text)  # the same text fed back: only the cache differs
    assert 0 < worst < 5e-2
    assert same >= 36


def test_the_fused_kernels_match_the_eager_step(parity_stt_config: SttConfig) -> None:
    """The STT's own kernel functions (real-arithmetic RoPE: what CUDA compiles, as the LM's)
    give the eager step's logits and end-of-turn over a wrapping stream, and the tick's
    one-head end-of-turn equals the all-heads one."""
    c = parity_stt_config
    eager = Stt.random(c, "cpu", torch.float32, seed=8)
    fused = Stt.random(c, "cpu", torch.float32, seed=8)
    fused.kernels = stt_kernels(False, real_rope=True)
    assert fused.kernels.real_rope and not fused.kernels.is_compiled
    assert stt_kernels(False) is eager.kernels  # eager by default: the parity reference
    states = [eager.new_state(2), fused.new_state(2)]
    gen = torch.Generator().manual_seed(9)
    codes = torch.randint(0, 2048, (2, c.n_q, 40), generator=gen)
    for t in range(40):
        active = np.array([True, t >= 5])
        a = eager.step(states[0], codes[:, :, t], active, return_logits=True)
        b = fused.step(states[1], codes[:, :, t], active, return_logits=True)
        tick = fused.step_tensors(
            fused.new_state(2), codes[:, :, t], torch.from_numpy(active), c.context
        )  # a fresh state: only the head arithmetic is compared
        first = eager.step_tensors(
            eager.new_state(2),
            codes[:, :, t],
            torch.from_numpy(active),
            c.context,
            return_logits=True,
        )
        assert a.text_logits is not None and b.text_logits is not None
        torch.testing.assert_close(b.text_logits, a.text_logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(b.end_of_turn, a.end_of_turn, rtol=1e-5, atol=1e-6)
        assert torch.equal(a.text_tokens, b.text_tokens)
        torch.testing.assert_close(tick.end_of_turn, first.end_of_turn, rtol=1e-5, atol=1e-6)
    assert states[0].positions.tolist() == [40, 35]
