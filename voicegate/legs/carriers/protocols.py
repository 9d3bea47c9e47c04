"""What differs between the carriers that stream a call over a WebSocket like Twilio does
(Telnyx, Plivo, Exotel, Vonage).

Media in and out, clears and DTMF go through pipecat's serializers (set to the carrier's own
8 kHz rate both ways, so pipecat's soxr resampler is never in the path: the Call resamples with
VoiceGate's). What pipecat does not parse (the ``start`` message: call ids, numbers, encoding;
the end of the stream) is read here, per carrier, from its documented protocol:

* Telnyx (Media Streaming, ``stream_bidirectional_mode=rtp``): ``connected``, ``start``
  {``stream_id``, ``start`` {``call_control_id``, ``from``, ``to``, ``media_format``
  {``encoding`` PCMU|PCMA, ``sample_rate``, ``channels``}}}, ``media``, ``dtmf``, ``stop``;
  we send ``media`` {``payload``} and ``clear``.
* Plivo (Audio Streaming, ``<Stream bidirectional="true" keepCallAlive="true"
  contentType="audio/x-mulaw;rate=8000">``): ``start`` {``start`` {``callId``, ``streamId``,
  ``mediaFormat`` {``encoding``, ``sampleRate``}}, ``extra_headers``}, ``media``, ``dtmf``; the
  socket closes when the call ends (no ``stop``); we send ``playAudio`` and ``clearAudio``.

Owns: ``CarrierProtocol``, ``StreamStart``, ``TELNYX``, ``PLIVO``, ``CARRIERS``. Imports pipecat's
serializers at import (the app imports this package when it is built, never on a call's path:
importing pipecat takes over a second).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipecat.serializers.exotel import ExotelFrameSerializer
from pipecat.serializers.plivo import PlivoFrameSerializer
from pipecat.serializers.telnyx import TelnyxFrameSerializer
from pipecat.serializers.vonage import VonageFrameSerializer

from voicegate.errors import LegError

__all__ = [
    "CARRIERS",
    "EXOTEL",
    "PLIVO",
    "TELNYX",
    "VONAGE",
    "CarrierProtocol",
    "CarrierProtocolError",
    "StreamStart",
]

RATE_HZ = 8000


class CarrierProtocolError(LegError, ValueError):
    """A carrier's message that does not follow its documented protocol."""


@dataclass(frozen=True, slots=True)
class StreamStart:
    """What a carrier's ``start`` message says about the call."""

    stream_id: str
    call_ref: str  # Telnyx call_control_id, Plivo callId
    encoding: str  # PCMU | PCMA
    from_: str = ""
    to: str = ""
    params: Mapping[str, str] = field(default_factory=dict)
    rate_hz: int = RATE_HZ  # of the audio both ways (Vonage: 16 kHz L16 by default)


@dataclass(frozen=True, slots=True)
class CarrierProtocol:
    """One carrier: its name (the route ``/{name}/media``), how to read its ``start`` and which
    events end the stream, and how to build its pipecat serializer for a started stream."""

    name: str
    parse_start: Callable[[Mapping[str, Any]], StreamStart]
    make_serializer: Callable[[StreamStart], Any]
    stop_events: frozenset[str] = frozenset({"stop"})
    ignored_events: frozenset[str] = frozenset()
    start_event: str = "start"
    max_message_ms: int = 0  # the longest audio message the carrier takes (0: any length)


def parse_message(raw: str | bytes, carrier: str) -> dict[str, Any]:
    """A carrier's JSON text message as a dict with a string ``event``."""
    try:
        message = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CarrierProtocolError(f"{carrier}: message is not JSON: {exc}") from exc
    if not isinstance(message, dict) or not isinstance(message.get("event"), str):
        raise CarrierProtocolError(f"{carrier}: expected a JSON object with an 'event' string")
    return message


def _text(obj: Mapping[str, Any], key: str, carrier: str, *, required: bool = True) -> str:
    value = obj.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, (str, int)) or (required and str(value) == ""):
        raise CarrierProtocolError(f"{carrier} start: expected a non-empty {key!r}, got {value!r}")
    return str(value)


def _rate(fmt: object, key: str, carrier: str) -> int:
    """The sample rate of a ``media_format``-like object (8000 when it does not say)."""
    value = fmt.get(key, RATE_HZ) if isinstance(fmt, dict) else RATE_HZ
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).isdigit():
        raise CarrierProtocolError(f"{carrier} start: {key} {value!r} is not a rate in Hz")
    return int(value)


