"""Stateless tensor math of the LM: RMSNorm, RoPE, gated FFN, head split/merge.

The arithmetic follows moshi 0.2.13 (parity is tested to 1e-4 in float32): RMSNorm in
float32, interleaved RoPE computed in float32, SiLU gating on the two halves; written with few
kernels (fused RMSNorm, RoPE as one complex product for q and k, rotations shared by layers).
Imports torch only.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def rms_norm(x: torch.Tensor, alpha: torch.Tensor, eps: float) -> torch.Tensor:
    """``x * alpha / sqrt(eps + mean(x^2))`` computed in float32, returned in x's dtype."""
    weight = alpha.reshape(-1).float()
    return F.rms_norm(x.float(), (x.shape[-1],), weight, eps).to(x.dtype)


def rope_rotation(positions: torch.Tensor, head_dim: int, max_period: float) -> torch.Tensor:
    """Unit complex rotations [B, T, 1, 1, D/2] (float32 angles) for ``positions`` [B, T]."""
    half = torch.arange(head_dim // 2, device=positions.device, dtype=torch.float32)
    freqs = torch.exp(half * (-math.log(max_period) * 2 / head_dim))
    angle = positions.float()[:, :, None, None, None] * freqs
    return torch.polar(torch.ones_like(angle), angle)


def qkv_heads(
    qkv: torch.Tensor, num_heads: int, rotation: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[B, T, 3 * H * D] (moshi's '(p h d)' packing) -> q, k, v [B, H, T, D].

    With ``rotation`` (``rope_rotation``), q and k get interleaved RoPE: each (even, odd)
    pair is a complex number rotated in float32, in one product for both.
    """
    b, t, _ = qkv.shape
    parts = qkv.view(b, t, 3, num_heads, -1)
    v = parts[:, :, 2].transpose(1, 2)
    qk = parts[:, :, :2]
    if rotation is not None:
        d = qk.shape[-1]
        pairs = torch.view_as_complex(qk.float().reshape(b, t, 2, num_heads, d // 2, 2))
        qk = torch.view_as_real(pairs * rotation).flatten(-2).to(qkv.dtype)
    return qk[:, :, 0].transpose(1, 2), qk[:, :, 1].transpose(1, 2), v


def gated_ffn(x: torch.Tensor, w_in: torch.Tensor, w_out: torch.Tensor) -> torch.Tensor:
    """SiLU-gated FFN: ``w_in`` [2 * inner, dim] holds the gate half first, then the value half."""
    h = F.linear(x, w_in)
    h = h.view(*h.shape[:-1], 2, h.shape[-1] // 2)
    return F.linear(F.silu(h[..., 0, :]) * h[..., 1, :], w_out)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, H, T, D] -> [B, T, H * D]."""
    return x.transpose(1, 2).flatten(2)


def embed(weight: torch.Tensor, tokens: torch.Tensor, has_absent: bool = True) -> torch.Tensor:
    """Embedding lookup where token -1 means 'no input' and gives exactly zero.

    ``has_absent=False`` promises no -1 (live steps) and saves two kernels per table.
    """
    if not has_absent:
        return F.embedding(tokens, weight)
    y = F.embedding(tokens.clamp(min=0), weight)
    zero = torch.zeros((), dtype=y.dtype, device=y.device)
    return torch.where((tokens == -1)[..., None], zero, y)


def is_scaled_kv_dtype(dtype: torch.dtype | None) -> bool:
    """True for the 8-bit float cache dtypes, stored with one scale per (slot, head, position)."""
    return dtype in (torch.float8_e4m3fn, torch.float8_e5m2)


def quantize_vectors(x: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """8-bit float copy of ``x`` with one float32 scale per last-dim vector (absmax / max).

    ``dequantize_vectors(q, scale)`` gives x back to the 8-bit rounding (3 mantissa bits in
    e4m3: ~3% of each vector's largest element at worst, much less typically).
    """
    xf = x.float()
    scale = xf.abs().amax(-1).clamp(min=1e-12) / torch.finfo(dtype).max
    return (xf / scale[..., None]).to(dtype), scale


def dequantize_vectors(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (q.float() * scale[..., None]).to(dtype)
