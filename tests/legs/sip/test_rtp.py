"""RTP packets, the reorder buffer (loss, reorder, duplicates, SSRC change), RFC 4733 DTMF."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicegate.errors import RtpParseError
from voicegate.legs.sip.rtp import (
    DtmfDetector,
    ReorderBuffer,
    RtpPacket,
    RtpWriter,
    is_rtcp,
    latch_hosts,
    parse_rtp,
    parse_telephone_event,
    source_host,
)


def rtp(seq: int, ts: int = 0, ssrc: int = 1, pt: int = 0, payload: bytes = b"\xff" * 160) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq & 0xFFFF, ts, ssrc) + payload


def pkt(seq: int, ssrc: int = 1) -> RtpPacket:
    return parse_rtp(rtp(seq, seq * 160, ssrc))


def test_writer_round_trip_and_counters() -> None:
    w = RtpWriter(8)
    seq0, ts0 = w.sequence, w.timestamp
    first = parse_rtp(bytes(w.pack(b"\x01" * 160, 160)))
    second = parse_rtp(bytes(w.pack(b"\x02" * 160, 160)))
    assert (first.payload_type, first.marker, first.sequence, first.timestamp) == (
        8,
        True,
        seq0,
        ts0,
    )
    assert second.marker is False
    assert second.sequence == (seq0 + 1) % 65536 and second.timestamp == (ts0 + 160) % 2**32
    assert first.ssrc == second.ssrc and second.payload == b"\x02" * 160
    w.skip(160)
    third = parse_rtp(bytes(w.pack(b"\x03" * 160, 160)))
    assert third.marker is True and third.timestamp == (ts0 + 480) % 2**32


def test_csrc_extension_and_padding_are_skipped() -> None:
    header = struct.pack("!BBHII", 0x80 | 0x20 | 0x10 | 2, 0, 1, 2, 3)
    csrcs = b"\0" * 8
    ext = struct.pack("!HH", 0xBEDE, 1) + b"\0" * 4
    data = header + csrcs + ext + b"abc" + b"\0\0\x03"
    assert parse_rtp(data).payload == b"abc"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80" * 11,
        b"\x40" + b"\0" * 20,
        struct.pack("!BBHII", 0xA0, 0, 1, 2, 3) + b"\x09",
        struct.pack("!BBHII", 0x8F, 0, 1, 2, 3),
        b"\x80" * 2000,
    ],
)
def test_malformed_rtp(data: bytes) -> None:
    with pytest.raises(RtpParseError):
        parse_rtp(data)


def test_rtcp_is_told_apart() -> None:
    assert is_rtcp(b"\x80\xc8" + b"\0" * 26)  # sender report
    assert not is_rtcp(rtp(1))


def test_in_order_packets_pass_straight_through() -> None:
    buf = ReorderBuffer()
    assert [p.sequence for s in (10, 11, 12) for p in buf.push(pkt(s))] == [10, 11, 12]


def test_reordered_packets_are_put_back_in_order() -> None:
    buf = ReorderBuffer(depth=3)
    out = [p.sequence for s in (1, 3, 2, 4) for p in buf.push(pkt(s))]
    assert out == [1, 2, 3, 4]
    assert buf.lost == 0


def test_a_lost_packet_is_given_up_after_depth_packets() -> None:
    buf = ReorderBuffer(depth=3)
    out = [p.sequence for s in (1, 3, 4, 5, 6) for p in buf.push(pkt(s))]
    assert out == [1, 3, 4, 5, 6]
    assert buf.lost == 1


def test_duplicates_and_late_packets_are_dropped() -> None:
    buf = ReorderBuffer()
    out = [p.sequence for s in (5, 6, 6, 5, 7) for p in buf.push(pkt(s))]
    assert out == [5, 6, 7]
    assert buf.late == 2


def test_sequence_wraps_around() -> None:
    buf = ReorderBuffer()
    out = [p.sequence for s in (65534, 0, 65535, 1) for p in buf.push(pkt(s))]
    assert out == [65534, 65535, 0, 1]


def test_ssrc_change_resyncs() -> None:
    buf = ReorderBuffer()
    assert [p.sequence for p in buf.push(pkt(100, ssrc=1))] == [100]
    assert [p.sequence for p in buf.push(pkt(7, ssrc=2))] == [7]  # far behind, but a new source
    assert buf.resyncs == 1 and buf.late == 0


@given(st.permutations(list(range(40))))
def test_property_every_packet_is_delivered_once_when_nothing_is_lost(order: list[int]) -> None:
    buf = ReorderBuffer(depth=64)
    out = [p.sequence for s in [0, *[x + 1 for x in order]] for p in buf.push(pkt(s))]
    assert sorted(out) == list(range(41))
    assert len(set(out)) == len(out)


def dtmf(event: int, end: bool, duration: int, ts: int, seq: int, ssrc: int = 9) -> RtpPacket:
    payload = struct.pack("!BBH", event, (0x80 if end else 0) | 10, duration)
    return parse_rtp(rtp(seq, ts, ssrc, pt=101, payload=payload))


def test_telephone_event_payload() -> None:
    ev = parse_telephone_event(struct.pack("!BBH", 11, 0x8A, 800))
    assert (ev.digit, ev.is_end, ev.volume, ev.duration) == ("#", True, 10, 800)
    with pytest.raises(RtpParseError):
        parse_telephone_event(b"\x01")


def test_one_digit_per_event_with_triple_end_packets() -> None:
    det = DtmfDetector()
    packets = [dtmf(5, False, d, 1000, i) for i, d in enumerate((160, 320, 480))]
    packets += [dtmf(5, True, 640, 1000, 3 + i) for i in range(3)]
    packets += [dtmf(5, False, 160, 3000, 6), dtmf(5, True, 320, 3000, 7)]  # 5 again, new event
    digits = [d for p in packets if (d := det.on_packet(p)) is not None]
    assert digits == ["5", "5"]
    assert det.duplicates == 6


def test_replayed_capture_with_the_same_timestamp_is_a_new_event() -> None:
    det = DtmfDetector()
    first = [dtmf(1, False, 160, 500, 1), dtmf(1, True, 320, 500, 2), dtmf(1, True, 320, 500, 3)]
    again = [dtmf(1, False, 160, 500, 4), dtmf(1, True, 320, 500, 5)]
    other = [dtmf(11, False, 160, 500, 6)]
    digits = [d for p in first + again + other if (d := det.on_packet(p)) is not None]
    assert digits == ["1", "1", "#"]


@pytest.mark.parametrize(
    ("sdp_host", "signalling_host", "hosts"),
    [
        ("127.0.0.1", "127.0.0.1", {"127.0.0.1"}),  # the same address
        ("10.0.0.5", "203.0.113.7", {"10.0.0.5", "203.0.113.7"}),  # caller behind NAT
        ("100.64.9.9", "203.0.113.7", {"100.64.9.9", "203.0.113.7"}),  # carrier-grade NAT
        ("169.254.1.1", "203.0.113.7", {"169.254.1.1", "203.0.113.7"}),  # link-local
        ("198.51.100.2", "203.0.113.7", {"198.51.100.2", "203.0.113.7"}),  # a media gateway
        ("0.0.0.0", "203.0.113.7", {"203.0.113.7"}),  # hold: no media address
        ("media.example.net", "203.0.113.7", {"203.0.113.7"}),  # not an IP literal
        ("203.0.113.7", "::ffff:203.0.113.7", {"203.0.113.7"}),  # IPv4-mapped source
    ],
)
def test_latch_hosts_follow_the_signalling(
    sdp_host: str, signalling_host: str, hosts: set[str]
) -> None:
    assert latch_hosts(sdp_host, signalling_host) == hosts
    assert source_host("::ffff:203.0.113.7") == "203.0.113.7"
