"""An edge worker process: the whole gateway's HTTP/WebSocket and SIP side on listening sockets
it shares with its siblings, its calls joined to the engine process's engine.

Started by ``voicegate serve --workers N`` (``voicegate.edge.serve``) as
``python -m voicegate.edge.worker --index K --listen-fd F --control-fd C --tick-fd T`` (and,
with SIP on, ``--sip-udp-fd --sip-tcp-fd --sip-inbox-fd --sip-outbox-fds``), with those
descriptors inherited. It reads the settings from the same environment as the engine process.
Every worker runs SIP dialogs (those whose Call-ID it owns, ``voicegate.legs.sip.shard``);
worker 0 also holds the SIP TCP listener and runs the webhook delivery; every worker keeps its
own event-log journal (``<events_journal_dir>/worker-K``).

Owns: EdgeWorker, main. Imports the app, the remote engine and uvicorn (at run time).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from voicegate.config import Settings
from voicegate.contracts import EndReason
from voicegate.edge.metrics import MetricsShare
from voicegate.edge.relay import SiblingRelay, socket_path
from voicegate.edge.remote import RemoteEngine
from voicegate.edge.steps import SharedNextSteps
from voicegate.legs.sip.shard import SipShard
from voicegate.legs.twilio.security import SignedCallTokens

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["EdgeWorker", "main", "worker_settings"]

log = logging.getLogger("voicegate.edge")


@dataclass(frozen=True, slots=True)
class EdgeWorker:
    """What ``create_app`` uses instead of its own engine when it runs as an edge worker."""

    index: int
    engine: RemoteEngine
    tokens: SignedCallTokens
    metrics: MetricsShare
    next_steps: SharedNextSteps
    sip: SipShard | None = None  # this worker's share of the SIP port (None: SIP off)
    relay: SiblingRelay | None = None  # the call API's way to the other workers' calls


def worker_settings(settings: Settings, index: int, *, has_sip: bool = False) -> Settings:
    """The settings of worker ``index``: webhooks in worker 0 only, SIP where ``voicegate
    serve`` handed this worker its share of the port, its own journal."""
    update: dict[str, object] = {
        "events_journal_dir": settings.events_journal_dir / f"worker-{index}",
        "sip_enabled": settings.sip_enabled and has_sip,
    }
    if index > 0:
        update["webhook_secret"] = ""
    return settings.model_copy(update=update)


def _private_socket(folder: Path, index: int) -> socket.socket:
    """This worker's private listening socket (``voicegate.edge.relay``), in the gateway's own
    folder (mode 0700); a restarted worker binds it again."""
    path = socket_path(folder, index)
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o600)
    sock.listen(128)
    return sock


def _sip_shard(args: argparse.Namespace, workers: int) -> SipShard | None:
    if args.sip_udp_fd is None:
        return None
    outboxes = [
        None if fd == "-" else socket.socket(fileno=int(fd))
        for fd in args.sip_outbox_fds.split(",")
    ]
    if len(outboxes) != workers:
        raise SystemExit(f"--sip-outbox-fds: {len(outboxes)} entries for {workers} workers")
    return SipShard(
        index=args.index,
        count=workers,
        udp=socket.socket(fileno=args.sip_udp_fd),
        inbox=socket.socket(fileno=args.sip_inbox_fd),
        outboxes=outboxes,
        tcp=socket.socket(fileno=args.sip_tcp_fd) if args.sip_tcp_fd >= 0 else None,
    )


def _stopped_by_sigterm(sig: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m voicegate.edge.worker")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--listen-fd", type=int, required=True)
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--tick-fd", type=int, required=True)
    parser.add_argument("--sip-udp-fd", type=int, default=None)
    parser.add_argument("--sip-tcp-fd", type=int, default=-1)
    parser.add_argument("--sip-inbox-fd", type=int, default=-1)
    parser.add_argument("--sip-outbox-fds", default="")
    args = parser.parse_args(argv)

    import uvicorn

    from voicegate.app import SERVER_OPTIONS, create_app

    signal.signal(signal.SIGTERM, _stopped_by_sigterm)  # as `voicegate serve`: a drain exits 0
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format=f"%(asctime)s %(levelname)s [w{args.index}] %(name)s: %(message)s",
    )
    engine = RemoteEngine(Connection(args.control_fd), socket.socket(fileno=args.tick_fd))
    hello = engine.hello

    app: FastAPI | None = None

    def engine_lost(why: str) -> None:
        # no engine, no calls: end them now with the reason (on the loop), then stop (SIGINT:
        # the drain hangs up what is left at once and hands the signal to the server)
        log.error("worker %d: engine process gone (%s): stopping", args.index, why)
        parts = getattr(app.state, "parts", None) if app is not None else None
        loop = getattr(app.state, "loop", None) if app is not None else None
        if parts is not None and loop is not None:
            detail = f"engine process gone: {why}"
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to end
                loop.call_soon_threadsafe(parts.calls.end_all, EndReason.ENGINE_FAULT, detail)
        os.kill(os.getpid(), signal.SIGINT)

    engine.on_lost = engine_lost
    next_steps = SharedNextSteps(engine.send_note)
    engine.on_note = next_steps.apply
    edge = EdgeWorker(
        index=args.index,
        engine=engine,
        tokens=SignedCallTokens(hello.token_secret),
        metrics=MetricsShare(Path(hello.metrics_dir), args.index),
        next_steps=next_steps,
        sip=_sip_shard(args, hello.workers),
        relay=SiblingRelay(hello.metrics_dir, args.index, hello.workers),
    )
    app = create_app(worker_settings(settings, args.index, has_sip=edge.sip is not None), edge=edge)
    app.state.settle_gc = True  # startup's objects leave the garbage collector's walk
    config = uvicorn.Config(app, log_level="info", **SERVER_OPTIONS)
    listener = socket.socket(fileno=args.listen_fd)
    private = _private_socket(Path(hello.metrics_dir), args.index)
    log.info("worker %d: the call API's relay socket is %s", args.index, private.getsockname())
    try:
        uvicorn.Server(config).run(sockets=[listener, private])
    except KeyboardInterrupt:
        pass  # SIGINT (the engine process gone, or a second signal): the calls were ended
    finally:
        edge.metrics.remove()


if __name__ == "__main__":
    main()
