"""Who may use the Twilio leg: request signatures and one-time call tokens.

Signatures (https://www.twilio.com/docs/usage/security#validating-requests): Twilio signs every
webhook with ``X-Twilio-Signature``, an HMAC of the full public URL plus the sorted POST
parameters keyed by the account's auth token, and signs the Media Streams WebSocket upgrade the
same way over ``wss://host/path`` with no parameters. Behind a proxy the URL Twilio signed is the
public one, so it is rebuilt from the configured public base URL, never from the Host header.
The twilio SDK's ``RequestValidator`` does the HMAC (it tries the URL with and without a port).

Call tokens: the voice webhook issues a random token, binds it to the CallSid and persona, and
puts it in a ``<Parameter>``; the stream's ``start`` message must carry it back. A token works
once and expires, so a replayed or forged ``start`` cannot take an engine slot.

With several edge workers (``voicegate serve --workers N``) the webhook and the stream may land
in different processes: ``SignedCallTokens`` carries the grant in the token itself, signed with
a secret the workers share; it expires as the random token does, is used once per worker, and
the engine process refuses a second join of the same call id, so a replay in another worker
cannot take a slot either.

Owns: ``SignatureChecker``, ``CallTokens``, ``SignedCallTokens``, ``CallGrant``. Pure: no
asyncio, no sockets.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from twilio.request_validator import RequestValidator

from voicegate.errors import ConfigError, TwilioError

__all__ = [
    "SIGNATURE_HEADER",
    "CallGrant",
    "CallTokens",
    "SignedCallTokens",
    "SignatureChecker",
    "public_http_url",
    "public_ws_url",
]

SIGNATURE_HEADER = "X-Twilio-Signature"
DEFAULT_TOKEN_TTL_S = 60.0
MAX_OUTSTANDING_TOKENS = 10_000


def _split_base(public_url: str) -> tuple[str, str, str]:
    parts = urlsplit(public_url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"public URL must be http(s)://host[:port][/prefix], got {public_url!r}")
    return parts.scheme, parts.netloc, parts.path.rstrip("/")


def public_http_url(public_url: str, path: str, query: str = "") -> str:
    """The URL Twilio requested for ``path`` (a webhook), as seen from outside."""
    scheme, netloc, prefix = _split_base(public_url)
    return urlunsplit((scheme, netloc, prefix + path, query, ""))


def public_ws_url(public_url: str, path: str) -> str:
    """The WebSocket URL for ``path``: ``wss://`` for an https base, ``ws://`` for http."""
    scheme, netloc, prefix = _split_base(public_url)
    return urlunsplit(("wss" if scheme == "https" else "ws", netloc, prefix + path, "", ""))


