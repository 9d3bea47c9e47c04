"""SIP messages (RFC 3261): parse with ``sipmessage`` under size limits, build our responses.

``parse_message(bytes)`` returns a ``SipRequest`` or ``SipResponse`` whose mandatory headers
(RFC 3261 8.1.1: Via, From, To, Call-ID, CSeq; Max-Forwards is tolerated when missing) are
already parsed and checked, or raises ``SipParseError`` (a ``ValueError``): every error of the
underlying parser is wrapped. ``build_response`` and ``build_request`` serialise what the UAS
sends. ``split_stream`` frames messages out of a TCP byte stream (RFC 3261 18.3).

Owns: the SIP wire format. Pure: no asyncio, no sockets, nothing else from voicegate but errors.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from sipmessage import URI, Address, CSeq, Message, Request, Response, Via

from voicegate.errors import SipParseError

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_HEADERS",
    "MAX_MESSAGE_BYTES",
    "SipBadHeader",
    "SipRequest",
    "SipResponse",
    "build_request",
    "build_response",
    "info_dtmf_digit",
    "new_branch",
    "new_tag",
    "parse_message",
    "split_stream",
]

# RFC 3261 25.1: header text is TEXT-UTF8 and LWS; the only control bytes allowed are HTAB and
# the CRLF that ends (or folds) a line. A NUL, a bare CR or LF, ESC, DEL... make the message bad.
_CONTROL_BYTE = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)|(?<!\r)\n")
MAX_MESSAGE_BYTES = 16_384  # far above a real INVITE (1-3 KB); UDP datagrams beyond are dropped
MAX_HEADERS = 96
MAX_BODY_BYTES = 8_192
BRANCH_MAGIC = "z9hG4bK"  # RFC 3261 8.1.1.7
SERVER_NAME = "VoiceGate"
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE"

REASON_PHRASES = {
    100: "Trying",
    180: "Ringing",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    405: "Method Not Allowed",
    415: "Unsupported Media Type",
    420: "Bad Extension",
    481: "Call/Transaction Does Not Exist",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    503: "Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class SipRequest:
    """A parsed request with its mandatory headers checked."""

    method: str
    uri: URI
    call_id: str
    cseq: int
    cseq_method: str
    from_: Address
    to: Address
    from_tag: str
    to_tag: str
    vias: tuple[str, ...]  # raw values, top first (copied into responses as received)
    branch: str
    body: bytes
    raw: Request  # the sipmessage object, for less common headers

    def header(self, name: str) -> str | None:
        return self.raw.headers.get(name)

    @property
    def content_type(self) -> str:
        value = self.raw.headers.get("Content-Type") or ""
        return value.split(";", 1)[0].strip().lower()

    @property
    def contact(self) -> Address | None:
        try:
            contacts = self.raw.contact
        except ValueError:
            return None
        return contacts[0] if contacts else None

    @property
    def record_route(self) -> tuple[str, ...]:
        values: list[str] = []
        for value in self.raw.headers.getlist("Record-Route"):
            values.extend(v.strip() for v in _split_commas(value) if v.strip())
        return tuple(values)


@dataclass(frozen=True, slots=True)
class SipResponse:
    """A parsed response (we only match its CSeq to our own requests)."""

    code: int
    phrase: str
    call_id: str
    cseq: int
    cseq_method: str
    raw: Response


class SipBadHeader(SipParseError):
    """A message whose header section holds a control byte; ``request`` is it, parsed, when
    it is a request that can be answered (400), else None."""

    def __init__(self, message: str, request: SipRequest | None) -> None:
        super().__init__(message)
        self.request = request


def parse_message(data: bytes) -> SipRequest | SipResponse:
    """Parse one SIP message; ``SipParseError`` for anything malformed or over the limits.

    ``SipBadHeader`` (a ``SipParseError``) when the start line or a header holds a control
    byte other than HTAB (RFC 3261 25.1); it carries the request so that it can get a 400.
    """
    if len(data) > MAX_MESSAGE_BYTES:
        raise SipParseError(f"SIP message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        raise SipParseError("SIP message without the blank line that ends the headers")
    if data.count(b"\r\n", 0, head_end) >= MAX_HEADERS:
        raise SipParseError(f"SIP message with more than {MAX_HEADERS} header lines")
    try:
        message = Message.parse(data)
    except Exception as exc:  # sipmessage raises ValueError, but also IndexError/Unicode errors
        raise SipParseError(f"malformed SIP message: {exc!r}") from exc
    try:
        parsed = _checked(message, data, head_end)
    except SipParseError:
        raise
    except Exception as exc:
        raise SipParseError(f"malformed SIP header: {exc!r}") from exc
    bad = _CONTROL_BYTE.search(data, 0, head_end + 2)  # the last header's CRLF included
    if bad is not None:
        line = data.count(b"\r\n", 0, bad.start()) + 1
        raise SipBadHeader(
            f"control byte {bad.group()[:1]!r} in line {line} of the SIP headers",
            parsed if isinstance(parsed, SipRequest) else None,
        )
    return parsed


def _checked(message: Request | Response, data: bytes, head_end: int) -> SipRequest | SipResponse:
    body = data[head_end + 4 :]
    length_text = message.headers.get("Content-Length")
    if length_text is not None:
        length = int(length_text.strip())
        if length < 0 or length > len(body):
            raise SipParseError(f"Content-Length {length} but {len(body)} body bytes arrived")
        body = body[:length]  # RFC 3261 18.3: bytes past Content-Length are ignored on UDP
    if len(body) > MAX_BODY_BYTES:
        raise SipParseError(f"SIP body of {len(body)} bytes exceeds {MAX_BODY_BYTES}")
    call_id = message.headers.get("Call-ID")
    if not call_id or len(call_id) > 256:
        raise SipParseError("SIP message without a usable Call-ID")
    cseq = CSeq.parse(_required(message, "CSeq"))
    if cseq.sequence >= 2**31:
        raise SipParseError(f"CSeq {cseq.sequence} out of range")
    if isinstance(message, Response):
        if not 100 <= message.code <= 699:
            raise SipParseError(f"SIP status code {message.code} out of range")
        return SipResponse(
            message.code, message.phrase, call_id, cseq.sequence, cseq.method, message
        )
    vias = tuple(
        v.strip() for value in message.headers.getlist("Via") for v in _split_commas(value)
    )
    if not vias:
        raise SipParseError("SIP request without a Via")
    top = Via.parse(vias[0])
    from_ = Address.parse(_required(message, "From"))
    to = Address.parse(_required(message, "To"))
    if cseq.method != message.method:
        raise SipParseError(
            f"CSeq method {cseq.method} differs from the request's {message.method}"
        )
    if message.uri.scheme not in ("sip", "sips", "tel"):
        raise SipParseError(f"unsupported Request-URI scheme {message.uri.scheme!r}")
    message.body = body
    return SipRequest(
        method=message.method,
        uri=message.uri,
        call_id=call_id,
        cseq=cseq.sequence,
        cseq_method=cseq.method,
        from_=from_,
        to=to,
        from_tag=from_.parameters.get("tag") or "",
        to_tag=to.parameters.get("tag") or "",
        vias=vias,
        branch=top.parameters.get("branch") or "",
        body=body,
        raw=message,
    )


def _required(message: Request | Response, name: str) -> str:
    value = message.headers.get(name)
    if value is None:
        raise SipParseError(f"SIP message without a {name} header")
    return value


def _split_commas(value: str) -> list[str]:
    """Split a header value at commas outside quotes and angle brackets."""
    parts: list[str] = []
    depth = 0
    quoted = False
    start = 0
    for i, ch in enumerate(value):
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            depth += 1
        elif not quoted and ch == ">":
            depth = max(0, depth - 1)
        elif ch == "," and not quoted and depth == 0:
            parts.append(value[start:i])
            start = i + 1
    parts.append(value[start:])
    return parts


def new_tag() -> str:
    return os.urandom(6).hex()


def new_branch() -> str:
    return BRANCH_MAGIC + os.urandom(8).hex()


def build_response(
    request: SipRequest,
    code: int,
    *,
    to_tag: str = "",
    body: bytes = b"",
    content_type: str = "application/sdp",
    headers: Sequence[tuple[str, str]] = (),
    source: tuple[str, int] | None = None,
) -> bytes:
    """A response to ``request`` (RFC 3261 8.2.6): Vias, From, To (+ our tag), Call-ID, CSeq.

    ``source`` (the packet's address) fills ``received``/``rport`` in the top Via (RFC 3581).
    """
    lines = [f"SIP/2.0 {code} {REASON_PHRASES.get(code, 'Unknown')}"]
    for i, via in enumerate(request.vias):
        if i == 0 and source is not None:
            via = _via_with_source(via, source)
        lines.append(f"Via: {via}")
    lines.append(f"From: {request.raw.headers['From']}")
    to = request.raw.headers["To"]
    if to_tag and not request.to_tag and code != 100:
        to = f"{to};tag={to_tag}"
    lines.append(f"To: {to}")
    lines.append(f"Call-ID: {request.call_id}")
    lines.append(f"CSeq: {request.cseq} {request.cseq_method}")
    lines.append(f"Server: {SERVER_NAME}")
    lines.extend(f"{name}: {value}" for name, value in headers)
    if body:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _via_with_source(via: str, source: tuple[str, int]) -> str:
    host, port = source
    params = via.split(";")
    out = [params[0]]
    has_received = False
    for p in params[1:]:
        key = p.split("=", 1)[0].strip().lower()
        if key == "rport":
            out.append(f"rport={port}")
        elif key == "received":
            has_received = True
            out.append(f"received={host}")
        else:
            out.append(p)
    if not has_received:
        out.append(f"received={host}")
    return ";".join(out)


def build_request(
    method: str,
    uri: str,
    *,
    via: str,
    from_: str,
    to: str,
    call_id: str,
    cseq: int,
    contact: str = "",
    routes: Sequence[str] = (),
    body: bytes = b"",
    content_type: str = "application/sdp",
) -> bytes:
    """An in-dialog request we send (BYE)."""
    lines = [f"{method} {uri} SIP/2.0", f"Via: {via}", "Max-Forwards: 70"]
    lines.extend(f"Route: {r}" for r in routes)
    lines += [f"From: {from_}", f"To: {to}", f"Call-ID: {call_id}", f"CSeq: {cseq} {method}"]
    if contact:
        lines.append(f"Contact: {contact}")
    lines.append(f"User-Agent: {SERVER_NAME}")
    if body:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def split_stream(buffer: bytearray) -> bytes | None:
    """Remove and return the first whole message of a TCP stream buffer, or None if incomplete.

    Leading CRLFs (keep-alives, RFC 5626 3.5.1) are dropped. Raises ``SipParseError`` when
    the headers or the announced body exceed the limits (the connection should be closed).
    """
    while buffer[:2] == b"\r\n":
        del buffer[:2]
    head_end = buffer.find(b"\r\n\r\n")
    if head_end < 0:
        if len(buffer) > MAX_MESSAGE_BYTES:
            raise SipParseError(f"SIP headers longer than {MAX_MESSAGE_BYTES} bytes")
        return None
    length = 0
    for line in bytes(buffer[:head_end]).split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() in (b"content-length", b"l"):
            try:
                length = int(value.strip())
            except ValueError as exc:
                raise SipParseError(f"bad Content-Length {value[:20]!r}") from exc
            break
    if length < 0 or length > MAX_BODY_BYTES:
        raise SipParseError(f"Content-Length {length} outside 0..{MAX_BODY_BYTES}")
    total = head_end + 4 + length
    if len(buffer) < total:
        return None
    message = bytes(buffer[:total])
    del buffer[:total]
    return message


def info_dtmf_digit(request: SipRequest) -> str | None:
    """``application/dtmf-relay`` (``Signal=5``) or ``application/dtmf`` INFO bodies."""
    if request.content_type not in ("application/dtmf-relay", "application/dtmf"):
        return None
    text = request.body.decode("utf-8", "replace")
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if request.content_type == "application/dtmf":
            value = line
        elif key.strip().lower() != "signal":
            continue
        value = value.strip().upper()
        if len(value) == 1 and value in "0123456789*#ABCD":
            return value
    return None
