"""SDP offer/answer for the SIP leg (RFC 4566 parsing, RFC 3264 answers, RFC 4733 events).

``parse_sdp`` reads an offer into a ``SessionDescription``; ``negotiate`` picks PCMU or PCMA
(the offerer's order) plus ``telephone-event/8000`` with the payload type the offer used, the
direction (hold: ``sendonly``/``inactive``/``c=0.0.0.0``) and the ptime, or raises ``SdpError``
(answered with 488). ``build_answer`` writes the answer with every other m-line rejected (port 0).

Owns: the SDP wire format and the codec choice. Pure: no asyncio, no sockets.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from voicegate.errors import SdpError

__all__ = [
    "Direction",
    "MediaDescription",
    "MediaPlan",
    "SessionDescription",
    "build_answer",
    "negotiate",
    "parse_sdp",
]

MAX_SDP_BYTES = 8_192
MAX_MEDIA = 16
MAX_FORMATS = 64
RATE_HZ = 8000
DEFAULT_PTIME_MS = 20
CODECS = {"PCMU": 0, "PCMA": 8}  # static payload types (RFC 3551 6)
TELEPHONE_EVENT = "telephone-event"


class Direction(enum.Enum):
    """An m-line's direction attribute (RFC 3264 5.1), from the side that wrote it."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def reversed(self) -> Direction:
        return _REVERSED[self]

    @property
    def is_sending(self) -> bool:
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def is_receiving(self) -> bool:
        return self in (Direction.SENDRECV, Direction.RECVONLY)


_REVERSED = {
    Direction.SENDRECV: Direction.SENDRECV,
    Direction.SENDONLY: Direction.RECVONLY,
    Direction.RECVONLY: Direction.SENDONLY,
    Direction.INACTIVE: Direction.INACTIVE,
}


@dataclass(frozen=True, slots=True)
class MediaDescription:
    """One m-line with the attributes we use."""

    kind: str
    port: int
    proto: str
    formats: tuple[str, ...]
    connection: str | None
    rtpmap: dict[int, tuple[str, int]] = field(default_factory=dict)  # pt -> (name, rate)
    fmtp: dict[int, str] = field(default_factory=dict)
    ptime_ms: int | None = None
    direction: Direction | None = None


@dataclass(frozen=True, slots=True)
class SessionDescription:
    """A parsed SDP body (session-level connection and direction apply to every m-line)."""

    origin: str
    connection: str | None
    direction: Direction | None
    media: tuple[MediaDescription, ...]


@dataclass(frozen=True, slots=True)
class MediaPlan:
    """What we agreed on: where to send, which codec and events, who sends."""

    remote_host: str
    remote_port: int
    codec: str  # "PCMU" | "PCMA"
    codec_pt: int
    dtmf_pt: int | None
    ptime_ms: int
    remote_direction: Direction  # as the offer said
    media_index: int  # which m-line of the offer is ours
    offer_media: tuple[MediaDescription, ...]

    @property
    def local_direction(self) -> Direction:
        return self.remote_direction.reversed

    @property
    def is_hold(self) -> bool:
        """The peer put us on hold: it will not receive (sendonly, inactive or 0.0.0.0)."""
        return not self.remote_direction.is_receiving or self.remote_host == "0.0.0.0"


