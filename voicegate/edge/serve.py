"""``voicegate serve --workers N``: one engine process, N edge worker processes.

The engine process (this one) builds the engine, loads the personas into it (its own store,
hot reload included), keeps an event log for the calls a dead worker leaves behind, binds one
HTTP listening socket per worker on the same port (SO_REUSEPORT: the kernel hands each new
connection to one of them), the same for the SIP UDP port (each dialog then runs in the worker
that owns its Call-ID: ``voicegate.legs.sip.shard``), and starts the workers
(``voicegate.edge.worker``), which own every leg and Call.
Audio crosses between them in shared memory (``rings``), control on a socket pair per worker
(``messages``); see ``host`` and ``remote``.

SIGTERM (or SIGINT) is passed to every worker: each drains its calls as a single gateway does
(new calls busy, ``/readyz`` 503, calls ended after ``VOICEGATE_DRAIN_TIMEOUT_S``) and exits;
then the engine stops and this process exits 0. A worker that dies mid-serving loses its calls
(``host`` ends them and frees their slots; the others carry on) and is started again, unless it
died within ``RESTART_MIN_UPTIME_S`` of its start; the gateway exits 1 once no worker is left.

Owns: serve_workers. Wires the engine, the personas, the event log and the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from types import FrameType

from prometheus_client import CollectorRegistry

from voicegate.blas import limit_blas_threads
from voicegate.config import Settings
from voicegate.edge.host import EngineHost
from voicegate.edge.messages import Hello
from voicegate.engine import EngineSupervisor, create_engine
from voicegate.engine.tokenizer import release_token_counter
from voicegate.events import EventLog
from voicegate.gcpause import GcPauses, settle
from voicegate.personas.schema import Persona
from voicegate.personas.store import PersonaStore
from voicegate.personas.tokens import estimate_tokens

__all__ = ["serve_workers"]

log = logging.getLogger("voicegate.edge")

LISTEN_BACKLOG = 2048
INBOX_BUFFER = 1 << 20  # SIP messages queued for a busy worker (capped by net.core.wmem_max)
EXIT_GRACE_S = 15.0  # after the drain deadline, how long a worker may take to exit
RESTART_MIN_UPTIME_S = 5.0  # a worker that dies sooner is not started again (a crash loop)


def serve_workers(settings: Settings, workers: int) -> None:
    """Run the gateway as one engine process and ``workers`` edge processes until stopped."""
    if workers < 2:
        raise ValueError(f"serve_workers: at least 2 workers, got {workers}")
    asyncio.run(_serve(settings, workers))


async def _serve(settings: Settings, workers: int) -> None:
    registry = CollectorRegistry()
    events = EventLog.from_settings(
        settings.model_copy(update={"events_journal_dir": settings.events_journal_dir / "engine"}),
        registry,
    )
    await events.start()
    host = EngineHost(events)
    engine = EngineSupervisor(
        lambda generation: host.adopt(create_engine(settings, generation=generation))
    )
    personas: PersonaStore | None = None
    procs: list[subprocess.Popen[bytes]] = []
    stack_close: list[Callable[[], None]] = []
    metrics_dir = Path(tempfile.mkdtemp(prefix="voicegate-edge-"))
    try:
        await asyncio.to_thread(engine.start)
        host.start(engine)

        def on_persona_change(name: str, persona: Persona | None) -> None:
            if persona is not None:
                engine.load_persona(persona.to_prompt())
            else:
                engine.unload_persona(name)

        personas = PersonaStore(
            settings.personas_dir,
            count_tokens=release_token_counter(settings.model_dir) or estimate_tokens,
            registry=registry,
            interval_s=settings.reload_interval_s,
            on_change=on_persona_change,
        )
        await asyncio.to_thread(personas.load)
        personas.start()
        secret = secrets.token_bytes(32)
        sip: _SipSockets | None = None
        if settings.sip_enabled:  # every worker serves the SIP port (voicegate.legs.sip.shard)
            sip = _SipSockets.open(settings.sip_host, settings.sip_port, workers)
            stack_close.append(sip.close)

        def start(k: int) -> subprocess.Popen[bytes]:
            # one listening socket per worker on the same port (SO_REUSEPORT): the kernel
            # spreads new connections over them by their addresses. One shared socket was
            # measured to hand nearly every connection to the same worker (whichever wakes
            # first wins). The worker holds it; it goes with the worker if that dies.
            listener = socket.create_server(
                (settings.host, settings.port), backlog=LISTEN_BACKLOG, reuse_port=True
            )
            sip_fds = sip.for_worker(k) if sip is not None else None
            try:
                return _spawn(k, workers, listener, host, engine, secret, metrics_dir, sip_fds)
            finally:
                listener.close()
                if sip_fds is not None:
                    sip_fds.udp.close()  # the worker's own; the rest stay here for a restart

        gc_pauses = GcPauses().install()
        registry.register(gc_pauses)
        settle("engine process")  # the tick thread shares the interpreter: keep the GC short
        limit_blas_threads(settings.blas_threads, "engine process")
        procs.extend(start(k) for k in range(workers))
        log.info(
            "engine %s (%d slots) serving %d edge workers on %s:%d",
            engine.name,
            engine.max_slots,
            workers,
            settings.host,
            settings.port,
        )
        is_stopped = await _wait(procs, host, settings.drain_timeout_s, start)
        if not is_stopped:
            log.error("every edge worker exited: stopping the gateway")
            raise SystemExit(1)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        await asyncio.to_thread(engine.close)  # no tick touches the rings after this
        host.close()
        for close in stack_close:
            close()
        if personas is not None:
            personas.close()
        await events.aclose()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _spawn(
    index: int,
    workers: int,
    listener: socket.socket,
    host: EngineHost,
    engine: EngineSupervisor,
    secret: bytes,
    metrics_dir: Path,
    sip: _WorkerSip | None = None,
) -> subprocess.Popen[bytes]:
    ctl_here, ctl_there = socket.socketpair()
    tick_here, tick_there = socket.socketpair()
    fds: tuple[int, ...] = (listener.fileno(), ctl_there.fileno(), tick_there.fileno())
    args = [
        sys.executable,
        "-m",
        "voicegate.edge.worker",
        f"--index={index}",
        f"--listen-fd={fds[0]}",
        f"--control-fd={fds[1]}",
        f"--tick-fd={fds[2]}",
    ]
    if sip is not None:
        args += sip.args()
        fds += sip.fds()
    proc = subprocess.Popen(
        args,
        pass_fds=fds,
        env=os.environ.copy(),
        # signals reach a worker from this process only (a terminal's Ctrl+C goes to the
        # foreground group): a second SIGTERM means "end the calls now" to a draining worker
        start_new_session=True,
    )
    ctl_there.close()
    tick_there.close()
    hello = Hello(
        worker=index,
        workers=workers,
        ring_name=host.rings.name,
        ring_slots=host.rings.layout.slots,
        token_secret=secret,
        metrics_dir=str(metrics_dir),
        engine_name=engine.name,
    )
    host.attach(index, proc.pid, Connection(ctl_here.detach()), tick_here, hello)
    return proc


async def _wait(
    procs: list[subprocess.Popen[bytes]],
    host: EngineHost,
    drain_s: float,
    start: Callable[[int], subprocess.Popen[bytes]],
) -> bool:
    """Until every worker exited; a signal here is passed on to each of them. A worker that
    dies on its own is started again (its calls ended by ``host``), unless it lived less than
    ``RESTART_MIN_UPTIME_S``. True when a signal stopped them, False when they all died."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    started_at = [time.monotonic()] * len(procs)

    def forward(sig: int) -> None:
        stopping.set()
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(sig)

    def on_signal(sig: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(forward, sig)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    alive = set(range(len(procs)))
    try:
        while alive:
            await asyncio.sleep(0.2)
            for index in sorted(alive):
                proc = procs[index]
                code = proc.poll()
                if code is None:
                    continue
                alive.discard(index)
                host.worker_gone(index, f"it exited with status {code}")
                if stopping.is_set():
                    continue
                lived_s = time.monotonic() - started_at[index]
                if lived_s < RESTART_MIN_UPTIME_S:
                    log.error(
                        "edge worker %d (pid %d) exited with status %d after %.1f s: "
                        "not started again",
                        index,
                        proc.pid,
                        code,
                        lived_s,
                    )
                    continue
                log.error(
                    "edge worker %d (pid %d) exited with status %d: starting it again",
                    index,
                    proc.pid,
                    code,
                )
                procs[index] = start(index)
                started_at[index] = time.monotonic()
                alive.add(index)
            if stopping.is_set() and alive:
                try:
                    await asyncio.wait_for(_all_exit(procs), drain_s + EXIT_GRACE_S)
                except TimeoutError:
                    for proc in procs:
                        if proc.poll() is None:
                            log.error("edge worker pid %d did not stop: killed", proc.pid)
                            proc.kill()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return stopping.is_set()


@dataclass(frozen=True, slots=True)
class _WorkerSip:
    """The SIP descriptors one worker inherits (see ``voicegate.legs.sip.shard``)."""

    udp: socket.socket
    tcp: socket.socket | None
    inbox: socket.socket
    outboxes: list[socket.socket | None]

    def fds(self) -> tuple[int, ...]:
        own = (self.udp, self.tcp, self.inbox)
        return tuple(s.fileno() for s in (*own, *self.outboxes) if s is not None)

    def args(self) -> list[str]:
        outboxes = ",".join("-" if s is None else str(s.fileno()) for s in self.outboxes)
        return [
            f"--sip-udp-fd={self.udp.fileno()}",
            f"--sip-tcp-fd={-1 if self.tcp is None else self.tcp.fileno()}",
            f"--sip-inbox-fd={self.inbox.fileno()}",
            f"--sip-outbox-fds={outboxes}",
        ]


class _SipSockets:
    """The SIP port shared by every worker: a UDP socket each (SO_REUSEPORT, bound anew for
    each start of a worker: this process holds none, so no datagram is queued where nobody
    reads), one TCP listener (worker 0's, kept here for its restarts) and an inbox per worker
    (a Unix datagram pair) through which the others hand it the messages of its dialogs."""

    def __init__(self, host: str, port: int, tcp: socket.socket, workers: int) -> None:
        self.host = host
        self.port = port
        self.tcp = tcp
        self.inboxes = [
            socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(workers)
        ]
        for _, sender in self.inboxes:
            sender.setblocking(False)  # a full inbox drops (counted there), never stalls a loop
            with contextlib.suppress(OSError):
                sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, INBOX_BUFFER)

    @classmethod
    def open(cls, host: str, port: int, workers: int) -> _SipSockets:
        # TCP first: with port 0 it picks the number the UDP sockets then share
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        tcp = socket.create_server((host, port), family=family, backlog=LISTEN_BACKLOG)
        return cls(host, int(tcp.getsockname()[1]), tcp, workers)

    def for_worker(self, index: int) -> _WorkerSip:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        udp = socket.socket(family, socket.SOCK_DGRAM)
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        udp.bind((self.host, self.port))
        return _WorkerSip(
            udp=udp,
            tcp=self.tcp if index == 0 else None,
            inbox=self.inboxes[index][0],
            outboxes=[None if k == index else pair[1] for k, pair in enumerate(self.inboxes)],
        )

    def close(self) -> None:
        self.tcp.close()
        for receiver, sender in self.inboxes:
            receiver.close()
            sender.close()


async def _all_exit(procs: list[subprocess.Popen[bytes]]) -> None:
    while any(proc.poll() is None for proc in procs):
        await asyncio.sleep(0.1)
