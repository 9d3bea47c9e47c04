"""The SIP user-agent server: UDP and TCP listeners, source policy, and dispatch to dialogs.

``SipServer.start()`` binds UDP and TCP on ``host:port`` (port 0: any free port, the same number
for both); ``close()`` ends every dialog and releases the sockets. Each datagram, or each message
framed out of a TCP stream, goes through ``handle()``, which never raises: a malformed or
oversize message is counted and dropped silently (no answer to garbage), a source outside the
allow-list gets 403, a source over its INVITE rate gets 503, a missing or wrong digest gets 401;
a new INVITE gets 100 at once and a ``Dialog``; OPTIONS gets 200, or 503 while no call can be
admitted (full or draining: an SBC's dispatcher probe then skips this gateway); requests for dialogs we do
not know get 481 (ACKs are dropped).

Dialog states (once a dialog has a Call, up to its termination after the Call ended) and
re-INVITE changes are reported as ``leg.status`` events through the ``LegReporter`` the server
is given.

Owns: ``SipServer``, ``SipConfig``. Imports the contracts and the SIP modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from voicegate.contracts import (
    CallAdmission,
    CallInfo,
    EndReason,
    LegReporter,
    LegTransport,
    PersonaRouter,
    TransferTarget,
)
from voicegate.errors import SipError, SipParseError
from voicegate.legs.sip.auth import DigestAuth, SourcePolicy
from voicegate.legs.sip.dialog import Dialog, DialogState, SipCall
from voicegate.legs.sip.media import RtpPacer, RtpSession
from voicegate.legs.sip.message import (
    ALLOW,
    MAX_MESSAGE_BYTES,
    SipBadHeader,
    SipRequest,
    SipResponse,
    build_response,
    parse_message,
    split_stream,
)
from voicegate.legs.sip.metrics import SipStats
from voicegate.legs.sip.refer import REFER_TIMEOUT_S, target_uri
from voicegate.legs.sip.sdp import MediaPlan
from voicegate.legs.sip.shard import SipShard, decode_forward
from voicegate.legs.sip.transaction import Peer, SipTimers

__all__ = ["SipConfig", "SipServer"]

log = logging.getLogger("voicegate.legs.sip")

LOGGED_MALFORMED = 20  # then only every 1000th
BIND_ATTEMPTS = 20
INBOX_BATCH = 64  # forwarded messages handled per wake-up before yielding to the loop
OPTIONS_RETRY_AFTER_S = "5"  # a full or draining gateway's OPTIONS 503: probe again later


@dataclass(frozen=True, slots=True)
class SipConfig:
    """Everything the SIP leg reads from Settings."""

    host: str = "0.0.0.0"
    port: int = 5060
    public_host: str = ""
    allow: str = ""
    rtp_port_min: int = 20000
    rtp_port_max: int = 20999
    invite_rate_per_s: float = 20.0
    invite_burst: int = 40
    auth_username: str = ""
    auth_password: str = ""
    auth_realm: str = "voicegate"
    answer_delay_s: float = 0.0
    transfer_host: str = ""  # host for E.164 transfer/overflow targets ("": the INVITE's source)
    refer_timeout_s: float = REFER_TIMEOUT_S
    rtp_timeout_before_media_s: float = 30.0
    rtp_timeout_s: float = 15.0
    timers: SipTimers = SipTimers()

    @classmethod
    def from_settings(cls, settings: Any) -> SipConfig:
        return cls(
            host=settings.sip_host,
            port=settings.sip_port,
            public_host=settings.sip_public_host,
            allow=settings.sip_allow,
            rtp_port_min=settings.rtp_port_min,
            rtp_port_max=settings.rtp_port_max,
            invite_rate_per_s=settings.sip_invite_rate_per_s,
            invite_burst=settings.sip_invite_burst,
            auth_username=settings.sip_auth_username,
            auth_password=settings.sip_auth_password,
            auth_realm=settings.sip_auth_realm,
            answer_delay_s=settings.sip_answer_delay_ms / 1000.0,
            transfer_host=settings.sip_transfer_host,
            refer_timeout_s=settings.sip_refer_timeout_s,
            rtp_timeout_before_media_s=settings.rtp_timeout_before_media_s,
            rtp_timeout_s=settings.rtp_timeout_s,
        )


class SipServer:
    """The SIP leg of one gateway. ``await start()``; ``await close()``."""

    def __init__(
        self,
        config: SipConfig,
        *,
        calls: CallAdmission,
        router: PersonaRouter,
        events: LegReporter | None = None,
        stats: SipStats | None = None,
        shard: SipShard | None = None,
    ) -> None:
        self.config = config
        self.shard = shard  # one worker of several on the same port (see ``shard``)
        self.calls = calls
        self.router = router
        self.events = events
        self.stats = stats or SipStats()
        self.timers = config.timers
        self.refer_timeout_s = config.refer_timeout_s
        self.policy = SourcePolicy(
            config.allow,
            invite_rate_per_s=config.invite_rate_per_s,
            invite_burst=config.invite_burst,
        )
        self.auth = (
            DigestAuth(config.auth_username, config.auth_password, config.auth_realm)
            if config.auth_username
            else None
        )
        self.dialogs: dict[str, Dialog] = {}
        # every RTP session opened and not yet closed, held strongly so that none is collected
        # with its sockets open (uvloop warns then: a ResourceWarning, an error under -W error,
        # was seen now and then in the SIP fault tests); close() releases any a dialog left open
        self._sessions: set[RtpSession] = set()
        self._is_closing = False
        self.pacer = RtpPacer(self.stats)
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tcp_conns: set[_TcpConnection] = set()
        self.port = 0
        self._malformed_logged = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind UDP and TCP on the same port (port 0: the first number free for both)."""
        if self.shard is not None:
            await self._start_shard(self.shard)
            return
        loop = asyncio.get_running_loop()
        host = self.config.host
        attempts = 1 if self.config.port else BIND_ATTEMPTS
        for attempt in range(attempts):
            udp, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(host, self.config.port)
            )
            port = int(udp.get_extra_info("sockname")[1])
            try:
                self._tcp = await loop.create_server(
                    lambda: _TcpConnection(self), host=host, port=port, reuse_address=True
                )
            except OSError:
                udp.close()
                if attempt + 1 == attempts:
                    raise
                continue  # that UDP port's TCP twin was taken: draw another
            self._udp = udp
            self.port = port
            break
        log.info(
            "SIP server on %s:%d (UDP, TCP), RTP ports %d-%d%s%s",
            host,
            self.port,
            self.config.rtp_port_min,
            self.config.rtp_port_max,
            f", allow {self.config.allow}" if self.config.allow else "",
            ", digest auth" if self.auth else "",
        )

    async def _start_shard(self, shard: SipShard) -> None:
        """Serve the sockets ``voicegate serve`` bound for this worker, and its inbox."""
        loop = asyncio.get_running_loop()
        udp, _ = await loop.create_datagram_endpoint(lambda: _UdpProtocol(self), sock=shard.udp)
        self._udp = udp
        self.port = int(udp.get_extra_info("sockname")[1])
        if shard.tcp is not None:
            self._tcp = await loop.create_server(lambda: _TcpConnection(self), sock=shard.tcp)
        shard.inbox.setblocking(False)
        loop.add_reader(shard.inbox.fileno(), self._read_inbox)
        log.info(
            "SIP server worker %d of %d on %s:%d (UDP%s), RTP ports %d-%d%s%s",
            shard.index,
            shard.count,
            self.config.host,
            self.port,
            ", TCP" if shard.tcp is not None else "",
            self.config.rtp_port_min,
            self.config.rtp_port_max,
            f", allow {self.config.allow}" if self.config.allow else "",
            ", digest auth" if self.auth else "",
        )

    def _read_inbox(self) -> None:
        """Messages another worker received for dialogs this one owns (event loop)."""
        assert self.shard is not None
        for message in self.shard.receive(INBOX_BATCH):
            try:
                host, port, data = decode_forward(message)
            except SipParseError:  # only sibling workers write here: a bug, not an attack
                log.exception("sip: a forwarded message could not be read")
                continue
            if self._udp is not None:
                self.handle(data, _udp_peer(self._udp, host, port), forwarded=True)

    async def close(self) -> None:
        """End every dialog (BYE where one is up) and close the listeners."""
        self._is_closing = True
        for dialog in list(self.dialogs.values()):
            if dialog.state in (DialogState.ACCEPTED, DialogState.CONFIRMED) and dialog.call:
                with contextlib.suppress(Exception):
                    dialog.call.end(dialog.end_reason or EndReason.DRAIN, "gateway stopping")
            dialog.close()
        self.dialogs.clear()
        for session in list(self._sessions):  # any a dialog did not close (idempotent)
            session.close_nowait()
        await self.pacer.close()
        if self.shard is not None:
            with contextlib.suppress(Exception):  # the loop may be closing
                asyncio.get_running_loop().remove_reader(self.shard.inbox.fileno())
            self.shard.close()
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            for conn in list(self._tcp_conns):
                conn.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp.wait_closed(), 1.0)
            self._tcp = None
        for _ in range(3):  # transports finish closing on the next loop iterations
            await asyncio.sleep(0)

    # -- DialogHost ----------------------------------------------------------------------------

    def start_call(self, info: CallInfo, leg: LegTransport) -> SipCall:
        return cast(SipCall, self.calls.start_call(info, leg))  # the Call has ``end`` too

    async def prepare_call(self, info: CallInfo) -> CallInfo:
        """The call-start webhook of the call manager, when it has one (see CallAdmission)."""
        prepare = getattr(self.calls, "prepare_call", None)
        return info if prepare is None else cast(CallInfo, await prepare(info))

    def leg_status(self, call_id: str, t_ms: int, status: str, detail: str) -> None:
        if self.events is not None:
            self.events.leg_status(call_id, "sip", t_ms, status, detail)

    async def open_media(
        self, plan: MediaPlan, on_timeout: Callable[[str], None], *, signalling_host: str = ""
    ) -> RtpSession:
        c = self.config
        session = await RtpSession.open(
            plan,
            self.stats,
            host=c.host,
            port_min=c.rtp_port_min,
            port_max=c.rtp_port_max,
            on_timeout=on_timeout,
            timeout_before_media_s=c.rtp_timeout_before_media_s,
            timeout_s=c.rtp_timeout_s,
            pacer=self.pacer,
            signalling_host=signalling_host,
        )
        if self._is_closing:  # bound while the server was closing: nobody would close it
            session.close_nowait()
            raise SipError("the SIP server is closing")
        self._sessions = {s for s in self._sessions if not s.is_closed}
        self._sessions.add(session)
        return session

    def contact_for(self, peer: Peer, local_host: str) -> str:
        transport = ";transport=tcp" if peer.transport == "TCP" else ""
        host = f"[{local_host}]" if ":" in local_host else local_host
        return f"<sip:voicegate@{host}:{self.port}{transport}>"

    def transfer_uri(self, target: TransferTarget, peer: Peer) -> str:
        return target_uri(target.to, self.config.transfer_host or peer.host, target.handoff_id)

    def overflow_uri(self, invite: SipRequest, peer: Peer) -> str:
        to = self.router.overflow(self._called(invite))
        return target_uri(to, self.config.transfer_host or peer.host) if to else ""

    def dialog_ended(self, dialog: Dialog) -> None:
        self.stats.dialogs_active = sum(
            1 for d in self.dialogs.values() if d.state is not DialogState.TERMINATED
        )

    def forget(self, dialog: Dialog) -> None:
        if self.dialogs.get(dialog.invite.call_id) is dialog:
            del self.dialogs[dialog.invite.call_id]

    # -- dispatch (never raises) ---------------------------------------------------------------

    def handle(self, data: bytes, peer: Peer, *, forwarded: bool = False) -> None:
        """One message; ``forwarded``: another worker received it and handed it to this one,
        its owner (already counted there)."""
        try:
            self._handle(data, peer, forwarded)
        except Exception:
            log.exception("sip: handling a message from %s:%d failed", peer.host, peer.port)

    def _handle(self, data: bytes, peer: Peer, forwarded: bool = False) -> None:
        stats = self.stats
        if not data.strip(b"\r\n"):
            return  # keep-alive
        if not forwarded:
            stats.messages_in += 1
        if len(data) > MAX_MESSAGE_BYTES:
            stats.messages_oversize += 1
            return
        try:
            message = parse_message(data)
        except SipBadHeader as exc:
            stats.messages_malformed += 1
            self._log_malformed(peer, exc)
            self._bad_request(exc.request, peer)
            return
        except SipParseError as exc:
            stats.messages_malformed += 1
            self._log_malformed(peer, exc)
            return
        shard = self.shard
        if shard is not None and not forwarded and peer.transport == "UDP":
            owner = shard.owner(message.call_id)
            if owner != shard.index:
                if shard.forward(owner, peer.host, peer.port, data):
                    stats.messages_forwarded += 1
                else:
                    stats.messages_forward_dropped += 1
                return
        if isinstance(message, SipResponse):
            dialog = self.dialogs.get(message.call_id)
            if dialog is not None:
                dialog.on_response(message)
            return
        request = message
        if not self.policy.is_allowed(peer.host):
            stats.requests_refused_source += 1
            if request.method != "ACK":
                log.warning(
                    "sip: %s from %s refused (403): not in the allow-list",
                    request.method,
                    peer.host,
                )
                peer.send(build_response(request, 403, to_tag="refused", source=_src(peer)))
            return
        dialog = self.dialogs.get(request.call_id)
        if request.to_tag or (dialog is not None and request.method in ("ACK", "CANCEL", "BYE")):
            if dialog is None or (request.to_tag and request.to_tag != dialog.local_tag):
                self._unknown_dialog(request, peer)
                return
            dialog.on_request(request, peer)
            return
        method = request.method
        if method == "INVITE":
            if dialog is not None and not _is_retry(dialog, request):
                dialog.on_request(request, peer)  # a retransmission
                return
            self._on_invite(request, peer)
        elif method == "OPTIONS":
            # an SBC's dispatcher probes with OPTIONS: 503 takes a full or draining gateway out
            # of its rotation until a probe gets 200 again (RFC 3261 11.2: OPTIONS answers as
            # an INVITE would)
            is_open = self.calls.can_admit()
            peer.send(
                build_response(
                    request,
                    200 if is_open else 503,
                    to_tag="options",
                    headers=[("Allow", ALLOW), ("Accept", "application/sdp")]
                    + ([] if is_open else [("Retry-After", OPTIONS_RETRY_AFTER_S)]),
                    source=_src(peer),
                )
            )
        elif method == "ACK":
            return
        elif method in ("CANCEL", "BYE", "NOTIFY"):
            self._unknown_dialog(request, peer)  # NOTIFY: no subscription of ours (481)
        else:
            peer.send(
                build_response(
                    request, 405, to_tag="x", headers=[("Allow", ALLOW)], source=_src(peer)
                )
            )

    def _unknown_dialog(self, request: SipRequest, peer: Peer) -> None:
        if request.method == "ACK":
            return
        self.stats.unknown_dialog += 1
        peer.send(build_response(request, 481, source=_src(peer)))

    def _on_invite(self, request: SipRequest, peer: Peer) -> None:
        stats = self.stats
        if not self.policy.take_invite(peer.host):
            stats.invites_rate_limited += 1
            if (
                stats.invites_rate_limited <= LOGGED_MALFORMED
                or stats.invites_rate_limited % 1000 == 0
            ):
                log.warning("sip: INVITE from %s over its rate (503)", peer.host)
            peer.send(
                build_response(
                    request,
                    503,
                    to_tag="limited",
                    headers=[("Retry-After", "2")],
                    source=_src(peer),
                )
            )
            return
        if self.auth is not None and not self.auth.check("INVITE", request.header("Authorization")):
            stats.invites_unauthorized += 1
            peer.send(
                build_response(
                    request,
                    401,
                    to_tag="auth",
                    headers=[("WWW-Authenticate", self.auth.challenge())],
                    source=_src(peer),
                )
            )
            return
        required = [
            item.strip()
            for value in request.raw.headers.getlist("Require")
            for item in value.split(",")
            if item.strip()
        ]
        if required:  # we implement no SIP extension a caller could insist on (RFC 3261 8.2.2.3)
            peer.send(
                build_response(
                    request,
                    420,
                    to_tag="ext",
                    headers=[("Unsupported", ", ".join(required))],
                    source=_src(peer),
                )
            )
            return
        stats.invites += 1
        peer.send(build_response(request, 100, source=_src(peer)))
        persona = self._route(request)
        dialog = Dialog(
            request,
            peer,
            self,
            persona=persona,
            local_host=self._advertised_host(peer),
            answer_delay_s=self.config.answer_delay_s,
        )
        self.dialogs[request.call_id] = dialog
        stats.dialogs_active += 1
        if not self.calls.can_admit():
            log.info("sip call %s from %s: busy", request.call_id, peer.host)
            dialog.refuse_busy()  # 302 to the overflow destination, or 486
            return
        log.info(
            "sip INVITE %s from %s (%s) to %s -> persona %s",
            request.call_id,
            request.from_.uri,
            peer.host,
            request.uri,
            persona,
        )
        dialog.start()

    def _route(self, request: SipRequest) -> str:
        """Request-URI user first, then the To number; the default when neither matches."""
        return self.router.route(self._called(request))

    def _called(self, request: SipRequest) -> str:
        """The called party: the Request-URI user when it routes, else the To user."""
        default = self.router.route("")
        user = request.uri.user or ""
        if user and self.router.route(user) != default:
            return user
        return request.to.uri.user or user

    def _advertised_host(self, peer: Peer) -> str:
        """The address for Contact and SDP: configured, bound, or the route toward the peer."""
        if self.config.public_host:
            return self.config.public_host
        if self.config.host not in ("0.0.0.0", "::", ""):
            return self.config.host
        try:
            family = (
                socket.AF_INET6 if ipaddress.ip_address(peer.host).version == 6 else socket.AF_INET
            )
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.connect((peer.host, peer.port or 9))  # no packet is sent: just the route
                return str(s.getsockname()[0])
        except (OSError, ValueError):
            return "127.0.0.1"

    def _bad_request(self, request: SipRequest | None, peer: Peer) -> None:
        """400 to a request refused for its headers (never to an ACK, RFC 3261 17.2.1)."""
        if request is None or request.method == "ACK" or not self.policy.is_allowed(peer.host):
            return
        answer = build_response(request, 400, to_tag="bad", source=_src(peer))
        try:
            parse_message(answer)  # the echoed Via/From/To/Call-ID must be clean too
        except SipParseError:
            return
        peer.send(answer)

    def _log_malformed(self, peer: Peer, exc: SipParseError) -> None:
        self._malformed_logged += 1
        n = self._malformed_logged
        if n <= LOGGED_MALFORMED or n % 1000 == 0:
            log.warning(
                "sip: malformed message #%d from %s:%d dropped: %s", n, peer.host, peer.port, exc
            )


