"""One SIP port, several servers (``serve --workers N``): every message of a dialog reaches the
server that owns its Call-ID, whichever socket the kernel handed it to; the owner answers from
the same port; the forwarding format is a strict, fuzzed parser."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.legs.sip.fakes import FakeCalls, FakeEvents, FakeRouter, SipPeer, Udp, wait_for
from tests.legs.sip.sip_client import sdp_offer
from tests.legs.sip.sip_helpers import call_id_owned_by, rtp_range
from voicegate.errors import SipParseError
from voicegate.events import LegEvents
from voicegate.legs.sip import SipConfig, SipServer, SipTimers
from voicegate.legs.sip.message import SipResponse, parse_message
from voicegate.legs.sip.shard import SipShard, decode_forward, encode_forward, owner_of

T1 = SipTimers(t1_s=0.05, t2_s=0.2)


# -- the owner function and the forwarding format ---------------------------------------------


def test_owners_are_the_same_in_every_process() -> None:
    ids = [f"{k}-{os.urandom(4).hex()}@host" for k in range(50)]
    here = [owner_of(i, 4) for i in ids]
    code = (
        "import sys; from voicegate.legs.sip.shard import owner_of; "
        "print(' '.join(str(owner_of(i, 4)) for i in sys.argv[1:]))"
    )
    there = subprocess.run(
        [sys.executable, "-c", code, *ids], check=True, capture_output=True, text=True
    ).stdout.split()
    assert [int(x) for x in there] == here  # hash() would differ (PYTHONHASHSEED per process)


def test_owners_spread_evenly() -> None:
    counts = [0] * 4
    for k in range(4000):
        counts[owner_of(f"{k:08x}{k * 7919:08x}@example.com", 4)] += 1
    assert all(900 <= n <= 1100 for n in counts), counts
    assert owner_of("anything", 1) == 0


@pytest.mark.parametrize("host", ["127.0.0.1", "2001:db8::1", "::ffff:10.0.0.1"])
def test_a_forwarded_datagram_keeps_its_sender_and_bytes(host: str) -> None:
    data = b"INVITE sip:x@y SIP/2.0\r\nCall-ID: a\nb\r\n\r\n\x00\xff"
    assert decode_forward(encode_forward(host, 5060, data)) == (host, 5060, data)


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"INVITE sip:x SIP/2.0\r\n",  # no header: a raw datagram is not a forward
        b"VGF1 127.0.0.1 5060",  # no end of the address line
        b"VGF1 127.0.0.1\nBYE",
        b"VGF1 127.0.0.1 99999\nBYE",
        b"VGF1 127.0.0.1 -1\nBYE",
        b"VGF1  5060\nBYE",
        b"VGF1 h\xff 5060\nBYE",
        b"VGF1 " + b"1" * 100 + b" 5060\nBYE",
    ],
)
def test_a_bad_forward_is_refused(bad: bytes) -> None:
    with pytest.raises(SipParseError):
        decode_forward(bad)


@given(st.binary(max_size=200))
def test_decoding_forwards_fuzzed(data: bytes) -> None:
    try:
        host, port, rest = decode_forward(data)
    except SipParseError:
        return
    assert 0 <= port <= 65535 and host and data.endswith(rest)


def test_a_full_inbox_drops_and_says_so() -> None:
    inbox, sender = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    sender.setblocking(False)
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    shard = SipShard(index=0, count=2, udp=udp, inbox=udp, outboxes=[None, sender])
    try:
        results = [shard.forward(1, "127.0.0.1", 5060, b"x" * 1000) for _ in range(200)]
        assert results[0] is True and results[-1] is False  # nobody reads worker 1's inbox
        with pytest.raises(ValueError, match="this one"):
            shard.forward(0, "127.0.0.1", 5060, b"x")
    finally:
        for s in (inbox, sender, udp):
            s.close()


# -- two servers on one port, in one process ---------------------------------------------------


@dataclass
class Pair:
    servers: list[SipServer]
    calls: list[FakeCalls]
    port: int


def _shards(count: int) -> Iterator[SipShard]:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    inboxes = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(count)]
    for _, sender in inboxes:
        sender.setblocking(False)
    for k in range(count):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        udp.bind(("127.0.0.1", port))
        # each server closes its own outboxes: give it its own descriptors of the senders
        outboxes = [None if j == k else inboxes[j][1].dup() for j in range(count)]
        yield SipShard(index=k, count=count, udp=udp, inbox=inboxes[k][0], outboxes=outboxes)
    for _, sender in inboxes:
        sender.close()


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    lo, hi = rtp_range()
    servers, calls = [], []
    for shard in _shards(2):
        fake = FakeCalls()
        config = SipConfig(
            host="127.0.0.1",
            port=0,
            rtp_port_min=lo + 200,
            rtp_port_max=hi + 200,
            timers=T1,
            invite_burst=100,
        )
        server = SipServer(
            config, calls=fake, router=FakeRouter(), events=LegEvents(FakeEvents()), shard=shard
        )
        await server.start()
        servers.append(server)
        calls.append(fake)
    assert servers[0].port == servers[1].port
    try:
        yield Pair(servers, calls, servers[0].port)
    finally:
        for server in servers:
            await server.close()


async def test_every_dialog_runs_in_its_owner_whoever_received_it(pair: Pair) -> None:
    """One trunk (one source address, so the kernel hands all of it to one socket) places
    calls owned by each server: each call is answered, from the SIP port, and runs in its
    owner only; in-dialog requests (ACK, BYE) reach the owner too."""
    sip, rtp = await Udp.open(), await Udp.open()
    gw = ("127.0.0.1", pair.port)
    try:
        peers = []
        for owner in (0, 1, 1, 0):
            peer = SipPeer(sip, gw)
            peer.call_id = call_id_owned_by(owner, 2)
            peer.send(peer.request("INVITE", body=sdp_offer("127.0.0.1", rtp.port)))
            ok = await peer.response(200)
            peer.send(peer.request("ACK", cseq=ok.cseq))
            peers.append((owner, peer))
        await wait_for(lambda: sum(s.stats.messages_in for s in pair.servers) == 8)  # last ACK
        for owner, peer in peers:
            assert peer.call_id in pair.servers[owner].dialogs
            assert peer.call_id not in pair.servers[1 - owner].dialogs
        assert [len(c.calls) for c in pair.calls] == [2, 2]
        # one server received every datagram (one source); it handed the other's half over
        forwarded = [s.stats.messages_forwarded for s in pair.servers]
        assert sorted(forwarded) == [0, 4]  # the other's 2 INVITEs and 2 ACKs
        assert sum(s.stats.messages_in for s in pair.servers) == 8  # counted once each
        assert [s.stats.messages_in for s in pair.servers] in ([8, 0], [0, 8])

        for _, peer in peers:
            peer.send(peer.request("BYE"))
            bye_ok = await peer.response(200)
            assert bye_ok.cseq_method == "BYE"
        for fake in pair.calls:
            for call in fake.calls:
                await wait_for(lambda call=call: call.closed is not None)
    finally:
        sip.close()
        rtp.close()


async def test_answers_come_from_the_sip_port(pair: Pair) -> None:
    """A forwarded request's answer leaves from the owner's own socket on the shared port,
    so a peer that checks the source (as a trunk's SBC does) sees one gateway address."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2.0)
    try:
        for owner in (0, 1):
            udp_port = sock.getsockname()[1]
            call_id = call_id_owned_by(owner, 2)
            options = (
                f"OPTIONS sip:x@127.0.0.1:{pair.port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{udp_port};branch=z9hG4bK{owner}abc\r\n"
                f"From: <sip:probe@127.0.0.1>;tag=p{owner}\r\nTo: <sip:x@127.0.0.1>\r\n"
                f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            ).encode()
            sock.sendto(options, ("127.0.0.1", pair.port))
            data, source = await asyncio.to_thread(sock.recvfrom, 65535)
            assert source == ("127.0.0.1", pair.port)
            answer = parse_message(data)
            assert isinstance(answer, SipResponse) and answer.code == 200
            assert answer.call_id == call_id
    finally:
        sock.close()
