"""Slot sizing arithmetic."""

from __future__ import annotations

from voicegate.engine.capacity import (
    ACTIVATION_BYTES_PER_SLOT,
    ACTIVATION_MARGIN,
    GIB,
    RESERVE_MIN_BYTES,
    SECOND_MODEL_RESERVE_BYTES,
    slots_that_fit,
)


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


def test_activations_are_counted_per_slot_whatever_the_cache_dtype() -> None:
    """An fp8 slot's state is half a bf16 one's, its activations are not (H200: ~15 MiB per
    slot either way): the estimate adds them per slot, not in proportion to the state."""
    fp8_state = int(0.749 * GIB)
    budget = slots_that_fit(int(119.1 * GIB), int(139.7 * GIB), fp8_state)
    assert budget.per_slot_bytes == int(fp8_state * ACTIVATION_MARGIN) + ACTIVATION_BYTES_PER_SLOT
    peak = budget.fit * (fp8_state + 15 * (1 << 20))  # states + measured activations
    assert peak <= budget.free_bytes - budget.reserve_bytes
    # the proportional margin alone admitted slots whose activations did not fit the reserve
    old_fit = int((budget.free_bytes - budget.reserve_bytes) // (fp8_state * ACTIVATION_MARGIN))
    assert old_fit > budget.fit


def test_a_second_model_in_the_tick_keeps_more_in_reserve() -> None:
    per_slot = int(1.56 * GIB)
    alone = slots_that_fit(int(119.1 * GIB), int(139.7 * GIB), per_slot)
    with_stt = slots_that_fit(int(119.1 * GIB), int(139.7 * GIB), per_slot, second_model=True)
    assert with_stt.reserve_bytes == alone.reserve_bytes + SECOND_MODEL_RESERVE_BYTES
    assert with_stt.fit * with_stt.per_slot_bytes <= with_stt.free_bytes - with_stt.reserve_bytes
    assert with_stt.fit < alone.fit
