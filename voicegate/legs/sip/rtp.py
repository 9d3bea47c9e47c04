"""RTP packets (RFC 3550 5.1), a small reorder buffer, and RFC 4733 telephone-events.

``parse_rtp(data)`` -> ``RtpPacket`` or ``RtpParseError``; ``RtpWriter`` serialises our packets
into one preallocated buffer (sequence and timestamp advance per frame). ``ReorderBuffer`` puts
a few out-of-order packets back in sequence (16-bit wrap-around), drops duplicates and late
packets, and resyncs on an SSRC change. ``parse_telephone_event`` and ``DtmfDetector`` turn
RFC 4733 packets into digits once each (the start of an event, its repeated and triple end
packets deduplicated by RTP timestamp).

``latch_hosts(sdp_host, signalling_host)`` is the rule for symmetric RTP (RFC 4961): which
source hosts a call's media may be latched to. Latching to the first packet from anywhere let a
third party that knew or guessed the port take the call's audio before the caller's first
packet. So media is latched only to a source consistent with the signalling:

* the SDP connection address (``c=``) of the offer (or of the re-INVITE that moved the media):
  where the caller said its media comes from; a carrier's media gateway or an SBC's relay
  often differs from its signalling address;
* the source address of the INVITE: a caller behind NAT writes its private address into the
  SDP (RFC 1918, 100.64.0.0/10 shared space, link-local) and sends its media from the public
  address its signalling came from. (Where the SDP address equals the INVITE's source this
  adds nothing; where it is not an IP literal, the INVITE's source is the only one.)

Any port of those hosts is accepted (a NAT picks its own). Packets from other sources before
the latch are dropped, counted and logged (rate limited) by the session. Not covered: a NATed
caller behind a proxy that neither anchors the media nor rewrites the SDP (its media comes
from neither address); put the media through the SBC (rtpengine) there. Owns: the RTP wire format and this rule.
Pure: no asyncio, no sockets.
"""

from __future__ import annotations

import ipaddress
import os
import struct
from dataclasses import dataclass

from voicegate.errors import RtpParseError

__all__ = [
    "DtmfDetector",
    "ReorderBuffer",
    "RtpPacket",
    "RtpWriter",
    "TelephoneEvent",
    "is_rtcp",
    "latch_hosts",
    "parse_rtp",
    "parse_telephone_event",
    "source_host",
]

RTP_VERSION = 2
HEADER_BYTES = 12
MAX_PACKET_BYTES = 1500
SEQ_MOD = 1 << 16
TS_MOD = 1 << 32
MAX_MISORDER = 100  # RFC 3550 A.1: a jump this far back is a restart, not a late packet
DTMF_DIGITS = "0123456789*#ABCD"

_HEADER = struct.Struct("!BBHII")


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One parsed RTP packet; ``payload`` is a copy of the bytes after header/CSRC/extension."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    marker: bool
    payload: bytes


def is_rtcp(data: bytes) -> bool:
    """RTCP packet types 200-204 sit where RTP has marker+PT (RFC 5761 4)."""
    return len(data) >= 2 and 192 <= data[1] <= 223


def parse_rtp(data: bytes) -> RtpPacket:
    """Parse an RTP packet; ``RtpParseError`` names the field that is wrong."""
    n = len(data)
    if n < HEADER_BYTES:
        raise RtpParseError(f"RTP packet of {n} bytes is shorter than the 12-byte header")
    if n > MAX_PACKET_BYTES:
        raise RtpParseError(f"RTP packet of {n} bytes exceeds {MAX_PACKET_BYTES}")
    b0, b1, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
    if b0 >> 6 != RTP_VERSION:
        raise RtpParseError(f"RTP version {b0 >> 6}, expected 2")
    offset = HEADER_BYTES + 4 * (b0 & 0x0F)
    if b0 & 0x10:  # header extension (RFC 3550 5.3.1)
        if n < offset + 4:
            raise RtpParseError("RTP extension header truncated")
        (words,) = struct.unpack_from("!H", data, offset + 2)
        offset += 4 + 4 * words
    end = n
    if b0 & 0x20:  # padding: the last byte counts the padding bytes
        pad = data[-1]
        if pad == 0 or pad > n - offset:
            raise RtpParseError(f"RTP padding of {pad} bytes does not fit")
        end -= pad
    if offset > end:
        raise RtpParseError(f"RTP header of {offset} bytes longer than the packet ({n})")
    return RtpPacket(b1 & 0x7F, sequence, timestamp, ssrc, bool(b1 & 0x80), bytes(data[offset:end]))


class RtpWriter:
    """Serialises our outgoing stream: one SSRC, sequence +1 and timestamp +samples per packet."""

    __slots__ = ("_buffer", "_view", "payload_type", "sequence", "ssrc", "timestamp", "_marker")

    def __init__(self, payload_type: int, payload_bytes: int = 160) -> None:
        self.payload_type = payload_type
        self.ssrc = struct.unpack("!I", os.urandom(4))[0]
        self.sequence = struct.unpack("!H", os.urandom(2))[0]
        self.timestamp = struct.unpack("!I", os.urandom(4))[0]
        self._buffer = bytearray(HEADER_BYTES + payload_bytes)
        self._view = memoryview(self._buffer)
        self._marker = True  # first packet of the stream (RFC 3551 4.1)

    def pack(self, payload: bytes, samples: int) -> memoryview:
        """The packet for ``payload`` (a view of a reused buffer, valid until the next call)."""
        n = HEADER_BYTES + len(payload)
        if n > len(self._buffer):
            self._buffer = bytearray(n)
            self._view = memoryview(self._buffer)
        b1 = self.payload_type | (0x80 if self._marker else 0)
        _HEADER.pack_into(self._buffer, 0, 0x80, b1, self.sequence, self.timestamp, self.ssrc)
        self._buffer[HEADER_BYTES:n] = payload
        self._marker = False
        self.sequence = (self.sequence + 1) % SEQ_MOD
        self.timestamp = (self.timestamp + samples) % TS_MOD
        return self._view[:n]

    def skip(self, samples: int) -> None:
        """Advance the clock without sending (on hold), so the timeline stays continuous."""
        self.timestamp = (self.timestamp + samples) % TS_MOD
        self._marker = True


