"""The SIP server and dialog state machine over real loopback sockets, with a fake CallManager:
2xx retransmission until ACK, BYE after 64*T1 without ACK, retransmissions absorbed, RTP
latching/pacing/DTMF, hold, media timeouts, 486/488/401, our BYE, TCP, and fuzz."""

from __future__ import annotations

import asyncio
import logging
import random
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from voicegate.contracts import EndReason
from voicegate.errors import NoFreeSlot
from voicegate.events import LegEvents
from voicegate.legs.sip import DialogState, Peer, SipConfig, SipServer, SipTimers
from voicegate.legs.sip.auth import digest_response
from voicegate.legs.sip.message import SipResponse, parse_message
from voicegate.legs.sip.rtp import parse_rtp
from voicegate.legs.sip.sdp import Direction, parse_sdp

from .fakes import FakeCalls, FakeEvents, FakeRouter, SipPeer, Udp, wait_for
from .sip_client import sdp_offer
from .sip_helpers import rtp_range

DATA = Path(__file__).resolve().parents[2] / "data" / "sip"
T1 = SipTimers(t1_s=0.02, t2_s=0.08)  # 64*T1 = 1.28 s


class Rig:
    def __init__(self, server: SipServer, calls: FakeCalls, events: FakeEvents) -> None:
        self.server = server
        self.calls = calls
        self.events = events
        self.udps: list[Udp] = []

    @property
    def gw(self) -> tuple[str, int]:
        return ("127.0.0.1", self.server.port)

    async def peer(self) -> tuple[SipPeer, Udp]:
        sip, rtp = await Udp.open(), await Udp.open()
        self.udps += [sip, rtp]
        return SipPeer(sip, self.gw), rtp

    async def answered(
        self, *, ack: bool = True, offer: str | None = None
    ) -> tuple[SipPeer, Udp, Any]:
        peer, rtp = await self.peer()
        peer.send(peer.request("INVITE", body=offer or sdp_offer("127.0.0.1", rtp.port)))
        ok = await peer.response(200)
        dialog = self.server.dialogs[peer.call_id]
        if ack:
            peer.send(peer.request("ACK", cseq=ok.cseq))
            await wait_for(lambda: dialog.state is DialogState.CONFIRMED)
        return peer, rtp, dialog


MakeRig = Callable[..., "asyncio.Future[Rig]"]


@pytest.fixture
async def make_rig() -> AsyncIterator[Callable[..., Any]]:
    rigs: list[Rig] = []

    async def make(**overrides: Any) -> Rig:
        lo, hi = rtp_range()
        values: dict[str, Any] = {
            "host": "127.0.0.1", "port": 0, "rtp_port_min": lo + 100, "rtp_port_max": hi + 100,
            "timers": T1, "invite_burst": 100,
        }  # fmt: skip
        values.update(overrides)
        calls, events = FakeCalls(), FakeEvents()
        server = SipServer(
            SipConfig(**values), calls=calls, router=FakeRouter(), events=LegEvents(events)
        )
        await server.start()
        rig = Rig(server, calls, events)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        await rig.server.close()
        for udp in rig.udps:
            udp.close()


def rtp_packet(
    seq: int, ts: int, *, pt: int = 0, ssrc: int = 77, payload: bytes = b"\xff" * 160
) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq, ts, ssrc) + payload


async def test_invite_gets_100_180_200_and_the_200_repeats_until_ack(make_rig: Any) -> None:
    rig = await make_rig(timers=SipTimers(t1_s=0.05, t2_s=0.2))  # 64*T1 = 3.2 s: no BYE here
    peer, rtp = await rig.peer()
    peer.send(peer.request("INVITE", body=sdp_offer("127.0.0.1", rtp.port)))
    codes: list[int] = []
    while not codes or codes[-1] != 200:
        msg = await peer.next()
        assert isinstance(msg, SipResponse)
        codes.append(msg.code)
    assert codes == [100, 180, 200]
    answer = parse_sdp(msg.raw.body)
    assert answer.media[0].formats == ("0", "101")
    assert msg.raw.headers["Contact"].startswith("<sip:voicegate@127.0.0.1:")
    peer.to_tag = msg.raw.to_address.parameters["tag"]
    await peer.response(200)  # retransmitted on T1
    await peer.response(200)
    dialog = rig.server.dialogs[peer.call_id]
    assert dialog.state is DialogState.ACCEPTED
    peer.send(peer.request("ACK", cseq=1))
    await wait_for(lambda: dialog.state is DialogState.CONFIRMED)
    await asyncio.sleep(0.05)
    peer.udp.drain()
    await asyncio.sleep(0.5)  # well past the next retransmission (T2)
    assert peer.udp.drain() == 0
    assert rig.calls.calls[0].info.persona == "bank_teller"
    assert rig.calls.calls[0].info.leg == "sip"


