"""How many slots fit: per-slot state bytes against the device's free memory.

The KV ring dominates (7B, bf16, 3000 frames: 1.47 GiB per slot). The per-slot figure is
measured by allocating one slot's state on the device, so it follows whatever the LM and Mimi
actually keep; a reserve stays free for activations, persona prompt states and graphs.

Admission from measurement: at warm-up the CUDA model times its worst tick (every row's
attention window full) with one row and with all rows active; ``realtime_slots`` turns the two
into the most calls whose worst tick stays within the frame (linear in between: the tick's
growing part is the KV cache read, proportional to the calls).

Owns: slots_that_fit, SlotBudget, realtime_slots. Imports torch lazily (only when measuring on a device).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "ACTIVATION_BYTES_PER_SLOT",
    "RESERVE_FRACTION",
    "RESERVE_MIN_BYTES",
    "SECOND_MODEL_RESERVE_BYTES",
    "TICK_BUDGET_MS",
    "SlotBudget",
    "realtime_slots",
    "slots_that_fit",
]

log = logging.getLogger("voicegate.engine")

GIB = 1 << 30
MIB = 1 << 20
# Activations, graph pools, persona prompt states. Measured on an H100 (7B shapes, CUDA graphs,
# bench/RESULTS.md): peak allocation grew 1.486 GiB per bf16 slot whose state is 1.483 GiB, and
# at 42 slots the peak (with the bench's extra phase graphs) left 1.75 GiB of the card unused.
RESERVE_MIN_BYTES = 1 * GIB
RESERVE_FRACTION = 0.01
ACTIVATION_MARGIN = 1.003  # per-slot activations and sampling scratch on top of the state
# ... plus a fixed amount per slot, whatever the cache's dtype: measured on an H200 (7B, CUDA
# graphs, compiled kernels; /work/.device/4/stt1b.json): the peak allocation beyond weights
# and states was 1.18 GiB with 80 bf16 slots and 2.19 GiB with 148 fp8 ones, ~15 MiB per slot
# (Mimi's float32 streams, sampling, the decode kernel's partials), which a margin in
# proportion to the state (4.5 MiB of a bf16 slot, 2.2 MiB of an fp8 one) undercounted.
ACTIVATION_BYTES_PER_SLOT = 16 * MIB
# A second model in the tick (the caller STT) has its own CUDA graphs (their memory pool),
# compiled kernels and warm-up streams beside the LM's: kept free on top of the reserve. The
# same H200 run: 80 bf16 slots without the STT ran, 75 with it (the state 0.5 GiB smaller)
# did not, so the STT's share beyond its state exceeds 0.5 GiB.
SECOND_MODEL_RESERVE_BYTES = 1 * GIB
TICK_BUDGET_MS = 80.0  # one frame: a tick slower than this is late


@dataclass(frozen=True, slots=True)
class SlotBudget:
    """The arithmetic behind the slot count (logged at start)."""

    free_bytes: int
    total_bytes: int
    per_slot_bytes: int
    reserve_bytes: int
    slots: int  # what the engine takes: ``fit``, limited by the configured cap
    fit: int  # slots whose state fits the free memory

    def describe(self) -> str:
        capped = f" (capped at {self.slots})" if self.slots < self.fit else ""
        return (
            f"{self.fit} slots fit{capped}: free {self.free_bytes / GIB:.1f} GiB of "
            f"{self.total_bytes / GIB:.1f} GiB, {self.per_slot_bytes / GIB:.3f} GiB per slot, "
            f"{self.reserve_bytes / GIB:.1f} GiB kept in reserve"
        )


def slots_that_fit(
    free_bytes: int,
    total_bytes: int,
    per_slot_bytes: int,
    cap: int = 0,
    *,
    second_model: bool = False,
) -> SlotBudget:
    """Slots whose state (``per_slot_bytes``) and activations fit ``free_bytes`` after the
    reserve (larger with a ``second_model`` in the tick: the caller STT); ``cap`` > 0 limits
    it."""
    reserve = max(RESERVE_MIN_BYTES, int(total_bytes * RESERVE_FRACTION))
    if second_model:
        reserve += SECOND_MODEL_RESERVE_BYTES
    per_slot = max(1, int(per_slot_bytes * ACTIVATION_MARGIN) + ACTIVATION_BYTES_PER_SLOT)
    fit = int(max(0, (free_bytes - reserve) // per_slot))
    slots = min(fit, cap) if cap > 0 else fit
    return SlotBudget(free_bytes, total_bytes, per_slot, reserve, slots, fit)


def measure_state_bytes(allocate_one: Callable[[], object], device: object) -> int:
    """Bytes one slot's state takes on a CUDA ``device`` (allocate, measure, free)."""
    import torch

    torch.cuda.synchronize(device)  # type: ignore[arg-type]
    before = torch.cuda.memory_allocated(device)  # type: ignore[arg-type]
    state = allocate_one()
    torch.cuda.synchronize(device)  # type: ignore[arg-type]
    used = torch.cuda.memory_allocated(device) - before  # type: ignore[arg-type]
    del state
    return int(used)


def realtime_slots(
    rows: int, one_ms: float, all_ms: float, budget_ms: float = TICK_BUDGET_MS
) -> int:
    """Calls to admit so that the worst-case tick stays within ``budget_ms``.

    ``one_ms`` / ``all_ms``: the worst tick measured with one row / all ``rows`` active, every
    window full. 0 when even one call is too slow.
    """
    if rows < 1 or one_ms > budget_ms:
        return 0
    if all_ms <= budget_ms or rows == 1:
        return rows
    per_call = max(1e-9, (all_ms - one_ms) / (rows - 1))
    return max(1, min(rows, 1 + int((budget_ms - one_ms) / per_call)))
