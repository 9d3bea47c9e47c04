"""``SharedEngine``: one process-wide batched engine that many pipecat pipelines share.

pipecat's own speech-to-speech services hold one remote session per call; here every pipeline's
call is a slot of one ``BatchedEngine`` (one GPU serves them all in one batch per 80 ms tick).
The ``SharedEngine`` owns that engine, the personas it has loaded (by name from a personas folder,
or given as ``Persona`` objects), an optional ``EventLog`` to Redis and the ``CallManager`` that
admits each pipeline's call: the same Call layer the gateway's legs use (resampling, barge-in,
transcripts, call flow, events, metrics).

Usage (once per process; pipelines then take ``VoiceGateS2SService(shared, persona=...)``)::

    shared = SharedEngine(engine="personaplex", model_dir="/models/personaplex",
                          personas_dir="personas", events_url="redis://localhost:6379/0")
    await shared.start()        # builds and warms the engine off the event loop
    ...
    await shared.aclose()

Owns: ``SharedEngine``, ``shared_engine``. Imports the Call layer, the engine factory, personas
and events; never pipecat (the service does).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import types
import uuid
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from voicegate.calls.faults import FaultResponder
from voicegate.calls.manager import CallManager
from voicegate.contracts import CallInfo, LegTransport
from voicegate.engine.base import Engine
from voicegate.engine.factory import create_engine
from voicegate.engine.supervisor import EngineSupervisor
from voicegate.errors import ConfigError, InvalidStateError, PersonaError
from voicegate.events.schema import Event
from voicegate.personas.loader import load_persona
from voicegate.personas.schema import Persona

__all__ = ["SharedEngine", "shared_engine"]

log = logging.getLogger("voicegate.pipecat")

LEG = "pipecat"


class _NoEvents:
    """The EventSink when no events URL is given: events are dropped."""

    def emit(self, event: Event) -> None:
        pass


class _Personas:
    """``PersonaSource`` over the personas this engine loaded (for limits and call flow)."""

    def __init__(self) -> None:
        self.by_name: dict[str, Persona] = {}

    def get(self, name: str) -> Persona | None:
        return self.by_name.get(name)


class SharedEngine:
    """A process-wide engine, its personas, events and Call admission for pipecat pipelines.

    ``engine`` is a backend name (``tiny``, ``echo``, ``personaplex``; built with
    ``voicegate.engine.create_engine`` under an ``EngineSupervisor``: after an engine fault every
    call ends, ``engine_fault``, and the engine is rebuilt) or an ``Engine`` already started
    (then its faults are yours to handle). ``events_url``: a Redis
    URL; the calls' events then go there as the gateway writes them (``journal_dir`` keeps them
    through an outage). All methods run on one event loop, except where said.
    """

    def __init__(
        self,
        engine: str | Engine = "tiny",
        *,
        personas_dir: Path | str | None = None,
        events_url: str = "",
        journal_dir: Path | str | None = None,
        max_calls: int = 0,
        model_dir: Path | str | None = None,
        device: str = "cpu",
        registry: CollectorRegistry | None = None,
        **engine_settings: Any,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._personas_dir = Path(personas_dir) if personas_dir is not None else None
        self._events_url = events_url
        self._journal_dir = Path(journal_dir) if journal_dir is not None else None
        self._max_calls = max_calls
        self._owns_engine = isinstance(engine, str)
        self._settings = types.SimpleNamespace(
            engine=engine if isinstance(engine, str) else "",
            max_calls=max_calls,
            model_dir=Path(model_dir) if model_dir is not None else None,
            device=device,
            **engine_settings,
        )
        self._engine: Engine | None = None if isinstance(engine, str) else engine
        self._personas = _Personas()
        self._events: Any = _NoEvents()
        self._calls: CallManager | None = None
        self._faults: FaultResponder | None = None
        self._start_lock = asyncio.Lock()
        self._persona_lock = threading.Lock()
        self._is_closed = False

    @property
    def is_started(self) -> bool:
        return self._calls is not None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise InvalidStateError("pipecat shared engine: not started (await start())")
        return self._engine

    @property
    def calls(self) -> CallManager:
        if self._calls is None:
            raise InvalidStateError("pipecat shared engine: not started (await start())")
        return self._calls

    @property
    def events(self) -> Any:
        """The EventLog when an events URL was given (else a sink that drops events)."""
        return self._events

    async def start(self) -> None:
        """Build and warm the engine (off the loop), start the event writer; idempotent."""
        async with self._start_lock:
            if self._calls is not None:
                return
            if self._is_closed:
                raise InvalidStateError("pipecat shared engine: closed")
            if self._events_url:
                from voicegate.events import EventLog

                journal = self._journal_dir or Path(".voicegate-journal")
                events = EventLog(self._events_url, journal_dir=journal, registry=self.registry)
                await events.start()
                self._events = events
            if self._engine is None:
                settings = self._settings
                supervisor = EngineSupervisor(
                    lambda generation: create_engine(settings, generation=generation)
                )
                await asyncio.to_thread(supervisor.start)
                self._engine = supervisor
            calls = CallManager(
                self._engine,
                self._events,
                registry=self.registry,
                max_calls=self._max_calls,
                personas=self._personas,
            )
            if isinstance(self._engine, EngineSupervisor):
                # an engine fault: every pipeline's call ends (EndWorkerFrame), none is admitted
                # until the engine is rebuilt (the gateway's own FaultResponder)
                self._faults = FaultResponder(
                    calls,
                    self._events,
                    overflow=lambda to: "",
                    rebuild=self._engine.rebuild,
                    registry=self.registry,
                )
                self._engine.on_fault = self._faults.report
            self._calls = calls
            log.info(
                "pipecat shared engine %s ready: %d slots",
                self._engine.name,
                self._engine.max_slots,
            )

    async def persona(self, persona: str | Persona) -> str:
        """Load ``persona`` (a name in the personas folder, or a ``Persona``) into the engine
        once, off the loop; returns the name calls join with. Raises ``PersonaError``."""
        if isinstance(persona, Persona):
            return await asyncio.to_thread(self._load, persona)
        if persona in self._personas.by_name:
            return persona
        if self._personas_dir is None:
            raise PersonaError(
                f"pipecat: persona {persona!r} given by name but no personas_dir was set"
            )
        path = self._personas_dir / f"{persona}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in self._personas_dir.glob("*.yaml"))
            raise PersonaError(
                f"pipecat: no persona {persona!r} in {self._personas_dir} (have: {known})"
            )
        loaded = await asyncio.to_thread(load_persona, path, self._personas_dir)
        return await asyncio.to_thread(self._load, loaded)

    def _load(self, persona: Persona) -> str:
        # a worker thread: the engine computes the persona's prompt state once
        with self._persona_lock:
            known = self._personas.by_name.get(persona.name)
            if known is None or known.digest != persona.digest or known != persona:
                self.engine.load_persona(persona.to_prompt())
                self._personas.by_name[persona.name] = persona
        return persona.name

    def start_call(
        self, leg: LegTransport, persona: str, *, call_id: str = "", from_: str = "", to: str = ""
    ) -> Any:
        """Admit one pipeline's call (``NoFreeSlot`` when the engine is full)."""
        info = CallInfo(
            call_id=call_id or f"pc-{uuid.uuid4().hex[:16]}",
            leg=LEG,
            persona=persona,
            from_=from_,
            to=to,
            leg_call_ref=call_id,
        )
        return self.calls.start_call(info, leg)

    async def aclose(self) -> None:
        """End the calls, stop the engine (when built here) and flush the events."""
        self._is_closed = True
        if self._calls is not None:
            await self._calls.drain(0)
        if self._faults is not None:
            await self._faults.aclose()
        if self._engine is not None and self._owns_engine:
            await asyncio.to_thread(self._engine.close)
        closer = getattr(self._events, "aclose", None)
        if closer is not None:
            await closer()


_SHARED: dict[str, tuple[SharedEngine, dict[str, Any]]] = {}


def shared_engine(name: str = "default", **kwargs: Any) -> SharedEngine:
    """The process-wide ``SharedEngine`` called ``name``, made with ``kwargs`` the first time.

    Every pipeline of the process that asks for the same name gets the same engine; asking again
    with different arguments is a ``ConfigError`` (the first ones hold).
    """
    existing = _SHARED.get(name)
    if existing is None:
        engine = SharedEngine(**kwargs)
        _SHARED[name] = (engine, dict(kwargs))
        return engine
    engine, made_with = existing
    if kwargs and kwargs != made_with:
        raise ConfigError(f"pipecat: shared engine {name!r} exists with other settings")
    return engine
