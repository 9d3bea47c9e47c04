"""Barge-in decisions: when the caller's speech made the agent yield.

The model is full duplex: it hears the caller and stops itself. A barge-in is the caller starting
to speak while the agent is audible, followed by the model's output falling silent (after the
caller's onset, within ``max_latency_ms`` of it, and while the caller still speaks or within
``grace_ms`` of them stopping; the model must not have been silent already at the onset). The
Call then clears what is queued at the far side and in its own ring.

Both inputs are on the call's timelines in ms since the call started: the caller's onset on
the caller clock (samples received), the agent's audibility on the playout clock (samples
the leg pulled). They run at the same real-time rate from the same origin.

Owns: BargeInTracker and its phases, BargeInRecord. Pure: imports nothing of asyncio, audio or the engine.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from voicegate.errors import InvalidStateError

__all__ = ["BargeInPhase", "BargeInRecord", "BargeInTracker"]


@dataclass(frozen=True, slots=True)
class BargeInRecord:
    """One barge-in: times in ms since the call started."""

    caller_onset_ms: int  # caller clock (the VAD's backdated onset)
    agent_stop_ms: int  # when the caller stopped hearing the agent
    latency_ms: int
    discarded_ms: int  # queued agent audio dropped here and at the far side
    cut_text: str


class BargeInPhase(enum.Enum):
    IDLE = "idle"  # nothing pending
    PENDING = "pending"  # the caller spoke over the agent; waiting for the model to yield


_TRANSITIONS: dict[BargeInPhase, frozenset[BargeInPhase]] = {
    BargeInPhase.IDLE: frozenset({BargeInPhase.PENDING}),
    BargeInPhase.PENDING: frozenset({BargeInPhase.IDLE}),
}


class BargeInTracker:
    """Decides when a barge-in fires; each ``on_*`` returning an int means "fire now".

    The returned int is the caller's onset (ms) that the barge-in answers. Usage::

        onset = tracker.on_caller_onset(onset_ms, is_agent_audible=..., model_silent_since_ms=...)
        tracker.on_caller_stop(stop_ms)
        onset = tracker.on_model_silent(silence_start_ms, caller_now_ms)
    """

    __slots__ = ("_caller_stop_ms", "_grace_ms", "_max_latency_ms", "_onset_ms", "_phase")

    def __init__(self, grace_ms: int = 300, max_latency_ms: int = 2000) -> None:
        self._grace_ms = grace_ms
        self._max_latency_ms = max_latency_ms
        self._phase = BargeInPhase.IDLE
        self._onset_ms = 0
        self._caller_stop_ms: int | None = None

    @property
    def phase(self) -> BargeInPhase:
        return self._phase

    @property
    def onset_ms(self) -> int:
        return self._onset_ms

    def _set_phase(self, phase: BargeInPhase) -> None:
        if phase is self._phase:
            return
        if phase not in _TRANSITIONS[self._phase]:
            raise InvalidStateError(
                f"barge-in: cannot go from {self._phase.value} to {phase.value}"
            )
        self._phase = phase

    def on_caller_onset(
        self, onset_ms: int, *, is_agent_audible: bool, model_silent_since_ms: int | None
    ) -> int | None:
        """The caller's VAD reported speech starting at ``onset_ms`` (backdated by the VAD).

        ``model_silent_since_ms`` is the caller-clock time at which the model's output fell
        silent, or None while the model is speaking.
        """
        self._caller_stop_ms = None
        if not is_agent_audible:
            self._set_phase(BargeInPhase.IDLE)
            return None
        if model_silent_since_ms is not None:
            # The VAD confirms onsets late: the model may already have yielded to this speech.
            self._set_phase(BargeInPhase.IDLE)
            return onset_ms if model_silent_since_ms >= onset_ms else None
        self._onset_ms = onset_ms
        self._set_phase(BargeInPhase.PENDING)
        return None

    def on_caller_stop(self, stop_ms: int) -> None:
        """The caller's VAD reported speech ending at ``stop_ms``."""
        self._caller_stop_ms = stop_ms

    def on_model_silent(self, silence_start_ms: int) -> int | None:
        """The model's output fell silent at ``silence_start_ms`` (caller clock)."""
        if self._phase is not BargeInPhase.PENDING:
            return None
        self._set_phase(BargeInPhase.IDLE)
        if not 0 <= silence_start_ms - self._onset_ms <= self._max_latency_ms:
            return None
        stop = self._caller_stop_ms
        if stop is not None and silence_start_ms > stop + self._grace_ms:
            return None  # the caller only backchannelled; the agent went on and ended later
        return self._onset_ms

    def cancel(self) -> None:
        """Forget a pending barge-in (the Call fired one itself, or the call ends)."""
        self._set_phase(BargeInPhase.IDLE)
