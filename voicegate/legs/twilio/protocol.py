"""Twilio Media Streams wire format: parse and serialise every JSON text message, both ways.

Twilio -> gateway: ``connected``, ``start``, ``media``, ``dtmf``, ``mark``, ``stop``
(https://www.twilio.com/docs/voice/media-streams/websocket-messages). Gateway -> Twilio:
``media``, ``mark``, ``clear``. Both directions are here so that the simulator speaks exactly the
bytes the gateway parses, and the other way round.

Tolerant where Twilio is loose: numbers may arrive as strings or ints, sequence numbers may be
missing, repeated or out of order (``SequenceTracker`` counts that), media payloads may have any
length, unknown events pass through as ``UnknownEvent``. Strict where the data is unusable:
non-JSON, wrong types, bad base64, a non-mu-law media format or an unknown DTMF digit raise
``TwilioProtocolError`` saying what was expected and what arrived.

Owns: the message dataclasses, ``parse_event`` / ``parse_command`` and their serialisers.
Pure: imports nothing from asyncio, sockets or other voicegate parts except ``errors``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from voicegate.errors import TwilioProtocolError

__all__ = [
    "DTMF_DIGITS",
    "MAX_MESSAGE_CHARS",
    "Clear",
    "Connected",
    "Dtmf",
    "InboundEvent",
    "Mark",
    "Media",
    "OutboundCommand",
    "OutboundMark",
    "OutboundMedia",
    "SequenceTracker",
    "Start",
    "Stop",
    "UnknownEvent",
    "encode_clear",
    "encode_mark",
    "encode_media",
    "parse_command",
    "parse_event",
]

# A 20 ms frame is 216 base64 characters; a whole second is about 11 k. Anything near this bound
# is not audio Twilio would send, and refusing it keeps one bad peer from costing much CPU.
MAX_MESSAGE_CHARS = 256 * 1024
DTMF_DIGITS = frozenset("0123456789*#ABCD")
MULAW_ENCODING = "audio/x-mulaw"
MULAW_RATE_HZ = 8000
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


# --------------------------------------------------------------------------------------------
# Twilio -> gateway


@dataclass(frozen=True, slots=True)
class Connected:
    """First message on a stream: the protocol Twilio will speak."""

    protocol: str = "Call"
    version: str = "1.0.0"

    def to_wire(self) -> str:
        return _dumps({"event": "connected", "protocol": self.protocol, "version": self.version})


@dataclass(frozen=True, slots=True)
class Start:
    """Stream metadata, sent once after ``connected``; carries our ``<Parameter>``s."""

    stream_sid: str
    account_sid: str
    call_sid: str
    tracks: tuple[str, ...] = ("inbound",)
    custom_parameters: Mapping[str, str] = field(default_factory=dict)
    encoding: str = MULAW_ENCODING
    sample_rate_hz: int = MULAW_RATE_HZ
    channels: int = 1
    sequence_number: int | None = None

    def to_wire(self) -> str:
        body: dict[str, Any] = {"event": "start"}
        if self.sequence_number is not None:
            body["sequenceNumber"] = str(self.sequence_number)
        body["start"] = {
            "accountSid": self.account_sid,
            "streamSid": self.stream_sid,
            "callSid": self.call_sid,
            "tracks": list(self.tracks),
            "mediaFormat": {
                "encoding": self.encoding,
                "sampleRate": self.sample_rate_hz,
                "channels": self.channels,
            },
            "customParameters": dict(self.custom_parameters),
        }
        body["streamSid"] = self.stream_sid
        return _dumps(body)


@dataclass(frozen=True, slots=True)
class Media:
    """Caller audio: raw mu-law 8 kHz bytes (usually 160 = 20 ms, but any length)."""

    stream_sid: str
    payload: bytes
    track: str = "inbound"
    chunk: int | None = None
    timestamp_ms: int | None = None
    sequence_number: int | None = None

    def to_wire(self) -> str:
        media: dict[str, Any] = {"track": self.track}
        if self.chunk is not None:
            media["chunk"] = str(self.chunk)
        if self.timestamp_ms is not None:
            media["timestamp"] = str(self.timestamp_ms)
        media["payload"] = base64.b64encode(self.payload).decode("ascii")
        body: dict[str, Any] = {"event": "media"}
        if self.sequence_number is not None:
            body["sequenceNumber"] = str(self.sequence_number)
        body["media"] = media
        body["streamSid"] = self.stream_sid
        return _dumps(body)


@dataclass(frozen=True, slots=True)
class Dtmf:
    """A key the caller pressed (inbound track only)."""

    stream_sid: str
    digit: str
    track: str = "inbound_track"
    sequence_number: int | None = None

    def to_wire(self) -> str:
        body: dict[str, Any] = {"event": "dtmf", "streamSid": self.stream_sid}
        if self.sequence_number is not None:
            body["sequenceNumber"] = str(self.sequence_number)
        body["dtmf"] = {"track": self.track, "digit": self.digit}
        return _dumps(body)


@dataclass(frozen=True, slots=True)
class Mark:
    """Echo of a mark we sent: the audio before it has played (or was cleared)."""

    stream_sid: str
    name: str
    sequence_number: int | None = None

    def to_wire(self) -> str:
        body: dict[str, Any] = {"event": "mark"}
        if self.sequence_number is not None:
            body["sequenceNumber"] = str(self.sequence_number)
        body["streamSid"] = self.stream_sid
        body["mark"] = {"name": self.name}
        return _dumps(body)


@dataclass(frozen=True, slots=True)
class Stop:
    """The stream ended (caller hung up, or the call moved on)."""

    stream_sid: str
    account_sid: str = ""
    call_sid: str = ""
    sequence_number: int | None = None

    def to_wire(self) -> str:
        body: dict[str, Any] = {"event": "stop"}
        if self.sequence_number is not None:
            body["sequenceNumber"] = str(self.sequence_number)
        body["stop"] = {"accountSid": self.account_sid, "callSid": self.call_sid}
        body["streamSid"] = self.stream_sid
        return _dumps(body)


@dataclass(frozen=True, slots=True)
class UnknownEvent:
    """An event name this module does not know (Twilio may add some); safe to ignore."""

    event: str
    sequence_number: int | None = None


InboundEvent = Connected | Start | Media | Dtmf | Mark | Stop | UnknownEvent


# --------------------------------------------------------------------------------------------
# gateway -> Twilio


@dataclass(frozen=True, slots=True)
class OutboundMedia:
    """Agent audio for Twilio to queue and play: raw mu-law 8 kHz, any length."""

    stream_sid: str
    payload: bytes

    def to_wire(self) -> str:
        return encode_media(self.stream_sid, self.payload)


@dataclass(frozen=True, slots=True)
class OutboundMark:
    """A named point in the outbound audio; Twilio echoes it when the audio before it played."""

    stream_sid: str
    name: str

    def to_wire(self) -> str:
        return encode_mark(self.stream_sid, self.name)


@dataclass(frozen=True, slots=True)
class Clear:
    """Drop all audio queued at Twilio; every pending mark comes back at once."""

    stream_sid: str

    def to_wire(self) -> str:
        return encode_clear(self.stream_sid)


OutboundCommand = OutboundMedia | OutboundMark | Clear


def encode_media(stream_sid: str, payload: bytes) -> str:
    """Serialise an outbound ``media`` message (the hot path: one per 20 ms of agent audio)."""
    return (
        '{"event":"media","streamSid":'
        + _dumps(stream_sid)
        + ',"media":{"payload":"'
        + base64.b64encode(payload).decode("ascii")
        + '"}}'
    )


def encode_mark(stream_sid: str, name: str) -> str:
    """Serialise an outbound ``mark`` message."""
    return _dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def encode_clear(stream_sid: str) -> str:
    """Serialise an outbound ``clear`` message."""
    return _dumps({"event": "clear", "streamSid": stream_sid})


# --------------------------------------------------------------------------------------------
# parsing


def _load(text: str | bytes, direction: str) -> dict[str, Any]:
    if isinstance(text, bytes | bytearray | memoryview):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TwilioProtocolError(
                f"{direction}: expected UTF-8 JSON text, got undecodable bytes"
            ) from exc
    if len(text) > MAX_MESSAGE_CHARS:
        raise TwilioProtocolError(
            f"{direction}: message of {len(text)} characters exceeds {MAX_MESSAGE_CHARS}"
        )
    try:
        body = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise TwilioProtocolError(
            f"{direction}: expected a JSON object, got {text[:60]!r}"
        ) from exc
    if not isinstance(body, dict):
        raise TwilioProtocolError(
            f"{direction}: expected a JSON object, got {type(body).__name__} {text[:60]!r}"
        )
    return body


def _str(body: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = body.get(key, default)
    if value is None:
        raise TwilioProtocolError(f"{where}: missing {key!r}")
    if not isinstance(value, str):
        raise TwilioProtocolError(f"{where}: expected string {key!r}, got {type(value).__name__}")
    return value


def _obj(body: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = body.get(key)
    if not isinstance(value, dict):
        got = "nothing" if value is None else type(value).__name__
        raise TwilioProtocolError(f"{where}: expected object {key!r}, got {got}")
    return value


def _int(body: Mapping[str, Any], key: str, where: str) -> int | None:
    """An optional non-negative integer that Twilio may send as a string ("12") or a number."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool):
        raise TwilioProtocolError(f"{where}: expected integer {key!r}, got bool")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        text = value.strip()
        if not text.isdigit() or not text.isascii():
            raise TwilioProtocolError(f"{where}: expected integer {key!r}, got {value[:20]!r}")
        number = int(text)
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    else:
        raise TwilioProtocolError(f"{where}: expected integer {key!r}, got {value!r:.40}")
    if number < 0:
        raise TwilioProtocolError(f"{where}: expected non-negative {key!r}, got {number}")
    return number