def _section(message: Mapping[str, Any], key: str, carrier: str) -> Mapping[str, Any]:
    value = message.get(key)
    if not isinstance(value, dict):
        raise CarrierProtocolError(f"{carrier} start: expected an object {key!r}")
    return value


# --- Telnyx -----------------------------------------------------------------------------------

_TELNYX_ENCODINGS = {"PCMU": "PCMU", "PCMA": "PCMA"}


def _telnyx_start(message: Mapping[str, Any]) -> StreamStart:
    start = _section(message, "start", "telnyx")
    fmt = start.get("media_format") or {}
    encoding = str(fmt.get("encoding", "PCMU")).upper() if isinstance(fmt, dict) else "PCMU"
    if encoding not in _TELNYX_ENCODINGS:
        raise CarrierProtocolError(f"telnyx start: encoding {encoding!r} (expected PCMU or PCMA)")
    rate = _rate(fmt, "sample_rate", "telnyx")
    if rate != RATE_HZ:
        raise CarrierProtocolError(f"telnyx start: sample_rate {rate} (expected {RATE_HZ})")
    return StreamStart(
        stream_id=_text(message, "stream_id", "telnyx"),
        call_ref=_text(start, "call_control_id", "telnyx"),
        encoding=encoding,
        from_=_text(start, "from", "telnyx", required=False),
        to=_text(start, "to", "telnyx", required=False),
    )


def _telnyx_serializer(start: StreamStart) -> Any:
    params = TelnyxFrameSerializer.InputParams(
        telnyx_sample_rate=RATE_HZ, sample_rate=RATE_HZ, auto_hang_up=False
    )
    return TelnyxFrameSerializer(
        stream_id=start.stream_id,
        outbound_encoding=start.encoding,
        inbound_encoding=start.encoding,
        call_control_id=start.call_ref,
        params=params,
    )


TELNYX = CarrierProtocol(
    "telnyx", _telnyx_start, _telnyx_serializer, ignored_events=frozenset({"connected", "mark"})
)


# --- Plivo ------------------------------------------------------------------------------------


def _plivo_headers(raw: object) -> dict[str, str]:
    """``extraHeaders`` of the ``<Stream>``: ``a=1;b=2`` (or ``,``-separated) -> dict."""
    if not isinstance(raw, str):
        return {}
    out: dict[str, str] = {}
    for part in raw.replace(",", ";").split(";"):
        key, sep, value = part.partition("=")
        if sep and key.strip():
            out[key.strip()] = value.strip()
    return out


def _e164(number: str) -> str:
    # extraHeaders allow only [A-Za-z0-9]: a called number arrives without its '+'
    return f"+{number}" if number.isdigit() and len(number) >= 7 else number


def _plivo_start(message: Mapping[str, Any]) -> StreamStart:
    start = _section(message, "start", "plivo")
    fmt = start.get("mediaFormat") or {}
    encoding = str(fmt.get("encoding", "audio/x-mulaw")) if isinstance(fmt, dict) else ""
    if encoding != "audio/x-mulaw":
        raise CarrierProtocolError(
            f"plivo start: encoding {encoding!r} (expected audio/x-mulaw: set the <Stream> "
            'contentType="audio/x-mulaw;rate=8000")'
        )
    rate = _rate(fmt, "sampleRate", "plivo")
    if rate != RATE_HZ:
        raise CarrierProtocolError(f"plivo start: sampleRate {rate} (expected {RATE_HZ})")
    headers = _plivo_headers(message.get("extra_headers"))
    return StreamStart(
        stream_id=_text(start, "streamId", "plivo"),
        call_ref=_text(start, "callId", "plivo"),
        encoding="PCMU",
        from_=_e164(headers.get("from", "")),
        to=_e164(headers.get("to", "")),
        params=headers,
    )


def _plivo_serializer(start: StreamStart) -> Any:
    params = PlivoFrameSerializer.InputParams(
        plivo_sample_rate=RATE_HZ, sample_rate=RATE_HZ, auto_hang_up=False
    )
    return PlivoFrameSerializer(stream_id=start.stream_id, call_id=start.call_ref, params=params)


PLIVO = CarrierProtocol(
    "plivo",
    _plivo_start,
    _plivo_serializer,
    stop_events=frozenset({"stop"}),
    ignored_events=frozenset({"playedStream", "clearedAudio"}),
)

