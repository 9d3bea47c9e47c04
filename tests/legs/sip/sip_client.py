"""A tiny blocking SIP/RTP client for tests: builds requests, sends them, reads the answers."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field

from voicegate.legs.sip.message import SipResponse, parse_message


def sdp_offer(host: str, port: int, formats: str = "0 101", direction: str = "sendrecv") -> str:
    lines = [
        "v=0",
        f"o=test 1 1 IN IP4 {host}",
        "s=-",
        f"c=IN IP4 {host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {formats}",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        f"a={direction}",
    ]
    return "\r\n".join(lines) + "\r\n"


@dataclass
class SipClient:
    """One UDP socket bound on ``host``; ``gw`` is the gateway's SIP address."""

    gw: tuple[str, int]
    host: str = "127.0.0.1"
    sock: socket.socket = field(init=False)
    call_id: str = field(default_factory=lambda: os.urandom(8).hex() + "@test")
    from_tag: str = field(default_factory=lambda: os.urandom(4).hex())
    to_tag: str = ""

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((self.host, 0))
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()

    def request(
        self,
        method: str,
        cseq: int,
        *,
        user: str = "teller",
        body: str = "",
        branch: str | None = None,
        to_tag: str | None = None,
        extra: str = "",
        call_id: str | None = None,
    ) -> bytes:
        tag = self.to_tag if to_tag is None else to_tag
        to = f"<sip:{user}@{self.gw[0]}:{self.gw[1]}>" + (f";tag={tag}" if tag else "")
        text = (
            f"{method} sip:{user}@{self.gw[0]}:{self.gw[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {self.host}:{self.port};branch={branch or 'z9hG4bK' + os.urandom(6).hex()};rport\r\n"
            f"From: <sip:caller@{self.host}:{self.port}>;tag={self.from_tag}\r\n"
            f"To: {to}\r\n"
            f"Call-ID: {call_id or self.call_id}\r\n"
            f"CSeq: {cseq} {method}\r\n"
            f"Contact: <sip:caller@{self.host}:{self.port}>\r\n"
            "Max-Forwards: 70\r\n"
            f"{extra}"
            + ("Content-Type: application/sdp\r\n" if body else "")
            + f"Content-Length: {len(body.encode())}\r\n\r\n"
            + body
        )
        return text.encode()

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, self.gw)

    def recv(self, timeout_s: float = 2.0) -> SipResponse | None:
        self.sock.settimeout(timeout_s)
        try:
            data, _ = self.sock.recvfrom(65535)
        except TimeoutError:
            return None
        message = parse_message(data)
        assert isinstance(message, SipResponse), message
        return message

    def recv_final(self, timeout_s: float = 3.0, method: str | None = None) -> SipResponse:
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            assert left > 0, "no final response"
            response = self.recv(left)
            if response is None:
                continue
            if response.code >= 200 and (method is None or response.cseq_method == method):
                tag = response.raw.to_address.parameters.get("tag")
                if tag and response.cseq_method == "INVITE":
                    self.to_tag = tag
                return response
