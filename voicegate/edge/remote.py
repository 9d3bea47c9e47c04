"""An edge worker's engine: the ``Engine`` a CallManager uses, served by the engine process.

Usage (``voicegate.edge.worker`` wires it)::

    engine = RemoteEngine(conn, tick_sock)   # reads the Hello, maps the shared rings
    engine.start()                           # the control and tick reader threads
    slot = engine.join("bank_teller", call)  # blocks on the event loop for one round trip
    slot.push(frame)                         # into the shared input ring: no system call
    ...                                      # call.on_tick(out) runs on the TICK READER THREAD
    slot.leave()

A Call cannot tell it from the in-process engine: ``join`` raises the same NoFreeSlot /
UnknownPersona, the slot pushes 1920-sample frames and has ``next_tick_at`` (the engine
process publishes its schedule; ``time.monotonic`` is one clock for every process of a host),
and the sink gets each tick's ``TickOutput`` on a thread that is not the event loop, as from
the engine's tick thread. Counters and health come from the rings' header.

Owns: RemoteEngine, RemoteSlot. Imports the rings, the messages and the engine contract.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection

import numpy as np
import numpy.typing as npt

from voicegate import errors
from voicegate.edge.messages import (
    FaultNotice,
    Hello,
    JoinReply,
    JoinRequest,
    Leave,
    NextStepNote,
    RebuildReply,
    RebuildRequest,
    close_channel,
)
from voicegate.edge.rings import (
    CTL_IN_DROPPED,
    CTL_OVERRUNS,
    CTL_UNDERRUNS,
    NEXT_TICK_AT,
    OUT_FRAMES,
    RingLayout,
    SlotRings,
)
from voicegate.engine.base import (
    FRAME_SAMPLES,
    EngineStats,
    PersonaPrompt,
    SlotSink,
    SlotStats,
    TickOutput,
)
from voicegate.engine.health import FaultKind
from voicegate.errors import EngineError
from voicegate.histogram import Timings

__all__ = ["RemoteEngine", "RemoteFault", "RemoteSlot"]

log = logging.getLogger("voicegate.edge")

FRAME_LEAD_BUCKETS = (0.0, 0.002, 0.005, 0.008, 0.012, 0.02, 0.03, 0.04, 0.06, 0.08)

JOIN_TIMEOUT_S = 5.0
REBUILD_TIMEOUT_S = 900.0  # a 7B engine loads and warms up in minutes


@dataclass(frozen=True, slots=True)
class RemoteFault:
    """An engine fault as the engine process reported it (``calls.faults.FaultLike``)."""

    kind: FaultKind
    at: float
    detail: str

    def describe(self) -> str:
        return self.detail


class RemoteSlot:
    """A call's slot in the engine process's batch, reached through the shared rings."""

    __slots__ = (
        "_final",
        "_generation",
        "_index",
        "_is_left",
        "_owner",
        "_persona_key",
        "_rings",
        "sink",
    )

    def __init__(
        self,
        owner: RemoteEngine,
        rings: SlotRings,
        index: int,
        generation: int,
        persona_key: str,
        sink: SlotSink,
    ) -> None:
        self._owner = owner
        self._rings = rings
        self._index = index
        self._generation = generation
        self._persona_key = persona_key
        self._is_left = False
        self._final: SlotStats | None = None
        self.sink = sink

    @property
    def index(self) -> int:
        return self._index

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def persona_key(self) -> str:
        return self._persona_key

    @property
    def stats(self) -> SlotStats:
        """The engine's counters for this slot (overruns include frames a full shared ring
        refused); frozen when the call leaves."""
        if self._final is not None:
            return self._final
        ctl = self._rings.ctl[self._index]
        return SlotStats(
            frames=0,
            underruns=int(ctl[CTL_UNDERRUNS]),
            overruns=int(ctl[CTL_OVERRUNS]) + int(ctl[CTL_IN_DROPPED]),
        )

    @property
    def is_active(self) -> bool:
        return (
            not self._is_left
            and self._owner.is_connected
            and self._rings.generation(self._index) == self._generation
        )

    def push(self, pcm: npt.NDArray[np.float32]) -> None:
        """Queue one 1920-sample 24 kHz frame in the shared ring (copies; never blocks)."""
        if pcm.shape != (FRAME_SAMPLES,):
            raise ValueError(
                f"slot {self._index}: expected a ({FRAME_SAMPLES},) frame, got {pcm.shape}"
            )
        if self._is_left or self._rings.generation(self._index) != self._generation:
            return
        self._rings.push_input(self._index, pcm)
        # how long before the next tick takes inputs the frame is there: the framer places a
        # frame its margin to margin + 20 ms ahead of its tick (8-28 ms by default), so a lead
        # over 40 ms is a frame that missed the tick before (by 80 ms less the lead); 0 or
        # less, the tick is late to take it
        lead = self._rings.header[NEXT_TICK_AT] - time.monotonic()
        if lead == lead:  # not NaN (no schedule)
            self._owner.frame_lead.observe(float(lead))

    def leave(self) -> None:
        if self._is_left:
            return
        self._final = self.stats
        self._is_left = True
        self._owner._left(self)

    def next_tick_at(self) -> float | None:
        return self._owner.next_tick_at()

    def __repr__(self) -> str:
        return f"RemoteSlot(index={self._index}, persona={self._persona_key!r})"


class RemoteEngine:
    """The ``Engine`` of an edge worker (and what the gateway wiring asks of an engine)."""

    def __init__(self, conn: Connection, tick_sock: socket.socket) -> None:
        self._conn = conn
        self._tick_sock = tick_sock
        hello = conn.recv()
        if not isinstance(hello, Hello):
            raise EngineError(f"edge worker: expected a Hello first, got {type(hello).__name__}")
        self.hello = hello
        self._rings = SlotRings.attach(hello.ring_name, RingLayout(hello.ring_slots))
        self._send_lock = threading.Lock()
        self._requests = itertools.count(1)
        self._waiting: dict[int, tuple[threading.Event, list[object]]] = {}
        self._slots: dict[int, RemoteSlot] = {}  # slot index -> this worker's call there
        self._slots_view: tuple[RemoteSlot, ...] = ()
        self._lock = threading.Lock()
        self._is_connected = True
        self._is_closed = False
        self._lost_why = ""
        self._fault: RemoteFault | None = None
        self._threads: list[threading.Thread] = []
        self._wake_r, self._wake_w = socket.socketpair()  # close() wakes the tick reader
        self._out = TickOutput(0, np.zeros(FRAME_SAMPLES, dtype=np.float32), 0, "")
        self.on_fault: Callable[[RemoteFault], None] | None = None
        self.on_lost: Callable[[str], None] | None = None  # the engine process went away
        self.on_note: Callable[[NextStepNote], None] | None = None  # another worker's step
        self.ticks_delivered = 0
        self.frame_lead = Timings(
            "voicegate_caller_frame_lead_seconds",
            "How long before the engine's next tick each caller frame reached the shared "
            "ring (a frame is placed 8-28 ms ahead of its tick by default: over 40 ms, it "
            "missed the one before).",
            FRAME_LEAD_BUCKETS,
        )

    # --- life cycle --------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.hello.engine_name

    @property
    def is_connected(self) -> bool:
        return self._is_connected

    @property
    def fault(self) -> RemoteFault | None:
        return self._fault

    def start(self) -> None:
        for target, name in ((self._read_control, "ctl"), (self._read_ticks, "ticks")):
            thread = threading.Thread(target=target, name=f"voicegate-edge-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        if self._is_closed:
            return
        self._is_closed = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        close_channel(self._conn)
        for thread in self._threads:
            thread.join(2.0)
        for sock in (self._tick_sock, self._wake_r, self._wake_w):
            sock.close()
        self._rings.close()

    def health(self) -> str | None:
        if not self._is_connected:
            return f"engine process gone: {self._lost_why}"
        if self._rings.read("health") != 0.0:
            fault = self._fault
            return fault.detail if fault is not None else f"engine {self.name}: not serving"
        return None

    def load_persona(self, prompt: PersonaPrompt) -> None:
        """The engine process loads personas from its own store: nothing to do here."""

    def unload_persona(self, key: str) -> None:
        """See ``load_persona``."""

    def has_persona(self, key: str) -> bool:
        return True  # the engine process answers at join (UnknownPersona)

    def count_tokens(self, text: str) -> int:
        from voicegate.personas.tokens import estimate_tokens

        return estimate_tokens(text)

    @property
    def max_slots(self) -> int:
        return int(self._rings.read("max_slots"))

    @property
    def active_slots(self) -> int:
        """Slots taken in the engine by every worker's calls (admission is global)."""
        return int(self._rings.read("active_slots"))

    def next_tick_at(self) -> float | None:
        at = self._rings.read("next_tick_at")
        return None if math.isnan(at) or not self._is_connected else at

    def stats(self) -> EngineStats:
        r = self._rings.read
        return EngineStats(
            ticks=int(r("ticks")),
            late_ticks=int(r("late_ticks")),
            skipped_ticks=int(r("skipped_ticks")),
            tick_errors=int(r("tick_errors")),
            sink_errors=int(r("sink_errors")),
            underruns=int(r("underruns")),
            overruns=int(r("overruns")),
            active_slots=int(r("active_slots")),
            max_slots=int(r("max_slots")),
            tick_ms_p50=r("tick_ms_p50"),
            tick_ms_p99=r("tick_ms_p99"),
            reanchors=int(r("reanchors")),
            reanchor_ms=r("reanchor_ms"),
        )

    # --- calls -------------------------------------------------------------------------------

    def join(
        self,
        persona_key: str,
        sink: SlotSink,
        *,
        seed: int | None = None,
        text_prompt: str | None = None,
    ) -> RemoteSlot:
        """Take a slot in the engine process (one round trip on the control channel); a call's
        own ``text_prompt`` is prefilled there, between ticks, as in one process."""
        info = getattr(sink, "info", None)
        request = JoinRequest(0, persona_key, info, seed, text_prompt)
        reply = self._ask(request, JOIN_TIMEOUT_S)
        assert isinstance(reply, JoinReply)
        if reply.error:
            cls = getattr(errors, reply.error, None)
            if not (isinstance(cls, type) and issubclass(cls, errors.VoiceGateError)):
                cls = EngineError
            raise cls(reply.message)
        slot = RemoteSlot(self, self._rings, reply.slot, reply.generation, persona_key, sink)
        # this worker's reader is the slot's output consumer from now on: what the previous
        # call left unread is not ours (the reader sees the slot only after this)
        self._rings.skip_outputs_to(reply.slot, reply.out_start)
        with self._lock:
            self._slots[reply.slot] = slot
            self._slots_view = tuple(self._slots.values())
        return slot

    def _left(self, slot: RemoteSlot) -> None:
        with self._lock:
            if self._slots.get(slot.index) is slot:
                del self._slots[slot.index]
                self._slots_view = tuple(self._slots.values())
        if self._is_connected:
            try:
                self._send(Leave(slot.index, slot.generation))
            except OSError:
                pass

    def rebuild(self) -> None:
        """Have the engine process rebuild its faulted engine (blocking: off the loop)."""
        reply = self._ask(RebuildRequest(0), REBUILD_TIMEOUT_S)
        assert isinstance(reply, RebuildReply)
        if reply.error:
            raise EngineError(f"engine rebuild failed in the engine process: {reply.error}")
        self._fault = None

    def send_note(self, note: NextStepNote) -> None:
        """To every other worker, through the engine process (never raises)."""
        if self._is_connected:
            try:
                self._send(note)
            except OSError:
                pass

    def _send(self, message: object) -> None:
        with self._send_lock:
            self._conn.send(message)

    def _ask(self, message: JoinRequest | RebuildRequest, timeout_s: float) -> object:
        if not self._is_connected:
            raise EngineError(f"engine process gone: {self._lost_why}")
        request = next(self._requests)
        message = dataclasses.replace(message, request=request)
        done = threading.Event()
        box: list[object] = []
        self._waiting[request] = (done, box)
        try:
            self._send(message)
            if not done.wait(timeout_s):
                raise EngineError(
                    f"engine process: no answer to {type(message).__name__} in {timeout_s:g} s"
                )
        except OSError as exc:
            raise EngineError(f"engine process gone: {exc!r}") from exc
        finally:
            self._waiting.pop(request, None)
        if not box:
            raise EngineError(f"engine process gone: {self._lost_why}")
        return box[0]

    # --- threads -----------------------------------------------------------------------------

    def _read_control(self) -> None:
        why = "its control channel closed"
        try:
            while True:
                message = self._conn.recv()
                if isinstance(message, (JoinReply, RebuildReply)):
                    waiting = self._waiting.get(message.request)
                    if waiting is not None:
                        waiting[1].append(message)
                        waiting[0].set()
                elif isinstance(message, NextStepNote):
                    note = self.on_note
                    if note is not None:
                        note(message)
                elif isinstance(message, FaultNotice):
                    try:
                        kind = FaultKind(message.kind)
                    except ValueError:
                        kind = FaultKind.RAISE
                    fault = RemoteFault(kind, message.at, message.detail)
                    self._fault = fault
                    callback = self.on_fault
                    if callback is not None:
                        callback(fault)
                else:
                    log.error("edge: unexpected %r from the engine process", message)
        except (EOFError, OSError) as exc:
            if not isinstance(exc, EOFError):
                why = repr(exc)
        self._lost(why)

    def _lost(self, why: str) -> None:
        if self._is_closed:
            return
        self._lost_why = why
        self._is_connected = False
        for done, _ in list(self._waiting.values()):
            done.set()
        log.error("edge: the engine process is gone (%s)", why)
        callback = self.on_lost
        if callback is not None:
            callback(why)

    def _read_ticks(self) -> None:
        """TICK READER THREAD: on each notice, hand every new tick to its call's sink."""
        sock, wake = self._tick_sock, self._wake_r
        rings, out = self._rings, self._out
        sock.setblocking(False)
        while not self._is_closed:
            try:
                ready, _, _ = select.select([sock, wake], [], [])
            except (OSError, ValueError):
                return
            if wake in ready:
                return
            try:
                if not sock.recv(4096):
                    return  # the engine process closed it
            except BlockingIOError:
                continue
            except OSError:
                return
            for slot in self._slots_view:
                index = slot.index
                if slot._is_left or rings.generation(index) != slot.generation:
                    continue
                sink, generation = slot.sink, slot.generation
                for _ in range(OUT_FRAMES):
                    made_for = rings.take_output(index, out)
                    if made_for < 0:
                        break
                    if made_for != generation:
                        continue  # the previous call's last tick, late
                    self.ticks_delivered += 1
                    try:
                        sink.on_tick(out)
                    except Exception:
                        log.exception("edge: sink of slot %d raised", index)