async def test_no_ack_ends_the_call_with_bye_after_64_t1(make_rig: Any) -> None:
    rig = await make_rig()
    peer, rtp, dialog = await rig.answered(ack=False)
    bye = await peer.request_in("BYE", timeout_s=3)
    assert bye.to_tag == peer.from_tag and bye.from_tag == dialog.local_tag
    call = rig.calls.calls[0]
    assert call.ended is not None and call.ended[0] is EndReason.MEDIA_TIMEOUT
    assert dialog.state is DialogState.TERMINATING
    from voicegate.legs.sip.message import build_response

    peer.send(build_response(bye, 200))
    await wait_for(lambda: dialog.state is DialogState.TERMINATED)
    assert rig.server.stats.no_ack_hangups == 1


async def test_retransmitted_invite_is_absorbed(make_rig: Any) -> None:
    rig = await make_rig(answer_delay_s=0.2)
    peer, rtp = await rig.peer()
    invite = peer.request("INVITE", body=sdp_offer("127.0.0.1", rtp.port))
    peer.send(invite)
    await peer.response(180)
    peer.send(invite)
    again = await peer.response(180)  # the last response, sent again
    assert again.cseq == 1
    await peer.response(200)
    assert len(rig.calls.calls) == 1 and len(rig.server.dialogs) == 1
    assert rig.server.stats.retransmissions_absorbed >= 1


async def test_rtp_latches_paces_and_delivers_audio_and_dtmf(make_rig: Any) -> None:
    rig = await make_rig()
    peer, sdp_rtp, dialog = await rig.answered()
    actual = await Udp.open()  # the peer's media really comes from another port (NAT)
    rig.udps.append(actual)
    gw_rtp = ("127.0.0.1", dialog.session.local_port)
    assert gw_rtp[1] % 2 == 0
    for i in range(10):
        actual.send(rtp_packet(100 + i, 160 * i), gw_rtp)
    call = rig.calls.calls[0]
    await wait_for(lambda: call.fed_samples == 1600)
    actual.drain()
    data, _ = await actual.recv()  # latched: our RTP now goes where the media came from
    first = parse_rtp(data)
    assert first.payload_type == 0 and len(first.payload) == 160
    seqs = [parse_rtp((await actual.recv())[0]).sequence for _ in range(5)]
    assert seqs == [(first.sequence + i + 1) % 65536 for i in range(5)]
    # RFC 4733: a 7 with three end packets, then a 9
    for i, (ev, end, dur) in enumerate(
        [(7, 0, 160), (7, 0, 320), (7, 1, 480), (7, 1, 480), (7, 1, 480)]
    ):
        actual.send(
            rtp_packet(200 + i, 8000, pt=101, payload=struct.pack("!BBH", ev, end << 7 | 10, dur)),
            gw_rtp,
        )
    actual.send(rtp_packet(205, 9600, pt=101, payload=struct.pack("!BBH", 9, 0x8A, 480)), gw_rtp)
    await wait_for(lambda: call.digits == ["7", "9"])
    # a third party's packets are not the caller's audio
    stranger = await Udp.open()
    rig.udps.append(stranger)
    fed = call.fed_samples
    stranger.send(rtp_packet(1, 0, ssrc=5), gw_rtp)
    await wait_for(lambda: rig.server.stats.rtp_foreign_source == 1)
    assert call.fed_samples == fed
    # garbage on the RTP port is counted, the call goes on
    actual.send(b"\x00garbage", gw_rtp)
    await wait_for(lambda: rig.server.stats.rtp_malformed == 1)
    assert call.closed is None and dialog.state is DialogState.CONFIRMED


