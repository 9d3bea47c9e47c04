"""Per-slot streaming state of the LM, preallocated once for ``n_slots`` slots.

Each slot has its own position (frames it has been through), its own ring of keys/values over
the attention window, its own delayed-token cache, sampling settings and RNG counter. Slots
advance independently; a slot is reset or loaded without touching the other rows.

Owns: ``LMState`` and the attention ring every batched decoder keeps (``new_kv_ring``,
``kv_columns``: the caller STT's state uses them too). Imports torch and numpy only (and the
lm config and math).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from voicegate.engine.lm._ops import is_scaled_kv_dtype
from voicegate.engine.lm.config import LMConfig

__all__ = ["LMState", "kv_columns", "new_kv_ring"]


def new_kv_ring(
    num_layers: int,
    n_slots: int,
    num_heads: int,
    context: int,
    head_dim: int,
    device: torch.device,
    dtype: torch.dtype,
    kv_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Zeroed keys/values [layers, 2, slots, heads, context + 1, head_dim] in ``kv_dtype`` (else
    ``dtype``) and, for an 8-bit ``kv_dtype`` (``is_scaled_kv_dtype``), their per-vector scales
    [layers, 2, slots, heads, context + 1] in bfloat16 (0.4% on a vector's scale, half of
    float32's bytes); else None. Column ``p % context`` holds position p; the last is scratch."""
    scales = None
    if is_scaled_kv_dtype(kv_dtype):
        scales = torch.zeros(
            num_layers, 2, n_slots, num_heads, context + 1, device=device, dtype=torch.bfloat16
        )
    kv = torch.zeros(
        num_layers,
        2,
        n_slots,
        num_heads,
        context + 1,
        head_dim,
        device=device,
        dtype=kv_dtype or dtype,
    )
    return kv, scales


def kv_columns(
    positions_host: npt.NDArray[np.int64], active: npt.NDArray[np.bool_], context: int, block: int
) -> int:
    """Key columns the next step must read: the most any active slot has filled, rounded up to
    a multiple of ``block`` (so a few step shapes serve), at most ``context``."""
    if not active.any():
        return min(context, block)
    filled = min(int(positions_host[active].max()) + 1, context)
    return min(context, -(-filled // block) * block)


@dataclass(eq=False, slots=True)
class LMState:
    """Preallocated buffers for ``n_slots`` slots; make with ``LM.new_state``.

    ``kv`` is [layers, 2, slots, heads, context + 1, head_dim]: column ``p % context`` holds
    position p; the extra last column is scratch that inactive slots write into.
    ``positions`` (device) and ``positions_host`` (numpy mirror, no sync needed) count the
    positions each slot has been through, prompt included.
    """

    config: LMConfig
    n_slots: int
    kv: torch.Tensor
    positions: torch.Tensor
    positions_host: npt.NDArray[np.int64]
    tokens: torch.Tensor  # [slots, 17, token_cache_size] delayed tokens (ring over positions)
    dep_kv: torch.Tensor  # [dep_layers, 2, slots, dep_heads, dep_q, dep_head_dim] scratch
    text_temperature: torch.Tensor  # [slots] float32; <= 0 is greedy
    text_top_k: torch.Tensor  # [slots] int64
    audio_temperature: torch.Tensor
    audio_top_k: torch.Tensor
    seeds: torch.Tensor  # [slots] int64
    counters: torch.Tensor  # [slots] int64: steps sampled since the slot was loaded
    # [slots, 17, context + 1] int64: the input tokens (delayed layout) each position was
    # stepped with, at column p % context (the last column is inactive rows' scratch); what a
    # re-anchor prefills again (``voicegate.engine.lm.reanchor``)
    history: torch.Tensor
    # [layers, 2, slots, heads, context + 1] bfloat16 when ``kv`` is 8-bit (``is_scaled_kv_dtype``):
    # column p's key (value) vector of a head is ``kv[...] * kv_scales[...]``; else None
    kv_scales: torch.Tensor | None = None

    @classmethod
    def allocate(
        cls,
        config: LMConfig,
        n_slots: int,
        device: torch.device,
        dtype: torch.dtype,
        kv_dtype: torch.dtype | None = None,
    ) -> LMState:
        c = config
        f32, i64 = torch.float32, torch.int64
        kv, scales = new_kv_ring(
            c.num_layers, n_slots, c.num_heads, c.context, c.head_dim, device, dtype, kv_dtype
        )
        return cls(
            config=c,
            n_slots=n_slots,
            kv=kv,
            positions=torch.zeros(n_slots, device=device, dtype=i64),
            positions_host=np.zeros(n_slots, dtype=np.int64),
            tokens=torch.full(
                (n_slots, c.num_codebooks, c.token_cache_size), -2, device=device, dtype=i64
            ),
            dep_kv=torch.zeros(
                c.dep_num_layers,
                2,
                n_slots,
                c.dep_num_heads,
                c.dep_q,
                c.dep_head_dim,
                device=device,
                dtype=dtype,
            ),
            text_temperature=torch.full((n_slots,), 0.7, device=device, dtype=f32),
            text_top_k=torch.full((n_slots,), 25, device=device, dtype=i64),
            audio_temperature=torch.full((n_slots,), 0.8, device=device, dtype=f32),
            audio_top_k=torch.full((n_slots,), 250, device=device, dtype=i64),
            seeds=torch.zeros(n_slots, device=device, dtype=i64),
            counters=torch.zeros(n_slots, device=device, dtype=i64),
            history=torch.zeros(n_slots, c.num_codebooks, c.context + 1, device=device, dtype=i64),
            kv_scales=scales,
        )

    @property
    def kv_bytes_per_slot(self) -> int:
        scales = self.kv_scales
        extra = 0 if scales is None else scales[:, :, 0].numel() * scales.element_size()
        return self.kv[:, :, 0].numel() * self.kv.element_size() + extra

    @staticmethod
    def bytes_per_slot(config: LMConfig, dtype: torch.dtype) -> int:
        """Device bytes one slot's buffers take (to size the batch before allocating it)."""
        c = config
        item = torch.empty((), dtype=dtype).element_size()
        kv = c.num_layers * 2 * c.num_heads * (c.context + 1) * c.head_dim * item
        dep = c.dep_num_layers * 2 * c.dep_num_heads * c.dep_q * c.dep_head_dim * item
        small = (1 + c.num_codebooks * c.token_cache_size + 6) * 8
        history = c.num_codebooks * (c.context + 1) * 8
        return kv + dep + small + history
