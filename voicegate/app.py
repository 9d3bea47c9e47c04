"""FastAPI wiring: builds the gateway's parts from Settings and serves the HTTP interface.

Only this module and ``cli`` wire concrete classes together. Parts register readiness checks
with ``Readiness`` so ``/readyz`` reports every reason the gateway is not ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import socket
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from voicegate import __version__
from voicegate.audio.vad import BatchedVadFactory
from voicegate.audio.vad import preload as vad_preload
from voicegate.blas import limit_blas_threads
from voicegate.calls import FaultResponder
from voicegate.calls.context import CallStartWebhook
from voicegate.calls.edge import EdgeMonitor
from voicegate.calls.handoff import HandoffPoster
from voicegate.calls.manager import CallManager
from voicegate.calls.options import CallConfig
from voicegate.calls.recording import RecordingWriter
from voicegate.config import Settings
from voicegate.contracts import TokenCounter
from voicegate.engine import EngineSupervisor, create_engine
from voicegate.engine.tokenizer import release_token_counter
from voicegate.errors import ConfigError
from voicegate.events import EventLog, LegEvents
from voicegate.events.schema import Event
from voicegate.fleet import FleetRegistry, LostCallCloser, PodState
from voicegate.gcpause import GcPauses, settle
from voicegate.legs.sip import SipConfig, SipServer, SipStats
from voicegate.legs.twilio import TwilioLeg
from voicegate.looplag import LoopLag
from voicegate.personas.schema import Persona
from voicegate.personas.store import NumbersStore, PersonaStore
from voicegate.personas.tokens import estimate_tokens
from voicegate.recordings import (
    RecordingPolicy,
    RecordingUploads,
    RetentionSweeper,
    S3Target,
    S3Uploader,
)
from voicegate.stalls import StallWatch
from voicegate.web import CallHistory, operator_router, web_router
from voicegate.web.calls_api import calls_router
from voicegate.webhooks import WebhookDelivery

if TYPE_CHECKING:
    from voicegate.edge.remote import RemoteEngine
    from voicegate.edge.worker import EdgeWorker
    from voicegate.legs.carriers import CarrierLegs
    from voicegate.legs.webrtc import WebRtcLeg

__all__ = ["Readiness", "ReadinessCollector", "create_app"]

# uvicorn settings that `voicegate serve`, the demo and the tests' server share. The sans-I/O
# websockets protocol: measured here at about 25% less server CPU per WebSocket message than
# uvicorn's legacy websockets protocol (60k Twilio-sized messages over 10 sockets, 2-core x86);
# 1 MiB bounds a message (a Twilio media message of one second is about 11 kB).
SERVER_OPTIONS: dict[str, Any] = {"ws": "websockets-sansio", "ws_max_size": 1 << 20}

log = logging.getLogger("voicegate.app")


@dataclass
class Readiness:
    """Named checks; each returns None when fine or a short reason when not ready."""

    checks: dict[str, Callable[[], str | None]] = field(default_factory=dict)
    # informational: shown by /readyz but never make the gateway unready (e.g. a broken persona
    # edit while its last good version still serves)
    details: dict[str, Callable[[], object]] = field(default_factory=dict)

    def add(self, name: str, check: Callable[[], str | None]) -> None:
        self.checks[name] = check

    def add_detail(self, name: str, detail: Callable[[], object]) -> None:
        self.details[name] = detail

    def detail(self) -> dict[str, object]:
        return _answers(self.details, "detail")

    def problems(self) -> dict[str, str]:
        return _answers(self.checks, "check")


class ReadinessCollector(Collector):
    """``voicegate_ready`` and ``voicegate_ready_check{check}`` (1 passing, 0 failing): the
    readiness that ``/readyz`` answers, for dashboards and the engine-unready alert."""

    def __init__(self, readiness: Readiness) -> None:
        self._readiness = readiness

    def collect(self) -> Iterator[Metric]:
        problems = self._readiness.problems()
        yield GaugeMetricFamily(
            "voicegate_ready",
            "1 when /readyz answers ready (every readiness check passes), else 0.",
            value=0 if problems else 1,
        )
        per_check = GaugeMetricFamily(
            "voicegate_ready_check",
            "Per readiness check (engine, personas, numbers, ...): 1 passing, 0 failing.",
            labels=["check"],
        )
        for name in sorted(self._readiness.checks):
            per_check.add_metric([name], 0 if name in problems else 1)
        yield per_check


T = TypeVar("T")


def _answers(fns: dict[str, Callable[[], T | None]], what: str) -> dict[str, T | str]:
    """Each non-empty answer by name; a broken function must not take /readyz down."""
    out: dict[str, T | str] = {}
    for name, fn in fns.items():
        try:
            value: T | str | None = fn()
        except Exception as exc:
            value = f"{what} failed: {exc!r}"
        if value:
            out[name] = value
    return out


def create_app(
    settings: Settings | None = None,
    registry: CollectorRegistry | None = None,
    *,
    edge: EdgeWorker | None = None,
) -> FastAPI:
    """Build the app; parts start in the lifespan so that tests can run it over real sockets.

    ``edge``: this process is an edge worker (``voicegate serve --workers N``): calls join the
    engine process's engine, Twilio call tokens are signed with the workers' shared secret and
    /metrics merges every worker's samples (``voicegate.edge``).
    """
    settings = settings or Settings()
    registry = registry or CollectorRegistry()
    readiness = Readiness()
    registry.register(ReadinessCollector(readiness))
    # the release tokenizer when the model folder has it, else an estimate: the tiny engine's
    # small vocabulary would overstate every prompt against the 200-token guidance
    count_tokens = release_token_counter(settings.model_dir) or estimate_tokens

    twilio = TwilioLeg(
        auth_token=settings.twilio_auth_token,
        public_url=settings.public_url,
        send_ms=settings.twilio_send_ms,
        cushion_ms=settings.twilio_cushion_ms,
        dial_timeout_s=settings.twilio_dial_timeout_s,
        pod_url=settings.fleet_pod_url,
        tokens=edge.tokens if edge is not None else None,
        next_steps=edge.next_steps if edge is not None else None,
    )
    registry.register(twilio.collector())
    twilio.media_timeout_s = settings.twilio_media_timeout_s
    sip_stats = SipStats()
    webrtc = _webrtc_leg(settings, registry)
    if settings.sip_enabled:
        registry.register(sip_stats.collector())
    carriers = _carrier_legs(settings, registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        readiness.add("starting", lambda: "starting")
        async with AsyncExitStack() as stack:
            parts = await _start_parts(settings, registry, readiness, stack, count_tokens, edge)
            if edge is not None:
                edge.metrics.registry = registry
                registry.register(edge.engine.frame_lead)
                writer = asyncio.get_running_loop().create_task(edge.metrics.run(), name="metrics")
                stack.push_async_callback(_cancel, writer)
            app.state.parts = parts
            if edge is not None and edge.relay is not None:
                app.state.relay = edge.relay
                stack.push_async_callback(edge.relay.aclose)
            app.state.loop = asyncio.get_running_loop()  # for tests and benchmarks in other threads
            leg_events = LegEvents(parts.events)  # what legs report that no Call can
            twilio.calls = parts.calls
            twilio.personas = parts.numbers
            twilio.events = leg_events
            if carriers is not None:
                carriers.calls, carriers.numbers = parts.calls, parts.numbers
                stack.push_async_callback(carriers.aclose)  # after the drain below
            if webrtc is not None:
                webrtc.calls, webrtc.personas = parts.calls, parts.personas
                stack.push_async_callback(webrtc.aclose)  # after the drain below ended its calls
            if settings.sip_enabled:  # after the drain below (BYEs sent), closed by the stack
                shard = edge.sip if edge is not None else None
                sip = SipServer(
                    _sip_config(settings, shard.count if shard is not None else 1),
                    calls=parts.calls,
                    router=parts.numbers,
                    events=leg_events,
                    stats=sip_stats,
                    shard=shard,
                )
                await sip.start()
                stack.push_async_callback(sip.close)
                app.state.sip = sip
            fleet = await _join_fleet(settings, parts, twilio, stack)
            drain = _Drain(parts, twilio, readiness, settings.drain_timeout_s)
            if fleet is not None:
                drain.on_begin = fleet.begin_drain  # placed nowhere new from the first SIGTERM
                app.state.fleet = fleet
            drain.install()
            stack.callback(drain.uninstall)
            readiness.checks.pop("starting", None)
            gc_pauses = GcPauses().install()
            registry.register(gc_pauses)
            stack.callback(registry.unregister, gc_pauses)
            stack.callback(gc_pauses.uninstall)
            loop_lag = LoopLag()
            registry.register(loop_lag)
            stack.callback(registry.unregister, loop_lag)
            twilio.lateness = lambda: loop_lag.peak_s  # the auto reply cushion's size
            probe = asyncio.get_running_loop().create_task(loop_lag.run(), name="loop-lag")
            stack.push_async_callback(_cancel, probe)
            if settings.stall_trace_ms > 0:
                watch = StallWatch(lambda: loop_lag.due, settings.stall_trace_ms / 1000).start()
                stack.callback(watch.stop)
            if getattr(app.state, "settle_gc", False):  # set by `voicegate serve`
                settle("gateway")
                limit_blas_threads(settings.blas_threads, "gateway")
                sys.setswitchinterval(settings.gil_switch_ms / 1000)
            log.info(
                "gateway ready: engine %s (%d slots), %d personas, public URL %s",
                parts.engine.name,
                parts.engine.max_slots,
                len(parts.personas.names()),
                settings.public_url,
            )
            yield
            readiness.add("stopping", lambda: "shutting down")
            twilio.begin_drain()
            if fleet is not None:
                fleet.begin_drain()
            await parts.calls.drain(0)  # whatever the SIGTERM drain left (or SIGINT) ends now
            if fleet is not None:
                await fleet.leave()  # its calls ended: nothing for a survivor to close
            history.close()

    app = FastAPI(title="VoiceGate", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    app.state.registry = registry
    app.state.readiness = readiness
    app.state.twilio = twilio
    app.include_router(twilio.router())
    app.state.webrtc = webrtc
    if webrtc is not None:
        app.include_router(webrtc.router())
    app.state.carriers = carriers
    if carriers is not None:
        app.include_router(carriers.router())
    app.include_router(web_router(settings, count_tokens))  # the page at / and its APIs
    app.include_router(calls_router(settings))  # the live call API (/calls)
    history = CallHistory(settings.redis_url)  # ended calls read back for the operators' views
    app.state.history = history
    app.include_router(operator_router(settings, history))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        problems = readiness.problems()
        details = readiness.detail()
        if problems:
            return JSONResponse(
                {"ready": False, "problems": problems, "details": details}, status_code=503
            )
        return JSONResponse({"ready": True, "problems": {}, "details": details})

    @app.get("/metrics")
    async def metrics() -> Response:
        text = await edge.metrics.text() if edge is not None else generate_latest(registry)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    return app


@dataclass
class GatewayParts:
    """The running parts of one gateway (``app.state.parts`` once started)."""

    events: EventLog
    # the current engine, rebuilt after a fault; an edge worker's is the engine process's
    engine: EngineSupervisor | RemoteEngine
    personas: PersonaStore
    numbers: NumbersStore
    calls: CallManager
    faults: FaultResponder
    webhooks: WebhookDelivery | None = None


async def _start_parts(
    settings: Settings,
    registry: CollectorRegistry,
    readiness: Readiness,
    stack: AsyncExitStack,
    count_tokens: TokenCounter,
    worker: EdgeWorker | None = None,
) -> GatewayParts:
    """Start events, engine, personas, numbers and calls; ``stack`` closes them in reverse."""
    events = EventLog.from_settings(settings, registry)
    await events.start()
    stack.push_async_callback(events.aclose)

    readiness.add("engine", lambda: f"engine {settings.engine} starting")
    # building the model and its warm-up block: off the event loop (so does a rebuild)
    engine: EngineSupervisor | RemoteEngine
    if worker is not None:
        engine = worker.engine  # the engine process loads the personas into it
    else:
        engine = EngineSupervisor(lambda generation: create_engine(settings, generation=generation))
    await asyncio.to_thread(engine.start)
    stack.push_async_callback(asyncio.to_thread, engine.close)
    readiness.add("engine", engine.health)

    def on_persona_change(name: str, persona: Persona | None) -> None:
        # runs on the store's reload thread (or the to_thread below): may block. Raising
        # (a prompt too long for the model, a missing voice) makes the store keep the last good.
        if persona is not None:
            engine.load_persona(persona.to_prompt())
        else:
            engine.unload_persona(name)

    personas = PersonaStore(
        settings.personas_dir,
        count_tokens=count_tokens,
        registry=registry,
        interval_s=settings.reload_interval_s,
        on_change=on_persona_change,
    )
    readiness.add("personas", personas.readiness_check)
    readiness.add_detail("personas", personas.readiness_detail)
    await asyncio.to_thread(personas.load)
    personas.start()
    stack.callback(personas.close)

    numbers = NumbersStore(
        settings.numbers_file, personas, registry=registry, interval_s=settings.reload_interval_s
    )
    readiness.add("numbers", numbers.readiness_check)
    readiness.add_detail("numbers", numbers.readiness_detail)
    await asyncio.to_thread(numbers.load)
    numbers.start()
    stack.callback(numbers.close)

    # the caller's voice activity model: imported and loaded now, off the loop, not by the
    # first call on it
    await asyncio.to_thread(vad_preload)
    vad_options: dict[str, Any] = {}
    if settings.vad_batch_ms > 0:
        # every call's caller VAD windows scored in one batched run per period, off the loop
        vad_factory = BatchedVadFactory(settings.vad_batch_ms / 1000)
        stack.callback(vad_factory.close)
        vad_options["vad_factory"] = vad_factory
    edge: EdgeMonitor | None = None
    if settings.edge_loop_budget_pct > 0:
        edge = EdgeMonitor(
            lambda: calls.active_count,
            budget=settings.edge_loop_budget_pct / 100,
            prior_cost=settings.edge_call_cost_pct / 100,
        )
    handoff: HandoffPoster | None = None
    if settings.handoff_secret:
        handoff = HandoffPoster(settings.handoff_secret, timeout_s=settings.handoff_timeout_s)
        stack.push_async_callback(handoff.aclose)
    webhook: CallStartWebhook | None = None
    if settings.call_start_webhook_url:
        if not settings.call_start_webhook_secret:
            raise ConfigError(
                "VOICEGATE_CALL_START_WEBHOOK_URL is set without "
                "VOICEGATE_CALL_START_WEBHOOK_SECRET: its requests must be signed"
            )
        webhook = CallStartWebhook(
            settings.call_start_webhook_url,
            settings.call_start_webhook_secret,
            timeout_s=settings.call_start_webhook_timeout_s,
        )
        stack.push_async_callback(webhook.aclose)
    calls = CallManager(
        engine,
        events,
        registry=registry,
        max_calls=settings.max_calls,
        personas=personas,
        edge=edge,
        handoff=handoff,
        number_variables=numbers.variables,
        webhook=webhook,
        config=CallConfig(caller_frame_margin_ms=settings.caller_frame_margin_ms),
        **vad_options,
        **_start_recordings(settings, personas, numbers, stack, registry, events.emit),
    )
    if edge is not None:
        edge.register(registry, calls.limits)
        monitor = asyncio.get_running_loop().create_task(edge.run(), name="edge-monitor")
        stack.push_async_callback(_cancel, monitor)
    # an engine fault: calls to overflow or ended, admission held, the engine rebuilt
    faults = FaultResponder(
        calls, events, overflow=numbers.overflow, rebuild=engine.rebuild, registry=registry
    )
    engine.on_fault = faults.report
    stack.push_async_callback(faults.aclose)
    webhooks = await _start_webhooks(settings, registry, stack, personas, numbers)
    return GatewayParts(events, engine, personas, numbers, calls, faults, webhooks)


async def _start_webhooks(
    settings: Settings,
    registry: CollectorRegistry,
    stack: AsyncExitStack,
    personas: PersonaStore,
    numbers: NumbersStore,
) -> WebhookDelivery | None:
    """Post-call webhooks from the Redis consumer group (None without a signing secret)."""
    if not settings.webhook_secret:
        return None

    def webhook_url(call: Mapping[str, str]) -> str:
        # the called number's entry, else the persona's, else the numbers file's default
        name = call.get("persona", "")
        hooks = personas.get(name).webhooks if name and personas.has(name) else None
        return numbers.webhook(call.get("to", ""), hooks.call_ended if hooks else "")

    webhooks = WebhookDelivery(
        settings.redis_url,
        secret=settings.webhook_secret,
        resolve=webhook_url,
        registry=registry,
        consumer=settings.webhook_consumer,
        retry_for_s=settings.webhook_retry_for_s,
        backoff_min_s=settings.webhook_backoff_min_s,
        backoff_max_s=settings.webhook_backoff_max_s,
        timeout_s=settings.webhook_timeout_s,
        settle_s=settings.webhook_settle_s,
        recording_wait_s=settings.webhook_recording_wait_s,
        is_upload_expected=bool(settings.recordings_s3_bucket),
        retention_s=settings.events_retention_s,
    )
    await webhooks.start()
    stack.push_async_callback(webhooks.aclose)
    return webhooks


def _start_recordings(
    settings: Settings,
    personas: PersonaStore,
    numbers: NumbersStore,
    stack: AsyncExitStack,
    registry: CollectorRegistry,
    emit: Callable[[Event], None],
) -> dict[str, Any]:
    """The recording writer thread, the retention sweep and the upload consumer (if any)."""
    folder = settings.recordings_dir.resolve()  # events carry absolute paths
    writer = RecordingWriter()
    writer.start()
    stack.push_async_callback(asyncio.to_thread, writer.close)  # after the calls' drain
    sweeper = RetentionSweeper(
        folder, settings.recordings_retention_s, interval_s=settings.recordings_sweep_interval_s
    )
    sweeper.start()
    stack.push_async_callback(sweeper.aclose)
    if settings.recordings_s3_bucket:
        target = S3Target(
            endpoint_url=settings.recordings_s3_endpoint_url,
            bucket=settings.recordings_s3_bucket,
            prefix=settings.recordings_s3_prefix,
            access_key_id=settings.recordings_s3_access_key_id,
            secret_access_key=settings.recordings_s3_secret_access_key,
            region=settings.recordings_s3_region,
        )
        uploader = S3Uploader(target, retry_for_s=settings.recordings_upload_retry_s)
        uploads = RecordingUploads(
            settings.redis_url, uploader, folder, registry=registry, emit=emit
        )
        uploads.start()
        stack.push_async_callback(uploads.aclose)
    policy = RecordingPolicy(
        folder, settings.personas_dir, persona_of=personas.get, numbers_of=numbers.recording
    )
    return {"recording_plan": policy, "recording_writer": writer}


async def _join_fleet(
    settings: Settings, parts: GatewayParts, twilio: TwilioLeg, stack: AsyncExitStack
) -> FleetRegistry | None:
    """The fleet registry (VOICEGATE_FLEET_ENABLED): heartbeat this pod, place Twilio calls."""
    if not settings.fleet_enabled:
        return None
    calls = parts.calls

    def state() -> PodState:
        is_held = bool(calls.admission_hold)
        return PodState(
            slots=0 if is_held else calls.capacity,
            is_draining=calls.is_draining or twilio.is_draining,
            calls=[(call.call_id, call.info.leg) for call in calls.calls()],
        )

    closer = LostCallCloser(parts.events)
    fleet = FleetRegistry(
        settings.redis_url,
        pod_id=settings.fleet_pod_id or socket.gethostname(),
        url=settings.fleet_pod_url or settings.public_url,
        sip=settings.fleet_sip_address,
        state=state,
        on_lost=closer,
        heartbeat_s=settings.fleet_heartbeat_s,
        ttl_s=settings.fleet_ttl_s,
        reservation_s=settings.fleet_reservation_s,
    )
    closer.registry = fleet
    await fleet.start()
    stack.push_async_callback(fleet.aclose)
    twilio.placer = fleet
    log.info("fleet: pod %s joined at %s", fleet.pod_id, fleet.url)
    return fleet


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _sip_config(settings: Settings, workers: int) -> SipConfig:
    """The SIP leg's settings; with ``workers`` sharing the port, each owns about 1/workers of
    a source's INVITEs (by Call-ID), so each allows that share of the per-source rate (the
    burst stays whole: a burst may land on one worker)."""
    config = SipConfig.from_settings(settings)
    if workers <= 1:
        return config
    return dataclasses.replace(config, invite_rate_per_s=config.invite_rate_per_s / workers)


def _webrtc_leg(settings: Settings, registry: CollectorRegistry) -> WebRtcLeg | None:
    """The WebRTC leg, or None when it is off (then aiortc and av are never imported)."""
    if not settings.webrtc_enabled:
        return None
    from voicegate.legs.webrtc import WebRtcLeg

    return WebRtcLeg(
        token=settings.webrtc_token,
        stun_urls=settings.webrtc_stun_urls,
        is_loopback_only=settings.webrtc_loopback_only,
        jitter_prefetch=settings.webrtc_jitter_prefetch,
        registry=registry,
    )


def _carrier_legs(settings: Settings, registry: CollectorRegistry) -> CarrierLegs | None:
    """The carrier legs named by ``VOICEGATE_CARRIERS`` (pipecat imported only then)."""
    names = [n.strip().lower() for n in settings.carriers.split(",") if n.strip()]
    if not names:
        return None
    from voicegate.legs.carriers import CarrierLegs, TelnyxControl

    controls: dict[str, Any] = {}
    if settings.telnyx_api_key and "telnyx" in names:
        controls["telnyx"] = TelnyxControl(settings.telnyx_api_key, settings.telnyx_api_url)
    legs = CarrierLegs(
        names,
        public_url=settings.public_url,
        token=settings.carrier_token,
        plivo_auth_token=settings.plivo_auth_token,
        send_ms=settings.twilio_send_ms,
        controls=controls,
    )
    registry.register(legs.collector())
    return legs


class _Drain:
    """SIGTERM: stop admitting, let calls run up to ``timeout_s``, end the rest, then exit.

    uvicorn installs its own SIGTERM/SIGINT handlers before the lifespan starts and, on a
    signal, stops accepting connections and closes every WebSocket at once. So the lifespan
    puts its own handler in front: the first SIGTERM starts the drain while uvicorn keeps
    serving (new calls get ``<Reject reason="busy"/>``, ``/readyz`` answers 503 "draining"), and
    only when the drain is over is the signal handed to uvicorn's handler. A second SIGTERM, or
    SIGINT, ends the calls now. (``voicegate serve`` then exits 0: see ``cli.serve``.)
    Only in the main thread (tests that run uvicorn in a thread drain in the lifespan instead).
    """

    def __init__(
        self, parts: GatewayParts, twilio: TwilioLeg, readiness: Readiness, timeout_s: float
    ) -> None:
        self._parts = parts
        self._twilio = twilio
        self._readiness = readiness
        self._timeout_s = timeout_s
        self._loop = asyncio.get_running_loop()
        self._previous: dict[int, Any] = {}
        self._task: asyncio.Task[None] | None = None
        self.on_begin: Callable[[], None] | None = None

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            if signal.getsignal(sig) == self._on_signal:
                signal.signal(sig, handler)
        self._previous.clear()

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        # a signal handler: only hand the work to the loop
        self._loop.call_soon_threadsafe(self._start, sig)

    def _start(self, sig: int) -> None:
        # unready at once, so that a load balancer stops sending calls that would be refused
        self._readiness.add("draining", lambda: "draining")
        if self.on_begin is not None:
            self.on_begin()
        is_first = self._task is None
        if is_first and sig == signal.SIGTERM:
            log.info(
                "SIGTERM: draining %d active calls for up to %.0f s; new calls are rejected busy",
                self._parts.calls.active_count,
                self._timeout_s,
            )
            self._twilio.begin_drain()
            self._task = self._loop.create_task(self._drain(sig, self._timeout_s))
        else:
            self._twilio.begin_drain()
            self._task = self._loop.create_task(self._drain(sig, 0.0))

    async def _drain(self, sig: int, timeout_s: float) -> None:
        try:
            await self._parts.calls.drain(timeout_s)
            log.info("drain done: handing %s to the server", signal.Signals(sig).name)
        finally:
            previous = self._previous.get(sig)
            if callable(previous):
                previous(sig, None)
