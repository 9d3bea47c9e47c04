"""How many slots fit: per-slot state bytes against the device's free memory.

The KV ring dominates (7B, bf16, 3000 frames: 1.47 GiB per slot). The per-slot figure is
measured by allocating one slot's state on the device, so it follows whatever the LM and Mimi
actually keep; a reserve stays free for activations, persona prompt states and graphs.

Owns: slots_that_fit, SlotBudget. Imports torch lazily (only when measuring on a device).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RESERVE_FRACTION", "RESERVE_MIN_BYTES", "SlotBudget", "slots_that_fit"]

log = logging.getLogger("voicegate.engine")

GIB = 1 << 30
RESERVE_MIN_BYTES = 4 * GIB  # activations, prompt states of several personas, CUDA graphs
RESERVE_FRACTION = 0.04
ACTIVATION_MARGIN = 1.05  # per-slot activations and sampling scratch on top of the state


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
    free_bytes: int, total_bytes: int, per_slot_bytes: int, cap: int = 0
) -> SlotBudget:
    """Slots whose state fits ``free_bytes`` after the reserve; ``cap`` > 0 limits it."""
    reserve = max(RESERVE_MIN_BYTES, int(total_bytes * RESERVE_FRACTION))
    per_slot = max(1, int(per_slot_bytes * ACTIVATION_MARGIN))
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
