"""The RTP side of one SIP call: an even UDP port, symmetric latching, 20 ms pacing, DTMF.

``RtpSession.open(...)`` binds an even port from the configured range (and the odd one above it,
where RTCP arrives and is counted and dropped). ``datagram_received`` only parses, counts and
hands on: G.711 -> ``Call.feed_caller_audio`` through a small reorder buffer, RFC 4733 ->
``Call.on_dtmf`` once per event; it never raises. The peer's address is latched from its first
packet (symmetric RTP, RFC 4961) and until then the SDP address is used; only a source that
agrees with the signalling can be latched (``rtp.latch_hosts``: the SDP ``c=`` address or the
INVITE's source address, any port), so a third party sending to the port before the caller's
first packet gets nothing. Its packets are counted (``voicegate_sip_rtp_refused_source``) and
logged at most once per ``REFUSED_LOG_INTERVAL_S`` per call. ``start()`` joins the
server's ``RtpPacer``, one task for every call: every 20 ms of a monotonic clock (deadlines
``t0 + k * 20 ms``) each session pulls 160 samples from its Call, encodes and sends them
(skipped while the peer holds us), and checks the media timeout (``timeout_before_media_s``
until the first packet, ``timeout_s`` after it; suspended while the peer said it will not
send). A timeout calls ``on_timeout``. One shared tick instead of a timer per call: at 80 calls
that is 50 wake-ups a second instead of 4000.

Owns: ``RtpSession``, ``RtpPacer``. Imports audio, the contracts and the pure SIP modules; never the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from voicegate.audio import alaw_decode, alaw_encode, mulaw_decode, mulaw_encode
from voicegate.contracts import CallLike
from voicegate.errors import RtpParseError, SipError
from voicegate.legs.sip.metrics import SipStats
from voicegate.legs.sip.rtp import (
    DtmfDetector,
    ReorderBuffer,
    RtpWriter,
    is_rtcp,
    latch_hosts,
    parse_rtp,
    source_host,
)
from voicegate.legs.sip.sdp import MediaPlan

__all__ = ["FRAME_SAMPLES", "RATE_HZ", "RtpPacer", "RtpSession"]

log = logging.getLogger("voicegate.legs.sip")

RATE_HZ = 8000
FRAME_MS = 20
FRAME_S = FRAME_MS / 1000
FRAME_SAMPLES = RATE_HZ * FRAME_MS // 1000
MAX_CATCH_UP_FRAMES = 5  # after a longer loop stall, skip ahead instead of bursting
BIND_ATTEMPTS = 64
MAX_GAP_FILL_SAMPLES = 1600  # 200 ms: longer gaps are silence suppression or a stall, not loss
TS_MOD = 1 << 32
REFUSED_LOG_INTERVAL_S = 10.0  # refused sources are logged at most this often per call

_DECODERS: dict[str, Callable[[bytes], npt.NDArray[np.int16]]] = {
    "PCMU": mulaw_decode,
    "PCMA": alaw_decode,
}
_ENCODERS: dict[str, Callable[[npt.NDArray[np.int16]], bytes]] = {
    "PCMU": mulaw_encode,
    "PCMA": alaw_encode,
}


def _bind_pair(host: str, port: int) -> tuple[socket.socket, socket.socket] | None:
    """UDP sockets bound to ``port`` and ``port + 1``; None when either is taken.

    Bound here, not by ``create_datagram_endpoint(local_addr=...)``: when that bind fails,
    uvloop leaves the transport it made unclosed (a ResourceWarning whenever it is collected,
    which failed SIP tests now and then under ``-W error``: RTP ports drawn at random collide)."""
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    bound: list[socket.socket] = []
    try:
        for offset in (0, 1):
            sock = socket.socket(family, socket.SOCK_DGRAM)
            bound.append(sock)
            sock.setblocking(False)
            sock.bind((address[0], port + offset, *address[2:]))
    except OSError:
        for sock in bound:
            sock.close()
        return None
    return bound[0], bound[1]


class _RtcpSink(asyncio.DatagramProtocol):
    def __init__(self, stats: SipStats) -> None:
        self._stats = stats

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self._stats.rtcp_in += 1


class RtpSession(asyncio.DatagramProtocol):
    """RTP for one call. ``await RtpSession.open(...)``, ``attach(call)``, ``start()``, ``close()``."""

    def __init__(
        self,
        plan: MediaPlan,
        stats: SipStats,
        *,
        on_timeout: Callable[[str], None],
        timeout_before_media_s: float = 30.0,
        timeout_s: float = 15.0,
        pacer: RtpPacer | None = None,
        clock: Callable[[], float] = time.monotonic,
        signalling_host: str = "",
    ) -> None:
        self._pacer = pacer or RtpPacer(stats, clock)
        self._signalling_host = signalling_host  # where the INVITE came from
        self._refused = 0
        self._refused_logged_at = -REFUSED_LOG_INTERVAL_S
        self._stats = stats
        self._on_timeout = on_timeout
        self._timeout_before_media_s = timeout_before_media_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._transport: asyncio.DatagramTransport | None = None
        self._rtcp: asyncio.DatagramTransport | None = None
        self._call: CallLike | None = None
        self._is_started = False
        self._reorder = ReorderBuffer()
        self._dtmf = DtmfDetector()
        self._writer = RtpWriter(plan.codec_pt)
        self._latched: tuple[str, int] | None = None
        self._rx_ssrc: int | None = None
        self._rx_next_ts = 0
        self._silence = np.zeros(MAX_GAP_FILL_SAMPLES, np.int16)
        self._opened_at = clock()
        self._last_rx: float | None = None
        self._is_closed = False
        self._is_timed_out = False
        self.local_port = 0
        self.packets_in = 0
        self.packets_out = 0
        self.plan = plan
        self._apply(plan)

    @classmethod
    async def open(
        cls,
        plan: MediaPlan,
        stats: SipStats,
        *,
        host: str,
        port_min: int,
        port_max: int,
        **kwargs: object,
    ) -> RtpSession:
        """Bind an even port pair from ``port_min..port_max``; ``SipError`` when none is free."""
        session = cls(plan, stats, **kwargs)  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        first = port_min + (port_min & 1)
        evens = list(range(first, port_max, 2))
        if not evens:
            raise SipError(f"RTP port range {port_min}-{port_max} holds no even/odd pair")
        start = random.randrange(len(evens))
        for i in range(min(len(evens), BIND_ATTEMPTS)):
            port = evens[(start + i) % len(evens)]
            pair = _bind_pair(host, port)
            if pair is None:
                continue  # taken (by another call, worker or program): the next pair
            rtp_sock, rtcp_sock = pair
            transport: asyncio.DatagramTransport | None = None
            try:
                transport, _ = await loop.create_datagram_endpoint(lambda: session, sock=rtp_sock)
                rtcp, _ = await loop.create_datagram_endpoint(
                    lambda: _RtcpSink(stats), sock=rtcp_sock
                )
            except BaseException:  # cancelled (CANCEL, shutdown) between the two, or failed
                if transport is not None:
                    transport.close()
                else:
                    rtp_sock.close()
                rtcp_sock.close()
                raise
            session._transport = transport
            session._rtcp = rtcp
            session.local_port = port
            stats.rtp_ports_in_use += 1
            return session
        raise SipError(
            f"no free RTP port pair in {port_min}-{port_max} after {BIND_ATTEMPTS} tries"
        )

    # -- control (event loop) ----------------------------------------------------------------

    def _apply(self, plan: MediaPlan) -> None:
        self.plan = plan
        self._decode = _DECODERS[plan.codec]
        self._encode = _ENCODERS[plan.codec]
        self._codec_pt = plan.codec_pt
        self._dtmf_pt = plan.dtmf_pt
        self._writer.payload_type = plan.codec_pt
        self._sdp_dest = (plan.remote_host, plan.remote_port)
        self._latch_hosts = latch_hosts(plan.remote_host, self._signalling_host)
        self._is_sending = not plan.is_hold and plan.local_direction.is_sending
        self._expects_media = plan.remote_direction.is_sending and plan.remote_host != "0.0.0.0"

    def update(self, plan: MediaPlan) -> None:
        """A re-INVITE: new codec, address or direction; a new address unlatches."""
        if (plan.remote_host, plan.remote_port) != self._sdp_dest:
            self._latched = None
        self._apply(plan)
        self._last_rx = self._clock() if self._last_rx is not None else None

    def attach(self, call: CallLike) -> None:
        self._call = call

    def start(self) -> None:
        """Join the pacer: from the next 20 ms tick on, a frame is pulled and sent each tick."""
        if not self._is_started and not self._is_closed:
            self._is_started = True
            self._opened_at = self._clock()
            self._pacer.add(self)

    @property
    def is_closed(self) -> bool:
        return self._is_closed

    async def close(self) -> None:
        self.close_nowait()

    def close_nowait(self) -> None:
        """Stop pacing and release the ports (idempotent)."""
        if self._is_closed:
            return
        self._is_closed = True
        self._pacer.remove(self)
        if self._transport is not None:
            self._transport.close()
            self._stats.rtp_ports_in_use -= 1
        if self._rtcp is not None:
            self._rtcp.close()
        self._stats.rtp_lost += self._reorder.lost
        self._stats.rtp_late += self._reorder.late
        self._stats.rtp_ssrc_changes += self._reorder.resyncs
        self._call = None

    @property
    def destination(self) -> tuple[str, int]:
        return self._latched or self._sdp_dest

    # -- inbound (never raises) --------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            self._on_datagram(data, (str(addr[0]), int(addr[1])))
        except Exception:  # a bad packet must never take the session down
            self._stats.rtp_malformed += 1

    def _on_datagram(self, data: bytes, source: tuple[str, int]) -> None:
        stats = self._stats
        latched = self._latched
        if latched is not None and source != latched:
            stats.rtp_foreign_source += 1
            return
        if latched is None and source[0] not in self._latch_hosts:
            if source_host(source[0]) not in self._latch_hosts:  # e.g. an IPv4-mapped source
                self._refuse(source)
                return
        if is_rtcp(data):  # RTCP multiplexed on the RTP port (RFC 5761)
            stats.rtcp_in += 1
            return
        try:
            packet = parse_rtp(data)
        except RtpParseError:
            stats.rtp_malformed += 1
            return
        if latched is None:
            self._latched = source  # symmetric RTP: answer where the media comes from
        self._last_rx = self._clock()
        stats.rtp_in += 1
        self.packets_in += 1
        call = self._call
        pt = packet.payload_type
        if pt == self._codec_pt:
            if call is None:
                return
            for ready in self._reorder.push(packet):
                payload = ready.payload
                if not payload:
                    continue
                if ready.ssrc == self._rx_ssrc:
                    # lost packets (or a DTMF pause): keep the caller's timeline with silence
                    gap = (ready.timestamp - self._rx_next_ts) % TS_MOD
                    if 0 < gap <= MAX_GAP_FILL_SAMPLES:
                        call.feed_caller_audio(self._silence[:gap])
                        stats.rtp_gap_filled_samples += gap
                self._rx_ssrc = ready.ssrc
                self._rx_next_ts = (ready.timestamp + len(payload)) % TS_MOD
                call.feed_caller_audio(self._decode(payload))
        elif pt == self._dtmf_pt:
            digit = self._dtmf.on_packet(packet)
            if digit is not None and call is not None:
                stats.dtmf_digits += 1
                call.on_dtmf(digit)
        else:
            stats.rtp_unknown_payload += 1

    def _refuse(self, source: tuple[str, int]) -> None:
        self._stats.rtp_refused_source += 1
        self._refused += 1
        now = self._clock()
        if now - self._refused_logged_at >= REFUSED_LOG_INTERVAL_S:
            self._refused_logged_at = now
            log.warning(
                "sip rtp port %d: packet from %s:%d refused before the caller's media (%d so "
                "far): only %s agree with the signalling",
                self.local_port,
                source[0],
                source[1],
                self._refused,
                ", ".join(sorted(self._latch_hosts)) or "no address",
            )

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable while the peer is not listening yet: nothing to do
        pass

    # -- outbound pacing ---------------------------------------------------------------------

    def on_tick(self, now: float, frames: int, skipped: int) -> None:
        """The pacer's 20 ms tick: skip ``skipped`` frames, send ``frames``, check the timeout."""
        if skipped:
            self._writer.skip(skipped * FRAME_SAMPLES)
        for _ in range(frames):
            self._send_frame()
        if self._check_timeout(now):
            self._pacer.remove(self)

    def _send_frame(self) -> None:
        call = self._call
        if call is None:
            return
        pcm = call.pull_agent_audio(FRAME_SAMPLES)  # pulled even on hold: the call's clock runs
        transport = self._transport
        if not self._is_sending or transport is None:
            self._writer.skip(FRAME_SAMPLES)
            return
        packet = self._writer.pack(self._encode(pcm), FRAME_SAMPLES)
        transport.sendto(packet, self.destination)
        self._stats.rtp_out += 1
        self.packets_out += 1

    def _check_timeout(self, now: float) -> bool:
        if not self._expects_media:
            if self._last_rx is not None:
                self._last_rx = now  # on hold the peer sends nothing: restart the clock after
            else:
                self._opened_at = now
            return False
        if self._last_rx is None:
            if now - self._opened_at > self._timeout_before_media_s:
                self._fire_timeout(f"no RTP within {self._timeout_before_media_s:.0f} s")
                return True
        elif now - self._last_rx > self._timeout_s:
            self._fire_timeout(f"no RTP for {self._timeout_s:.0f} s")
            return True
        return False

    def _fire_timeout(self, detail: str) -> None:
        if self._is_timed_out:
            return
        self._is_timed_out = True
        self._stats.media_timeouts += 1
        self._on_timeout(detail)


