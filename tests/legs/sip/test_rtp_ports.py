"""RTP port pairs are drawn at random: a pair another socket holds is skipped, and skipping it
leaves nothing unclosed behind (uvloop, which the gateway runs on, used to leave a transport
open when its own bind failed: a ResourceWarning, an error under -W error)."""

from __future__ import annotations

import gc
import socket
import sys
from typing import Any

import pytest
import uvloop

from tests.legs.sip.sip_client import sdp_offer
from tests.legs.sip.sip_helpers import free_udp_port
from voicegate.errors import SipError
from voicegate.legs.sip.media import RtpSession
from voicegate.legs.sip.metrics import SipStats
from voicegate.legs.sip.sdp import negotiate, parse_sdp


def _pair_range() -> int:
    """An even port whose pair and the next two pairs are free now (8 ports)."""
    for _ in range(200):
        base = free_udp_port() & ~1
        socks = []
        try:
            for port in range(base, base + 8):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return base
    raise AssertionError("no 8 free UDP ports in a row")


def test_taken_pairs_are_skipped_and_leave_nothing_unclosed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    base = _pair_range()
    plan = negotiate(parse_sdp(sdp_offer("127.0.0.1", 40000).encode()))
    stats = SipStats()
    held = []
    for port in (base, base + 3):  # the first pair's RTP port, the second pair's RTCP port
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", port))
        held.append(s)

    async def main() -> list[int]:
        opened = []
        try:
            for _ in range(3):  # only the third pair is free: found however the draw starts
                try:
                    session = await RtpSession.open(
                        plan,
                        stats,
                        host="127.0.0.1",
                        port_min=base,
                        port_max=base + 6,
                        on_timeout=lambda why: None,
                    )
                except SipError:
                    continue
                opened.append(session)
            return [s.local_port for s in opened]
        finally:
            for session in opened:
                session.close_nowait()

    try:
        ports = uvloop.run(main())
    finally:
        for s in held:
            s.close()
    gc.collect()
    assert ports == [base + 4]  # the one free pair, once; the others were refused
    assert unraisable == [], [u.exc_value for u in unraisable]
    assert stats.rtp_ports_in_use == 0
