"""The compiled step kernels' switch and arithmetic, checked without compiling (CPU CI stays fast).

``torch.compile`` itself is exercised by bench/engine_bench.py (compiled vs eager logits, graph
replay vs compiled step); here: the real-arithmetic RoPE that the compiled path uses equals the
complex one, a step through those kernels equals the default step, and VOICEGATE_COMPILE.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from voicegate.engine.backends import tiny_lm_config
from voicegate.engine.lm import LM
from voicegate.engine.lm._fused import (
    COMPILE_ENV,
    StepKernels,
    attention_in,
    attention_in_real,
    compile_enabled,
)


def test_real_rope_equals_the_complex_rotation() -> None:
    gen = torch.Generator().manual_seed(0)
    heads, head_dim, dim = 4, 16, 64
    x = torch.randn(3, 1, dim, generator=gen)
    alpha = torch.rand(1, 1, dim, generator=gen) + 0.5
    w_in = torch.randn(3 * heads * head_dim, dim, generator=gen) / 8
    positions = torch.tensor([[0], [7], [2999]])
    half = torch.arange(head_dim // 2, dtype=torch.float32)
    angle = positions.float()[:, :, None, None, None] * torch.exp(half * -0.5)
    rotation = torch.polar(torch.ones_like(angle), angle)
    want = attention_in(x, alpha, w_in, 1e-8, heads, rotation)
    got = attention_in_real(x, alpha, w_in, 1e-8, heads, torch.view_as_real(rotation))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(want[0], want[2])  # q is rotated, v is not: the check can fail
    plain = attention_in_real(x, alpha, w_in, 1e-8, heads, None)
    torch.testing.assert_close(plain[2], want[2])


def test_a_step_through_the_compile_path_kernels_equals_the_default_step() -> None:
    lm = LM.random(tiny_lm_config(1000), "cpu", torch.float32, seed=0)
    assert not lm.kernels.is_compiled  # CPU default: eager
    # the compiled kernel set's functions, uncompiled (real RoPE, depformer's own functions)
    real = dataclasses.replace(
        StepKernels.eager(),
        attention_in=attention_in_real,
        real_rope=True,
    )
    c = lm.config
    gen = torch.Generator().manual_seed(3)
    outs = []
    for kernels in (StepKernels.eager(), real):
        lm.kernels = kernels
        state = lm.new_state(2)
        for i in range(2):
            lm.reset_slot(state, i, seed=i)
        state.positions_host[:] = [4, 60]
        state.positions.copy_(torch.from_numpy(state.positions_host))
        state.tokens.fill_(1)
        user = torch.randint(0, c.audio_card, (2, c.n_q - c.dep_q), generator=gen)
        out = lm.step(state, user, np.ones(2, bool), return_logits=True)
        outs.append(out)
        gen.manual_seed(3)
    a, b = outs
    assert a.text_logits is not None and b.text_logits is not None
    torch.testing.assert_close(b.text_logits, a.text_logits, rtol=1e-4, atol=1e-5)
    assert torch.equal(a.agent_codes, b.agent_codes)


@pytest.mark.parametrize(
    ("value", "device", "expected"),
    [("1", "cpu", True), ("0", "cuda", False), ("", "cpu", False), ("", "cuda", True)],
)
def test_voicegate_compile_switch(
    monkeypatch: pytest.MonkeyPatch, value: str, device: str, expected: bool
) -> None:
    monkeypatch.setenv(COMPILE_ENV, value)
    assert compile_enabled(torch.device(device)) is expected


def test_set_compiled_swaps_the_kernel_set_without_compiling() -> None:
    import torch._dynamo

    lm = LM.random(tiny_lm_config(1000), "cpu", torch.float32, seed=0)
    with torch._dynamo.config.patch(suppress_errors=False, recompile_limit=8):
        lm.set_compiled(True)  # sets dynamo's settings: restored on leaving
        assert torch._dynamo.config.suppress_errors
    assert lm.kernels.is_compiled and lm.kernels.real_rope
    lm.set_compiled(False)
    assert not lm.kernels.is_compiled and not lm.kernels.real_rope
