"""Engine faults never mean dead air: every live call goes to its overflow destination or ends,
no call is admitted, and the engine is rebuilt before calls are taken again.

Usage (wired by ``app``)::

    responder = FaultResponder(calls, events, overflow=numbers.overflow,
                               rebuild=engine.rebuild, registry=registry)
    engine.on_fault = responder.report        # any thread: hops to the loop
    ...
    await responder.aclose()

On a fault, on the event loop: an ``error`` event (code ``engine_fault``) per live call; then
``Call.transfer_to("overflow", to, "engine_fault", ...)`` where ``overflow(call.info.to)`` names a
destination, else ``Call.end(ENGINE_FAULT)``. A call still connected ``FAULT_DEADLINE_S`` later
(a persona's own transfer that failed, a leg that never answered) is ended then; an overflow
transfer still in progress gets until ``TRANSFER_DEADLINE_S``. Meanwhile ``CallManager`` admits
nothing (the legs answer busy, or overflow where they can), the blocking ``rebuild`` runs on a
worker thread (retried every ``REBUILD_RETRY_S`` while it fails, and again when the new engine
faults during the rebuild), and admission opens once it is done.

Owns: FaultResponder. Uses the engine only through ``FaultLike`` and the ``rebuild`` callable.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from voicegate.calls.call import Call
from voicegate.calls.manager import CallManager
from voicegate.contracts import EndReason, EventSink
from voicegate.events.schema import CallError

__all__ = ["FAULT_DEADLINE_S", "FaultLike", "FaultResponder"]

log = logging.getLogger("voicegate.calls")

FAULT_DEADLINE_S = 1.5  # the 2 s budget from the fault, less the watch's and the legs' share
TRANSFER_DEADLINE_S = 10.0  # an overflow transfer in progress (SIP REFER, NOTIFY) gets this long
REBUILD_RETRY_S = 5.0
FAULT_CODE = "engine_fault"


class FaultLike(Protocol):
    """What the responder needs of ``voicegate.engine.health.EngineFault``."""

    @property
    def kind(self) -> enum.Enum: ...

    @property
    def at(self) -> float:
        """When the fault was seen, ``time.monotonic()``."""
        ...

    def describe(self) -> str: ...


class FaultResponder:
    """Moves every call off a faulted engine, holds admission, and has the engine rebuilt."""

    def __init__(
        self,
        calls: CallManager,
        events: EventSink,
        *,
        overflow: Callable[[str], str],
        rebuild: Callable[[], None],
        registry: CollectorRegistry | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        retry_s: float = REBUILD_RETRY_S,
        deadline_s: float = FAULT_DEADLINE_S,
        transfer_deadline_s: float = TRANSFER_DEADLINE_S,
    ) -> None:
        self._calls = calls
        self._events = events
        self._overflow = overflow
        self._rebuild = rebuild
        self._retry_s = retry_s
        self._deadlines_s = (deadline_s, transfer_deadline_s)
        self._loop = loop or asyncio.get_running_loop()
        self._seq = 0  # faults seen; a rebuild that overlapped a newer fault runs again
        self._task: asyncio.Task[None] | None = None
        self._timers: list[asyncio.TimerHandle] = []
        self._is_closed = False
        self.last_fault: FaultLike | None = None
        self.faults = Counter(
            "voicegate_engine_faults",
            "Engine faults (raise: a tick raised; nan: non-finite audio; hang: a tick ran past "
            "the timeout); each moved every live call to overflow or ended it.",
            ["kind"],
            registry=registry,
        )
        self.rebuilds = Gauge(
            "voicegate_engine_rebuilds",
            "Engine rebuilds completed since the gateway started.",
            registry=registry,
        )
        self.last_fault_time = Gauge(
            "voicegate_engine_last_fault_time_seconds",
            "Unix time at which the last engine fault was seen (0: none since start).",
            registry=registry,
        )
        self.faulted = Gauge(
            "voicegate_engine_faulted",
            "1 from an engine fault until the rebuilt engine serves (no call admitted).",
            registry=registry,
        )

    @property
    def is_recovering(self) -> bool:
        return self._task is not None and not self._task.done()

    def report(self, fault: FaultLike) -> None:
        """Any thread (the engine's): hand the fault to the event loop."""
        try:
            self._loop.call_soon_threadsafe(self._on_fault, fault)
        except RuntimeError:  # the loop is closed: the gateway is gone anyway
            log.error("engine fault after shutdown: %s", fault.describe())

    def _on_fault(self, fault: FaultLike) -> None:
        if self._is_closed:
            log.error("engine fault during shutdown: %s", fault.describe())
            return
        detail = fault.describe()
        self._seq += 1
        self.last_fault = fault
        self.faults.labels(str(fault.kind.value)).inc()
        self.last_fault_time.set(time.time() - (time.monotonic() - fault.at))
        self.faulted.set(1)
        self._calls.hold_admission(detail)
        calls = self._calls.calls()
        log.error("%s: moving %d live calls off the engine", detail, len(calls))
        for call in calls:
            try:
                self._move(call, detail)
            except Exception:
                log.exception("call %s: engine fault handling failed", call.call_id)
                call.end(EndReason.ENGINE_FAULT, detail)
        if calls:
            first_s, final_s = self._deadlines_s
            later = self._loop.call_later
            self._timers.append(later(first_s, self._deadline, calls, detail, False))
            self._timers.append(later(final_s, self._deadline, calls, detail, True))
        if not self.is_recovering:
            self._task = self._loop.create_task(self._recover(), name="engine-rebuild")

    def _move(self, call: Call, detail: str) -> None:
        if not call.is_active:
            return
        info = call.info
        error = CallError(
            call_id=info.call_id,
            leg=info.leg,
            t_ms=call.now_ms,
            code=FAULT_CODE,
            message=detail[:2048],
            is_fatal=True,
        )
        try:
            self._events.emit(error)
        except Exception:
            log.exception("call %s: event dropped", call.call_id)
        if call.transfer_trigger is not None:
            return  # a transfer is on its way already; the deadline ends the call if it stays
        to = self._overflow(info.to)
        if to:
            call.transfer_to("overflow", to, FAULT_CODE, detail)
        else:
            call.end(EndReason.ENGINE_FAULT, detail)

    def _deadline(self, calls: list[Call], detail: str, is_final: bool) -> None:
        for call in calls:
            if not call.is_active:
                continue
            if not is_final and call.transfer_trigger == FAULT_CODE:
                continue  # the overflow transfer is under way: it has until the final deadline
            wait_s = self._deadlines_s[1 if is_final else 0]
            log.warning(
                "call %s: still connected %.1f s after an engine fault", call.call_id, wait_s
            )
            call.end(EndReason.ENGINE_FAULT, f"{detail} (still connected after {wait_s:g} s)")

    async def _recover(self) -> None:
        while True:
            seq = self._seq
            try:
                await asyncio.to_thread(self._rebuild)
            except Exception:
                log.exception("engine rebuild failed: retrying in %.0f s", self._retry_s)
                await asyncio.sleep(self._retry_s)
                continue
            self.rebuilds.inc()
            if seq == self._seq:
                break
            log.error("the engine faulted again during its rebuild: rebuilding again")
        self.faulted.set(0)
        self._calls.release_admission()
        log.info("engine rebuilt: admitting calls again")

    async def aclose(self) -> None:
        self._is_closed = True
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
