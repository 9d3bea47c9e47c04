"""SIP transaction plumbing for the UAS (RFC 3261 17): timer values, where to answer, retransmission.

``Retransmission`` sends a message now and again at T1, 2*T1, ... capped at T2 until stopped,
and calls ``on_give_up`` at 64*T1 exactly (Timer G/H for final INVITE responses, the 2xx
retransmission of 13.3.1.4, Timer E/F for our BYE): the give-up timer runs on its own and is not
rounded up to the next retransmission. ``Peer`` says how to answer a message.

Owns: ``SipTimers``, ``Peer``, ``Retransmission``. Needs a running event loop for timers only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from voicegate.legs.sip.metrics import SipStats

__all__ = ["Peer", "Retransmission", "Scheduler", "SipTimers"]


class _Cancellable(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """The part of the event loop that timers use (tests pass a clock of their own)."""

    def time(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], object], /) -> _Cancellable: ...


@dataclass(frozen=True, slots=True)
class SipTimers:
    """RFC 3261 17.1.1.1 timer values (seconds); tests shorten them."""

    t1_s: float = 0.5
    t2_s: float = 4.0

    @property
    def timeout_s(self) -> float:  # 64*T1: Timer B/F/H, the 2xx retransmission limit
        return 64 * self.t1_s


@dataclass(frozen=True, slots=True)
class Peer:
    """Where a message came from and how to answer it (UDP address or TCP connection)."""

    transport: str  # "UDP" | "TCP"
    host: str
    port: int
    send: Callable[[bytes], None]


class Retransmission:
    """Sends ``data`` now and again at T1, 2*T1, ... capped at T2 until stopped or 64*T1."""

    def __init__(
        self,
        send: Callable[[bytes], None],
        data: bytes,
        timers: SipTimers,
        stats: SipStats,
        on_give_up: Callable[[], None] | None,
        *,
        is_reliable: bool,
        scheduler: Scheduler | None = None,
    ) -> None:
        self._send = send
        self._data = data
        self._timers = timers
        self._stats = stats
        self._on_give_up = on_give_up
        self._interval = timers.t1_s
        self._loop: Scheduler = scheduler or asyncio.get_running_loop()
        now = self._loop.time()
        self._deadline = now + timers.timeout_s
        self._handle: _Cancellable | None = None
        send(data)
        # 2xx retransmission is the UAS core's job on every transport (13.3.1.4); for
        # non-2xx over TCP only the give-up timer runs
        if not is_reliable or data.startswith(b"SIP/2.0 2"):
            self._next_at = now + self._interval
            self._schedule()
        else:
            self._handle = self._loop.call_at(self._deadline, self._give_up)

    def _schedule(self) -> None:
        # the give-up is due at 64*T1 itself, not at the first retransmission past it (which
        # came up to T2 late: 35.5 s instead of 32 s with the default timers)
        if self._next_at >= self._deadline:
            self._handle = self._loop.call_at(self._deadline, self._give_up)
        else:
            self._handle = self._loop.call_at(self._next_at, self._fire)

    def _fire(self) -> None:
        try:
            self._send(self._data)
        except Exception:
            pass
        self._stats.responses_retransmitted += 1
        self._interval = min(self._interval * 2, self._timers.t2_s)
        self._next_at += self._interval
        self._schedule()

    def _give_up(self) -> None:
        self._handle = None
        if self._on_give_up is not None:
            self._on_give_up()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
