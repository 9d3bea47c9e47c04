"""In-process stand-ins for the CallManager side, and an asyncio UDP endpoint for tests."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from voicegate.contracts import (
    CallInfo,
    EndReason,
    LegTransport,
    TransferOutcome,
    TransferTarget,
)
from voicegate.legs.sip.message import SipRequest, SipResponse, parse_message

TONE = (8000 * np.sin(2 * np.pi * 440 * np.arange(160) / 8000)).astype(np.int16)


class FakeCall:
    def __init__(self, info: CallInfo, leg: LegTransport) -> None:
        self.info = info
        self.leg = leg
        self.fed_samples = 0
        self.digits: list[str] = []
        self.closed: EndReason | None = None
        self.ended: tuple[EndReason, str] | None = None
        self.pulls = 0
        self.now_ms = 0
        self.transfers: list[tuple[TransferTarget, TransferOutcome, str]] = []

    def feed_caller_audio(self, pcm: npt.NDArray[np.int16]) -> None:
        self.fed_samples += len(pcm)

    def pull_agent_audio(self, n_samples: int) -> npt.NDArray[np.int16]:
        self.pulls += 1
        return TONE[:n_samples]

    def on_dtmf(self, digit: str) -> None:
        self.digits.append(digit)

    def on_leg_closed(self, reason: EndReason) -> None:
        if self.closed is None:
            self.closed = reason

    def on_transfer_result(
        self, target: TransferTarget, outcome: TransferOutcome, detail: str
    ) -> None:
        self.transfers.append((target, outcome, detail))

    def end(self, reason: EndReason, detail: str = "") -> None:
        if self.ended is None:
            self.ended = (reason, detail)
            self.leg.request_hangup(reason)
            self.on_leg_closed(reason)


@dataclass
class FakeCalls:
    is_admitting: bool = True
    error: Exception | None = None
    calls: list[FakeCall] = field(default_factory=list)

    def can_admit(self) -> bool:
        return self.is_admitting

    def start_call(self, info: CallInfo, leg: LegTransport) -> FakeCall:
        if self.error is not None:
            raise self.error
        call = FakeCall(info, leg)
        self.calls.append(call)
        return call


class FakeRouter:
    ROUTES = {"teller": "bank_teller", "+14155550100": "bank_teller"}
    OVERFLOW = {"overflowing": "+14155550199"}

    def route(self, to: str) -> str:
        return self.ROUTES.get(to, "support_agent")

    def overflow(self, to: str) -> str:
        return self.OVERFLOW.get(to, "")


@dataclass
class FakeEvents:
    events: list[Any] = field(default_factory=list)

    def emit(self, event: Any) -> None:
        self.events.append(event)


async def wait_for(predicate: Callable[[], bool], timeout_s: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


class Udp(asyncio.DatagramProtocol):
    """A UDP socket on the test's loop: ``await Udp.open()``, ``send``, ``await recv()``."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    @classmethod
    async def open(cls, host: str = "127.0.0.1") -> Udp:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(cls, local_addr=(host, 0))
        proto.transport = transport
        proto.port = transport.get_extra_info("sockname")[1]
        return proto

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, addr))

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, addr)

    async def recv(self, timeout_s: float = 2.0) -> tuple[bytes, tuple[str, int]]:
        return await asyncio.wait_for(self.queue.get(), timeout_s)

    def drain(self) -> int:
        n = 0
        while not self.queue.empty():
            self.queue.get_nowait()
            n += 1
        return n

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class SipPeer:
    """A SIP caller on its own UDP socket, talking to a gateway at ``gw``."""

    def __init__(self, udp: Udp, gw: tuple[str, int]) -> None:
        self.udp = udp
        self.gw = gw
        self.call_id = os.urandom(8).hex() + "@peer"
        self.from_tag = os.urandom(4).hex()
        self.to_tag = ""
        self.cseq = 0

    def request(
        self,
        method: str,
        *,
        body: str = "",
        cseq: int | None = None,
        user: str = "teller",
        extra: str = "",
        branch: str | None = None,
        content_type: str = "application/sdp",
    ) -> bytes:
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        host, port = "127.0.0.1", self.udp.port
        to = f"<sip:{user}@{self.gw[0]}:{self.gw[1]}>" + (
            f";tag={self.to_tag}" if self.to_tag else ""
        )
        text = (
            f"{method} sip:{user}@{self.gw[0]}:{self.gw[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{port};branch={branch or 'z9hG4bK' + os.urandom(6).hex()};rport\r\n"
            f"From: <sip:caller@{host}:{port}>;tag={self.from_tag}\r\n"
            f"To: {to}\r\nCall-ID: {self.call_id}\r\nCSeq: {cseq} {method}\r\n"
            f"Contact: <sip:caller@{host}:{port}>\r\nMax-Forwards: 70\r\n{extra}"
            + (f"Content-Type: {content_type}\r\n" if body else "")
            + f"Content-Length: {len(body.encode())}\r\n\r\n{body}"
        )
        return text.encode()

    def send(self, data: bytes) -> None:
        self.udp.send(data, self.gw)

    async def next(self, timeout_s: float = 2.0) -> SipRequest | SipResponse:
        data, _ = await self.udp.recv(timeout_s)
        return parse_message(data)

    async def response(self, code: int, timeout_s: float = 2.0) -> SipResponse:
        """Skip other messages until a response with ``code``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            msg = await self.next(max(0.01, deadline - loop.time()))
            if isinstance(msg, SipResponse) and msg.code == code:
                tag = msg.raw.to_address.parameters.get("tag")
                if tag and msg.cseq_method == "INVITE" and code < 300:
                    self.to_tag = tag
                return msg

    async def request_in(self, method: str, timeout_s: float = 2.0) -> SipRequest:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            msg = await self.next(max(0.01, deadline - loop.time()))
            if isinstance(msg, SipRequest) and msg.method == method:
                return msg
