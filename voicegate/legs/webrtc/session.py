"""One browser call: an aiortc peer connection bound to a Call (the Call's ``LegTransport``).

Lifecycle (all on the event loop)::

    session = WebRtcSession(session_id, call_id, config, on_closed=...)
    await session.accept_offer(offer_sdp)         # SdpRejected on a bad offer
    session.bind(calls.start_call(info, session)) # NoFreeSlot, UnknownPersona
    answer_sdp = await session.answer()           # gathers candidates (no trickle)
    ...
    await session.close()                         # idempotent

The call ends (``Call.on_leg_closed``, freeing its slot at once) when the peer connection goes
``closed`` or ``failed``, when the browser's audio track ends, when no audio arrived for
``media_timeout_s``, or when the connection is not up ``connect_timeout_s`` after the answer.
The Call ends it from our side through ``request_hangup`` (max duration, drain): the peer
connection is closed, which the browser sees as its DTLS transport closing.

Owns: WebRtcSession. Imports aiortc and the contracts; knows the Call only as ``CallLike``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import av
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from voicegate.contracts import CallLike, EndReason
from voicegate.errors import WebRtcError
from voicegate.legs.webrtc.ice import keep_loopback_candidates
from voicegate.legs.webrtc.media import RATE_HZ, AgentAudioTrack, MediaCounters, _Converter

__all__ = ["SdpRejected", "WebRtcSession"]

log = logging.getLogger("voicegate.legs.webrtc")


class SdpRejected(WebRtcError, ValueError):
    """The browser's offer cannot be used (malformed, or no audio to answer)."""