class SignatureChecker:
    """Checks ``X-Twilio-Signature`` on webhooks and on the stream upgrade.

    Each check returns ``None`` when the signature is good, else a short reason to log.
    An empty auth token refuses everything: an unchecked gateway would run the GPU for anyone.
    """

    def __init__(self, auth_token: str, public_url: str, also_urls: Sequence[str] = ()) -> None:
        self._validator = RequestValidator(auth_token) if auth_token else None
        self._public_url = public_url
        # a fleet pod is reached under the fleet's URL (webhooks through the load balancer) and
        # under its own (its media WebSocket and the callbacks of its calls): either may be signed
        self._bases = [public_url, *(u for u in also_urls if u and u != public_url)]
        for base in self._bases:
            _split_base(base)  # fail at start-up, not on the first call

    def _check_any(
        self,
        build: Callable[[str], str],
        params: Mapping[str, str | Sequence[str]],
        signature: str | None,
    ) -> str | None:
        problem: str | None = None
        for base in self._bases:
            problem = self._check(build(base), params, signature)
            if problem is None:
                return None
        return problem

    def _check(
        self, url: str, params: Mapping[str, str | Sequence[str]], signature: str | None
    ) -> str | None:
        if self._validator is None:
            return "VOICEGATE_TWILIO_AUTH_TOKEN is not set: every Twilio request is refused"
        if not signature:
            return f"no {SIGNATURE_HEADER} header (url {url})"
        if not self._validator.validate(url, _MultiParams(params), signature):
            return f"{SIGNATURE_HEADER} does not match url {url} with {len(params)} parameter(s)"
        return None

    def check_before_body(self, path: str, query: str, signature: str | None) -> str | None:
        """What refuses a webhook before its body is read: no auth token, no signature."""
        if self._validator is None or not signature:
            return self._check(public_http_url(self._public_url, path, query), {}, signature)
        return None

    def check_webhook(
        self,
        path: str,
        query: str,
        params: Mapping[str, str | Sequence[str]],
        signature: str | None,
    ) -> str | None:
        """A POST webhook: the public URL (with its query string) plus the form parameters."""
        return self._check_any(lambda base: public_http_url(base, path, query), params, signature)

    def check_upgrade(self, path: str, signature: str | None) -> str | None:
        """The Media Streams WebSocket upgrade: ``wss://host/path`` with no parameters."""
        return self._check_any(lambda base: public_ws_url(base, path), {}, signature)

    def sign_webhook(
        self, path: str, params: Mapping[str, str | Sequence[str]], query: str = ""
    ) -> str:
        """The signature Twilio would send (the simulator and the demo use it)."""
        return self._sign(public_http_url(self._public_url, path, query), params)

    def sign_upgrade(self, path: str) -> str:
        """The signature Twilio would send on the stream upgrade."""
        return self._sign(public_ws_url(self._public_url, path), {})

    def _sign(self, url: str, params: Mapping[str, str | Sequence[str]]) -> str:
        if self._validator is None:
            raise ConfigError("cannot sign without an auth token")
        return str(self._validator.compute_signature(url, _MultiParams(params)))


class _MultiParams(dict[str, list[str]]):
    """Form parameters with repeated names, in the shape ``RequestValidator`` reads (``getall``)."""

    def __init__(self, params: Mapping[str, str | Sequence[str]]) -> None:
        super().__init__(
            (name, [value] if isinstance(value, str) else list(value))
            for name, value in params.items()
        )

    def getall(self, name: str) -> list[str]:
        return self[name]


@dataclass(frozen=True, slots=True)
class CallGrant:
    """What the voice webhook decided for a call; redeemed once when its stream starts."""

    call_id: str
    call_sid: str
    persona: str
    from_: str = ""
    to: str = ""


class CallTokens:
    """One-time, expiring tokens that tie a stream ``start`` to the webhook that admitted it."""

    def __init__(
        self,
        ttl_s: float = DEFAULT_TOKEN_TTL_S,
        max_outstanding: int = MAX_OUTSTANDING_TOKENS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl_s = ttl_s
        self._max = max_outstanding
        self._clock = clock
        self._grants: OrderedDict[str, tuple[float, CallGrant]] = OrderedDict()
        self.expired = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._grants)

    def __contains__(self, token: object) -> bool:
        return token in self._grants

    def adopt(self, token: str, grant: CallGrant) -> None:
        """Hold a token another gateway of the fleet issued for this one (then ``consume`` it)."""
        self._purge()
        while len(self._grants) >= self._max:
            self._grants.popitem(last=False)
            self.evicted += 1
        self._grants[token] = (self._clock() + self._ttl_s, grant)

    def issue(self, grant: CallGrant) -> str:
        """A fresh token for ``grant``; the oldest outstanding one is dropped past the bound."""
        self._purge()
        while len(self._grants) >= self._max:
            self._grants.popitem(last=False)
            self.evicted += 1
        token = secrets.token_urlsafe(24)
        self._grants[token] = (self._clock() + self._ttl_s, grant)
        return token

    def consume(self, token: str | None, call_sid: str) -> CallGrant:
        """Redeem ``token`` for the stream of ``call_sid``; raises ``TwilioError`` if it cannot.

        The token is used up only when it is redeemed: a start with the wrong CallSid is
        refused and leaves it for the right one.
        """
        if not token:
            raise TwilioError(f"call {call_sid or '?'}: stream start carries no token parameter")
        # look before taking: a start presented with the wrong CallSid must leave the token for
        # the right one (a forged or misrouted start would otherwise lock out the real call)
        entry = self._grants.get(token)
        if entry is None:
            raise TwilioError(f"call {call_sid or '?'}: unknown, used or expired call token")
        expires_at, grant = entry
        if self._clock() > expires_at:
            del self._grants[token]
            self.expired += 1
            raise TwilioError(f"call {call_sid or '?'}: call token expired")
        if grant.call_sid and call_sid != grant.call_sid:
            raise TwilioError(
                f"call {grant.call_id}: token was issued for CallSid {grant.call_sid}, "
                f"stream started for {call_sid or '?'}"
            )
        del self._grants[token]
        return grant

    def _purge(self) -> None:
        now = self._clock()
        while self._grants:
            token, (expires_at, _) = next(iter(self._grants.items()))
            if expires_at > now:
                break
            del self._grants[token]
            self.expired += 1