async def test_lost_packets_keep_the_caller_timeline_and_garbage_does_not_latch(
    make_rig: Any,
) -> None:
    rig = await make_rig()
    peer, rtp, dialog = await rig.answered()
    gw_rtp = ("127.0.0.1", dialog.session.local_port)
    stranger = await Udp.open()
    rig.udps.append(stranger)
    stranger.send(b"\x00not rtp", gw_rtp)  # must not capture the call's media
    await wait_for(lambda: rig.server.stats.rtp_malformed == 1)
    sequence = [0, 1, 2, 4, 5, 6, 7]  # 3 is lost: given up once 3 later packets are held
    for seq in sequence:
        rtp.send(rtp_packet(seq, 160 * seq), gw_rtp)
    call = rig.calls.calls[0]
    await wait_for(lambda: call.fed_samples == 160 * 8)  # 7 packets + 160 samples of silence
    assert rig.server.stats.rtp_gap_filled_samples == 160
    assert dialog.session.destination == ("127.0.0.1", rtp.port)


async def test_rtp_from_a_third_address_before_the_caller_is_refused(
    make_rig: Any, caplog: pytest.LogCaptureFixture
) -> None:
    rig = await make_rig()
    peer, rtp, dialog = await rig.answered()  # SDP c= and the INVITE both 127.0.0.1
    gw_rtp = ("127.0.0.1", dialog.session.local_port)
    intruder = await Udp.open("127.0.0.2")  # knows or guessed the port, sends first
    rig.udps.append(intruder)
    call = rig.calls.calls[0]
    with caplog.at_level(logging.WARNING, logger="voicegate.legs.sip"):
        for i in range(5):
            intruder.send(rtp_packet(i, 160 * i, ssrc=666), gw_rtp)
        await wait_for(lambda: rig.server.stats.rtp_refused_source == 5)
    assert call.fed_samples == 0  # not the caller's audio
    assert dialog.session.destination == ("127.0.0.1", rtp.port)  # still the SDP address
    refusals = [r for r in caplog.records if "refused before the caller's media" in r.message]
    assert len(refusals) == 1 and "127.0.0.2" in refusals[0].message  # logged once, not per packet
    # the caller's own media (another port of its host: NAT) latches and gets the agent
    actual = await Udp.open("127.0.0.1")
    rig.udps.append(actual)
    for i in range(5):
        actual.send(rtp_packet(i, 160 * i), gw_rtp)
    await wait_for(lambda: call.fed_samples == 800)
    assert parse_rtp((await actual.recv())[0]).payload_type == 0
    await asyncio.sleep(0.2)  # 10 frames of agent audio went out meanwhile
    assert intruder.drain() == 0  # none of them to the intruder
    intruder.send(rtp_packet(9, 1440, ssrc=666), gw_rtp)  # once latched: a foreign source
    await wait_for(lambda: rig.server.stats.rtp_foreign_source == 1)
    assert call.fed_samples == 800
    metrics = generate_latest(collector_registry(rig.server.stats)).decode()
    assert "voicegate_sip_rtp_refused_source_total 5.0" in metrics


def collector_registry(stats: Any) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(stats.collector())
    return registry


async def test_sip_info_dtmf_relay_is_a_digit(make_rig: Any) -> None:
    rig = await make_rig()
    peer, rtp, dialog = await rig.answered()
    body = "Signal=#\r\nDuration=160\r\n"
    peer.send(peer.request("INFO", body=body, content_type="application/dtmf-relay"))
    await peer.response(200)
    peer.send(peer.request("INFO", body="not a digit", content_type="text/plain"))
    await peer.response(200)
    assert rig.calls.calls[0].digits == ["#"]