class WebRtcSession:
    """A peer connection and the Call it carries."""

    def __init__(
        self,
        session_id: str,
        call_id: str,
        config: RTCConfiguration,
        *,
        is_loopback_only: bool = False,
        media_timeout_s: float = 10.0,
        connect_timeout_s: float = 15.0,
        jitter_prefetch: int | None = None,
        on_ingress: Callable[[float], None] | None = None,
        on_closed: Callable[[WebRtcSession], None] | None = None,
    ) -> None:
        self.session_id = session_id
        self.call_id = call_id
        self.counters = MediaCounters()
        self.end_reason: EndReason | None = None
        self._pc = RTCPeerConnection(config)
        self._is_loopback_only = is_loopback_only
        self._media_timeout_s = media_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._jitter_prefetch = jitter_prefetch
        # RTP packet arrival -> its decoded audio handed to the Call (jitter buffer + decoding)
        self._on_ingress = on_ingress
        self._arrivals: dict[int, float] = {}
        self._on_closed = on_closed
        self._call: CallLike | None = None
        self._convert = _Converter(self.counters)
        self._tasks: set[asyncio.Task[None]] = set()
        self._is_closing = False
        self._closed = asyncio.Event()
        self._pc.on("connectionstatechange", self._on_state)
        self._pc.on("track", self._on_track)

    # --- LegTransport ------------------------------------------------------------------------

    @property
    def rate_hz(self) -> int:
        return RATE_HZ

    @property
    def queued_ms(self) -> int:
        # frames are pulled at real time: nothing is queued ahead on our side beyond the one in
        # the encoder; the browser's jitter buffer is not visible from here
        return 0

    def clear_playout(self) -> None:
        """Nothing queued ahead on the far side: agent audio is pulled at real time."""

    def request_hangup(self, reason: EndReason) -> None:
        if self.end_reason is None:
            self.end_reason = reason
        self._close_soon()

    # --- signalling --------------------------------------------------------------------------

    @property
    def connection_state(self) -> str:
        return str(self._pc.connectionState)

    async def accept_offer(self, sdp: str) -> None:
        """Apply the browser's offer; raises SdpRejected when it is unusable."""
        if self._is_loopback_only:
            sdp = keep_loopback_candidates(sdp)
        try:
            await self._pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        except Exception as exc:  # aiortc raises ValueError/InvalidStateError/... on bad SDP
            raise SdpRejected(f"offer rejected: {exc}") from exc
        if not any(t.kind == "audio" for t in self._pc.getTransceivers()):
            raise SdpRejected("offer rejected: it has no audio media section")

    def bind(self, call: CallLike) -> None:
        """Attach the Call: its agent audio becomes the outbound track."""
        self._call = call
        self._pc.addTrack(AgentAudioTrack(call.pull_agent_audio, self.counters))

    async def answer(self) -> str:
        """Create and apply the answer (candidates gathered, no trickle); returns its SDP."""
        answer = await self._pc.createAnswer()
        await self._pc.setLocalDescription(answer)
        self._spawn(self._watch())
        return str(self._pc.localDescription.sdp)

    # --- media and state ---------------------------------------------------------------------

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "audio":
            return
        for receiver in self._pc.getReceivers():
            if receiver.track is track:
                if self._jitter_prefetch is not None:
                    _set_jitter_prefetch(receiver, self._jitter_prefetch)
                if self._on_ingress is not None:
                    self._time_arrivals(receiver)
        self._spawn(self._read(track))

    def _time_arrivals(self, receiver: Any) -> None:
        """Note when each RTP packet arrives, keyed like the decoded frame's pts will be."""
        handle = receiver._handle_rtp_packet
        arrivals = self._arrivals
        origin: list[int] = []
        clock = asyncio.get_running_loop().time

        async def timed(packet: Any, arrival_time_ms: int) -> None:
            if not origin:
                origin.append(packet.timestamp)
            if len(arrivals) > 64:  # lost or dropped frames never pop theirs
                arrivals.clear()
            arrivals.setdefault((packet.timestamp - origin[0]) & 0xFFFFFFFF, clock())
            await handle(packet, arrival_time_ms=arrival_time_ms)

        receiver._handle_rtp_packet = timed

    async def _read(self, track: MediaStreamTrack) -> None:
        counters = self.counters
        loop = asyncio.get_running_loop()
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                self._end(EndReason.CALLER_HANGUP, "the browser's audio track ended")
                return
            assert isinstance(frame, av.AudioFrame)  # an audio track yields audio frames
            counters.frames_in += 1
            call = self._call
            if call is not None:
                call.feed_caller_audio(self._convert(frame))
            on_ingress = self._on_ingress
            if on_ingress is not None and frame.pts is not None:
                arrived = self._arrivals.pop(frame.pts, None)
                if arrived is not None:
                    on_ingress(loop.time() - arrived)

    async def _watch(self) -> None:
        """Connect within connect_timeout_s, then receive audio at least every media_timeout_s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._connect_timeout_s
        while self._pc.connectionState != "connected":
            if loop.time() >= deadline:
                self._end(
                    EndReason.MEDIA_TIMEOUT,
                    f"connection still {self._pc.connectionState} "
                    f"{self._connect_timeout_s:g} s after the answer",
                )
                return
            await asyncio.sleep(0.1)
        seen, seen_at = self.counters.frames_in, loop.time()
        while True:
            await asyncio.sleep(min(1.0, self._media_timeout_s / 4))
            now = loop.time()
            if self.counters.frames_in != seen:
                seen, seen_at = self.counters.frames_in, now
            elif now - seen_at >= self._media_timeout_s:
                self._end(
                    EndReason.MEDIA_TIMEOUT,
                    f"no audio from the browser for {self._media_timeout_s:g} s",
                )
                return

    def _on_state(self) -> None:
        state = self._pc.connectionState
        log.debug("webrtc %s: connection %s", self.session_id, state)
        if state == "failed":
            self._end(EndReason.MEDIA_TIMEOUT, "peer connection failed")
        elif state == "closed":
            self._end(EndReason.CALLER_HANGUP, "peer connection closed")

    def _end(self, reason: EndReason, detail: str) -> None:
        if self.end_reason is None:
            self.end_reason = reason
            log.info("webrtc %s: %s", self.session_id, detail)
        call = self._call
        if call is not None:
            call.on_leg_closed(reason)  # idempotent: the first reason wins
        self._close_soon()

    async def close(self) -> None:
        """Close the peer connection and end the Call (CALLER_HANGUP unless ended otherwise)."""
        if self._is_closing:
            await self._closed.wait()
            return
        self._is_closing = True
        try:
            if self._call is not None:
                self._call.on_leg_closed(self.end_reason or EndReason.CALLER_HANGUP)
            await self._pc.close()
        finally:
            current = asyncio.current_task()
            for task in list(self._tasks):
                if task is not current:
                    task.cancel()
            self._closed.set()
            if self._on_closed is not None:
                self._on_closed(self)

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def _close_soon(self) -> None:
        if not self._is_closing:
            self._spawn(self.close())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _set_jitter_prefetch(receiver: object, prefetch: int) -> None:
    """Give an aiortc audio receiver a jitter buffer that releases a frame ``prefetch`` frames early.

    aiortc holds every received audio frame until 4 later ones arrived (80 ms), only to reorder
    packets; it does no timed playout. The Call already absorbs arrival jitter (it gathers 80 ms
    engine frames), so a smaller prefetch takes that delay off every reply; a packet arriving
    more than ``prefetch`` frames late is then dropped instead of reordered.
    """
    from aiortc.jitterbuffer import JitterBuffer

    attr = "_RTCRtpReceiver__jitter_buffer"  # private in aiortc 1.x: skip if it moved
    if isinstance(getattr(receiver, attr, None), JitterBuffer):
        setattr(receiver, attr, JitterBuffer(capacity=16, prefetch=prefetch))
