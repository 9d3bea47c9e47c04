"""The per-layer pieces of one decode step, eager or compiled by ``torch.compile`` (inductor).

A decode step of the 7B model is ~2,500 small kernels (RMSNorm in float32, RoPE, SiLU gating,
residual adds, the sampler's hash and top-k race): under a CUDA graph each still costs a few
microseconds, so at batch 1 the tick is bound by kernel count, not bytes. Compiling each piece
(one function per layer half, reused by all 32 temporal and 6 depformer layers: weights are
arguments, so one compiled graph serves them all) lets inductor fuse the elementwise chains
into few kernels; the matmuls stay cuBLAS. Graphs are left to us (``mode="default"``): the
compiled kernels are captured in the engine's own CUDA graphs after warm-up compiled them.
The KV writes and the attention stay outside (they mutate the cache and depend on kv_len).

``StepKernels.eager()`` is the reference arithmetic (``_ops``); ``StepKernels.compiled()`` the
same functions through ``torch.compile`` (RoPE written with real arithmetic: inductor has no
complex tensors). ``VOICEGATE_COMPILE=1/0`` forces it on/off; by default it is on for CUDA
(measured: bench/RESULTS.md) and off on the CPU (compiling costs seconds; tests stay fast).

Owns: StepKernels, compile_enabled. Imports torch and the lm ops.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

from voicegate.engine.lm import _ops
from voicegate.engine.lm.sampling import gumbel_noise, sample_top_k

__all__ = ["COMPILE_ENV", "StepKernels", "compile_enabled"]

log = logging.getLogger("voicegate.engine")

COMPILE_ENV = "VOICEGATE_COMPILE"
# Measured on an H100 (bench/RESULTS.md, 2026-11-22 05:03): tick at batch 1 13.9 -> 12.0 ms,
# 42 slots with full windows p99 39.7 -> 38.5 ms (bf16) and 32.5 -> 30.9 ms (fp8); replays of
# the captured graph are bit-identical to the compiled eager step.
COMPILE_DEFAULT_CUDA = True


def compile_enabled(device: torch.device) -> bool:
    """``VOICEGATE_COMPILE`` = 1 or 0 if set; else on for CUDA, off for the CPU."""
    value = os.environ.get(COMPILE_ENV, "").strip()
    if value in ("0", "1"):
        return value == "1"
    return device.type == "cuda" and COMPILE_DEFAULT_CUDA


def attention_in(
    x: torch.Tensor,
    alpha: torch.Tensor,
    w_in: torch.Tensor,
    eps: float,
    num_heads: int,
    rotation: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RMSNorm, fused QKV projection, head split and RoPE (complex ``rotation``) -> q, k, v."""
    h = _ops.rms_norm(x, alpha, eps)
    return _ops.qkv_heads(F.linear(h, w_in), num_heads, rotation)