class ReorderBuffer:
    """Hands packets on in sequence order, holding at most ``depth`` while one is missing.

    ``push(packet)`` returns the packets now ready (often just that one). A missing packet is
    given up when ``depth`` later ones have arrived (``lost`` counts it). Duplicates and packets
    older than the last one handed on are dropped (``late``). A new SSRC restarts the sequence.
    """

    __slots__ = ("depth", "_expected", "_held", "_ssrc", "lost", "late", "resyncs")

    def __init__(self, depth: int = 3) -> None:
        self.depth = depth
        self._expected: int | None = None
        self._held: dict[int, RtpPacket] = {}
        self._ssrc: int | None = None
        self.lost = 0
        self.late = 0
        self.resyncs = 0

    def push(self, packet: RtpPacket) -> list[RtpPacket]:
        if packet.ssrc != self._ssrc:
            if self._ssrc is not None:
                self.resyncs += 1
            self._ssrc = packet.ssrc
            self._held.clear()
            self._expected = None
        if self._expected is None:
            self._expected = (packet.sequence + 1) % SEQ_MOD
            return [packet]
        delta = (packet.sequence - self._expected) % SEQ_MOD
        if delta == 0:
            self._expected = (packet.sequence + 1) % SEQ_MOD
            ready = [packet]
            self._release(ready)
            return ready
        if delta >= SEQ_MOD - MAX_MISORDER:  # behind what we handed on: late or duplicate
            self.late += 1
            return []
        if delta > MAX_MISORDER * 10:  # a big jump forward: the sender restarted its sequence
            self.resyncs += 1
            self._held.clear()
            self._expected = (packet.sequence + 1) % SEQ_MOD
            return [packet]
        if packet.sequence in self._held:
            self.late += 1
            return []
        self._held[packet.sequence] = packet
        out: list[RtpPacket] = []
        while len(self._held) >= self.depth:
            # give up on the missing packet(s): jump to the oldest held one
            oldest = min(self._held, key=lambda s: (s - self._expected) % SEQ_MOD)  # type: ignore[operator]
            self.lost += (oldest - self._expected) % SEQ_MOD
            self._expected = oldest
            self._release(out)
        return out

    def _release(self, out: list[RtpPacket]) -> None:
        held = self._held
        expected = self._expected
        assert expected is not None
        while expected in held:
            out.append(held.pop(expected))
            expected = (expected + 1) % SEQ_MOD
        self._expected = expected


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """An RFC 4733 2.3 named event payload."""

    event: int
    is_end: bool
    volume: int
    duration: int  # in RTP timestamp units (8 kHz: 8 per ms)

    @property
    def digit(self) -> str | None:
        return DTMF_DIGITS[self.event] if self.event < len(DTMF_DIGITS) else None


def parse_telephone_event(payload: bytes) -> TelephoneEvent:
    if len(payload) < 4:
        raise RtpParseError(f"telephone-event payload of {len(payload)} bytes, expected 4")
    event, flags, duration = struct.unpack_from("!BBH", payload)
    return TelephoneEvent(event, bool(flags & 0x80), flags & 0x3F, duration)


class DtmfDetector:
    """One digit per RFC 4733 event; an event is identified by its RTP timestamp (2.5.1.2).

    ``on_packet`` returns the digit on the first packet of a new event and None for its
    continuations, its retransmitted end packets (2.5.1.4), and non-digit events. A packet with
    the same timestamp starts a new event too when its code differs or it follows an end packet
    without the end bit (replayed captures reuse timestamps).
    """

    __slots__ = ("_last", "_has_ended", "duplicates")

    def __init__(self) -> None:
        self._last: tuple[int, int, int] | None = None  # (ssrc, timestamp, event)
        self._has_ended = False
        self.duplicates = 0

    def on_packet(self, packet: RtpPacket) -> str | None:
        event = parse_telephone_event(packet.payload)
        key = (packet.ssrc, packet.timestamp, event.event)
        is_same = key == self._last and not (self._has_ended and not event.is_end)
        self._last = key
        if is_same:
            self._has_ended = self._has_ended or event.is_end
            self.duplicates += 1
            return None
        self._has_ended = event.is_end
        return event.digit


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def latch_hosts(sdp_host: str, signalling_host: str) -> frozenset[str]:
    """The hosts a call's RTP may be latched to (see the module docstring for the rule).

    ``sdp_host`` is the offer's connection address, ``signalling_host`` where its INVITE came
    from; both are normalised (an IPv4-mapped IPv6 source is its IPv4 address). Addresses that
    no packet can come from (``0.0.0.0``, a host name) are left out.
    """
    hosts: set[str] = set()
    for host in (sdp_host, signalling_host):
        ip = _ip(host)
        if ip is not None and not ip.is_unspecified:
            hosts.add(str(ip))
    return frozenset(hosts)


def source_host(host: str) -> str:
    """A packet's source host in the form ``latch_hosts`` uses."""
    ip = _ip(host)
    return str(ip) if ip is not None else host
