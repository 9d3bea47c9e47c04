"""How late the event loop runs what is due: the wait every call's next message sees.

A loop that is busy with other calls' work, a garbage collection or a blocking call runs each
ready callback late; a caller frame that waits more than the framer's margin (8 ms) misses its
engine tick (a slot underrun, then an overrun), and a send tick that waits a frame is late.
``LoopLag.run`` sleeps ``interval_s`` at a time on the loop and records how long after its due
time it woke, as ``voicegate_event_loop_lag_seconds``: a stall of length d is caught with
probability about d / interval, so the histogram's tail counts the stalls that matter.
Each wake-up costs one timer callback (50 a second at the default 20 ms).

``peak_s`` is the recent worst lateness: the largest probe, decaying by half every
``PEAK_HALF_LIFE_S``. A Twilio stream sizes its reply cushion from it (``twilio.stream``): a
loop that keeps time costs the caller no delay, one that has run late lately buys that much.

Owns: LoopLag. Imports voicegate.histogram; asyncio only in ``run``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from voicegate.histogram import Timings

__all__ = ["LoopLag"]

INTERVAL_S = 0.02
PEAK_HALF_LIFE_S = 10.0  # a loop that ran late a few times a minute keeps its cushion
_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25)


class LoopLag(Timings):
    """The loop's lateness at each probe, as a histogram; one per event loop."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(
            "voicegate_event_loop_lag_seconds",
            "How late the event loop woke a probe due every 20 ms (its wait for other work).",
            _BUCKETS,
        )
        self._clock = clock
        self.due = float("inf")  # when the probe should wake next (read by voicegate.stalls)
        self.peak_s = 0.0  # the recent worst lateness (decaying; see the module docstring)

    async def run(self, interval_s: float = INTERVAL_S) -> None:
        """Probe forever on the running loop (cancel to stop)."""
        clock = self._clock
        due = self.due = clock() + interval_s
        decay = 0.5 ** (interval_s / PEAK_HALF_LIFE_S)
        while True:
            await asyncio.sleep(max(0.0, due - clock()))
            now = clock()
            lag = max(0.0, now - due)
            self.observe(lag)
            peak = self.peak_s * decay
            self.peak_s = lag if lag > peak else peak
            due += interval_s
            if due < now:
                due = now + interval_s  # after a stall, probe on from now (no burst)
            self.due = due