def attention_in_real(
    x: torch.Tensor,
    alpha: torch.Tensor,
    w_in: torch.Tensor,
    eps: float,
    num_heads: int,
    rotation: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``attention_in`` with ``rotation`` as ``view_as_real`` of the complex one [..., D/2, 2]."""
    h = _ops.rms_norm(x, alpha, eps)
    qkv = F.linear(h, w_in)
    b, t, _ = qkv.shape
    parts = qkv.view(b, t, 3, num_heads, -1)
    v = parts[:, :, 2].transpose(1, 2)
    qk = parts[:, :, :2]
    if rotation is not None:
        d = qk.shape[-1]
        pairs = qk.float().reshape(b, t, 2, num_heads, d // 2, 2)
        re, im = pairs[..., 0], pairs[..., 1]
        c, s = rotation[..., 0], rotation[..., 1]
        qk = torch.stack((re * c - im * s, re * s + im * c), -1).flatten(-2).to(qkv.dtype)
    return qk[:, :, 0].transpose(1, 2), qk[:, :, 1].transpose(1, 2), v


def layer_out(
    x: torch.Tensor,
    attn: torch.Tensor,
    w_out: torch.Tensor,
    alpha: torch.Tensor,
    w_gate_in: torch.Tensor,
    w_gate_out: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """Attention output projection + residual, RMSNorm, SiLU-gated FFN + residual."""
    x = x + F.linear(_ops.merge_heads(attn), w_out)
    h = _ops.rms_norm(x, alpha, eps)
    return x + _ops.gated_ffn(h, w_gate_in, w_gate_out)


def depformer_input(
    hidden: torch.Tensor, w_in: torch.Tensor, emb: torch.Tensor, prev: torch.Tensor
) -> torch.Tensor:
    """Depformer step input: projected temporal hidden [B, 1, dim] + the previous token's
    embedding (token -1 embeds to zero)."""
    return F.linear(hidden, w_in) + _ops.embed(emb, prev[:, None])


def dep_attention_in(
    x: torch.Tensor,
    alpha: torch.Tensor,
    w_in: torch.Tensor,
    eps: float,
    num_heads: int,
    rotation: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``attention_in`` for the depformer: its own code object, so ``torch.compile`` keeps
    its shapes apart from the temporal layers' (no shape made dynamic by the other stack)."""
    return attention_in(x, alpha, w_in, eps, num_heads, rotation)


def dep_layer_out(
    x: torch.Tensor,
    attn: torch.Tensor,
    w_out: torch.Tensor,
    alpha: torch.Tensor,
    w_gate_in: torch.Tensor,
    w_gate_out: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """``layer_out`` for the depformer (own code object, as ``dep_attention_in``)."""
    return layer_out(x, attn, w_out, alpha, w_gate_in, w_gate_out, eps)


def final_norm(x: torch.Tensor, alpha: torch.Tensor, eps: float) -> torch.Tensor:
    return _ops.rms_norm(x, alpha, eps)


@dataclass(frozen=True, slots=True)
class StepKernels:
    """The functions one decode step calls; ``real_rope`` says which rotation they take."""

    attention_in: Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    layer_out: Callable[..., torch.Tensor]
    dep_attention_in: Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    dep_layer_out: Callable[..., torch.Tensor]
    depformer_input: Callable[..., torch.Tensor]
    final_norm: Callable[..., torch.Tensor]
    noise: Callable[..., torch.Tensor]
    sample: Callable[..., torch.Tensor]
    real_rope: bool
    is_compiled: bool

    @classmethod
    def eager(cls) -> StepKernels:
        return cls(
            attention_in=attention_in,
            layer_out=layer_out,
            dep_attention_in=attention_in,
            dep_layer_out=layer_out,
            depformer_input=depformer_input,
            final_norm=final_norm,
            noise=gumbel_noise,
            sample=sample_top_k,
            real_rope=False,
            is_compiled=False,
        )

    @classmethod
    def compiled(cls) -> StepKernels:
        """The same functions through ``torch.compile`` (compiled at their first call, one
        graph per shape family; errors fall back to eager with a log line)."""
        _configure_dynamo()

        def c(fn: Callable[..., Any]) -> Callable[..., Any]:
            with warnings.catch_warnings():  # inductor's imports warn about torch.jit (2.13)
                warnings.simplefilter("ignore", DeprecationWarning)
                return torch.compile(fn, fullgraph=False, dynamic=None)

        return cls(
            attention_in=c(attention_in_real),
            layer_out=c(layer_out),
            dep_attention_in=c(dep_attention_in),
            dep_layer_out=c(dep_layer_out),
            depformer_input=c(depformer_input),
            final_norm=c(final_norm),
            noise=gumbel_noise,  # once per step; inductor's CPU code broke its int64 hash tail
            sample=c(sample_top_k),
            real_rope=True,
            is_compiled=True,
        )


def _configure_dynamo() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import torch._dynamo

    config: Any = torch._dynamo.config
    # batch sizes, the two stacks' widths and rotation/no rotation each make a variant
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(config, name):
            setattr(config, name, max(64, int(getattr(config, name))))
    config.suppress_errors = True  # a failed compile runs eagerly instead of stopping a tick
