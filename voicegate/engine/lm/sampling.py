"""Per-slot sampling: temperature and top-k as tensors, noise from a per-slot counter RNG.

Each slot has its own seed and counter, and its noise is a hash of (seed, counter, stream,
candidate): a slot's draws never depend on which other slots are in the batch or how many
rows are computed, the whole thing is batched tensor ops (no host sync, CUDA-graph safe),
and a call replays exactly from its seed. Temperature <= 0 means greedy (argmax).

Owns: ``sample_top_k`` and the hash. Imports torch only.
"""

from __future__ import annotations

import torch

__all__ = ["sample_top_k"]

_MASK64 = (1 << 64) - 1


def _signed(x: int) -> int:
    x &= _MASK64
    return x - (1 << 64) if x >= 1 << 63 else x


_K_SEED = _signed(0x9E3779B97F4A7C15)
_K_COUNT = _signed(0xC2B2AE3D27D4EB4F)
_K_INDEX = _signed(0x165667B19E3779F9)
_MIX_1 = _signed(0xBF58476D1CE4E5B9)
_MIX_2 = _signed(0x94D049BB133111EB)


def _shr(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's ``>>`` is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def uniform_noise(seeds: torch.Tensor, counters: torch.Tensor, stream: int, n: int) -> torch.Tensor:
    """Uniform (0, 1) float32 [B, n] from a splitmix64-style hash; int64 products wrap."""
    idx = torch.arange(n, device=seeds.device, dtype=torch.int64) + stream * n
    x = seeds[:, None] * _K_SEED + counters[:, None] * _K_COUNT + idx[None] * _K_INDEX
    x = (x ^ _shr(x, 30)) * _MIX_1
    x = (x ^ _shr(x, 27)) * _MIX_2
    x = x ^ _shr(x, 31)
    return (_shr(x, 40).float() + 0.5) * (1.0 / (1 << 24))


def sample_top_k(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    seeds: torch.Tensor,
    counters: torch.Tensor,
    stream: int,
    k_cap: int,
) -> torch.Tensor:
    """One token per row of ``logits`` [B, V] with per-row temperature [B] and top_k [B].

    Draws from softmax(logits / T) restricted to the ``top_k`` most likely tokens (top_k <= 0
    or above ``k_cap`` means ``k_cap``), as the reference's ``sample_token`` does; the noise is
    the exponential race (``argmax(p / E)``), fed by ``uniform_noise``.
    """
    logits = logits.float()
    k_cap = min(k_cap, logits.shape[-1])
    is_sampled = temperature > 0
    scaled = logits / torch.where(is_sampled, temperature, torch.ones_like(temperature))[:, None]
    top_vals, top_idx = torch.topk(scaled, k_cap, dim=-1)
    k = torch.where((top_k <= 0) | (top_k > k_cap), torch.full_like(top_k, k_cap), top_k)
    keep = torch.arange(k_cap, device=logits.device)[None] < k[:, None]
    probs = torch.softmax(top_vals.masked_fill(~keep, float("-inf")), dim=-1)
    race = probs / -torch.log(uniform_noise(seeds, counters, stream, k_cap))
    sampled = top_idx.gather(-1, race.argmax(-1, keepdim=True))[:, 0]
    return torch.where(is_sampled, sampled, logits.argmax(-1))
