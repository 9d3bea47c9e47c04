"""What a Leg reports that no Call can, turned into events: ``LegEvents`` implements
``voicegate.contracts.LegReporter`` over an ``EventSink`` (the EventLog).

Usage (``voicegate.app`` wires it; a leg only sees the contract)::

    reporter = LegEvents(event_log)
    reporter.leg_status(call_id, "sip", t_ms, "dialog-confirmed", "")

Owns: LegEvents. Imports the event schema and the contracts.
"""

from __future__ import annotations

from voicegate.contracts import EventSink, TransferTarget
from voicegate.events.schema import CallError, CallTransfer, LegStatus

__all__ = ["LegEvents"]


class LegEvents:
    """A ``LegReporter``: builds ``leg.status`` and ``error`` events into ``sink``."""

    def __init__(self, sink: EventSink) -> None:
        self.sink = sink

    def leg_status(self, call_id: str, leg: str, t_ms: int, status: str, detail: str) -> None:
        self.sink.emit(LegStatus(call_id=call_id, leg=leg, t_ms=t_ms, status=status, detail=detail))

    def leg_error(
        self, call_id: str, leg: str, t_ms: int, code: str, message: str, is_fatal: bool
    ) -> None:
        self.sink.emit(
            CallError(
                call_id=call_id,
                leg=leg,
                t_ms=t_ms,
                code=code,
                message=message,
                is_fatal=is_fatal,
            )
        )

    def leg_transfer(
        self, call_id: str, leg: str, t_ms: int, target: TransferTarget, result: str, detail: str
    ) -> None:
        self.sink.emit(
            CallTransfer(
                call_id=call_id,
                leg=leg,
                t_ms=t_ms,
                destination=target.destination,
                to=target.to,
                handoff_id=target.handoff_id,
                result=result,
                detail=detail,
            )
        )
