"""Slot sizing arithmetic."""

from __future__ import annotations

from voicegate.engine.capacity import GIB, RESERVE_MIN_BYTES, slots_that_fit


def test_slots_that_fit_keeps_a_reserve_and_honours_the_cap() -> None:
    per_slot = int(1.47 * GIB)
    budget = slots_that_fit(free_bytes=60 * GIB, total_bytes=80 * GIB, per_slot_bytes=per_slot)
    assert budget.reserve_bytes == RESERVE_MIN_BYTES
    assert budget.fit == budget.slots
    assert budget.fit * budget.per_slot_bytes <= 60 * GIB - budget.reserve_bytes
    assert (budget.fit + 1) * budget.per_slot_bytes > 60 * GIB - budget.reserve_bytes
    capped = slots_that_fit(60 * GIB, 80 * GIB, per_slot, cap=3)
    assert (capped.slots, capped.fit) == (3, budget.fit)
    assert "capped at 3" in capped.describe()
    assert slots_that_fit(2 * GIB, 80 * GIB, per_slot).slots == 0
