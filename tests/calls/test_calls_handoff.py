"""Warm handoff: a signed POST of the call so far reaches the destination's desktop before the
leg is asked to transfer; a slow or dead endpoint delays the transfer by at most the bound."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from utils import SILENCE, LoopbackLeg, RecordingEvents, ScriptedEngine, make_manager

from voicegate.calls.handoff import SIGNATURE_HEADER, HandoffPoster, sign, verify
from voicegate.contracts import CallInfo, FlowAction, FlowRules, TransferTarget
from voicegate.demo import free_port

SECRET = "whsec-test"


class Desktop:
    """A contact-centre desktop's handoff endpoint on a real socket."""

    def __init__(self, delay_s: float = 0.0, status: int = 200) -> None:
        self.received: list[tuple[bytes, str, float]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.received.append((body, self.headers[SIGNATURE_HEADER], time.monotonic()))
                time.sleep(delay_s)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/handoff"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def desktop() -> Iterator[Desktop]:
    d = Desktop()
    yield d
    d.close()


class TransferLeg(LoopbackLeg):
    def __init__(self) -> None:
        super().__init__(8000)
        self.asked: list[tuple[TransferTarget, float]] = []

    def transfer(self, target: TransferTarget) -> None:
        self.asked.append((target, time.monotonic()))


def _call(url: str, timeout_s: float = 1.0):  # type: ignore[no-untyped-def]
    flow = FlowRules(
        destinations={"branch": "+14155550123"},
        handoff_urls={"branch": url},
        dtmf={"0": FlowAction("transfer", "branch")},
    )

    class Personas:
        def get(self, name: str) -> object:
            class P:
                limits = None

                def flow_rules(self) -> FlowRules:
                    return flow

            return P()

    engine = ScriptedEngine(lambda c, k, f: (SILENCE, ""))
    poster = HandoffPoster(SECRET, timeout_s=timeout_s)
    manager = make_manager(engine, RecordingEvents(), personas=Personas(), handoff=poster)
    leg = TransferLeg()
    call = manager.start_call(CallInfo("c9", "twilio", "p", "+15550001", "+15550002"), leg)
    call.feed_caller_audio(np.zeros(800, dtype=np.int16))
    return call, leg, poster


async def _until(cond, timeout_s: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)


async def test_the_desktop_gets_a_signed_document_before_the_transfer(desktop: Desktop) -> None:
    call, leg, poster = _call(desktop.url)
    call.on_dtmf("0")
    assert leg.asked == []  # not before the POST answered
    await _until(lambda: leg.asked)
    body, header, posted_at = desktop.received[0]
    assert verify(body, header, SECRET)
    assert not verify(body + b" ", header, SECRET)  # any change breaks it
    assert not verify(body, header, "another secret")
    doc = json.loads(body)
    target, asked_at = leg.asked[0]
    assert doc["handoff_id"] == target.handoff_id and doc["to"] == "+14155550123"
    assert (doc["caller"], doc["called"], doc["persona"]) == ("+15550001", "+15550002", "p")
    assert doc["reason"] == {"trigger": "dtmf", "detail": "0"}
    assert isinstance(doc["transcript"], list)
    assert asked_at >= posted_at
    assert poster.sent == 1


@pytest.mark.parametrize("kind", ["slow", "down", "error"])
async def test_a_slow_dead_or_failing_endpoint_does_not_stop_the_transfer(kind: str) -> None:
    desk = None
    if kind == "down":
        url = f"http://127.0.0.1:{free_port()}/handoff"  # nothing listens
    else:
        desk = Desktop(
            delay_s=3.0 if kind == "slow" else 0.0, status=500 if kind == "error" else 200
        )
        url = desk.url
    try:
        call, leg, poster = _call(url, timeout_s=0.3)
        t0 = time.monotonic()
        call.on_dtmf("0")
        await _until(lambda: leg.asked)
        assert leg.asked[0][1] - t0 < 2.0  # the bound (0.3 s) plus scheduling, never the 3 s
        assert poster.failed == 1 and poster.sent == 0
    finally:
        if desk is not None:
            desk.close()


def test_verify_refuses_stale_and_malformed_signatures() -> None:
    body = b'{"a":1}'
    old = sign(body, SECRET, timestamp=1_000)
    assert verify(body, old, SECRET, now=1_100)
    assert not verify(body, old, SECRET, now=1_000 + 3600)  # a replay, an hour later
    assert not verify(body, "garbage", SECRET)
    assert not verify(body, "t=x,v1=00", SECRET)