def _stream_sid(body: Mapping[str, Any], where: str, inner: Mapping[str, Any] | None = None) -> str:
    sid = body.get("streamSid")
    if sid is None and inner is not None:
        sid = inner.get("streamSid")
    if sid is None:
        return ""
    if not isinstance(sid, str):
        raise TwilioProtocolError(f"{where}: expected string 'streamSid', got {type(sid).__name__}")
    return sid


def _b64(text: str, where: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise TwilioProtocolError(f"{where}: payload is not base64 ({text[:24]!r}...)") from exc


def _parse_start(body: Mapping[str, Any], seq: int | None) -> Start:
    where = "start"
    start = _obj(body, "start", where)
    tracks_raw = start.get("tracks", ["inbound"])
    if not isinstance(tracks_raw, list) or not all(isinstance(t, str) for t in tracks_raw):
        raise TwilioProtocolError(
            f"{where}: expected a list of strings 'tracks', got {tracks_raw!r:.60}"
        )
    fmt = start.get("mediaFormat", {})
    if not isinstance(fmt, dict):
        raise TwilioProtocolError(
            f"{where}: expected object 'mediaFormat', got {type(fmt).__name__}"
        )
    encoding = _str(fmt, "encoding", where + ".mediaFormat", MULAW_ENCODING)
    rate = _int(fmt, "sampleRate", where + ".mediaFormat")
    channels = _int(fmt, "channels", where + ".mediaFormat")
    rate = MULAW_RATE_HZ if rate is None else rate
    channels = 1 if channels is None else channels
    if encoding != MULAW_ENCODING or rate != MULAW_RATE_HZ or channels != 1:
        raise TwilioProtocolError(
            f"{where}: expected {MULAW_ENCODING} {MULAW_RATE_HZ} Hz mono, "
            f"got {encoding} {rate} Hz {channels} channel(s)"
        )
    params_raw = start.get("customParameters") or {}
    if not isinstance(params_raw, dict):
        raise TwilioProtocolError(
            f"{where}: expected object 'customParameters', got {type(params_raw).__name__}"
        )
    params: dict[str, str] = {}
    for key, value in params_raw.items():
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise TwilioProtocolError(f"{where}: customParameters[{key!r}] is not a string")
        params[key] = str(value)
    return Start(
        stream_sid=_stream_sid(body, where, start),
        account_sid=_str(start, "accountSid", where, ""),
        call_sid=_str(start, "callSid", where, ""),
        tracks=tuple(tracks_raw),
        custom_parameters=params,
        encoding=encoding,
        sample_rate_hz=rate,
        channels=channels,
        sequence_number=seq,
    )


def _parse_media(body: Mapping[str, Any], seq: int | None) -> Media:
    where = "media"
    media = _obj(body, "media", where)
    return Media(
        stream_sid=_stream_sid(body, where),
        payload=_b64(_str(media, "payload", where), where),
        track=_str(media, "track", where, "inbound"),
        chunk=_int(media, "chunk", where),
        timestamp_ms=_int(media, "timestamp", where),
        sequence_number=seq,
    )


def _parse_dtmf(body: Mapping[str, Any], seq: int | None) -> Dtmf:
    where = "dtmf"
    dtmf = _obj(body, "dtmf", where)
    digit = _str(dtmf, "digit", where)
    if digit not in DTMF_DIGITS:
        raise TwilioProtocolError(f"{where}: expected one of 0-9 * # A-D, got {digit[:8]!r}")
    return Dtmf(
        stream_sid=_stream_sid(body, where),
        digit=digit,
        track=_str(dtmf, "track", where, "inbound_track"),
        sequence_number=seq,
    )


def _parse_mark(body: Mapping[str, Any], seq: int | None) -> Mark:
    where = "mark"
    mark = _obj(body, "mark", where)
    return Mark(
        stream_sid=_stream_sid(body, where), name=_str(mark, "name", where), sequence_number=seq
    )


def _parse_stop(body: Mapping[str, Any], seq: int | None) -> Stop:
    where = "stop"
    stop = body.get("stop") or {}
    if not isinstance(stop, dict):
        raise TwilioProtocolError(f"{where}: expected object 'stop', got {type(stop).__name__}")
    return Stop(
        stream_sid=_stream_sid(body, where),
        account_sid=_str(stop, "accountSid", where, ""),
        call_sid=_str(stop, "callSid", where, ""),
        sequence_number=seq,
    )


def _parse_connected(body: Mapping[str, Any], seq: int | None) -> Connected:
    where = "connected"
    return Connected(
        protocol=_str(body, "protocol", where, "Call"), version=_str(body, "version", where, "")
    )


_INBOUND_PARSERS: dict[str, Callable[[Mapping[str, Any], int | None], InboundEvent]] = {
    "media": _parse_media,  # first: by far the most frequent
    "mark": _parse_mark,
    "start": _parse_start,
    "dtmf": _parse_dtmf,
    "stop": _parse_stop,
    "connected": _parse_connected,
}


def parse_event(text: str | bytes) -> InboundEvent:
    """Parse one message Twilio sent the gateway; raises ``TwilioProtocolError`` when malformed."""
    body = _load(text, "twilio message")
    name = body.get("event")
    if not isinstance(name, str):
        raise TwilioProtocolError(f"twilio message: expected string 'event', got {name!r:.40}")
    seq = _int(body, "sequenceNumber", name)
    parser = _INBOUND_PARSERS.get(name)
    if parser is None:
        return UnknownEvent(event=name[:64], sequence_number=seq)
    return parser(body, seq)


def parse_command(text: str | bytes) -> OutboundCommand:
    """Parse one message the gateway sent Twilio (the simulator's side); strict."""
    body = _load(text, "gateway message")
    name = body.get("event")
    where = f"gateway {name!r:.20}"
    stream_sid = _str(body, "streamSid", where)
    if name == "media":
        media = _obj(body, "media", where)
        return OutboundMedia(stream_sid, _b64(_str(media, "payload", where), where))
    if name == "mark":
        return OutboundMark(stream_sid, _str(_obj(body, "mark", where), "name", where))
    if name == "clear":
        return Clear(stream_sid)
    raise TwilioProtocolError(
        f"gateway message: expected event media, mark or clear, got {name!r:.40}"
    )


class SequenceTracker:
    """Counts missing, repeated and out-of-order sequence numbers (they are only diagnostics)."""

    __slots__ = ("highest", "missing", "reordered", "unnumbered")

    def __init__(self) -> None:
        self.highest = 0
        self.missing = 0  # gaps seen (a late arrival later fills one back in)
        self.reordered = 0  # arrived at or below the highest number seen so far
        self.unnumbered = 0

    def note(self, sequence_number: int | None) -> None:
        if sequence_number is None:
            self.unnumbered += 1
        elif sequence_number > self.highest:
            if self.highest and sequence_number > self.highest + 1:
                self.missing += sequence_number - self.highest - 1
            self.highest = sequence_number
        else:
            self.reordered += 1
            if self.missing:
                self.missing -= 1
