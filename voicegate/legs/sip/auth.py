"""Digest authentication of INVITEs (RFC 3261 22.4, RFC 2617 MD5, qop=auth) and source policy.

``DigestAuth`` issues stateless nonces (a timestamp signed with a per-process key, valid for
``nonce_ttl_s``) and checks ``Authorization`` headers. ``SourcePolicy`` holds the CIDR allow-list
and a per-source token bucket for new INVITEs.

Owns: auth and admission by source. Pure: no asyncio, no sockets.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import time
from collections import OrderedDict
from collections.abc import Callable

from sipmessage import AuthCredentials

from voicegate.errors import ConfigError

__all__ = ["DigestAuth", "SourcePolicy", "digest_response"]

NONCE_TTL_S = 300.0
MAX_TRACKED_SOURCES = 4096


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def digest_response(
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    *,
    qop: str = "",
    nc: str = "",
    cnonce: str = "",
) -> str:
    """The ``response`` value a client computes (RFC 2617 3.2.2.1, MD5)."""
    ha1 = _md5(f"{username}:{realm}:{password}")
    ha2 = _md5(f"{method}:{uri}")
    if qop:
        return _md5(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _md5(f"{ha1}:{nonce}:{ha2}")


class DigestAuth:
    """Challenges and checks one username/password pair."""

    def __init__(
        self,
        username: str,
        password: str,
        realm: str = "voicegate",
        *,
        nonce_ttl_s: float = NONCE_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.username = username
        self.realm = realm
        self._password = password
        self._key = os.urandom(16)
        self._ttl_s = nonce_ttl_s
        self._clock = clock

    def challenge(self) -> str:
        """A ``WWW-Authenticate`` value with a fresh nonce."""
        stamp = f"{int(self._clock()):x}"
        sig = hmac.new(self._key, stamp.encode(), "sha256").hexdigest()[:24]
        return f'Digest realm="{self.realm}", nonce="{stamp}.{sig}", algorithm=MD5, qop="auth"'

    def _nonce_ok(self, nonce: str) -> bool:
        stamp, _, sig = nonce.partition(".")
        expected = hmac.new(self._key, stamp.encode(), "sha256").hexdigest()[:24]
        if not hmac.compare_digest(sig, expected):
            return False
        try:
            issued = int(stamp, 16)
        except ValueError:
            return False
        return 0 <= self._clock() - issued <= self._ttl_s

    def check(self, method: str, header: str | None) -> bool:
        """True when ``header`` (the Authorization value) answers one of our challenges."""
        if not header:
            return False
        try:
            creds = AuthCredentials.parse(header)
        except ValueError:
            return False
        p = creds.parameters
        if p is None:  # token form ("Digest abc"): not a digest answer
            return False
        if creds.scheme.lower() != "digest" or p.get("username") != self.username:
            return False
        if p.get("realm") != self.realm or not self._nonce_ok(p.get("nonce", "")):
            return False
        if p.get("algorithm", "MD5").upper() != "MD5":
            return False
        qop = p.get("qop", "")
        if qop not in ("", "auth"):
            return False
        expected = digest_response(
            self.username,
            self.realm,
            self._password,
            method,
            p.get("uri", ""),
            p.get("nonce", ""),
            qop=qop,
            nc=p.get("nc", ""),
            cnonce=p.get("cnonce", ""),
        )
        return hmac.compare_digest(expected, p.get("response", ""))


class SourcePolicy:
    """The allow-list (CIDRs; empty = any) and a token bucket of new INVITEs per source IP."""

    def __init__(
        self,
        allow: str = "",
        *,
        invite_rate_per_s: float = 20.0,
        invite_burst: int = 40,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        try:
            self._networks = tuple(
                ipaddress.ip_network(cidr.strip(), strict=False)
                for cidr in allow.split(",")
                if cidr.strip()
            )
        except ValueError as exc:
            raise ConfigError(f"VOICEGATE_SIP_ALLOW: {exc}") from exc
        self._rate = invite_rate_per_s
        self._burst = float(invite_burst)
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._allowed_cache: dict[str, bool] = {}

    def is_allowed(self, host: str) -> bool:
        if not self._networks:
            return True
        cached = self._allowed_cache.get(host)
        if cached is not None:
            return cached
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        allowed = any(address in net for net in self._networks)
        if len(self._allowed_cache) > MAX_TRACKED_SOURCES:
            self._allowed_cache.clear()
        self._allowed_cache[host] = allowed
        return allowed

    def take_invite(self, host: str) -> bool:
        """Spend one token of ``host``'s bucket; False when the source is over its rate."""
        if self._rate <= 0:
            return True
        now = self._clock()
        tokens, last = self._buckets.pop(host, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        is_ok = tokens >= 1.0
        if is_ok:
            tokens -= 1.0
        self._buckets[host] = (tokens, now)
        if len(self._buckets) > MAX_TRACKED_SOURCES:
            self._buckets.popitem(last=False)
        return is_ok