# --- Exotel -----------------------------------------------------------------------------------


def _exotel_start(message: Mapping[str, Any]) -> StreamStart:
    start = _section(message, "start", "exotel")
    fmt = start.get("media_format") or {}
    rate = _rate(fmt, "sample_rate", "exotel")
    if rate != RATE_HZ:
        raise CarrierProtocolError(f"exotel start: sample_rate {rate} (expected {RATE_HZ})")
    custom = start.get("custom_parameters")
    params = {str(k): str(v) for k, v in custom.items()} if isinstance(custom, dict) else {}
    return StreamStart(
        stream_id=_text(start, "stream_sid", "exotel"),
        call_ref=_text(start, "call_sid", "exotel"),
        encoding="L16",
        from_=_text(start, "from", "exotel", required=False),
        to=_text(start, "to", "exotel", required=False),
        params=params,
    )


def _exotel_serializer(start: StreamStart) -> Any:
    params = ExotelFrameSerializer.InputParams(exotel_sample_rate=RATE_HZ, sample_rate=RATE_HZ)
    return ExotelFrameSerializer(stream_sid=start.stream_id, call_sid=start.call_ref, params=params)


# Exotel (Voicebot applet, bidirectional): ``connected``, ``start`` {``stream_sid``, ``start``
# {``stream_sid``, ``call_sid``, ``from``, ``to``, ``custom_parameters``, ``media_format``
# {``encoding`` raw 16-bit PCM, ``sample_rate`` "8000"}}}, ``media`` (base64 PCM), ``dtmf``,
# ``mark``, ``stop``; we send ``media`` and ``clear``.
EXOTEL = CarrierProtocol(
    "exotel", _exotel_start, _exotel_serializer, ignored_events=frozenset({"connected", "mark"})
)


# --- Vonage -----------------------------------------------------------------------------------

VONAGE_RATES_HZ = (8000, 16000)


def _vonage_start(message: Mapping[str, Any]) -> StreamStart:
    content_type = str(message.get("content-type", ""))
    kind, _, rate_part = content_type.partition(";")
    rate_text = rate_part.strip().removeprefix("rate=")
    if kind.strip() != "audio/l16" or not rate_text.isdigit():
        raise CarrierProtocolError(
            f"vonage websocket:connected: content-type {content_type!r} "
            "(expected audio/l16;rate=8000 or 16000)"
        )
    rate = int(rate_text)
    if rate not in VONAGE_RATES_HZ:
        raise CarrierProtocolError(f"vonage: rate {rate} (expected one of {VONAGE_RATES_HZ})")
    # the NCCO's websocket endpoint ``headers`` arrive in this message: from, to, a call uuid
    headers = {k: str(v) for k, v in message.items() if isinstance(v, (str, int)) and k != "event"}
    call_ref = headers.get("uuid") or headers.get("conversation_uuid") or ""
    if not call_ref:
        raise CarrierProtocolError(
            "vonage websocket:connected: no 'uuid' header (add it to the NCCO's websocket headers)"
        )
    return StreamStart(
        stream_id=call_ref,
        call_ref=call_ref,
        encoding="L16",
        from_=headers.get("from", ""),
        to=headers.get("to", ""),
        params=headers,
        rate_hz=rate,
    )


def _vonage_serializer(start: StreamStart) -> Any:
    params = VonageFrameSerializer.InputParams(
        vonage_sample_rate=start.rate_hz, sample_rate=start.rate_hz
    )
    return VonageFrameSerializer(params=params)


# Vonage (Voice API ``connect`` to a websocket endpoint, ``audio/l16;rate=16000``): first a text
# ``websocket:connected`` {``content-type``, the NCCO's headers}, then binary 20 ms L16 frames;
# ``websocket:dtmf``; the socket closes when the call ends; we send binary 20 ms frames (Vonage
# takes no other length) and ``{"action": "clear"}``, answered by ``websocket:cleared``.
VONAGE = CarrierProtocol(
    "vonage",
    _vonage_start,
    _vonage_serializer,
    stop_events=frozenset(),
    ignored_events=frozenset({"websocket:cleared", "websocket:notify"}),
    start_event="websocket:connected",
    max_message_ms=20,
)

CARRIERS: dict[str, CarrierProtocol] = {c.name: c for c in (TELNYX, PLIVO, EXOTEL, VONAGE)}
