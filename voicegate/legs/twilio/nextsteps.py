"""What Twilio does after a call leaves the media stream, decided by the gateway per CallSid.

A transfer, an agent hang-up or an overflow is decided while the stream runs (or at the voice
webhook); Twilio learns it only when it requests the ``<Connect action>`` after the socket
closed, and later the ``<Dial action>`` with the dialled call's outcome. ``NextSteps`` keeps
the decision between those requests: keyed by CallSid, bounded, and expiring (a dialled call
may last hours before its ``<Dial action>`` comes: Twilio's default ``timeLimit`` is 4 h).

It lives in this process: the ``<Connect action>`` must reach the replica that closed the
stream (one gateway, or sticky routing by CallSid); see telephony/README.md.

Owns: ``NextStep``, ``NextSteps``. Pure: no asyncio, no I/O.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from voicegate.contracts import TransferTarget

__all__ = ["DIAL", "HANGUP", "NextStep", "NextSteps"]

DIAL = "dial"
HANGUP = "hangup"
DEFAULT_TTL_S = 4 * 3600.0 + 600.0  # Dial's default timeLimit, plus its ringing
MAX_STEPS = 10_000


@dataclass(frozen=True, slots=True)
class NextStep:
    """``dial`` ``target`` (then say ``fallback_say`` if nobody answers), or ``hangup``.

    ``trigger`` is what asked for it (``transfer``, ``overflow``, ``agent_hangup``); ``t0`` the
    monotonic start of the call as the leg knew it (0 when none started), for event times.
    """

    call_id: str
    kind: str
    target: TransferTarget | None = None
    fallback_say: str = ""
    trigger: str = ""
    t0: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in (DIAL, HANGUP):
            raise ValueError(f"next step must be {DIAL!r} or {HANGUP!r}, got {self.kind!r}")
        if self.kind == DIAL and (self.target is None or not self.target.to):
            raise ValueError(f"call {self.call_id}: a dial step needs a target")


class NextSteps:
    """CallSid -> ``NextStep``; the oldest is dropped past ``max_steps``, any past ``ttl_s``."""

    def __init__(
        self,
        ttl_s: float = DEFAULT_TTL_S,
        max_steps: int = MAX_STEPS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl_s = ttl_s
        self._max = max_steps
        self._clock = clock
        self._steps: OrderedDict[str, tuple[float, NextStep]] = OrderedDict()
        self.expired = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._steps)

    def put(self, call_sid: str, step: NextStep) -> None:
        """Record (or replace) the next step of ``call_sid``."""
        self._purge()
        steps = self._steps
        steps.pop(call_sid, None)
        while len(steps) >= self._max:
            steps.popitem(last=False)
            self.evicted += 1
        steps[call_sid] = (self._clock() + self._ttl_s, step)

    def get(self, call_sid: str) -> NextStep | None:
        """The step recorded for ``call_sid`` (kept: the ``<Dial action>`` needs it again)."""
        self._purge()
        entry = self._steps.get(call_sid)
        return entry[1] if entry is not None else None

    def pop(self, call_sid: str) -> NextStep | None:
        """The step recorded for ``call_sid``, forgotten."""
        self._purge()
        entry = self._steps.pop(call_sid, None)
        return entry[1] if entry is not None else None

    def _purge(self) -> None:
        now = self._clock()
        steps = self._steps
        while steps:
            sid, (expires_at, _) = next(iter(steps.items()))
            if expires_at > now:
                break
            del steps[sid]
            self.expired += 1
