"""Per-slot sampling: temperature and top-k as tensors, noise from a per-slot counter RNG.

Each slot has its own seed and counter, and its noise is a hash of (seed, counter, stream,
candidate): a slot's draws never depend on which other slots are in the batch or how many
rows are computed, the whole thing is batched tensor ops (no host sync, CUDA-graph safe),
and a call replays exactly from its seed. Temperature <= 0 means greedy (argmax).

Owns: ``sample_top_k``, the hash and its noise. Imports torch only.
"""

from __future__ import annotations

import torch

__all__ = ["gumbel_noise", "sample_top_k", "uniform_noise"]

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


def uniform_noise(
    seeds: torch.Tensor, counters: torch.Tensor, streams: int, n: int
) -> torch.Tensor:
    """Uniform (0, 1) float32 [B, streams, n] from a splitmix64-style hash; int64 products wrap.

    Stream ``s`` of slot ``b`` depends only on (seeds[b], counters[b], s): never on the batch.
    """
    idx = torch.arange(streams * n, device=seeds.device, dtype=torch.int64).view(streams, n)
    x = seeds[:, None, None] * _K_SEED + counters[:, None, None] * _K_COUNT + idx[None] * _K_INDEX
    x = (x ^ _shr(x, 30)) * _MIX_1
    x = (x ^ _shr(x, 27)) * _MIX_2
    x = x ^ _shr(x, 31)
    return (_shr(x, 40).float() + 0.5) * (1.0 / (1 << 24))


def gumbel_noise(seeds: torch.Tensor, counters: torch.Tensor, streams: int, n: int) -> torch.Tensor:
    """Gumbel(0, 1) noise [B, streams, n] for ``streams`` sampling sites of one step."""
    return -torch.log(-torch.log(uniform_noise(seeds, counters, streams, n)))


def sample_top_k(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    noise: torch.Tensor,
    k_cap: int,
) -> torch.Tensor:
    """One token per row of ``logits`` [B, V] with per-row temperature [B] and top_k [B].

    Draws from softmax(logits / T) restricted to the ``top_k`` most likely tokens (top_k <= 0
    or above ``k_cap`` means ``k_cap``), the distribution of the reference's ``sample_token``,
    by the Gumbel-max race over the candidates with ``noise`` [B, >= k_cap] (``gumbel_noise``).
    Temperature <= 0 is greedy.
    """
    logits = logits.float()
    k_cap = min(k_cap, logits.shape[-1])
    is_sampled = temperature > 0
    scaled = logits / torch.where(is_sampled, temperature, torch.ones_like(temperature))[:, None]
    top_vals, top_idx = torch.topk(scaled, k_cap, dim=-1)
    k = torch.where((top_k <= 0) | (top_k > k_cap), torch.full_like(top_k, k_cap), top_k)
    keep = torch.arange(k_cap, device=logits.device)[None] < k[:, None]
    race = top_vals.masked_fill(~keep, float("-inf")) + noise[:, :k_cap]
    sampled = top_idx.gather(-1, race.argmax(-1, keepdim=True))[:, 0]
    return torch.where(is_sampled, sampled, logits.argmax(-1))
