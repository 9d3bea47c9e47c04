"""TwiML answers to the voice webhook: connect a bidirectional stream, or reject as busy.

``<Connect><Stream>`` (not ``<Start><Stream>``) is the bidirectional form; its URL cannot carry a
query string, so per-call data rides in ``<Parameter>``s and arrives in ``start.customParameters``
(https://www.twilio.com/docs/voice/twiml/stream). ``<Reject reason="busy"/>`` tells the carrier
we are full instead of leaving the caller in dead air.

Owns: the TwiML strings. Pure: no I/O, no other voicegate imports.
"""

from __future__ import annotations

from collections.abc import Mapping
from xml.sax.saxutils import quoteattr

__all__ = ["TWIML_MEDIA_TYPE", "connect_stream", "reject"]

TWIML_MEDIA_TYPE = "text/xml"
_XML_DECL = '<?xml version="1.0" encoding="UTF-8"?>'


def connect_stream(
    stream_url: str, parameters: Mapping[str, str], status_callback: str | None = None
) -> str:
    """``<Response><Connect><Stream url=...>`` with one ``<Parameter>`` per item, in order."""
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
    return f"{_XML_DECL}<Response><Connect><Stream {attrs}>{params}</Stream></Connect></Response>"


def reject(reason: str = "busy") -> str:
    """``<Response><Reject reason=.../>``: the call is refused before it is answered."""
    if reason not in ("busy", "rejected"):
        raise ValueError(f"reject reason must be 'busy' or 'rejected', got {reason!r}")
    return f'{_XML_DECL}<Response><Reject reason="{reason}"/></Response>'
