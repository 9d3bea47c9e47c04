"""Stateless tensor math of the LM: RMSNorm, RoPE, gated FFN, head split/merge.

The arithmetic follows moshi 0.2.13 step for step (parity is tested to 1e-4 in float32):
RMSNorm in float32, interleaved RoPE computed in float32, SiLU gating on the two halves.
Imports torch only.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def rms_norm(x: torch.Tensor, alpha: torch.Tensor, eps: float) -> torch.Tensor:
    """``x * alpha / sqrt(eps + mean(x^2))`` computed in float32, returned in x's dtype."""
    xf = x.float()
    var = eps + torch.mean(xf * xf, dim=-1, keepdim=True)
    return (xf * (alpha.float().reshape(-1) * torch.rsqrt(var))).to(x.dtype)


def apply_rope(
    q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, max_period: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate interleaved (real, imag) pairs of q and k [B, H, T, D] by ``positions`` [B, T]."""
    d = q.shape[-1]
    half = torch.arange(d // 2, device=q.device, dtype=torch.float32)
    freqs = torch.exp(half * (-math.log(max_period) * 2 / d))
    angle = positions.float()[:, None, :, None] * freqs  # [B, 1, T, D/2]
    cos, sin = torch.cos(angle), torch.sin(angle)

    def rotate(x: torch.Tensor) -> torch.Tensor:
        pairs = x.reshape(*x.shape[:-1], d // 2, 2)
        re, im = pairs[..., 0].float(), pairs[..., 1].float()
        out = torch.stack(
            [(re * cos - im * sin).to(x.dtype), (re * sin + im * cos).to(x.dtype)], -1
        )
        return out.flatten(-2)

    return rotate(q), rotate(k)


def gated_ffn(x: torch.Tensor, w_in: torch.Tensor, w_out: torch.Tensor) -> torch.Tensor:
    """SiLU-gated FFN: ``w_in`` [2 * inner, dim] holds the gate half first, then the value half."""
    h = F.linear(x, w_in)
    h = h.view(*h.shape[:-1], 2, h.shape[-1] // 2)
    return F.linear(F.silu(h[..., 0, :]) * h[..., 1, :], w_out)


def split_qkv(qkv: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, ...]:
    """[B, T, 3 * H * D] -> q, k, v each [B, H, T, D] (moshi's '(p h d)' packing)."""
    b, t, _ = qkv.shape
    parts = qkv.view(b, t, 3, num_heads, -1).permute(2, 0, 3, 1, 4)
    return parts[0], parts[1], parts[2]


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, H, T, D] -> [B, T, H * D]."""
    return x.transpose(1, 2).flatten(2)


def embed(weight: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Embedding lookup where token -1 means 'no input' and gives exactly zero."""
    y = F.embedding(tokens.clamp(min=0), weight)
    return torch.where(
        (tokens == -1)[..., None], torch.zeros((), dtype=y.dtype, device=y.device), y
    )