async def test_hold_stops_our_rtp_and_unhold_resumes(make_rig: Any) -> None:
    rig = await make_rig()
    peer, rtp, dialog = await rig.answered()
    await rtp.recv()  # media flows to the SDP address before anything is latched
    peer.send(peer.request("INVITE", body=sdp_offer("127.0.0.1", rtp.port, direction="sendonly")))
    ok = await peer.response(200)
    assert parse_sdp(ok.raw.body).media[0].direction is Direction.RECVONLY
    peer.send(peer.request("ACK", cseq=ok.cseq))
    await asyncio.sleep(0.06)
    rtp.drain()
    await asyncio.sleep(0.2)
    assert rtp.drain() == 0  # on hold: nothing sent
    peer.send(peer.request("INVITE", body=sdp_offer("127.0.0.1", rtp.port)))
    ok = await peer.response(200)
    assert parse_sdp(ok.raw.body).media[0].direction is Direction.SENDRECV
    peer.send(peer.request("ACK", cseq=ok.cseq))
    await rtp.recv()
    statuses = [e.status for e in rig.events.events if not e.status.startswith("dialog-")]
    assert statuses == ["hold", "unhold"]
    assert rig.calls.calls[0].closed is None


async def test_reinvite_to_a_new_address_moves_the_media(make_rig: Any) -> None:
    rig = await make_rig()
    peer, rtp, dialog = await rig.answered()
    await rtp.recv()
    moved = await Udp.open()
    rig.udps.append(moved)
    peer.send(peer.request("INVITE", body=sdp_offer("127.0.0.1", moved.port, formats="8 101")))
    ok = await peer.response(200)
    peer.send(peer.request("ACK", cseq=ok.cseq))
    packet = parse_rtp((await moved.recv())[0])
    assert packet.payload_type == 8  # and the codec changed to PCMA
    assert [e.status for e in rig.events.events][-1] == "media-moved"


async def test_media_timeouts_end_the_call_with_bye(make_rig: Any) -> None:
    rig = await make_rig(rtp_timeout_before_media_s=0.3, rtp_timeout_s=0.3)
    peer, rtp, dialog = await rig.answered()
    bye = await peer.request_in("BYE", timeout_s=2)
    assert bye.method == "BYE"
    call = rig.calls.calls[0]
    assert call.ended is not None and call.ended[0] is EndReason.MEDIA_TIMEOUT
    assert "no RTP within" in call.ended[1]
    # after media has flowed, silence for rtp_timeout_s ends it too
    peer2, rtp2, dialog2 = await rig.answered()
    gw_rtp = ("127.0.0.1", dialog2.session.local_port)
    for i in range(20):
        rtp2.send(rtp_packet(i, 160 * i), gw_rtp)
        await asyncio.sleep(0.02)
    await peer2.request_in("BYE", timeout_s=2)
    assert "no RTP for" in rig.calls.calls[1].ended[1]
    assert rig.server.stats.media_timeouts == 2


async def test_busy_when_full_or_draining(make_rig: Any) -> None:
    rig = await make_rig()
    rig.calls.is_admitting = False
    peer, rtp = await rig.peer()
    peer.send(peer.request("INVITE", body=sdp_offer("127.0.0.1", rtp.port)))
    busy = await peer.response(486)
    peer.send(peer.request("ACK", cseq=busy.cseq))
    rig.calls.is_admitting = True
    rig.calls.error = NoFreeSlot("all taken")  # the slot went between the check and the start
    peer2, rtp2 = await rig.peer()
    peer2.send(peer2.request("INVITE", body=sdp_offer("127.0.0.1", rtp2.port)))
    await peer2.response(486)
    assert rig.server.stats.invites_busy == 2
    assert rig.server.stats.rtp_ports_in_use == 0


async def test_302_to_the_overflow_when_full_or_the_slot_went(make_rig: Any) -> None:
    rig = await make_rig()
    rig.calls.is_admitting = False
    peer, rtp = await rig.peer()
    peer.send(peer.request("INVITE", user="overflowing", body=sdp_offer("127.0.0.1", rtp.port)))
    moved = await peer.response(302)
    # an E.164 overflow becomes a SIP URI at the host the INVITE came from (no transfer host)
    assert moved.raw.headers.get("Contact") == "<sip:+14155550199@127.0.0.1;user=phone>"
    peer.send(peer.request("ACK", cseq=moved.cseq, user="overflowing"))
    rig.calls.is_admitting = True
    rig.calls.error = NoFreeSlot("all taken")
    peer2, rtp2 = await rig.peer()
    peer2.send(peer2.request("INVITE", user="overflowing", body=sdp_offer("127.0.0.1", rtp2.port)))
    await peer2.response(302)
    assert rig.server.stats.invites_redirected == 2
    assert rig.server.stats.invites_busy == 0
    assert rig.server.stats.rtp_ports_in_use == 0


