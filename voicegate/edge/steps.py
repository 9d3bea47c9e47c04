"""Twilio's next steps shared by every edge worker.

A transfer or hang-up is recorded by the worker whose WebSocket carried the call, but Twilio's
``<Connect action>`` and ``<Dial action>`` requests open new connections, which the kernel may
hand to another worker. ``SharedNextSteps`` keeps each worker's copy in step: every ``put`` and
``pop`` goes to the engine process as a ``NextStepNote``, which passes it to every other worker
(``host``), where the control reader thread applies it (``apply``). The notes cross before
Twilio learns the stream closed, so the request finds the step in whichever worker gets it.

Owns: SharedNextSteps. Imports the Twilio leg's NextSteps and the edge messages.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from voicegate.edge.messages import NextStepNote
from voicegate.legs.twilio.nextsteps import NextStep, NextSteps

__all__ = ["SharedNextSteps"]


class SharedNextSteps(NextSteps):
    """``NextSteps`` whose changes reach the other workers through ``send``; thread-safe."""

    def __init__(self, send: Callable[[NextStepNote], None]) -> None:
        super().__init__()
        self._send = send
        self._lock = threading.Lock()  # the loop and the control reader thread

    def __bool__(self) -> bool:
        return True  # empty is still the store to use (TwilioLeg takes ``next_steps or ...``)

    def put(self, call_sid: str, step: NextStep) -> None:
        with self._lock:
            super().put(call_sid, step)
        self._send(NextStepNote(call_sid, step))

    def get(self, call_sid: str) -> NextStep | None:
        with self._lock:
            return super().get(call_sid)

    def pop(self, call_sid: str) -> NextStep | None:
        with self._lock:
            step = super().pop(call_sid)
        self._send(NextStepNote(call_sid, None))
        return step

    def apply(self, note: NextStepNote) -> None:
        """Another worker's change (any thread)."""
        with self._lock:
            if note.step is None:
                super().pop(note.call_sid)
            else:
                super().put(note.call_sid, note.step)