class RtpPacer:
    """One 20 ms clock for every RTP session of a server (one timer wake-up per tick, not per call).

    Deadlines are ``t0 + k * 20 ms`` of a monotonic clock, so there is no drift; after a loop
    stall of up to ``MAX_CATCH_UP_FRAMES`` ticks the missed frames are sent at once, after a
    longer one they are skipped (the RTP timestamps still advance). The task runs only while a
    session is registered.
    """

    def __init__(self, stats: SipStats, clock: Callable[[], float] = time.monotonic) -> None:
        self._stats = stats
        self._clock = clock
        self._sessions: dict[int, RtpSession] = {}
        self._task: asyncio.Task[None] | None = None

    def add(self, session: RtpSession) -> None:
        self._sessions[id(session)] = session
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="rtp-pacer")

    def remove(self, session: RtpSession) -> None:
        self._sessions.pop(id(session), None)

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    async def close(self) -> None:
        self._sessions.clear()
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        clock = self._clock
        stats = self._stats
        next_tick = clock() + FRAME_S
        while self._sessions:
            delay = next_tick - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            now = clock()
            frames = int((now - next_tick) / FRAME_S) + 1
            skipped = 0
            if frames > MAX_CATCH_UP_FRAMES:
                skipped = frames - 1
                frames = 1
                stats.skipped_ticks += skipped
            elif frames > 1:
                stats.late_ticks += 1
            next_tick += (frames + skipped) * FRAME_S
            for session in list(self._sessions.values()):
                try:
                    session.on_tick(now, frames, skipped)
                except Exception:
                    log.exception("rtp session on port %d failed", session.local_port)
                    self.remove(session)
                    session._fire_timeout("rtp pacing failed")