_SIGNATURE_BYTES = 16


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SignedCallTokens(CallTokens):
    """Call tokens any process holding ``secret`` can redeem (edge workers share one).

    A token is the grant and its expiry (on ``clock``, ``time.monotonic``: one clock for every
    process of a host) with an HMAC-SHA256 tag. Redeemed tokens are remembered until they
    expire, so one works once in this process; the engine process refuses a call id that
    already joined, which covers a replay in another worker.
    """

    def __init__(
        self,
        secret: bytes,
        ttl_s: float = DEFAULT_TOKEN_TTL_S,
        max_outstanding: int = MAX_OUTSTANDING_TOKENS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if len(secret) < 16:
            raise ConfigError(f"call token secret: at least 16 bytes, got {len(secret)}")
        super().__init__(ttl_s, max_outstanding, clock)
        self._secret = secret
        self._used: OrderedDict[str, float] = OrderedDict()  # token -> expiry
        self.issued = 0

    def __len__(self) -> int:
        return len(self._used)

    def __bool__(self) -> bool:
        return True  # an instance with nothing redeemed yet is still a token source

    def _tag(self, body: bytes) -> bytes:
        return hmac.new(self._secret, body, hashlib.sha256).digest()[:_SIGNATURE_BYTES]

    def issue(self, grant: CallGrant) -> str:
        self.issued += 1
        expires_at = self._clock() + self._ttl_s
        body = json.dumps(
            [grant.call_id, grant.call_sid, grant.persona, grant.from_, grant.to, expires_at],
            separators=(",", ":"),
        ).encode()
        return f"{_b64(body)}.{_b64(self._tag(body))}"

    def consume(self, token: str | None, call_sid: str) -> CallGrant:
        if not token:
            raise TwilioError(f"call {call_sid or '?'}: stream start carries no token parameter")
        self._forget_expired()
        body_text, dot, tag_text = token.partition(".")
        try:
            body, tag = _unb64(body_text), _unb64(tag_text)
        except ValueError:
            body, tag = b"", b""
        if not dot or not hmac.compare_digest(tag, self._tag(body)) or token in self._used:
            raise TwilioError(f"call {call_sid or '?'}: unknown, used or expired call token")
        try:
            call_id, grant_sid, persona, from_, to, expires_at = json.loads(body)
            grant = CallGrant(str(call_id), str(grant_sid), str(persona), str(from_), str(to))
            expires_at = float(expires_at)
        except (ValueError, TypeError) as exc:
            raise TwilioError(f"call {call_sid or '?'}: malformed call token") from exc
        if self._clock() > expires_at:
            self.expired += 1
            raise TwilioError(f"call {call_sid or '?'}: call token expired")
        if grant.call_sid and call_sid != grant.call_sid:
            raise TwilioError(
                f"call {grant.call_id}: token was issued for CallSid {grant.call_sid}, "
                f"stream started for {call_sid or '?'}"
            )
        self._used[token] = expires_at
        while len(self._used) > self._max:
            self._used.popitem(last=False)
            self.evicted += 1
        return grant

    def _forget_expired(self) -> None:
        now = self._clock()
        used = self._used
        while used:
            token, expires_at = next(iter(used.items()))
            if expires_at > now:
                break
            del used[token]
