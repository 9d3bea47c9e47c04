"""Closing the calls of a gateway that died: each active call of a lost pod whose Redis record has
no ``call.ended`` gets one, written by the survivor that took the pod over (reason
``gateway_lost``), so that Redis never holds a call that never ends.

Owns: ``LostCallCloser``. Imports the event schema and the fleet registry only.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from voicegate.contracts import EndReason
from voicegate.events.schema import CallEnded, Event, call_key
from voicegate.fleet.registry import FleetRegistry, LostPod

__all__ = ["LostCallCloser"]

log = logging.getLogger("voicegate.fleet")


class _EventSink(Protocol):
    def emit(self, event: Event) -> None: ...


class LostCallCloser:
    """``on_lost`` of a ``FleetRegistry``: writes the missing ``call.ended`` records."""

    def __init__(self, events: _EventSink) -> None:
        self._events = events
        self.registry: FleetRegistry | None = None
        self.closed = 0

    async def __call__(self, pod: LostPod) -> None:
        registry = self.registry
        if registry is None:
            return
        now_ms = time.time_ns() // 1_000_000
        reason = EndReason.GATEWAY_LOST
        for call in pod.calls:
            record = await registry.call_record(call_key(call.call_id))
            if record.get("status") == "ended":
                continue  # its own call.ended reached Redis before the pod died
            try:
                started = int(record.get("started_ts", "0"))
            except ValueError:
                started = 0
            duration_ms = max(0, now_ms - started) if started else 0
            self._events.emit(
                CallEnded(
                    call_id=call.call_id,
                    leg=call.leg if call.leg in ("twilio", "sip", "webrtc") else "unknown",
                    t_ms=duration_ms,
                    reason=reason.value,
                    result=reason.result.value,
                    detail=f"gateway {pod.pod_id} stopped heartbeating; closed by {registry.pod_id}",
                    duration_ms=duration_ms,
                )
            )
            self.closed += 1
            log.warning(
                "fleet: call %s of lost pod %s ended (gateway_lost)", call.call_id, pod.pod_id
            )