def parse_sdp(data: bytes | str) -> SessionDescription:
    """Parse an SDP body; ``SdpError`` for anything malformed or over the limits."""
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > MAX_SDP_BYTES:
        raise SdpError(f"SDP of {len(raw)} bytes exceeds {MAX_SDP_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SdpError(f"SDP is not UTF-8: {exc}") from exc
    lines = [line.rstrip("\r") for line in text.split("\n") if line.strip()]
    if not lines or not lines[0].startswith("v="):
        raise SdpError("SDP must start with v=")
    if lines[0] != "v=0":
        raise SdpError(f"unsupported SDP version line {lines[0][:20]!r}")
    origin = ""
    session_conn: str | None = None
    session_dir: Direction | None = None
    media: list[_MediaBuilder] = []
    for line in lines[1:]:
        if len(line) < 2 or line[1] != "=":
            raise SdpError(f"malformed SDP line {line[:40]!r}")
        key, value = line[0], line[2:].strip()
        current = media[-1] if media else None
        if key == "o":
            origin = value
        elif key == "c":
            address = _connection(value)
            if current is None:
                session_conn = address
            else:
                current.connection = address
        elif key == "m":
            if len(media) >= MAX_MEDIA:
                raise SdpError(f"SDP with more than {MAX_MEDIA} m-lines")
            media.append(_media_line(value))
        elif key == "a":
            name, _, arg = value.partition(":")
            if name in _DIRECTIONS:
                if current is None:
                    session_dir = Direction(name)
                else:
                    current.direction = Direction(name)
            elif current is not None:
                _media_attribute(current, name, arg)
    descriptions = tuple(
        MediaDescription(
            kind=m.kind,
            port=m.port,
            proto=m.proto,
            formats=m.formats,
            connection=m.connection or session_conn,
            rtpmap=m.rtpmap,
            fmtp=m.fmtp,
            ptime_ms=m.ptime_ms,
            direction=m.direction,
        )
        for m in media
    )
    return SessionDescription(origin, session_conn, session_dir, descriptions)


_DIRECTIONS = frozenset(d.value for d in Direction)


@dataclass(slots=True)
class _MediaBuilder:
    kind: str
    port: int
    proto: str
    formats: tuple[str, ...]
    connection: str | None = None
    rtpmap: dict[int, tuple[str, int]] = field(default_factory=dict)
    fmtp: dict[int, str] = field(default_factory=dict)
    ptime_ms: int | None = None
    direction: Direction | None = None


def _connection(value: str) -> str:
    parts = value.split()
    if len(parts) < 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError(f"unsupported SDP connection {value[:60]!r}")
    address = parts[2].split("/", 1)[0]
    try:
        ipaddress.ip_address(address)
    except ValueError as exc:
        raise SdpError(f"SDP connection address {address[:60]!r} is not an IP address") from exc
    return address


def _media_line(value: str) -> _MediaBuilder:
    parts = value.split()
    if len(parts) < 4:
        raise SdpError(f"malformed m-line {value[:60]!r}")
    port_text = parts[1].split("/", 1)[0]
    if not port_text.isdigit() or int(port_text) > 65535:
        raise SdpError(f"bad m-line port {parts[1][:20]!r}")
    if len(parts) - 3 > MAX_FORMATS:
        raise SdpError(f"m-line with more than {MAX_FORMATS} formats")
    return _MediaBuilder(parts[0], int(port_text), parts[2], tuple(parts[3:]))


def _media_attribute(current: _MediaBuilder, name: str, arg: str) -> None:
    if name == "rtpmap":
        pt_text, _, encoding = arg.partition(" ")
        pt = _payload_type(pt_text)
        bits = encoding.strip().split("/")
        if len(bits) < 2 or not bits[1].isdigit():
            raise SdpError(f"malformed rtpmap {arg[:60]!r}")
        current.rtpmap[pt] = (bits[0], int(bits[1]))
    elif name == "fmtp":
        pt_text, _, params = arg.partition(" ")
        current.fmtp[_payload_type(pt_text)] = params.strip()
    elif name == "ptime":
        text = arg.strip().split(".", 1)[0]
        if not text.isdigit() or not 1 <= int(text) <= 1000:
            raise SdpError(f"bad ptime {arg[:20]!r}")
        current.ptime_ms = int(text)


def _payload_type(text: str) -> int:
    if not text.isdigit() or int(text) > 127:
        raise SdpError(f"bad payload type {text[:10]!r}")
    return int(text)


def negotiate(offer: SessionDescription, codecs: Sequence[str] = ("PCMU", "PCMA")) -> MediaPlan:
    """Choose our media from an offer; ``SdpError`` when no audio m-line has a codec we take."""
    for index, m in enumerate(offer.media):
        if m.kind != "audio" or m.port == 0 or m.proto not in ("RTP/AVP", "RTP/AVPF"):
            continue
        if m.connection is None:
            raise SdpError("audio m-line without a connection address (c=)")
        chosen: tuple[str, int] | None = None
        dtmf_pt: int | None = None
        for fmt in m.formats:
            if not fmt.isdigit():
                continue
            pt = int(fmt)
            name, rate = m.rtpmap.get(pt, _static(pt))
            upper = name.upper()
            if chosen is None and upper in codecs and rate == RATE_HZ:
                chosen = (upper, pt)
            elif upper == TELEPHONE_EVENT.upper() and rate == RATE_HZ and dtmf_pt is None:
                dtmf_pt = pt
        if chosen is None:
            continue
        direction = m.direction or offer.direction or Direction.SENDRECV
        return MediaPlan(
            remote_host=m.connection,
            remote_port=m.port,
            codec=chosen[0],
            codec_pt=chosen[1],
            dtmf_pt=dtmf_pt,
            ptime_ms=m.ptime_ms or DEFAULT_PTIME_MS,
            remote_direction=direction,
            media_index=index,
            offer_media=offer.media,
        )
    offered = "; ".join(f"{m.kind} {m.proto} {' '.join(m.formats)}" for m in offer.media)
    raise SdpError(f"no acceptable audio codec (want PCMU or PCMA at 8 kHz); offered: {offered}")


def _static(pt: int) -> tuple[str, int]:
    for name, static_pt in CODECS.items():
        if pt == static_pt:
            return name, RATE_HZ
    return "", 0


def build_answer(
    plan: MediaPlan,
    *,
    local_host: str,
    local_port: int,
    session_id: int,
    version: int,
    direction: Direction | None = None,
) -> bytes:
    """The SDP answer for ``plan`` (RFC 3264 6: one m-line per offered one, others port 0)."""
    ip = "IP6" if ":" in local_host else "IP4"
    direction = direction or plan.local_direction
    lines = [
        "v=0",
        f"o=VoiceGate {session_id} {version} IN {ip} {local_host}",
        "s=VoiceGate",
        f"c=IN {ip} {local_host}",
        "t=0 0",
    ]
    for index, m in enumerate(plan.offer_media):
        if index != plan.media_index:
            lines.append(f"m={m.kind} 0 {m.proto} {m.formats[0] if m.formats else '0'}")
            continue
        formats = [str(plan.codec_pt)]
        if plan.dtmf_pt is not None:
            formats.append(str(plan.dtmf_pt))
        lines.append(f"m=audio {local_port} RTP/AVP {' '.join(formats)}")
        lines.append(f"a=rtpmap:{plan.codec_pt} {plan.codec}/{RATE_HZ}")
        if plan.dtmf_pt is not None:
            lines.append(f"a=rtpmap:{plan.dtmf_pt} {TELEPHONE_EVENT}/{RATE_HZ}")
            lines.append(f"a=fmtp:{plan.dtmf_pt} 0-16")
        lines.append(f"a=ptime:{DEFAULT_PTIME_MS}")
        lines.append(f"a={direction.value}")
    return ("\r\n".join(lines) + "\r\n").encode()
