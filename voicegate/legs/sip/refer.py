"""Cold transfer by REFER (RFC 3515, 4488, 6665): the pure parts.

The transferor (us) sends an in-dialog REFER with ``Refer-To`` and ``Referred-By``; the
transferee (the caller's side: the trunk, SBC or phone) answers 202 (or 200), calls the target
and reports progress in NOTIFYs (``Event: refer``) whose ``message/sipfrag`` body is the status
line the target answered, the last one with ``Subscription-State: terminated``.

States of one transfer and the only allowed moves (``_TRANSITIONS``)::

    SENT --2xx--> ACCEPTED --NOTIFY sipfrag 2xx--> HANDED_OFF
      |              |
      |              +--NOTIFY sipfrag 3xx-6xx, terminated without a final, timeout--> FAILED
      +--3xx-6xx to the REFER, no answer (Timer F), timeout--> FAILED
      +--NOTIFY before the 2xx (reordered UDP): as from ACCEPTED
      +--2xx with ``Refer-Sub: false`` (no progress will come)--> HANDED_OFF

A sipfrag with a final status (>= 200) decides the outcome whatever the Subscription-State says
(RFC 3515 2.4.5 makes that NOTIFY the terminating one; a peer that forgets it loses nothing).

``target_uri`` turns a ``TransferTarget.to`` into a SIP URI: a SIP URI as it is, an E.164 number
as ``sip:+14155550123@<host>;user=phone`` where host is the configured transfer host (the
trunk's domain) or else the address the INVITE came from. ``with_uri_header`` adds an escaped
header (``?X-Handoff-Id=...``, RFC 3261 19.1.1) to it.

Owns: ``Refer``, ``ReferState``, ``SipFrag``, ``SubscriptionState``, the parsers and URI helpers.
Pure: no asyncio, no sockets; imports only the contracts and errors.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

from voicegate.contracts import TransferOutcome, TransferTarget
from voicegate.errors import InvalidStateError, SipParseError

__all__ = [
    "REFER_TIMEOUT_S",
    "Refer",
    "ReferResult",
    "ReferState",
    "SipFrag",
    "SubscriptionState",
    "escape_uri_header",
    "parse_sipfrag",
    "parse_subscription_state",
    "target_uri",
    "with_uri_header",
]

REFER_TIMEOUT_S = 30.0  # REFER sent -> final NOTIFY; then the transfer fails, the call stays
HANDOFF_HEADER = "X-Handoff-Id"
MAX_SIPFRAG_BYTES = 4096
MAX_URI_CHARS = 1024

_STATUS_LINE = re.compile(r"^SIP/2\.0 ([1-6][0-9]{2})(?: ([^\r\n]*))?$", re.IGNORECASE)
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_SIP_URI = re.compile(r"^sips?:[^\s<>\"@]+@[^\s<>\"@]+$", re.IGNORECASE)
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+|[0-9A-Fa-f:.]+)(:[0-9]{1,5})?$")
_TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~\-]+$")
# RFC 3261 25.1: hvalue = *( hnv-unreserved / unreserved / escaped )
_HVALUE_SAFE = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'()[]/?:+$"
)


class ReferState(enum.Enum):
    SENT = "sent"  # REFER sent, no final response yet
    ACCEPTED = "accepted"  # 2xx (or a NOTIFY): the transferee is calling the target
    HANDED_OFF = "handed_off"
    FAILED = "failed"


_TRANSITIONS: dict[ReferState, frozenset[ReferState]] = {
    ReferState.SENT: frozenset({ReferState.ACCEPTED, ReferState.HANDED_OFF, ReferState.FAILED}),
    ReferState.ACCEPTED: frozenset({ReferState.HANDED_OFF, ReferState.FAILED}),
    ReferState.HANDED_OFF: frozenset(),
    ReferState.FAILED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class SipFrag:
    """The status line of a ``message/sipfrag`` body (RFC 3420)."""

    code: int
    phrase: str

    @property
    def is_final(self) -> bool:
        return self.code >= 200

    def __str__(self) -> str:
        return f"{self.code} {self.phrase}".strip()


@dataclass(frozen=True, slots=True)
class SubscriptionState:
    """A ``Subscription-State`` header (RFC 6665 8.2.3): state and its parameters."""

    state: str  # active | pending | terminated
    params: dict[str, str] = field(default_factory=dict)

    @property
    def is_terminated(self) -> bool:
        return self.state == "terminated"

    @property
    def reason(self) -> str:
        return self.params.get("reason", "")


@dataclass(frozen=True, slots=True)
class ReferResult:
    outcome: TransferOutcome  # HANDED_OFF or FAILED
    detail: str


def parse_sipfrag(body: bytes) -> SipFrag:
    """The status line a NOTIFY reports: ``SIP/2.0 200 OK`` (headers after it are ignored)."""
    if not body.strip():
        raise SipParseError("empty sipfrag body")
    if len(body) > MAX_SIPFRAG_BYTES:
        raise SipParseError(f"sipfrag of {len(body)} bytes exceeds {MAX_SIPFRAG_BYTES}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipParseError(f"sipfrag is not UTF-8: {exc}") from exc
    first = text.lstrip("\r\n").split("\n", 1)[0].rstrip("\r").strip()
    match = _STATUS_LINE.match(first)
    if match is None:
        raise SipParseError(f"sipfrag does not start with a status line: {first[:80]!r}")
    return SipFrag(int(match.group(1)), (match.group(2) or "").strip())


def parse_subscription_state(value: str | None) -> SubscriptionState:
    """``active;expires=60`` / ``terminated;reason=noresource`` / ``pending``."""
    if value is None or not value.strip():
        raise SipParseError("NOTIFY without a Subscription-State header")
    parts = [p.strip() for p in value.split(";")]
    state = parts[0].lower()
    if state not in ("active", "pending", "terminated"):
        raise SipParseError(f"unknown Subscription-State {parts[0][:40]!r}")
    params: dict[str, str] = {}
    for part in parts[1:]:
        if not part:
            continue
        key, _, val = part.partition("=")
        key = key.strip().lower()
        if not _TOKEN.match(key):
            raise SipParseError(f"bad Subscription-State parameter {part[:40]!r}")
        params[key] = val.strip().strip('"').lower()
    return SubscriptionState(state, params)


def escape_uri_header(value: str) -> str:
    """Percent-escape a URI header value (RFC 3261 19.1.1, 25.1 ``hvalue``)."""
    return "".join(
        ch if ch in _HVALUE_SAFE else "".join(f"%{b:02X}" for b in ch.encode("utf-8"))
        for ch in value
    )


def with_uri_header(uri: str, name: str, value: str) -> str:
    """``uri`` with ``?name=value`` (or ``&name=value`` after existing headers) appended."""
    if not _TOKEN.match(name):
        raise SipParseError(f"bad URI header name {name!r}")
    sep = "&" if "?" in uri else "?"
    return f"{uri}{sep}{name}={escape_uri_header(value)}"


def target_uri(to: str, host: str, handoff_id: str = "") -> str:
    """The SIP URI to send a caller to: ``to`` is a SIP URI or an E.164 number (then
    ``sip:<number>@<host>;user=phone``); the handoff id rides as an ``X-Handoff-Id`` header.
    ``SipParseError`` when ``to`` or ``host`` is not usable."""
    to = to.strip()
    if _SIP_URI.match(to):
        uri = to
    elif _E164.match(to):
        host = host.strip()
        if ":" in host and not host.startswith("[") and host.count(":") > 1:
            host = f"[{host}]"  # a bare IPv6 address
        if not host or not _HOST.match(host):
            raise SipParseError(f"no usable host for the number {to}: {host!r}")
        uri = f"sip:{to}@{host};user=phone"
    else:
        raise SipParseError(f"transfer target {to[:80]!r} is neither a SIP URI nor an E.164 number")
    if handoff_id:
        uri = with_uri_header(uri, HANDOFF_HEADER, handoff_id)
    if len(uri) > MAX_URI_CHARS:
        raise SipParseError(f"transfer URI of {len(uri)} characters exceeds {MAX_URI_CHARS}")
    return uri


class Refer:
    """One REFER of a dialog and its implicit subscription: feed it what arrives; a method
    returns a ``ReferResult`` once, when the transfer's outcome is known."""

    def __init__(self, target: TransferTarget, cseq: int, uri: str) -> None:
        self.target = target
        self.cseq = cseq
        self.uri = uri
        self.state = ReferState.SENT
        self.history: list[ReferState] = [self.state]
        self.progress: list[SipFrag] = []  # every sipfrag reported, in order

    @property
    def is_done(self) -> bool:
        return self.state in (ReferState.HANDED_OFF, ReferState.FAILED)

    def _set(self, state: ReferState) -> None:
        if state not in _TRANSITIONS[self.state]:
            raise InvalidStateError(
                f"REFER {self.cseq}: cannot go from {self.state.name} to {state.name}"
            )
        self.state = state
        self.history.append(state)

    def _finish(self, outcome: TransferOutcome, detail: str) -> ReferResult:
        self._set(
            ReferState.HANDED_OFF if outcome is TransferOutcome.HANDED_OFF else ReferState.FAILED
        )
        return ReferResult(outcome, detail)

    def on_response(self, code: int, phrase: str, *, refer_sub: bool = True) -> ReferResult | None:
        """The final response to the REFER (provisional ones change nothing)."""
        if self.is_done or code < 200:
            return None
        if code >= 300:
            return self._finish(TransferOutcome.FAILED, f"REFER refused: {code} {phrase}".strip())
        if not refer_sub:  # RFC 4488: accepted, and no NOTIFY will tell us more
            return self._finish(
                TransferOutcome.HANDED_OFF,
                f"REFER accepted ({code}), no progress (Refer-Sub: false)",
            )
        if self.state is ReferState.SENT:
            self._set(ReferState.ACCEPTED)
        return None

    def on_notify(self, frag: SipFrag | None, sub: SubscriptionState) -> ReferResult | None:
        """A NOTIFY of this subscription (the dialog answered it 200 already)."""
        if self.is_done:
            return None
        if frag is not None:
            self.progress.append(frag)
            if frag.is_final:
                if frag.code < 300:
                    return self._finish(TransferOutcome.HANDED_OFF, f"target answered {frag}")
                return self._finish(TransferOutcome.FAILED, f"target answered {frag}")
        if sub.is_terminated:
            last = f" (last: {self.progress[-1]})" if self.progress else ""
            why = sub.reason or "no reason"
            return self._finish(
                TransferOutcome.FAILED,
                f"subscription terminated ({why}) before a final answer{last}",
            )
        if self.state is ReferState.SENT:
            self._set(ReferState.ACCEPTED)  # a NOTIFY overtook the 202
        return None

    def on_timeout(self, timeout_s: float) -> ReferResult | None:
        if self.is_done:
            return None
        if self.state is ReferState.SENT:
            return self._finish(
                TransferOutcome.FAILED, f"no answer to the REFER within {timeout_s:.0f} s"
            )
        return self._finish(
            TransferOutcome.FAILED, f"no final NOTIFY within {timeout_s:.0f} s of the REFER"
        )

    def abandon(self, detail: str) -> ReferResult | None:
        """The dialog ended (or gave up retransmitting) before the outcome was known."""
        if self.is_done:
            return None
        return self._finish(TransferOutcome.FAILED, detail)
