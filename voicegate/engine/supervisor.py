"""The gateway's engine across faults: one ``Engine`` that is a fresh ``BatchedEngine`` after each
rebuild, with the personas it was given loaded again.

Usage (off the event loop for the blocking calls)::

    engine = EngineSupervisor(lambda generation: create_engine(settings, generation=generation))
    engine.on_fault = subscriber          # once per fault, on an engine thread: hop to your loop
    engine.start()                        # builds generation 0, warms it up
    engine.load_persona(prompt)           # remembered, replayed into every rebuilt engine
    ...
    engine.rebuild()                      # after a fault: close the broken engine, build, swap
    engine.close()

Calls join the current engine; a call that joined a faulted engine keeps its dead slot until it
ends (its ``leave`` is harmless after the swap). A tick thread hung in a model step is left behind
(bounded wait), so a rebuild never waits on the hang it recovers from.

Owns: EngineSupervisor. Imports the runtime (no torch, no pydantic).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from voicegate.engine.base import EngineStats, PersonaPrompt, SlotSink
from voicegate.engine.health import EngineFault
from voicegate.engine.runtime import BatchedEngine
from voicegate.engine.slots import SlotHandle
from voicegate.errors import InvalidStateError

__all__ = ["EngineSupervisor"]

log = logging.getLogger("voicegate.engine")

# how long a rebuild waits for the broken engine's tick thread: a healthy step ends well within
# it, and a hung one will not end by waiting longer
CLOSE_TIMEOUT_S = 0.5
# what a snapshot says of the moment, not a running total: never summed over retired engines
_GAUGES = frozenset(
    {"active_slots", "max_slots", "tick_ms_p50", "tick_ms_p99", "join_ms_p50", "join_ms_p99"}
)
# every running total of EngineStats (ticks, faults, underruns, re-anchors, per-call prompts)
_COUNTERS = tuple(f.name for f in dataclasses.fields(EngineStats) if f.name not in _GAUGES)


class EngineSupervisor:
    """An ``Engine`` (engine/base.py) over the current ``BatchedEngine``; rebuilt after a fault."""

    def __init__(
        self,
        build: Callable[[int], BatchedEngine],
        *,
        close_timeout_s: float = CLOSE_TIMEOUT_S,
    ) -> None:
        self._build = build
        self._close_timeout_s = close_timeout_s
        self._engine: BatchedEngine | None = None
        self._generation = 0
        # the current engine and the personas given to it; held while personas are replayed
        # into a rebuilt engine so that a persona edit meanwhile lands in the new one
        self._lock = threading.RLock()
        self._rebuild_lock = threading.Lock()
        self._prompts: dict[str, PersonaPrompt] = {}
        self._reported: BatchedEngine | None = None
        self._is_rebuilding = False
        self._retired = EngineStats()
        self.on_fault: Callable[[EngineFault], None] | None = None
        self.rebuilds = 0  # rebuilds that completed

    # --- the current engine ----------------------------------------------------------------

    @property
    def current(self) -> BatchedEngine:
        engine = self._engine
        if engine is None:
            raise InvalidStateError("engine: not started")
        return engine

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def fault(self) -> EngineFault | None:
        engine = self._engine
        return engine.fault if engine is not None else None

    def _adopt(self, engine: BatchedEngine) -> None:
        engine.on_fault = lambda fault: self._forward(engine, fault)

    def _forward(self, engine: BatchedEngine, fault: EngineFault) -> None:
        with self._lock:
            if engine is not self._engine or self._reported is engine:
                return  # a retired engine, or this fault was reported already
            self._reported = engine
        callback = self.on_fault
        if callback is not None:
            callback(fault)

    def start(self) -> None:
        """Build and warm up the first engine (blocking: off the event loop)."""
        if self._engine is not None:
            raise InvalidStateError("engine: already started")
        engine = self._build(0)
        self._adopt(engine)
        with self._lock:
            self._engine = engine
        engine.start()

    def rebuild(self) -> None:
        """Replace the current engine by a fresh one with every persona loaded (blocking).

        The broken engine is closed first (its memory freed), so a GPU holds one model at a time.
        Raises what building or starting raised; the gateway then stays unready and may retry.
        """
        with self._rebuild_lock:
            started = time.perf_counter()
            self._is_rebuilding = True
            try:
                old = self._engine
                if old is not None:
                    self._retire(old)
                self._generation += 1
                engine = self._build(self._generation)
                self._adopt(engine)
                engine.start()
                with self._lock:
                    for prompt in list(self._prompts.values()):
                        try:
                            engine.load_persona(prompt)
                        except Exception:
                            log.exception("engine rebuild: persona %s did not load", prompt.key)
                            del self._prompts[prompt.key]
                    self._engine = engine
            finally:
                self._is_rebuilding = False
            self.rebuilds += 1
            log.info(
                "engine %s rebuilt (generation %d) in %.0f ms with %d personas",
                engine.name,
                self._generation,
                (time.perf_counter() - started) * 1000,
                len(self._prompts),
            )
            fault = engine.fault
            if fault is not None:  # it broke before it was current: report it now
                self._forward(engine, fault)

    def _retire(self, engine: BatchedEngine) -> None:
        stats = engine.stats()
        retired = self._retired
        for name in _COUNTERS:
            setattr(retired, name, getattr(retired, name) + getattr(stats, name))
        try:
            engine.close(self._close_timeout_s)
        except Exception:
            log.exception("engine %s: closing the faulted engine failed", engine.name)

    def close(self) -> None:
        engine = self._engine
        if engine is not None:
            engine.close(self._close_timeout_s)

    # --- Engine protocol -------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.current.name

    @property
    def max_slots(self) -> int:
        return self.current.max_slots

    @property
    def active_slots(self) -> int:
        return self.current.active_slots

    def next_tick_at(self) -> float | None:
        engine = self._engine
        return engine.next_tick_at() if engine is not None else None

    def load_persona(self, prompt: PersonaPrompt) -> None:
        """Load into the current engine and remember it for rebuilt ones; while the engine is
        faulted only remember it (the rebuild loads it)."""
        with self._lock:
            engine = self.current
            if engine.fault is None:
                engine.load_persona(prompt)
            self._prompts[prompt.key] = prompt

    def unload_persona(self, key: str) -> None:
        with self._lock:
            self._prompts.pop(key, None)
            self.current.unload_persona(key)

    def has_persona(self, key: str) -> bool:
        return self.current.has_persona(key)

    def count_tokens(self, text: str) -> int:
        return self.current.count_tokens(text)

    def join(
        self,
        persona_key: str,
        sink: SlotSink,
        *,
        seed: int | None = None,
        text_prompt: str | None = None,
    ) -> SlotHandle:
        return self.current.join(persona_key, sink, seed=seed, text_prompt=text_prompt)

    def stats(self) -> EngineStats:
        """The current engine's snapshot; counters include the engines retired before it."""
        stats = self.current.stats()
        retired = self._retired
        changes = {name: getattr(stats, name) + getattr(retired, name) for name in _COUNTERS}
        return dataclasses.replace(stats, **changes)

    def health(self) -> str | None:
        engine = self._engine
        if engine is None:
            return "engine: not started"
        problem = engine.health()
        if problem is not None and self._is_rebuilding:
            return f"{problem} (rebuilding the engine)"
        return problem
