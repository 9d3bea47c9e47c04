"""Mimi's 25 Hz causal transformer (RoPE, LayerNorm, GELU FFN, layer scale) with a ring KV cache.

The cache has ``context`` entries per slot and is written at ``position % context``; which
entries a query may see is computed from the slot's position alone, exactly like the moshi
reference's ring cache, so long streams (past the 10 s window) match it step for step.
Once full, a query attends exactly ``context`` (250) entries, itself included, as moshi 0.2.13
and training do; the public PersonaPlex generator's older ring cache attends 249 (an
off-by-one moshi fixed). See ``voicegate.engine.lm.runtime`` for the same choice in the LM.
Names mirror the checkpoint (``transformer.layers.0.self_attn.in_proj_weight``).

Owns: attention and the KV ring for the codec. Imports torch only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from voicegate.engine.mimi.config import MimiConfig


class _SelfAttention(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.out_proj = nn.Linear(dim, dim, bias=False)


class _LayerScale(nn.Module):
    def __init__(self, dim: int, init: float) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((dim,), init))


class _Layer(nn.Module):
    def __init__(self, c: MimiConfig) -> None:
        super().__init__()
        d = c.dimension
        self.self_attn = _SelfAttention(d)
        self.norm1 = nn.LayerNorm(d, eps=1e-5)
        self.norm2 = nn.LayerNorm(d, eps=1e-5)
        self.linear1 = nn.Linear(d, c.transformer_ffn, bias=False)
        self.linear2 = nn.Linear(c.transformer_ffn, d, bias=False)
        self.layer_scale_1 = _LayerScale(d, c.layer_scale)
        self.layer_scale_2 = _LayerScale(d, c.layer_scale)


class _Stack(nn.Module):
    def __init__(self, c: MimiConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_Layer(c) for _ in range(c.transformer_layers))


@dataclass(frozen=True, slots=True)
class _StepGeometry:
    """What every layer of one step shares: RoPE angles, ring write slots, attention mask."""

    cos: torch.Tensor  # [B, 1, T, D/2] float32
    sin: torch.Tensor
    write_index: torch.Tensor  # [B, H, T, D] long, positions in the ring
    mask: torch.Tensor  # [B, 1, T, capacity] bool


class MimiTransformer(nn.Module):
    """The transformer on one side of the codec; input and output are [B, dimension, T]."""

    def __init__(self, config: MimiConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = _Stack(config)

    def new_state(
        self, n_slots: int, device: torch.device, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(kv [layers, 2, B, heads, context, head_dim], positions [B] long), all zeros."""
        c = self.config
        kv = torch.zeros(
            c.transformer_layers,
            2,
            n_slots,
            c.transformer_heads,
            c.transformer_context,
            c.head_dim,
            device=device,
            dtype=dtype,
        )
        return kv, torch.zeros(n_slots, device=device, dtype=torch.long)

    def _geometry(
        self, offset: torch.Tensor, steps: int, active: torch.Tensor | None
    ) -> _StepGeometry:
        c = self.config
        capacity = c.transformer_context
        head_dim = c.head_dim
        device = offset.device
        t = torch.arange(steps, device=device, dtype=torch.long)
        # RoPE, interleaved (real, imag) pairs, angles in float32 as in the reference
        half = torch.arange(head_dim // 2, device=device, dtype=torch.float32)
        freqs = torch.exp(half * (-math.log(c.rope_max_period) * 2 / head_dim))
        ts = offset.float().view(-1, 1) + t.float()
        angles = freqs * ts.view(-1, 1, steps, 1)
        # ring slots written by this step
        write = (offset.view(-1, 1) + t) % capacity
        write_index = write.view(-1, 1, steps, 1).expand(-1, c.transformer_heads, steps, head_dim)
        # absolute position held by each ring entry after the write (-1: never written)
        slots = torch.arange(capacity, device=device, dtype=torch.long)
        last = offset.view(-1, 1) + steps - 1
        delta = slots - last % capacity
        pos_k = torch.where(delta <= 0, last + delta, last + delta - capacity)
        end = offset + steps if active is None else torch.where(active, offset + steps, offset)
        pos_k = torch.where(slots >= end.view(-1, 1), torch.full_like(pos_k, -1), pos_k)
        pos_q = offset.view(-1, 1, 1) + t.view(-1, 1)
        age = pos_q - pos_k.view(-1, 1, capacity)
        mask = (pos_k.view(-1, 1, capacity) >= 0) & (age >= 0) & (age < capacity)
        return _StepGeometry(angles.cos(), angles.sin(), write_index, mask[:, None])

    @staticmethod
    def _rope(x: torch.Tensor, g: _StepGeometry) -> torch.Tensor:
        b, h, t, d = x.shape
        pairs = x.view(b, h, t, d // 2, 2)
        re, im = pairs[..., 0].float(), pairs[..., 1].float()
        out_re = re * g.cos - im * g.sin
        out_im = re * g.sin + im * g.cos
        return torch.stack([out_re.to(x.dtype), out_im.to(x.dtype)], dim=-1).view(b, h, t, d)

    def stream(
        self,
        x: torch.Tensor,
        kv: torch.Tensor,
        offset: torch.Tensor,
        active: torch.Tensor | None,
    ) -> torch.Tensor:
        """One step on ``x`` [B, C, T]; writes T entries per slot into ``kv``, advances ``offset``."""
        c = self.config
        x = x.transpose(1, 2)
        b, t, d = x.shape
        g = self._geometry(offset, t, active)
        for i, layer in enumerate(self.transformer.layers):
            assert isinstance(layer, _Layer)
            h = layer.norm1(x)
            qkv = F.linear(h, layer.self_attn.in_proj_weight)
            qkv = qkv.view(b, t, 3, c.transformer_heads, c.head_dim).permute(2, 0, 3, 1, 4)
            q, k = self._rope(qkv[0], g), self._rope(qkv[1], g)
            # every row is written; an inactive row's entries lie past its position and are
            # overwritten by its next active step before anything can attend to them
            kv[i, 0].scatter_(2, g.write_index, k)
            kv[i, 1].scatter_(2, g.write_index, qkv[2])
            a = F.scaled_dot_product_attention(q, kv[i, 0], kv[i, 1], g.mask)
            a = layer.self_attn.out_proj(a.transpose(1, 2).reshape(b, t, d))
            x = x + layer.layer_scale_1.scale * a
            h = layer.norm2(x)
            f = layer.linear2(F.gelu(layer.linear1(h)))
            x = x + layer.layer_scale_2.scale * f
        _advance(offset, t, active)
        return x.transpose(1, 2)


def _advance(offset: torch.Tensor, steps: int, active: torch.Tensor | None) -> None:
    if active is None:
        offset.add_(steps)
    else:
        offset.copy_(torch.where(active, offset + steps, offset))
