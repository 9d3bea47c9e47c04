"""TwiML answers: connect a bidirectional stream, dial a person or the overflow, hang up, reject.

``<Connect><Stream>`` (not ``<Start><Stream>``) is the bidirectional form; its URL cannot carry a
query string, so per-call data rides in ``<Parameter>``s and arrives in ``start.customParameters``
(https://www.twilio.com/docs/voice/twiml/stream). ``<Connect action>`` is requested when the
gateway closes the stream: its answer (``dial`` or ``hangup`` here) is what Twilio does next
(https://www.twilio.com/docs/voice/twiml/connect). ``<Dial>`` hands the caller to an E.164
``<Number>`` (with a whisper ``url`` run on the person's end when they answer) or a ``<Sip>``
URI (headers in its query, under 255 characters); its ``action`` is requested with the
``DialCallStatus`` when the dialled call ends or fails (https://www.twilio.com/docs/voice/twiml/dial).
``<Reject reason="busy"/>`` tells the carrier we are full instead of leaving the caller in dead air.

Owns: the TwiML strings. Pure: no I/O, no other voicegate imports.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import quote
from xml.sax.saxutils import escape, quoteattr

__all__ = [
    "HANDOFF_HEADER",
    "MAX_SIP_URI_CHARS",
    "TWIML_MEDIA_TYPE",
    "connect_stream",
    "dial",
    "hangup",
    "reject",
    "say",
    "sip_uri_with_header",
]

TWIML_MEDIA_TYPE = "text/xml"
HANDOFF_HEADER = "X-Handoff-Id"
MAX_SIP_URI_CHARS = 254  # "a valid SIP URI under 255 characters"
MAX_SAY_CHARS = 4096
_XML_DECL = '<?xml version="1.0" encoding="UTF-8"?>'
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_SIP = re.compile(r"^sips?:[^\s<>\"]+@[^\s<>\"]+$", re.IGNORECASE)
# XML 1.0 forbids these control characters even escaped: a <Say> text must not carry them
_XML_INVALID = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def connect_stream(
    stream_url: str,
    parameters: Mapping[str, str],
    status_callback: str | None = None,
    action: str | None = None,
) -> str:
    """``<Response><Connect [action]><Stream url=...>`` with one ``<Parameter>`` per item."""
    if not stream_url.startswith("wss://") and not stream_url.startswith("ws://"):
        raise ValueError(f"stream URL must be ws(s)://, got {stream_url!r}")
    if "?" in stream_url:
        raise ValueError(f"a <Stream> URL cannot carry a query string, got {stream_url!r}")
    attrs = f"url={quoteattr(stream_url)}"
    if status_callback:
        attrs += f' statusCallback={quoteattr(status_callback)} statusCallbackMethod="POST"'
    params = "".join(
        f"<Parameter name={quoteattr(name)} value={quoteattr(value)}/>"
        for name, value in parameters.items()
    )
    connect = f'<Connect action={quoteattr(action)} method="POST">' if action else "<Connect>"
    return f"{_XML_DECL}<Response>{connect}<Stream {attrs}>{params}</Stream></Connect></Response>"


def sip_uri_with_header(uri: str, name: str, value: str) -> str:
    """``uri`` with the header ``name=value`` in its query (``?`` or ``&``), as ``<Sip>`` takes
    it; ``uri`` unchanged when the result would not fit in 254 characters or ``value`` is empty."""
    if not value:
        return uri
    joined = f"{uri}{'&' if '?' in uri else '?'}{name}={quote(value, safe='')}"
    return joined if len(joined) <= MAX_SIP_URI_CHARS else uri


def dial(
    to: str,
    *,
    action: str,
    timeout_s: int,
    whisper_url: str = "",
    answer_on_bridge: bool = False,
) -> str:
    """``<Response><Dial action timeout><Number url>+1...</Number></Dial>`` for an E.164 ``to``,
    ``<Sip>`` for a SIP URI (give it with its headers, see ``sip_uri_with_header``)."""
    if not 1 <= timeout_s <= 600:
        raise ValueError(f"dial timeout must be 1-600 s, got {timeout_s}")
    attrs = f'action={quoteattr(action)} method="POST" timeout="{timeout_s}"'
    if answer_on_bridge:
        attrs += ' answerOnBridge="true"'
    if _E164.match(to):
        url = f' url={quoteattr(whisper_url)} method="POST"' if whisper_url else ""
        noun = f"<Number{url}>{escape(to)}</Number>"
    elif _SIP.match(to):
        if len(to) > MAX_SIP_URI_CHARS:
            raise ValueError(f"a <Sip> URI must be under 255 characters, got {len(to)}")
        noun = f"<Sip>{escape(to)}</Sip>"
    else:
        raise ValueError(f"dial target must be an E.164 number or a SIP URI, got {to!r}")
    return f"{_XML_DECL}<Response><Dial {attrs}>{noun}</Dial></Response>"


def say(text: str, *, then_hangup: bool = True) -> str:
    """``<Response><Say>text</Say>[<Hangup/>]``; just ``<Hangup/>`` for an empty text."""
    clean = _XML_INVALID.sub(" ", text).strip()[:MAX_SAY_CHARS]
    said = f"<Say>{escape(clean)}</Say>" if clean else ""
    end = "<Hangup/>" if then_hangup else ""
    return f"{_XML_DECL}<Response>{said}{end}</Response>"


def hangup() -> str:
    """``<Response><Hangup/></Response>``."""
    return f"{_XML_DECL}<Response><Hangup/></Response>"


def reject(reason: str = "busy") -> str:
    """``<Response><Reject reason=.../>``: the call is refused before it is answered."""
    if reason not in ("busy", "rejected"):
        raise ValueError(f"reject reason must be 'busy' or 'rejected', got {reason!r}")
    return f'{_XML_DECL}<Response><Reject reason="{reason}"/></Response>'
