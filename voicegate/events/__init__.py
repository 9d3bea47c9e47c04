"""Call events: the schema (``schema``), the non-blocking Redis writer (``log.EventLog``) with its
disk journal, the local live fan-out (``fanout.Subscription``) and what legs report
(``leg.LegEvents``). The Redis keys and fields are in ``schema``."""

from __future__ import annotations

from voicegate.events import schema
from voicegate.events.fanout import Subscription
from voicegate.events.leg import LegEvents
from voicegate.events.log import EventLog, EventLogStats, WriterState
from voicegate.events.schema import *  # noqa: F403  (the schema's public names, re-exported)

__all__ = ["EventLog", "EventLogStats", "LegEvents", "Subscription", "WriterState"]
__all__ += schema.__all__
__all__.sort()
