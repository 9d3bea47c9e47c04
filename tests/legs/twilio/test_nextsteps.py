"""NextSteps: the decisions the <Connect action> and <Dial action> read, bounded and expiring."""

from __future__ import annotations

import pytest

from voicegate.contracts import TransferTarget
from voicegate.legs.twilio.nextsteps import DIAL, HANGUP, NextStep, NextSteps


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_get_keeps_pop_forgets_put_replaces() -> None:
    steps = NextSteps()
    dial = NextStep("c1", DIAL, TransferTarget("human", "+14155550123", "h1"), "Sorry.")
    steps.put("CA1", dial)
    assert steps.get("CA1") == dial and steps.get("CA1") == dial
    steps.put("CA1", NextStep("c1", HANGUP))
    assert len(steps) == 1 and steps.get("CA1") == NextStep("c1", HANGUP)
    assert steps.pop("CA1") == NextStep("c1", HANGUP)
    assert steps.pop("CA1") is None and steps.get("nope") is None


def test_steps_expire_and_are_bounded() -> None:
    clock = Clock()
    steps = NextSteps(ttl_s=10.0, max_steps=2, clock=clock)
    steps.put("CA1", NextStep("c1", HANGUP))
    clock.t += 5
    steps.put("CA2", NextStep("c2", HANGUP))
    clock.t += 6  # CA1 is 11 s old
    assert steps.get("CA1") is None and steps.expired == 1
    assert steps.get("CA2") is not None
    steps.put("CA3", NextStep("c3", HANGUP))
    steps.put("CA4", NextStep("c4", HANGUP))
    assert steps.evicted == 1 and steps.get("CA2") is None and len(steps) == 2


def test_a_dial_step_needs_a_target() -> None:
    with pytest.raises(ValueError, match="target"):
        NextStep("c1", DIAL)
    with pytest.raises(ValueError, match="target"):
        NextStep("c1", DIAL, TransferTarget("human", ""))
    with pytest.raises(ValueError, match="dial"):
        NextStep("c1", "transfer")
