"""The engine process's side of the edge workers: slots joined on their behalf, rings pumped.

Usage (``voicegate.edge.serve`` wires it)::

    host = EngineHost(events)
    engine = EngineSupervisor(lambda g: host.adopt(create_engine(settings, generation=g)))
    engine.start(); host.start(engine)          # creates the shared rings
    host.attach(k, conn, tick_sock, hello)      # per worker: a thread serves its control channel
    ...
    host.close()

On the engine's TICK THREAD, around every tick (``BatchedEngine.before_tick``/``after_tick``):
before the step every remote slot's queued caller frames move from its shared input ring into
the slot (``SlotHandle.push``: the engine's own ring, overrun and trim rules unchanged); after
it the engine's counters and next tick time go to the rings' header, and every worker with a
call gets one byte on its tick socket (non-blocking: a worker that does not read loses
notices, never stalls the tick). The slot's sink copies its output into the output ring.

A worker whose control channel closes (it exited or was killed) loses its slots at once: each
leaves the engine, and this process writes the ``call.ended`` the worker no longer can, with
reason ``error`` and a detail that names the worker, so no call stays open in Redis.

Owns: EngineHost. Imports the engine runtime, the rings and the event schema.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from multiprocessing.connection import Connection

from voicegate.calls import report
from voicegate.calls.dynamics import analyse
from voicegate.contracts import CallInfo, EndReason, EventSink
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
    CTL_OVERRUNS,
    CTL_UNDERRUNS,
    NEXT_TICK_AT,
    RingLayout,
    SlotRings,
)
from voicegate.engine.base import TickOutput
from voicegate.engine.health import EngineFault
from voicegate.engine.runtime import BatchedEngine
from voicegate.engine.slots import SlotHandle
from voicegate.engine.supervisor import EngineSupervisor

__all__ = ["EngineHost", "WORKER_LOST_DETAIL"]

log = logging.getLogger("voicegate.edge")

SEEN_CALLS = 65_536
WORKER_LOST_DETAIL = "edge worker {worker} (pid {pid}) exited mid-call: {why}"


class _RingSink:
    """A remote call's ``SlotSink``: ENGINE THREAD, copies the tick into the output ring,
    stamped with the call's generation (a late tick after the slot changed hands is dropped
    by the new call's reader)."""

    __slots__ = ("generation", "index", "rings")

    def __init__(self, rings: SlotRings) -> None:
        self.rings = rings
        self.index = -1  # set once the slot is known (a tick before that is not the call's)
        self.generation = 0

    def on_tick(self, out: TickOutput) -> None:
        if self.index >= 0:
            self.rings.put_output(self.index, out, self.generation)


class _Worker:
    def __init__(
        self, index: int, pid: int, conn: Connection, tick_sock: socket.socket, hello: Hello
    ) -> None:
        self.index = index
        self.pid = pid
        self.conn = conn
        self.tick_sock = tick_sock
        self.hello = hello
        self.send_lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.is_gone = False
        self.notices_lost = 0

    def send(self, message: object) -> None:
        with self.send_lock:
            self.conn.send(message)


@dataclass(slots=True)
class _Remote:
    worker: int
    owner: _Worker
    handle: SlotHandle
    generation: int
    info: CallInfo | None
    joined_at: float
    in_start: int  # the input ring's write count at the hand-over: older frames are not ours
    is_primed: bool = False  # the tick thread skipped to in_start


