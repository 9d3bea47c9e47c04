"""``Retransmission`` on an injected clock: the 2xx is repeated on T1 doubling to T2 and given up
at exactly 64*T1 (RFC 3261 13.3.1.4, 17.2.1), with the default timers and in no real time."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

from voicegate.legs.sip import SipStats, SipTimers
from voicegate.legs.sip.transaction import Retransmission


class _Handle:
    def __init__(self) -> None:
        self.is_cancelled = False

    def cancel(self) -> None:
        self.is_cancelled = True


class FakeClock:
    """A scheduler whose time moves only when ``run`` pops the next timer."""

    def __init__(self) -> None:
        self.now = 0.0
        self._timers: list[tuple[float, int, _Handle, Callable[[], object]]] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], object], /) -> _Handle:
        handle = _Handle()
        heapq.heappush(self._timers, (when, next(self._order), handle, callback))
        return handle

    def run(self) -> None:
        while self._timers:
            when, _, handle, callback = heapq.heappop(self._timers)
            if not handle.is_cancelled:
                self.now = max(self.now, when)
                callback()


def test_unacknowledged_2xx_gives_up_at_exactly_64_t1() -> None:
    clock, timers = FakeClock(), SipTimers()  # the defaults: T1 0.5 s, T2 4 s
    sent: list[float] = []
    gave_up: list[float] = []
    Retransmission(
        lambda data: sent.append(clock.now),
        b"SIP/2.0 200 OK\r\n\r\n",
        timers,
        SipStats(),
        lambda: gave_up.append(clock.now),
        is_reliable=False,
        scheduler=clock,
    )
    clock.run()
    assert sent == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert gave_up == [64 * timers.t1_s] == [32.0]


def test_give_up_follows_t1_and_stop_cancels_it() -> None:
    clock, timers = FakeClock(), SipTimers(t1_s=0.02, t2_s=0.08)
    gave_up: list[float] = []
    Retransmission(
        lambda data: None, b"SIP/2.0 486 Busy\r\n\r\n", timers, SipStats(),
        lambda: gave_up.append(clock.now), is_reliable=True, scheduler=clock,
    )  # fmt: skip
    stopped = Retransmission(
        lambda data: None, b"SIP/2.0 200 OK\r\n\r\n", timers, SipStats(),
        lambda: gave_up.append(-1.0), is_reliable=False, scheduler=clock,
    )  # fmt: skip
    stopped.stop()
    clock.run()
    assert gave_up == [64 * 0.02]
