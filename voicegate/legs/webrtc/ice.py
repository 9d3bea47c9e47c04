"""ICE configuration for the WebRTC leg: STUN servers, and the loopback-only mode.

aiortc asks for Google's STUN server unless told otherwise; the gateway uses only the STUN URLs
configured (``VOICEGATE_WEBRTC_STUN_URLS``), host candidates otherwise.

Loopback-only mode (``VOICEGATE_WEBRTC_LOOPBACK_ONLY``, for tests and a browser on the same
machine): aioice never gathers 127.0.0.1, so ``enable_loopback_only()`` replaces its host-address
lookup (process-wide: aioice has no per-connection option) with ``["127.0.0.1"]``, and
``keep_loopback_candidates()`` drops the browser's non-loopback candidates from its offer so
that no connectivity check leaves the machine.

Owns: the ICE policy of the leg. Imports aioice/aiortc only.
"""

from __future__ import annotations

import ipaddress

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer

__all__ = ["enable_loopback_only", "keep_loopback_candidates", "rtc_configuration"]

_LOOPBACK_ONLY = ["127.0.0.1"]


def _loopback_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return list(_LOOPBACK_ONLY) if use_ipv4 else []


def enable_loopback_only() -> None:
    """Make every aioice connection of this process gather 127.0.0.1 only (idempotent)."""
    aioice.ice.get_host_addresses = _loopback_host_addresses


def rtc_configuration(stun_urls: str) -> RTCConfiguration:
    """The peer connection configuration: the given STUN URLs (comma-separated) or none."""
    urls = [u.strip() for u in stun_urls.split(",") if u.strip()]
    return RTCConfiguration(iceServers=[RTCIceServer(urls=urls)] if urls else [])


def _is_loopback_candidate(line: str) -> bool:
    # a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ ...
    fields = line.split()
    if len(fields) < 6:
        return False
    address = fields[4]
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:  # an mDNS name (xyz.local) or garbage: not loopback
        return False


def keep_loopback_candidates(sdp: str) -> str:
    """``sdp`` without the ``a=candidate`` lines whose address is not a loopback address."""
    lines = sdp.splitlines()
    kept = [
        line
        for line in lines
        if not line.startswith("a=candidate:") or _is_loopback_candidate(line)
    ]
    return "\r\n".join(kept) + "\r\n"
