"""Call events: the schema (``schema``), the non-blocking Redis writer (``log.EventLog``) with its
disk journal, the local live fan-out (``fanout.Subscription``) and what legs report
(``leg.LegEvents``). The Redis keys and fields are in ``schema``."""

from __future__ import annotations

from voicegate.events.fanout import Subscription
from voicegate.events.leg import LegEvents
from voicegate.events.log import EventLog, EventLogStats, WriterState
from voicegate.events.schema import (
    CALL_ID_PATTERN,
    EVENT_TYPES,
    GLOBAL_EVENTS_KEY,
    MAX_EVENT_BYTES,
    BargeIn,
    CallDynamics,
    CallEnded,
    CallError,
    CallStarted,
    Dtmf,
    Event,
    EventSchemaError,
    LegStatus,
    TranscriptAgent,
    call_events_key,
    call_key,
    decode_fields,
    encode_fields,
)

__all__ = [
    "BargeIn",
    "CALL_ID_PATTERN",
    "CallDynamics",
    "CallEnded",
    "CallError",
    "CallStarted",
    "Dtmf",
    "EVENT_TYPES",
    "Event",
    "EventLog",
    "EventLogStats",
    "EventSchemaError",
    "GLOBAL_EVENTS_KEY",
    "LegEvents",
    "LegStatus",
    "MAX_EVENT_BYTES",
    "Subscription",
    "TranscriptAgent",
    "WriterState",
    "call_events_key",
    "call_key",
    "decode_fields",
    "encode_fields",
]
