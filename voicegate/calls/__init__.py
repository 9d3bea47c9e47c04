"""Calls: per-call state between a Leg and the Engine (see ``base``)."""

from __future__ import annotations

from voicegate.calls.base import CallInfo, CallLike, EndReason, EndResult, LegTransport

__all__ = ["CallInfo", "CallLike", "EndReason", "EndResult", "LegTransport"]
