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
import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from voicegate.calls import report
from voicegate.calls.bargein import BargeInRecord
from voicegate.calls.call import (
    _DEFAULT_CONFIG,
    Call,
    ResamplerLike,
    _default_resampler,
    _default_vad,
)
from voicegate.calls.context import CallStartWebhook, WebhookAnswer, call_values
from voicegate.calls.edge import EdgeMonitor
from voicegate.calls.handoff import HandoffPoster
from voicegate.calls.metrics import CallMetrics
from voicegate.calls.options import CallConfig, CallLimits
from voicegate.calls.recording import CallRecorder, RecordingPlan, RecordingResult, RecordingWriter
from voicegate.calls.voice import VadLike
from voicegate.contracts import CallInfo, EndReason, EventSink, FlowRules, LegTransport
from voicegate.engine.base import Engine
from voicegate.errors import CallRefused, InvalidStateError, NoFreeSlot
from voicegate.events.schema import CallContext

__all__ = ["CallManager", "PersonaSource", "limits_of"]

log = logging.getLogger("voicegate.calls")

MAX_PENDING_ANSWERS = 1024  # webhook answers kept for calls prepared but not started yet


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
        number_variables: Callable[[str], dict[str, str]] | None = None,
        webhook: CallStartWebhook | None = None,
        recording_plan: Callable[[CallInfo, int], RecordingPlan | None] | None = None,
        recording_writer: RecordingWriter | None = None,
    ) -> None:
        self._clock = clock
        # per-call context: the numbers file's values by called number, the operator's webhook
        self._number_variables = number_variables
        self._webhook = webhook
        self._webhook_answers: OrderedDict[str, WebhookAnswer] = OrderedDict()
        # recordings: which calls, where, with which announcement; the writer thread
        self._recording_plan = recording_plan
        self._recording_writer = recording_writer
        # a call's own text prompt, kept while its recording announcement plays
        self._announced_prompts: dict[str, str] = {}
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
        plan = self._plan_recording(info, int(leg.rate_hz))
        writer = self._recording_writer
        recorder = None
        if plan is not None and writer is not None:
            recorder = CallRecorder(writer, plan.path, int(leg.rate_hz))
        announcement = plan.announcement if recorder is not None and plan is not None else None
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
            recorder=recorder,
            announcement=announcement,
            on_announced=self._join_announced,
            on_recorded=self._recorded_callback() if recorder is not None else None,
        )
        persona = self._personas.get(info.persona) if self._personas is not None else None
        text_prompt, sources = self._call_prompt(persona, info)
        if call.is_announcing:
            # the slot is joined once the announcement has played; the call holds its place
            self._calls[info.call_id] = call
            self._idle.clear()
            self.metrics.active.labels(info.leg).inc()
            if text_prompt is not None:
                self._announced_prompts[info.call_id] = text_prompt
            answer = self._webhook_answers.pop(info.call_id, None)
            if sources is not None or answer is not None:
                self._emit_context(info, sources or {}, answer)
            call.announce()
            log.info(
                "call %s started: leg=%s persona=%s from=%s to=%s, recording announcement first",
                info.call_id,
                info.leg,
                info.persona,
                info.from_,
                info.to,
            )
            return call
        try:
            if text_prompt is None:
                slot = self._engine.join(info.persona, call)
            else:
                slot = self._engine.join(info.persona, call, text_prompt=text_prompt)
        except NoFreeSlot:
            self.metrics.rejected.labels(info.leg, "full").inc()
            raise
        self._calls[info.call_id] = call
        self._idle.clear()
        self.metrics.active.labels(info.leg).inc()
        call.bind(slot)
        answer = self._webhook_answers.pop(info.call_id, None)
        if sources is not None or answer is not None:
            self._emit_context(info, sources or {}, answer)
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

    # --- per-call context ----------------------------------------------------------------------

    async def prepare_call(self, info: CallInfo) -> CallInfo:
        """Ask the operator's call-start webhook about ``info`` (when one is set; bounded wait):
        returns the info to start the call with (its persona and webhook variables may have
        changed). Raises ``CallRefused`` when the webhook refuses the call and ``NoFreeSlot``
        when it sends the call to overflow. A leg awaits this just before ``start_call``."""
        webhook = self._webhook
        if webhook is None or not self.can_admit():
            return info  # no webhook, or a call ``start_call`` refuses anyway: nothing to ask
        persona = self._personas.get(info.persona) if self._personas is not None else None
        values, _ = call_values(persona, info, self._numbers_for(info.to))
        answer = await webhook.ask(info, values)
        if answer.outcome == "ok" and answer.action != "continue":
            self._emit_context(info, {}, answer)
            self.metrics.rejected.labels(info.leg, f"webhook_{answer.action}").inc()
            what = f"call {info.call_id}: the call-start webhook answered {answer.action}"
            if answer.action == "refuse":
                raise CallRefused(what)
            raise NoFreeSlot(what)
        if answer.outcome == "ok" and answer.persona and answer.persona != info.persona:
            known = getattr(self._personas, "has", None)
            if known is None or known(answer.persona):
                info = dataclasses.replace(info, persona=answer.persona)
            else:
                answer = dataclasses.replace(
                    answer, detail=f"unknown persona '{answer.persona}': kept {info.persona}"
                )
                log.warning("call %s: call-start webhook: %s", info.call_id, answer.detail)
        answers = self._webhook_answers
        answers[info.call_id] = answer
        while len(answers) > MAX_PENDING_ANSWERS:  # calls prepared but never started
            answers.popitem(last=False)
        if answer.outcome == "ok" and answer.variables:
            info = dataclasses.replace(info, variables=answer.variables)
        return info

    def _numbers_for(self, to: str) -> dict[str, str]:
        return self._number_variables(to) if self._number_variables is not None else {}

    def _call_prompt(
        self, persona: Any, info: CallInfo
    ) -> tuple[str | None, dict[str, str] | None]:
        """The call's own text prompt (None: the persona's own, already cached) and where each
        variable's value came from (None when the persona has no variables)."""
        if persona is None or not getattr(persona, "has_variables", False):
            return None, None
        values, sources = call_values(persona, info, self._numbers_for(info.to))
        text: str = persona.render_prompt(values)
        for name in persona.template.names:
            sources.setdefault(name, "default")
        used = set(persona.template.names)
        return text, {k: v for k, v in sources.items() if k in used}

    def _emit_context(
        self, info: CallInfo, sources: dict[str, str], answer: WebhookAnswer | None
    ) -> None:
        try:
            self._events.emit(
                CallContext(
                    call_id=info.call_id,
                    leg=info.leg,
                    t_ms=0,
                    persona=info.persona,
                    sources=sources,
                    webhook=answer.outcome if answer is not None else "off",
                    action=answer.action if answer is not None else "continue",
                    detail=answer.detail if answer is not None else "",
                )
            )
        except Exception:  # an event must never stop a call
            log.exception("call %s: call.context event failed", info.call_id)

    def _join_announced(self, call: Call) -> None:
        """The announcement has played: the call joins its engine slot now."""
        text_prompt = self._announced_prompts.pop(call.call_id, None)
        if not call.is_active or self._calls.get(call.call_id) is not call:
            return
        try:
            if text_prompt is None:
                slot = self._engine.join(call.info.persona, call)
            else:
                slot = self._engine.join(call.info.persona, call, text_prompt=text_prompt)
        except Exception as exc:
            call.fail(exc, "join")
            return
        call.bind(slot)
        log.info("call %s joined slot %d after the announcement", call.call_id, slot.index)

    def _plan_recording(self, info: CallInfo, rate_hz: int) -> RecordingPlan | None:
        if self._recording_plan is None:
            return None
        try:
            return self._recording_plan(info, rate_hz)
        except Exception:
            # no recording rather than no call (nor a recording without its announcement)
            log.exception("call %s: recording plan failed; not recording", info.call_id)
            return None

    def _recorded_callback(self) -> Callable[[Call, RecordingResult], None]:
        loop = asyncio.get_running_loop()
        events = self._events

        def emit(call: Call, result: RecordingResult) -> None:
            event = report.recording_ended(call.info, call.now_ms, result, call.end_reason)
            events.emit(event)

        def on_recorded(call: Call, result: RecordingResult) -> None:  # the writer's thread
            try:
                loop.call_soon_threadsafe(emit, call, result)
            except RuntimeError:  # the loop is gone (shutdown): the file is there all the same
                log.info("recording %s ended after the loop closed", result.path)

        return on_recorded

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
        self._announced_prompts.pop(call.call_id, None)  # ended during its announcement
        leg = call.info.leg
        m = self.metrics
        m.active.labels(leg).dec()
        reason = call.end_reason.value if call.end_reason is not None else "unknown"
        m.total.labels(leg, reason).inc()
        m.call_underruns.labels(leg).observe(call.playout.underruns)
        m.call_overruns.labels(leg).observe(call.playout.overruns)
        m.call_duration.labels(leg).observe(call.now_ms / 1000.0)
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