async def test_488_when_no_codec_fits_or_no_offer(make_rig: Any) -> None:
    rig = await make_rig()
    peer, rtp = await rig.peer()
    peer.send(peer.request("INVITE", body=sdp_offer("127.0.0.1", rtp.port, formats="18")))
    refused = await peer.response(488)
    peer.send(peer.request("ACK", cseq=refused.cseq))
    # a retry with the same Call-ID and a codec we take is a new call (RFC 3261 8.1.3.5)
    peer.send(peer.request("INVITE", body=sdp_offer("127.0.0.1", rtp.port, formats="8")))
    await peer.response(200)
    assert len(rig.calls.calls) == 1
    peer2, _ = await rig.peer()
    peer2.send(peer2.request("INVITE"))
    await peer2.response(488)
    peer3, rtp3 = await rig.peer()
    offer = sdp_offer("127.0.0.1", rtp3.port)
    peer3.send(peer3.request("INVITE", body=offer, extra="Require: 100rel, foo\r\n"))
    refused = await peer3.response(420)
    assert refused.raw.headers["Unsupported"] == "100rel, foo"
    assert len(rig.calls.calls) == 1


async def test_digest_auth_challenges_then_admits(make_rig: Any) -> None:
    rig = await make_rig(auth_username="trunk", auth_password="s3cret")
    peer, rtp = await rig.peer()
    offer = sdp_offer("127.0.0.1", rtp.port)
    peer.send(peer.request("INVITE", body=offer))
    challenge = await peer.response(401)
    www = challenge.raw.headers["WWW-Authenticate"]
    nonce = www.split('nonce="')[1].split('"')[0]
    uri = f"sip:teller@127.0.0.1:{rig.server.port}"

    def authorization(password: str) -> str:
        resp = digest_response(
            "trunk",
            "voicegate",
            password,
            "INVITE",
            uri,
            nonce,
            qop="auth",
            nc="00000001",
            cnonce="c0ffee",
        )
        return (
            f'Authorization: Digest username="trunk", realm="voicegate", nonce="{nonce}", '
            f'uri="{uri}", response="{resp}", qop=auth, nc=00000001, cnonce="c0ffee"\r\n'
        )

    peer.send(peer.request("INVITE", body=offer, extra=authorization("wrong")))
    await peer.response(401)
    peer.send(peer.request("INVITE", body=offer, extra=authorization("s3cret")))
    await peer.response(200)
    assert len(rig.calls.calls) == 1
    assert rig.server.stats.invites_unauthorized == 2


async def test_our_hangup_sends_bye_in_the_dialog(make_rig: Any) -> None:
    rig = await make_rig()
    peer, rtp, dialog = await rig.answered()
    rig.calls.calls[0].end(EndReason.DRAIN, "shutting down")
    bye = await peer.request_in("BYE")
    assert bye.uri.user == "caller" and bye.cseq == 1
    assert (bye.from_tag, bye.to_tag, bye.call_id) == (
        dialog.local_tag,
        peer.from_tag,
        peer.call_id,
    )
    from voicegate.legs.sip.message import build_response

    peer.send(build_response(bye, 200))
    await wait_for(lambda: dialog.state is DialogState.TERMINATED)
    assert dialog.history == [
        DialogState.PROCEEDING, DialogState.ACCEPTED, DialogState.CONFIRMED,
        DialogState.TERMINATING, DialogState.TERMINATED,
    ]  # fmt: skip
    # one leg.status event per move once the call exists (STYLE rule 3)
    assert [(e.status, e.detail) for e in rig.events.events] == [
        ("dialog-accepted", ""), ("dialog-confirmed", ""),
        ("dialog-terminating", "drain"), ("dialog-terminated", "drain"),
    ]  # fmt: skip


