"""CallManager: admission, the registry of active calls, drain on shutdown, call metrics.

Usage (on the event loop)::

    calls = CallManager(engine, event_log, registry=registry, max_calls=settings.max_calls,
                        personas=persona_store)
    if not calls.can_admit(): ...                   # Twilio: <Reject reason="busy"/>
    call = calls.start_call(CallInfo(...), leg)     # NoFreeSlot when full or draining
    ...
    calls.begin_drain()                             # SIGTERM: refuse new calls
    await calls.drain(settings.drain_timeout_s)     # let calls finish, then end them (DRAIN)

Owns: CallManager, PersonaSource. Uses the engine only through ``engine.base.Engine``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from voicegate.calls.bargein import BargeInRecord
from voicegate.calls.call import (
    _DEFAULT_CONFIG,
    Call,
    ResamplerLike,
    _default_resampler,
    _default_vad,
)
from voicegate.calls.edge import EdgeMonitor
from voicegate.calls.handoff import HandoffPoster
from voicegate.calls.metrics import CallMetrics
from voicegate.calls.options import CallConfig, CallLimits
from voicegate.calls.voice import VadLike
from voicegate.contracts import CallInfo, EndReason, EventSink, FlowRules, LegTransport
from voicegate.engine.base import Engine
from voicegate.errors import InvalidStateError, NoFreeSlot

__all__ = ["CallManager", "PersonaSource", "limits_of"]

log = logging.getLogger("voicegate.calls")


class PersonaSource(Protocol):
    """Anything with ``get(name)`` returning a persona (``voicegate.personas.PersonaStore``)."""

    def get(self, name: str) -> Any: ...


def limits_of(persona: Any) -> CallLimits:
    """The CallLimits of a ``voicegate.personas.Persona`` (its ``limits`` section)."""
    limits = getattr(persona, "limits", None)
    if limits is None:
        return CallLimits()
    return CallLimits(
        max_duration_s=float(limits.max_duration_s),
        silence_timeout_s=float(limits.silence_timeout_s),
    )


class CallManager:
    """Owns every active Call of the process."""

    def __init__(
        self,
        engine: Engine,
        events: EventSink,
        *,
        registry: CollectorRegistry | None = None,
        max_calls: int = 0,
        personas: PersonaSource | None = None,
        limits: CallLimits | None = None,
        config: CallConfig = _DEFAULT_CONFIG,
        resampler_factory: Callable[[int, int], ResamplerLike] = _default_resampler,
        vad_factory: Callable[[int], VadLike] = _default_vad,
        edge: EdgeMonitor | None = None,
        handoff: HandoffPoster | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._engine = engine
        self._events = events
        self._personas = personas
        self._limits = limits
        self._config = config
        self._max_calls = max_calls
        # what every Call of this manager is built with
        self._call_parts = (resampler_factory, vad_factory, handoff)
        self._edge = edge
        self._calls: dict[str, Call] = {}
        self._is_draining = False
        self._admission_hold = ""  # why no call is admitted now (an engine fault); "" = none
        self._idle = asyncio.Event()
        self._idle.set()
        stats = getattr(engine, "stats", None)
        self.metrics = CallMetrics(registry, stats if callable(stats) else None)

    # --- admission ---------------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        """Most simultaneous calls: the smallest of the limits (see ``limits``)."""
        return min(self.limits().values())

    def limits(self) -> dict[str, int]:
        """Each limit on simultaneous calls: the engine's slots, ``max_calls`` when set, and the
        event loop's measured capacity (``edge``) when an EdgeMonitor is given."""
        out = {"engine": self._engine.max_slots}
        if self._max_calls > 0:
            out["max_calls"] = self._max_calls
        if self._edge is not None:
            out["edge"] = max(self._edge.capacity, 1)  # one call is always served
        return out

    @property
    def active_count(self) -> int:
        return len(self._calls)

    @property
    def is_draining(self) -> bool:
        return self._is_draining

    @property
    def admission_hold(self) -> str:
        """Why calls are refused now regardless of capacity ('' when they are not)."""
        return self._admission_hold

    def hold_admission(self, reason: str) -> None:
        """Refuse every new call (``can_admit`` False, ``start_call`` raises NoFreeSlot) until
        ``release_admission``: an engine fault, while the engine is rebuilt."""
        self._admission_hold = reason or "held"

    def release_admission(self) -> None:
        self._admission_hold = ""

    def can_admit(self) -> bool:
        """True when a new call would be taken now (not draining nor held, a slot free)."""
        return (
            not self._is_draining
            and not self._admission_hold
            and len(self._calls) < self.capacity
            and self._engine.active_slots < self._engine.max_slots
        )

    def calls(self) -> list[Call]:
        """A snapshot of the active calls."""
        return list(self._calls.values())

    def get(self, call_id: str) -> Call | None:
        return self._calls.get(call_id)

    def start_call(self, info: CallInfo, leg: LegTransport) -> Call:
        """Admit a call and join it to an engine slot; emits ``call.started``.

        Raises NoFreeSlot when full or draining, UnknownPersona when the engine lacks the
        persona, InvalidStateError when the call_id is already active.
        """
        if self._is_draining:
            self.metrics.rejected.labels(info.leg, "draining").inc()
            raise NoFreeSlot(f"call {info.call_id}: the gateway is draining")
        if self._admission_hold:
            self.metrics.rejected.labels(info.leg, "engine_fault").inc()
            raise NoFreeSlot(f"call {info.call_id}: not admitting: {self._admission_hold}")
        limits = self.limits()
        if len(self._calls) >= min(limits.values()):
            binding = min(limits, key=lambda k: (limits[k], k))
            why = "edge" if binding == "edge" else "full"
            self.metrics.rejected.labels(info.leg, why).inc()
            raise NoFreeSlot(
                f"call {info.call_id}: all {limits[binding]} call places are taken "
                f"(limit: {binding}; limits: "
                + ", ".join(f"{k} {v}" for k, v in limits.items())
                + ")"
            )
        if info.call_id in self._calls:
            raise InvalidStateError(f"call {info.call_id}: already active")
        call = Call(
            info,
            leg,
            self._events,
            limits=self._limits_for(info.persona),
            config=self._config,
            resampler_factory=self._call_parts[0],
            vad_factory=self._call_parts[1],
            on_end=self._on_call_end,
            on_bargein=self._on_bargein,
            flow=self._flow_for(info.persona),
            on_transfer=self._on_transfer,
            handoff=self._call_parts[2],
            clock=self._clock,
        )
        try:
            slot = self._engine.join(info.persona, call)
        except NoFreeSlot:
            self.metrics.rejected.labels(info.leg, "full").inc()
            raise
        self._calls[info.call_id] = call
        self._idle.clear()
        self.metrics.active.labels(info.leg).inc()
        call.bind(slot)
        log.info(
            "call %s started: leg=%s persona=%s from=%s to=%s slot=%d",
            info.call_id,
            info.leg,
            info.persona,
            info.from_,
            info.to,
            slot.index,
        )
        return call

    def _flow_for(self, persona: str) -> FlowRules | None:
        if self._personas is None:
            return None
        rules = getattr(self._personas.get(persona), "flow_rules", None)
        return rules() if callable(rules) else None

    def _limits_for(self, persona: str) -> CallLimits:
        if self._limits is not None:
            return self._limits
        if self._personas is None:
            return CallLimits()
        return limits_of(self._personas.get(persona))

    # --- call ends ---------------------------------------------------------------------------

    def _on_call_end(self, call: Call) -> None:
        if self._calls.get(call.call_id) is not call:
            return
        del self._calls[call.call_id]
        leg = call.info.leg
        m = self.metrics
        m.active.labels(leg).dec()
        reason = call.end_reason.value if call.end_reason is not None else "unknown"
        m.total.labels(leg, reason).inc()
        m.call_underruns.labels(leg).observe(call.playout.underruns)
        m.call_overruns.labels(leg).observe(call.playout.overruns)
        m.call_duration.labels(leg).observe(call.now_ms / 1000.0)
        for lag_ms in call.caller_turn_end_lags_ms:
            m.caller_turn_end_lag.labels(leg).observe(lag_ms / 1000.0)
        if not self._calls:
            self._idle.set()

    def _on_transfer(self, call: Call, outcome: str, latency_s: float | None) -> None:
        leg = call.info.leg
        self.metrics.transfers.labels(leg, outcome).inc()
        if latency_s is not None and outcome == "handed_off":
            self.metrics.transfer_latency.labels(leg).observe(latency_s)

    def _on_bargein(self, call: Call, record: BargeInRecord) -> None:
        leg = call.info.leg
        self.metrics.bargein_latency.labels(leg).observe(max(0, record.latency_ms) / 1000.0)
        self.metrics.bargein_discarded.labels(leg).observe(record.discarded_ms / 1000.0)

    def end_all(self, reason: EndReason, detail: str = "") -> None:
        """End every active call from our side (hang up their legs)."""
        for call in list(self._calls.values()):
            try:
                call.end(reason, detail)
            except Exception:
                log.exception("call %s: ending failed", call.call_id)

    # --- shutdown ----------------------------------------------------------------------------

    def begin_drain(self) -> None:
        """Stop admitting: ``can_admit`` is False and ``start_call`` raises NoFreeSlot."""
        if not self._is_draining:
            self._is_draining = True
            log.info("draining: %d active calls, no new calls admitted", len(self._calls))

    async def drain(self, timeout_s: float) -> None:
        """Stop admitting, wait up to ``timeout_s`` for calls to end, then end the rest (DRAIN)."""
        self.begin_drain()
        if self._calls and timeout_s > 0:
            try:
                await asyncio.wait_for(self._idle.wait(), timeout_s)
            except TimeoutError:
                pass
        if self._calls:
            log.info("drain deadline: ending %d calls", len(self._calls))
            self.end_all(EndReason.DRAIN, f"gateway shutting down after {timeout_s:g} s")