def _is_retry(dialog: Dialog, request: SipRequest) -> bool:
    """A new INVITE reusing the Call-ID of a rejected one (RFC 3261 8.1.3.5: retry after 4xx)."""
    return dialog.state is DialogState.TERMINATED and request.cseq > dialog.invite.cseq


def _src(peer: Peer) -> tuple[str, int] | None:
    return (peer.host, peer.port) if peer.transport == "UDP" else None


def _udp_peer(transport: asyncio.DatagramTransport, host: str, port: int, addr: Any = None) -> Peer:
    """A UDP peer, answered from ``transport`` (our socket on the SIP port) to ``addr`` as the
    socket gave it (an IPv6 one keeps its scope), else ``(host, port)``."""

    def send(payload: bytes, _addr: Any = addr or (host, port)) -> None:
        if not transport.is_closing():
            transport.sendto(payload, _addr)

    return Peer("UDP", host, port, send)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: SipServer) -> None:
        self._server = server
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        transport = self._transport
        if transport is None:
            return
        self._server.handle(data, _udp_peer(transport, str(addr[0]), int(addr[1]), addr))

    def error_received(self, exc: Exception) -> None:
        pass


class _TcpConnection(asyncio.Protocol):
    """One TCP connection: frames messages by Content-Length, answers on the same connection."""

    def __init__(self, server: SipServer) -> None:
        self._server = server
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._peer: Peer | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        addr = transport.get_extra_info("peername") or ("", 0)
        self._peer = Peer("TCP", str(addr[0]), int(addr[1]), self._send)
        self._server._tcp_conns.add(self)  # noqa: SLF001

    def _send(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        peer = self._peer
        assert peer is not None
        while True:
            try:
                message = split_stream(self._buffer)
            except SipParseError as exc:
                self._server.stats.messages_oversize += 1
                log.warning("sip: TCP stream from %s closed: %s", peer.host, exc)
                self.close()
                return
            if message is None:
                return
            self._server.handle(message, peer)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server._tcp_conns.discard(self)  # noqa: SLF001
        self._transport = None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