async def test_caller_bye_closes_the_leg_and_a_repeat_bye_gets_the_same_200(make_rig: Any) -> None:
    rig = await make_rig()
    peer, rtp, dialog = await rig.answered()
    bye = peer.request("BYE")
    peer.send(bye)
    await peer.response(200)
    assert rig.calls.calls[0].closed is EndReason.CALLER_HANGUP
    assert dialog.state is DialogState.TERMINATED
    peer.send(bye)
    await peer.response(200)
    assert rig.server.stats.rtp_ports_in_use == 0


async def test_tcp_call(make_rig: Any) -> None:
    rig = await make_rig()
    rtp = await Udp.open()
    rig.udps.append(rtp)
    reader, writer = await asyncio.open_connection("127.0.0.1", rig.server.port)
    peer = SipPeer(rtp, rig.gw)  # only used to build requests
    invite = peer.request("INVITE", body=sdp_offer("127.0.0.1", rtp.port)).replace(
        b"SIP/2.0/UDP", b"SIP/2.0/TCP"
    )
    writer.write(b"\r\n\r\n" + invite[:50])
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.write(invite[50:])

    async def response() -> SipResponse:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        msg = parse_message(head + await reader.readexactly(length))
        assert isinstance(msg, SipResponse)
        return msg

    codes = [(await response()).code for _ in range(3)]
    assert codes == [100, 180, 200]
    writer.close()
    await writer.wait_closed()


async def test_fuzzed_messages_get_an_answer_or_nothing_and_calls_go_on(
    make_rig: Any, caplog: pytest.LogCaptureFixture
) -> None:
    rig = await make_rig()
    peer, rtp, dialog = await rig.answered()
    seeds = [p.read_bytes() for p in sorted(DATA.glob("*.sip"))]
    rng = random.Random(4733)
    answers: list[bytes] = []
    fuzz_peer = Peer("UDP", "127.0.0.9", 5999, answers.append)
    with caplog.at_level(logging.ERROR, logger="voicegate.legs.sip"):
        for _ in range(600):
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(0, 5)):
                pos = rng.randrange(len(data))
                op = rng.randrange(3)
                if op == 0:
                    data[pos] = rng.randrange(256)
                elif op == 1:
                    del data[pos : pos + rng.randrange(30)]
                else:
                    data[pos:pos] = rng.choice([b"\r\n", b":", b";tag=", b"<", b"0", b"\xff"])
            rig.server._handle(bytes(data), fuzz_peer)  # raises nothing (not even via handle())
        await asyncio.sleep(0.2)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    for answer in answers:
        assert isinstance(parse_message(answer), SipResponse)
    assert rig.server.stats.messages_malformed > 0
    # the real call is untouched: still up, still paced
    call = rig.calls.calls[0]
    assert dialog.state is DialogState.CONFIRMED and call.closed is None
    pulls = call.pulls
    await asyncio.sleep(0.1)
    assert call.pulls > pulls


async def test_control_bytes_in_a_header_get_400_and_start_no_call(make_rig: Any) -> None:
    rig = await make_rig()
    peer, rtp = await rig.peer()
    offer = sdp_offer("127.0.0.1", rtp.port)
    peer.send(peer.request("INVITE", body=offer, extra="Subject: pay\x00ment\r\n"))
    refused = await peer.response(400)
    assert refused.cseq_method == "INVITE" and refused.call_id == peer.call_id
    peer.send(peer.request("OPTIONS", extra="X-\x1bColour: red\r\n"))
    assert (await peer.response(400)).cseq_method == "OPTIONS"
    peer.send(peer.request("ACK", cseq=1, extra="Subject: \x07\r\n"))  # an ACK is never answered
    await asyncio.sleep(0.1)
    assert peer.udp.drain() == 0
    assert rig.calls.calls == [] and rig.server.stats.messages_malformed == 3
    peer.send(peer.request("INVITE", body=offer, extra="Subject: pay\tment\r\n"))  # HTAB is fine
    await peer.response(200)
    assert len(rig.calls.calls) == 1
