"""The control channel between the engine process and an edge worker: small typed messages.

Audio never crosses it (that is the shared-memory rings' job, ``rings``): only a call's join
and leave, admission answers, engine faults and rebuilds, and the hello that tells a worker
where the rings are. Messages are pickled over a ``multiprocessing.connection.Connection`` on a
socket pair both processes inherited from ``voicegate serve``; the peer is our own child.

Owns: the message dataclasses. Imports the contracts only.
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass
from multiprocessing.connection import Connection

from voicegate.contracts import CallInfo
from voicegate.legs.twilio.nextsteps import NextStep

__all__ = [
    "FaultNotice",
    "Hello",
    "JoinReply",
    "JoinRequest",
    "Leave",
    "NextStepNote",
    "RebuildReply",
    "RebuildRequest",
    "close_channel",
]


@dataclass(frozen=True, slots=True)
class Hello:
    """Engine process -> worker, first: where the rings are and what the worker shares."""

    worker: int  # 0-based; worker 0 also holds SIP over TCP and runs the webhook delivery
    workers: int
    ring_name: str
    ring_slots: int
    token_secret: bytes  # signs Twilio call tokens so that any worker can redeem them
    metrics_dir: str  # every worker's /metrics snapshot, merged by whichever is scraped
    engine_name: str


@dataclass(frozen=True, slots=True)
class JoinRequest:
    """Worker -> engine: take a slot for this call (the engine's ``join``)."""

    request: int
    persona: str
    info: CallInfo | None
    seed: int | None = None
    text_prompt: str | None = None  # the call's own prompt (per-call variables), if any


@dataclass(frozen=True, slots=True)
class JoinReply:
    """Engine -> worker: the slot and its ring generation, or why not (``error`` names the
    exception class: NoFreeSlot, UnknownPersona, InvalidStateError, EngineError)."""

    request: int
    slot: int = -1
    generation: int = 0
    out_start: int = 0  # the output ring's write count at the hand-over (``rings``)
    error: str = ""
    message: str = ""


@dataclass(frozen=True, slots=True)
class Leave:
    """Worker -> engine: the call left its slot."""

    slot: int
    generation: int


@dataclass(frozen=True, slots=True)
class NextStepNote:
    """Worker -> engine -> every other worker: a Twilio next step recorded (``step``) or
    forgotten (None) for ``call_sid`` (``voicegate.edge.steps``)."""

    call_sid: str
    step: NextStep | None


@dataclass(frozen=True, slots=True)
class FaultNotice:
    """Engine -> every worker: the engine faulted (``voicegate.engine.health.EngineFault``)."""

    kind: str
    at: float  # time.monotonic(), the same clock in every process of the host
    detail: str


@dataclass(frozen=True, slots=True)
class RebuildRequest:
    """Worker -> engine: rebuild the faulted engine (a no-op when it was rebuilt already)."""

    request: int


@dataclass(frozen=True, slots=True)
class RebuildReply:
    request: int
    error: str = ""


def close_channel(conn: Connection) -> None:
    """Shut the channel's socket down, then close it: a thread blocked in ``recv`` on it
    wakes (EOF) and the peer sees the close at once; a bare close would wait for that recv."""
    try:
        sock = socket.socket(fileno=os.dup(conn.fileno()))
    except OSError:
        return
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
    with contextlib.suppress(OSError):
        conn.close()