class EngineHost:
    """Serves the edge workers' control channels and bridges their slots to the engine."""

    def __init__(self, events: EventSink) -> None:
        self._events = events
        self._engine: EngineSupervisor | None = None
        self._rings: SlotRings | None = None
        self._lock = threading.Lock()  # _remote, _workers
        self._remote: dict[int, _Remote] = {}  # slot index -> the call holding it
        self._remote_view: tuple[tuple[int, _Remote], ...] = ()  # the tick thread's snapshot
        self._workers: dict[int, _Worker] = {}
        # call ids that joined lately: a call joins once, whichever worker asks (a replayed
        # Twilio token in another worker must not start the call twice)
        self._seen_calls: OrderedDict[str, None] = OrderedDict()
        self._rebuild_lock = threading.Lock()
        self._is_closed = False
        self.orphans_ended = 0

    # --- engine ------------------------------------------------------------------------------

    def adopt(self, engine: BatchedEngine) -> BatchedEngine:
        """Install the tick hooks on a (re)built engine; returns it (for the build factory)."""
        engine.before_tick = self._pump_inputs
        engine.after_tick = self._publish
        if self._rings is None:
            # every row the model has: a slot index is never beyond it, whatever is admitted
            self._rings = SlotRings.create(RingLayout(engine.model.max_slots))
        return engine

    def start(self, engine: EngineSupervisor) -> None:
        """After ``engine.start()``: faults go to every worker."""
        self._engine = engine
        engine.on_fault = self._on_fault
        self._publish()

    @property
    def rings(self) -> SlotRings:
        if self._rings is None:
            raise RuntimeError("edge host: no engine adopted yet")
        return self._rings

    def _pump_inputs(self) -> None:
        """TICK THREAD, before the step: remote callers' frames into their slots, and the
        next tick's time to the header at once (as the in-process engine's ``next_tick_at``
        moves on when a tick takes its frames: a frame pushed during this step is the next
        tick's, and a worker must not see a tick time in the past until ``_publish``)."""
        rings, engine = self._rings, self._engine
        if rings is None:
            return
        if engine is not None:
            next_at = engine.next_tick_at()
            if next_at is not None:
                rings.header[NEXT_TICK_AT] = next_at
        for index, remote in self._remote_view:
            handle = remote.handle
            if not remote.is_primed:
                rings.skip_inputs_to(index, remote.in_start)
                remote.is_primed = True
            while True:
                frame = rings.pop_input(index)
                if frame is None:
                    break
                handle.push(frame)
                rings.release_input(index)

    def _publish(self) -> None:
        """TICK THREAD, after the step: counters and schedule to the header, tick notices."""
        rings, engine = self._rings, self._engine
        if rings is None or engine is None:
            return
        stats = engine.stats()
        next_at = engine.next_tick_at()
        rings.publish(
            next_tick_at=float("nan") if next_at is None else next_at,
            health=0.0 if engine.health() is None else 1.0,
            max_slots=stats.max_slots,
            active_slots=stats.active_slots,
            ticks=stats.ticks,
            late_ticks=stats.late_ticks,
            skipped_ticks=stats.skipped_ticks,
            tick_errors=stats.tick_errors,
            sink_errors=stats.sink_errors,
            underruns=stats.underruns,
            overruns=stats.overruns,
            tick_ms_p50=stats.tick_ms_p50,
            tick_ms_p99=stats.tick_ms_p99,
            reanchors=stats.reanchors,
            reanchor_ms=stats.reanchor_ms,
        )
        ctl = rings.ctl
        notify: set[int] = set()
        for index, remote in self._remote_view:
            slot_stats = remote.handle.stats
            ctl[index, CTL_UNDERRUNS] = slot_stats.underruns
            ctl[index, CTL_OVERRUNS] = slot_stats.overruns
            notify.add(remote.worker)
        for k in notify:
            worker = self._workers.get(k)
            if worker is None or worker.is_gone:
                continue
            try:
                worker.tick_sock.send(b"t")
            except (BlockingIOError, InterruptedError):
                worker.notices_lost += 1  # it has unread notices: one is as good as many
            except OSError:
                pass  # gone: its control thread cleans up

    def _on_fault(self, fault: EngineFault) -> None:
        """Any thread: tell every worker (each moves its calls off, as a single gateway does)."""
        notice = FaultNotice(fault.kind.value, fault.at, fault.describe())
        for worker in list(self._workers.values()):
            try:
                worker.send(notice)
            except OSError:
                pass
        self._publish()

    # --- workers -----------------------------------------------------------------------------

    def attach(
        self, index: int, pid: int, conn: Connection, tick_sock: socket.socket, hello: Hello
    ) -> None:
        """Send ``hello`` and serve worker ``index``'s control channel on a thread."""
        tick_sock.setblocking(False)
        worker = _Worker(index, pid, conn, tick_sock, hello)
        with self._lock:
            self._workers[index] = worker
        worker.send(hello)
        worker.thread = threading.Thread(
            target=self._serve, args=(worker,), name=f"voicegate-edge-ctl-{index}", daemon=True
        )
        worker.thread.start()

    def _serve(self, worker: _Worker) -> None:
        why = "its control channel closed"
        try:
            while True:
                message = worker.conn.recv()
                if isinstance(message, JoinRequest):
                    worker.send(self._join(worker, message))
                elif isinstance(message, Leave):
                    self._leave(worker.index, message.slot, message.generation)
                elif isinstance(message, RebuildRequest):
                    worker.send(self._rebuild(message))
                elif isinstance(message, NextStepNote):
                    self._relay(worker.index, message)
                else:
                    log.error("edge worker %d: unexpected %r: closing it", worker.index, message)
                    why = f"it sent an unexpected {type(message).__name__}"
                    break
        except (EOFError, OSError) as exc:
            if not isinstance(exc, EOFError):
                why = f"its control channel failed: {exc!r}"
        except Exception as exc:
            log.exception("edge worker %d: control channel failed", worker.index)
            why = f"its control channel failed: {exc!r}"
        self._gone(worker, why)

    def _relay(self, sender: int, note: NextStepNote) -> None:
        for worker in list(self._workers.values()):
            if worker.index != sender and not worker.is_gone:
                try:
                    worker.send(note)
                except OSError:
                    pass

    def _join(self, worker: _Worker, request: JoinRequest) -> JoinReply:
        engine, rings = self._engine, self._rings
        if engine is None or rings is None or self._is_closed:
            return JoinReply(request.request, error="InvalidStateError", message="engine closed")
        call_id = request.info.call_id if request.info is not None else ""
        if call_id:
            with self._lock:
                if call_id in self._seen_calls:
                    return JoinReply(
                        request.request,
                        error="InvalidStateError",
                        message=f"call {call_id}: joined already (in this or another worker)",
                    )
                self._seen_calls[call_id] = None
                while len(self._seen_calls) > SEEN_CALLS:
                    self._seen_calls.popitem(last=False)
        sink = _RingSink(rings)
        try:
            handle = engine.join(
                request.persona, sink, seed=request.seed, text_prompt=request.text_prompt
            )
        except Exception as exc:  # the worker raises the same class
            return JoinReply(request.request, error=type(exc).__name__, message=str(exc))
        index = handle.index
        generation, in_start, out_start = rings.hand_over(index)
        sink.generation = generation
        sink.index = index
        with self._lock:
            if worker.is_gone:
                handle.leave()
                return JoinReply(request.request, error="InvalidStateError", message="gone")
            self._remote[index] = _Remote(
                worker.index, worker, handle, generation, request.info, time.monotonic(), in_start
            )
            self._remote_view = tuple(self._remote.items())
        self._publish_active()
        return JoinReply(request.request, slot=index, generation=generation, out_start=out_start)

    def _leave(self, worker: int, index: int, generation: int) -> None:
        with self._lock:
            remote = self._remote.get(index)
            if (
                remote is None
                or remote.worker != worker
                or remote.owner.is_gone
                or remote.generation != generation
            ):
                return
            del self._remote[index]
            self._remote_view = tuple(self._remote.items())
        remote.handle.leave()
        self._publish_active()

    def _publish_active(self) -> None:
        engine, rings = self._engine, self._rings
        if engine is not None and rings is not None:
            try:
                rings.publish(active_slots=engine.active_slots, max_slots=engine.max_slots)
            except Exception:  # a closed engine
                pass

    def _rebuild(self, request: RebuildRequest) -> RebuildReply:
        engine = self._engine
        if engine is None:
            return RebuildReply(request.request, error="engine not started")
        with self._rebuild_lock:  # every worker asks; the first one rebuilds
            if engine.fault is None and engine.health() is None:
                return RebuildReply(request.request)
            try:
                engine.rebuild()
            except Exception as exc:
                log.exception("edge: engine rebuild failed")
                return RebuildReply(request.request, error=f"{type(exc).__name__}: {exc}")
        self._publish()
        return RebuildReply(request.request)

    def worker_gone(self, index: int, why: str) -> None:
        """Worker ``index`` is gone: free its slots and end its calls in the event log."""
        worker = self._workers.get(index)
        if worker is not None:
            self._gone(worker, why)

    def _gone(self, worker: _Worker, why: str) -> None:
        index = worker.index
        with self._lock:
            if worker.is_gone:
                return
            worker.is_gone = True
            lost = [(i, r) for i, r in self._remote.items() if r.worker == index]
            # a worker started again under this index must not lose the new one's calls:
            # calls are matched to the _Worker that joined them
            lost = [(i, r) for i, r in lost if r.owner is worker]
            for i, _ in lost:
                del self._remote[i]
            self._remote_view = tuple(self._remote.items())
        for _, remote in lost:
            remote.handle.leave()
            if self._is_closed:
                continue
            self._end_orphan(
                remote, WORKER_LOST_DETAIL.format(worker=index, pid=worker.pid, why=why)
            )
        self._publish_active()
        close_channel(worker.conn)
        try:
            worker.tick_sock.close()
        except OSError:
            pass
        if lost and not self._is_closed:
            log.error(
                "edge worker %d (pid %d) is gone (%s): %d calls ended, their slots freed",
                index,
                worker.pid,
                why,
                len(lost),
            )

    def _end_orphan(self, remote: _Remote, detail: str) -> None:
        info = remote.info
        if info is None:
            return
        self.orphans_ended += 1
        t_ms = int((time.monotonic() - remote.joined_at) * 1000)
        stats = remote.handle.stats
        self._events.emit(
            report.ended(
                info,
                t_ms=t_ms,
                reason=EndReason.ERROR,
                detail=detail,
                frames=stats.frames,
                underruns=0,
                bargeins=0,
                dynamics=analyse([], []),
                counters={
                    "slot_underruns": stats.underruns,
                    "slot_overruns": stats.overruns,
                    "worker_lost": 1,
                },
            )
        )

    @property
    def remote_calls(self) -> int:
        return len(self._remote)

    def close(self) -> None:
        """Forget the workers (their slots leave) and remove the shared segment."""
        self._is_closed = True
        for index in list(self._workers):
            self.worker_gone(index, "the gateway is stopping")
        rings, self._rings = self._rings, None
        if rings is not None:
            try:
                rings.close()
            except BufferError:  # a view still held (a tick thread left behind in a hang)
                log.warning("edge: the shared rings are still in use: left to the OS")
