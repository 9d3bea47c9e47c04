"""The browser's side, in Python, for tests and the benchmark: an aiortc caller that plays int16
audio at real time and records what the gateway sends back (and when its RTP packets arrived).

Usage::

    async with WebRtcCaller(base_url, token, read_wav_48k(path)) as caller:
        answer = await caller.call("bank_teller")     # POST /webrtc/offer, then media flows
        await caller.wait_received(ms=2000)
        pcm = caller.received()                        # int16 mono 48 kHz

Owns: WebRtcCaller, WavTrack, read_wav_48k. Speaks only HTTP and WebRTC to the gateway; import
it from this module (not re-exported: production code never needs it).
"""

from __future__ import annotations

import asyncio
import fractions
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import av
import httpx
import numpy as np
import numpy.typing as npt
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from voicegate.audio import StreamingResampler, read_wav_int16

RATE = 48_000
FRAME = 960


def read_wav_48k(path: Path) -> npt.NDArray[np.int16]:
    """A mono 16-bit WAV resampled to 48 kHz int16."""
    pcm, rate = read_wav_int16(path)
    if rate == RATE:
        return pcm.copy()
    out = StreamingResampler(rate, RATE).process(pcm)
    resampled: npt.NDArray[np.int16] = np.clip(out * 32767.0, -32768, 32767).astype(np.int16)
    return resampled


class WavTrack(MediaStreamTrack):
    """Plays int16 mono 48 kHz samples in 20 ms frames at real time, then silence.

    ``sent_at[i]`` is the monotonic time frame ``i`` was handed to the encoder.
    """

    kind = "audio"

    def __init__(self, pcm: npt.NDArray[np.int16], lead_silence_ms: int = 0) -> None:
        super().__init__()
        lead = np.zeros(RATE * lead_silence_ms // 1000, dtype=np.int16)
        self._pcm = np.concatenate([lead, pcm])
        self._i = 0
        self._t0: float | None = None
        self.sent_at: list[float] = []

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        else:
            due = self._t0 + self._i * FRAME / RATE
            if due > now:
                await asyncio.sleep(due - now)
        start = self._i * FRAME
        chunk = self._pcm[start : start + FRAME]
        if len(chunk) < FRAME:
            chunk = np.concatenate([chunk, np.zeros(FRAME - len(chunk), dtype=np.int16)])
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = start
        frame.time_base = fractions.Fraction(1, RATE)
        self.sent_at.append(time.monotonic())
        self._i += 1
        return frame


class WebRtcCaller:
    """One browser-like caller (aiortc) of the gateway's ``POST /webrtc/offer``."""

    def __init__(
        self, base_url: str, token: str, pcm: npt.NDArray[np.int16], lead_silence_ms: int = 0
    ) -> None:
        self.base_url = base_url
        self.token = token
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.track = WavTrack(pcm, lead_silence_ms)
        self.pc.addTrack(self.track)
        self._chunks: list[npt.NDArray[np.int16]] = []
        self.recv_at: list[float] = []  # monotonic time each received frame was decoded
        self.recv_pts: list[int] = []  # its RTP timestamp
        self.rtp_arrivals: dict[int, float] = {}  # frame pts -> monotonic arrival of its packet
        self.call_id = ""
        self._reader: asyncio.Task[None] | None = None
        self.track_ended = asyncio.Event()
        self.pc.on("track", self._on_track)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "audio":
            return
        for receiver in self.pc.getReceivers():
            if receiver.track is track:
                self._time_packets(receiver)
        self._reader = asyncio.get_running_loop().create_task(self._read(track))

    def _time_packets(self, receiver: Any) -> None:
        handle = receiver._handle_rtp_packet
        arrivals = self.rtp_arrivals

        origin: list[int] = []

        async def timed(packet: Any, arrival_time_ms: int) -> None:
            # keyed like aiortc's decoded frames' pts: relative to the first packet's timestamp
            if not origin:
                origin.append(packet.timestamp)
            key = (packet.timestamp - origin[0]) % (1 << 32)
            arrivals.setdefault(key, time.monotonic())
            await handle(packet, arrival_time_ms=arrival_time_ms)

        receiver._handle_rtp_packet = timed

    async def _read(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                assert isinstance(frame, av.AudioFrame)
                pcm: npt.NDArray[np.int16] = frame.to_ndarray().reshape(-1).astype(np.int16)
                channels = len(frame.layout.channels)
                if channels > 1:
                    pcm = pcm.reshape(-1, channels)[:, 0].copy()
                self._chunks.append(pcm)
                self.recv_at.append(time.monotonic())
                self.recv_pts.append(int(frame.pts or 0))
        except MediaStreamError:
            self.track_ended.set()

    async def offer(
        self, persona: str, token: str | None = None, variables: dict[str, str] | None = None
    ) -> httpx.Response:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        body: dict[str, Any] = {
            "type": "offer",
            "sdp": self.pc.localDescription.sdp,
            "persona": persona,
        }
        if variables:
            body["variables"] = variables
        token = self.token if token is None else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10, trust_env=False) as http:
            return await http.post("/webrtc/offer", json=body, headers=headers)

    async def call(self, persona: str, variables: dict[str, str] | None = None) -> dict[str, Any]:
        resp = await self.offer(persona, variables=variables)
        assert resp.status_code == 200, resp.text
        answer: dict[str, Any] = resp.json()
        self.call_id = answer["call_id"]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        return answer

    def received(self) -> npt.NDArray[np.int16]:
        if not self._chunks:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(self._chunks)

    async def wait_received(self, ms: int, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while sum(len(c) for c in self._chunks) < RATE * ms // 1000:
            assert time.monotonic() < deadline, f"received only {len(self.received())} samples"
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        await self.pc.close()
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except (asyncio.CancelledError, MediaStreamError):
                pass

    async def __aenter__(self) -> WebRtcCaller:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
