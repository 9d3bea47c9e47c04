"""BargeInTracker decisions on synthetic timelines."""

from __future__ import annotations

import pytest

from voicegate.calls.bargein import BargeInPhase, BargeInTracker
from voicegate.errors import InvalidStateError


def test_fires_when_model_yields_after_onset() -> None:
    t = BargeInTracker(grace_ms=500)
    assert t.on_caller_onset(1000, is_agent_audible=True, model_silent_since_ms=None) is None
    assert t.phase is BargeInPhase.PENDING
    assert t.on_model_silent(1300) == 1000
    assert t.phase is BargeInPhase.IDLE
    assert t.on_model_silent(1400) is None  # once


def test_no_barge_in_when_agent_was_not_audible() -> None:
    t = BargeInTracker()
    assert t.on_caller_onset(1000, is_agent_audible=False, model_silent_since_ms=None) is None
    assert t.on_model_silent(1300) is None


def test_late_vad_confirmation_after_the_model_already_yielded() -> None:
    t = BargeInTracker()
    # the model fell silent at 1150, the VAD confirmed (backdated) onset 1000 only later
    assert t.on_caller_onset(1000, is_agent_audible=True, model_silent_since_ms=1150) == 1000
    # the agent had finished its turn before the caller started: a normal turn, not a barge-in
    assert t.on_caller_onset(2000, is_agent_audible=True, model_silent_since_ms=1950) is None


def test_agent_carrying_on_past_a_backchannel_is_not_a_barge_in() -> None:
    t = BargeInTracker(grace_ms=500)
    t.on_caller_onset(1000, is_agent_audible=True, model_silent_since_ms=None)
    t.on_caller_stop(1300)  # "mm-hm"
    assert t.on_model_silent(4000) is None  # the agent ended its sentence much later
    t.on_caller_onset(5000, is_agent_audible=True, model_silent_since_ms=None)
    t.on_caller_stop(5600)
    assert t.on_model_silent(5900) == 5000  # within the grace after the caller stopped


def test_illegal_transition_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    from voicegate.calls import bargein

    t = BargeInTracker()
    t.on_caller_onset(1000, is_agent_audible=True, model_silent_since_ms=None)
    monkeypatch.setitem(bargein._TRANSITIONS, BargeInPhase.PENDING, frozenset())
    with pytest.raises(InvalidStateError, match="cannot go from pending to idle"):
        t.on_model_silent(1200)


def test_a_yield_long_after_the_onset_is_the_agent_finishing() -> None:
    t = BargeInTracker(grace_ms=300, max_latency_ms=2000)
    t.on_caller_onset(1000, is_agent_audible=True, model_silent_since_ms=None)
    assert t.on_model_silent(3500) is None
    t.on_caller_onset(5000, is_agent_audible=True, model_silent_since_ms=None)
    assert t.on_model_silent(6900) == 5000
