"""The carriers' side of a media stream, for the tests and the benchmark: a WebSocket client that
speaks Telnyx's, Plivo's, Exotel's or Vonage's documented protocol byte for byte (not pipecat's code: the messages are
written here from the carriers' documentation), plays the caller's audio at real time and records
what the gateway sends back.

Usage::

    sim = CarrierSimulator("telnyx", "ws://127.0.0.1:8000", token="s3cret")
    call = await sim.connect(to="+14155550100", from_="+15550100")
    await call.play(pcm_8k)          # 20 ms media messages at real time
    await call.dtmf("0")
    await call.hang_up()             # Telnyx: stop then close; Plivo: close
    call.report.media_messages, call.heard_pcm(), call.report.clears

Owns: ``CarrierSimulator``, ``SimulatedCarrierCall``, ``CarrierReport``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import numpy as np
import numpy.typing as npt
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from voicegate.audio import StreamingResampler, mulaw_decode, mulaw_encode
from voicegate.legs.carriers.security import PLIVO_NONCE, PLIVO_SIGNATURE, plivo_v3_signature

__all__ = ["CarrierReport", "CarrierSimulator", "SimulatedCarrierCall"]

RATE_HZ = 8000
FRAME_MS = 20
EXOTEL_CHUNK_MS = 100  # Exotel streams about every 100 ms
VONAGE_RATE_HZ = 16000
VONAGE_FRAME_BYTES = VONAGE_RATE_HZ * FRAME_MS // 1000 * 2  # 640: Vonage takes only 20 ms
CARRIER_NAMES = ("telnyx", "plivo", "exotel", "vonage")


@dataclass
class CarrierReport:
    """What the simulated carrier saw of the gateway's output on one stream."""

    media_messages: int = 0
    media_bytes: int = 0
    clears: int = 0
    protocol_errors: list[str] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    arrivals: list[float] = field(default_factory=list)  # monotonic arrival of each media message


class SimulatedCarrierCall:
    """One open stream; made by ``CarrierSimulator.connect``."""

    def __init__(self, carrier: str, ws: ClientConnection, stream_id: str, call_ref: str) -> None:
        self.carrier = carrier
        self.rate_hz = VONAGE_RATE_HZ if carrier == "vonage" else RATE_HZ
        self.stream_id = stream_id
        self.call_ref = call_ref
        self.report = CarrierReport()
        self._ws = ws
        self._seq = 0
        self._chunk = 0
        self._t0 = time.monotonic()
        self._heard = bytearray()
        self._closed = asyncio.Event()
        self._replies: set[asyncio.Task[None]] = set()
        self._recv_task = asyncio.create_task(self._receive(), name=f"{carrier}-sim-recv")

    @property
    def is_closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self, timeout_s: float | None = None) -> None:
        await asyncio.wait_for(self._closed.wait(), timeout_s)

    def heard_pcm(self) -> npt.NDArray[np.int16]:
        """The agent's audio as received (at ``rate_hz``), in arrival order."""
        if self.carrier in ("exotel", "vonage"):
            return np.frombuffer(bytes(self._heard), dtype=np.int16).copy()
        return mulaw_decode(bytes(self._heard))

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    async def send_json(self, message: dict[str, Any]) -> None:
        await self._ws.send(json.dumps(message, separators=(",", ":")))

    async def send_text(self, text: str) -> None:
        """One raw text frame (tests use it for malformed messages)."""
        await self._ws.send(text)

    async def send_start(self, to: str, from_: str, extra: dict[str, str]) -> None:
        if self.carrier == "exotel":
            await self.send_json({"event": "connected"})
            await self.send_json(
                {
                    "event": "start",
                    "sequence_number": str(self._next_seq()),
                    "stream_sid": self.stream_id,
                    "start": {
                        "stream_sid": self.stream_id,
                        "call_sid": self.call_ref,
                        "account_sid": "exotel-account",
                        "from": from_,
                        "to": to,
                        "custom_parameters": extra,
                        "media_format": {
                            "encoding": "audio/x-raw",
                            "sample_rate": "8000",
                            "bit_rate": "16",
                        },
                    },
                }
            )
            return
        if self.carrier == "vonage":
            await self.send_json(
                {
                    "event": "websocket:connected",
                    "content-type": f"audio/l16;rate={VONAGE_RATE_HZ}",
                    "uuid": self.call_ref,
                    "from": from_,
                    "to": to,
                    **extra,
                }
            )
            return
        if self.carrier == "telnyx":
            await self.send_json({"event": "connected", "version": "1.0.0"})
            await self.send_json(
                {
                    "event": "start",
                    "sequence_number": str(self._next_seq()),
                    "start": {
                        "user_id": str(uuid.uuid4()),
                        "call_control_id": self.call_ref,
                        "call_session_id": str(uuid.uuid4()),
                        "from": from_,
                        "to": to,
                        "tags": [],
                        "client_state": "",
                        "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
                    },
                    "stream_id": self.stream_id,
                }
            )
            return
        headers = {"to": to.lstrip("+"), "from": from_.lstrip("+"), **extra}
        await self.send_json(
            {
                "event": "start",
                "sequenceNumber": self._next_seq(),
                "start": {
                    "callId": self.call_ref,
                    "streamId": self.stream_id,
                    "accountId": "MA" + "0" * 18,
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
                },
                "extra_headers": ";".join(f"{k}={v}" for k, v in headers.items() if v),
            }
        )

    async def send_audio(self, payload: bytes) -> float:
        """One audio message now (``payload`` in the carrier's encoding); its send time."""
        self._chunk += 1
        if self.carrier == "vonage":
            sent_at = time.monotonic()
            await self._ws.send(payload)  # a binary L16 frame
            return sent_at
        b64 = base64.b64encode(payload).decode()
        elapsed_ms = int((time.monotonic() - self._t0) * 1000)
        message: dict[str, Any]
        if self.carrier == "exotel":
            message = {
                "event": "media",
                "sequence_number": str(self._next_seq()),
                "stream_sid": self.stream_id,
                "media": {"chunk": str(self._chunk), "timestamp": str(elapsed_ms), "payload": b64},
            }
        elif self.carrier == "telnyx":
            message = {
                "event": "media",
                "sequence_number": str(self._next_seq()),
                "media": {
                    "track": "inbound",
                    "chunk": str(self._chunk),
                    "timestamp": str(elapsed_ms),
                    "payload": b64,
                },
                "stream_id": self.stream_id,
            }
        else:
            message = {
                "event": "media",
                "sequenceNumber": self._next_seq(),
                "streamId": self.stream_id,
                "media": {
                    "track": "inbound",
                    "timestamp": str(int(time.time() * 1000)),
                    "chunk": self._chunk,
                    "payload": b64,
                },
            }
        sent_at = time.monotonic()
        await self.send_json(message)
        return sent_at

    async def play(self, pcm: npt.NDArray[np.int16], *, realtime: bool = True) -> int:
        """Stream 8 kHz PCM at real time (no drift) in the carrier's chunks (20 ms; Exotel
        100 ms) and encoding (mu-law; Exotel 16-bit PCM; Vonage 16 kHz L16 binary frames);
        returns the messages sent."""
        pcm = np.asarray(pcm, dtype=np.int16)
        chunk_ms = EXOTEL_CHUNK_MS if self.carrier == "exotel" else FRAME_MS
        if self.carrier == "vonage":
            up = StreamingResampler(RATE_HZ, VONAGE_RATE_HZ).process(pcm)
            data = np.clip(up * 32768.0, -32768, 32767).astype("<i2").tobytes()
        elif self.carrier == "exotel":
            data = pcm.astype("<i2").tobytes()
        else:
            data = mulaw_encode(pcm)
        width = 1 if self.carrier in ("telnyx", "plivo") else 2
        step = self.rate_hz * chunk_ms // 1000 * width
        start = time.monotonic()
        sent = 0
        for k, offset in enumerate(range(0, len(data), step)):
            if self.is_closed:
                break
            if realtime:
                delay = start + k * chunk_ms / 1000 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            try:
                await self.send_audio(data[offset : offset + step])
            except ConnectionClosed:
                break
            sent += 1
        return sent

    async def dtmf(self, digit: str) -> None:
        """The caller presses a key."""
        if self.carrier == "vonage":
            await self.send_json({"event": "websocket:dtmf", "digit": digit, "duration": 250})
            return
        if self.carrier == "exotel":
            await self.send_json(
                {
                    "event": "dtmf",
                    "sequence_number": str(self._next_seq()),
                    "stream_sid": self.stream_id,
                    "dtmf": {"digit": digit, "duration": "100"},
                }
            )
            return
        if self.carrier == "telnyx":
            message: dict[str, Any] = {
                "event": "dtmf",
                "stream_id": self.stream_id,
                "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "sequence_number": str(self._next_seq()),
                "dtmf": {"digit": digit},
            }
        else:
            message = {
                "event": "dtmf",
                "sequenceNumber": self._next_seq(),
                "streamId": self.stream_id,
                "dtmf": {
                    "track": "inbound",
                    "digit": digit,
                    "timestamp": str(int(time.time() * 1000)),
                },
            }
        await self.send_json(message)

    async def hang_up(self) -> None:
        """The caller hangs up: Telnyx and Exotel send ``stop`` and close; Plivo and Vonage
        just close."""
        if not self.is_closed and self.carrier == "exotel":
            with contextlib.suppress(ConnectionClosed):
                await self.send_json(
                    {
                        "event": "stop",
                        "sequence_number": str(self._next_seq()),
                        "stream_sid": self.stream_id,
                        "stop": {"call_sid": self.call_ref, "reason": "callended"},
                    }
                )
        if not self.is_closed and self.carrier == "telnyx":
            with contextlib.suppress(ConnectionClosed):
                await self.send_json(
                    {
                        "event": "stop",
                        "sequence_number": str(self._next_seq()),
                        "stop": {"user_id": str(uuid.uuid4()), "call_control_id": self.call_ref},
                        "stream_id": self.stream_id,
                    }
                )
        await self.close()

    async def close(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self._ws.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self._recv_task

    def _on_command(self, message: dict[str, Any]) -> None:
        report = self.report
        event = message.get("event")
        if self.carrier == "vonage":
            if message.get("action") == "clear":
                report.clears += 1
                self._reply({"event": "websocket:cleared"})
            else:
                report.protocol_errors.append(f"vonage: unexpected command {message!r:.80}")
            return
        if self.carrier == "exotel":
            if message.get("stream_sid") != self.stream_id:
                report.protocol_errors.append(f"exotel: {event} for {message.get('stream_sid')!r}")
            elif event == "media":
                self._on_media(message.get("media", {}).get("payload"))
            elif event == "clear":
                report.clears += 1
            else:
                report.protocol_errors.append(f"exotel: unexpected event {event!r}")
            return
        if self.carrier == "telnyx":
            if event == "media":
                self._on_media(message.get("media", {}).get("payload"))
            elif event == "clear":
                report.clears += 1
            else:
                report.protocol_errors.append(f"telnyx: unexpected event {event!r}")
            return
        if message.get("streamId") != self.stream_id:
            report.protocol_errors.append(f"plivo: {event} for stream {message.get('streamId')!r}")
            return
        if event == "playAudio":
            media = message.get("media", {})
            if media.get("contentType") != "audio/x-mulaw" or media.get("sampleRate") != 8000:
                report.protocol_errors.append(f"plivo: playAudio format {media!r:.80}")
                return
            self._on_media(media.get("payload"))
        elif event == "clearAudio":
            report.clears += 1
            asyncio.get_running_loop().create_task(
                self.send_json(
                    {
                        "event": "clearedAudio",
                        "sequenceNumber": self._next_seq(),
                        "streamId": self.stream_id,
                    }
                )
            )
        else:
            report.protocol_errors.append(f"plivo: unexpected event {event!r}")

    def _reply(self, message: dict[str, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self.send_json(message))
        self._replies.add(task)
        task.add_done_callback(self._replies.discard)

    def _on_media(self, payload: object) -> None:
        if not isinstance(payload, str):
            self.report.protocol_errors.append("media without a payload")
            return
        self._on_audio(base64.b64decode(payload))

    def _on_audio(self, data: bytes) -> None:
        if self.carrier == "vonage" and len(data) != VONAGE_FRAME_BYTES:
            self.report.protocol_errors.append(f"vonage: a {len(data)}-byte audio frame")
        self.report.media_messages += 1
        self.report.media_bytes += len(data)
        self.report.arrivals.append(time.monotonic())
        self._heard += data

    async def _receive(self) -> None:
        try:
            async for raw in self._ws:
                if isinstance(raw, bytes):
                    if self.carrier == "vonage":
                        self._on_audio(raw)
                    else:
                        self.report.protocol_errors.append("binary frame from the gateway")
                    continue
                try:
                    message = json.loads(raw)
                except ValueError:
                    self.report.protocol_errors.append(f"not JSON: {raw[:80]!r}")
                    continue
                self._on_command(message)
        except ConnectionClosed:
            pass
        finally:
            if self._ws.close_code is not None:
                self.report.close_code = self._ws.close_code
                self.report.close_reason = self._ws.close_reason or ""
            self._closed.set()


class CarrierSimulator:
    """A carrier opening media streams to a gateway at ``base_url`` (``ws://127.0.0.1:PORT``).

    ``token``: put in the stream URL as ``?token=``; ``plivo_auth_token``: Plivo signs each
    upgrade (``X-Plivo-Signature-V3``) for the URL as seen at ``public_url`` (default base_url).
    """

    def __init__(
        self,
        carrier: str,
        base_url: str,
        *,
        token: str = "",
        plivo_auth_token: str = "",
        public_url: str = "",
    ) -> None:
        if carrier not in CARRIER_NAMES:
            raise ValueError(f"carrier simulator: one of {CARRIER_NAMES}, got {carrier!r}")
        self.carrier = carrier
        self.base_url = base_url.rstrip("/")
        self.public_url = (public_url or base_url).rstrip("/")
        self._token = token
        self._plivo_auth_token = plivo_auth_token

    async def connect(
        self,
        to: str = "+15550199",
        from_: str = "+15550100",
        *,
        query: dict[str, str] | None = None,
        extra_headers: dict[str, str] | None = None,
        send_start: bool = True,
        sign: bool = True,
    ) -> SimulatedCarrierCall:
        """Open ``/{carrier}/media`` (signed/with the token) and send the carrier's ``start``."""
        params = dict(query or {})
        if self._token:
            params.setdefault("token", self._token)
        path = f"/{self.carrier}/media" + (f"?{urlencode(params)}" if params else "")
        headers: dict[str, str] = {}
        if self.carrier == "plivo" and self._plivo_auth_token and sign:
            nonce = uuid.uuid4().hex
            headers[PLIVO_SIGNATURE] = plivo_v3_signature(
                self._plivo_auth_token, self.public_url + path, nonce
            )
            headers[PLIVO_NONCE] = nonce
        ws = await connect(
            self.base_url + path,
            additional_headers=headers,
            compression=None,
            proxy=None,
            max_queue=None,
            ping_interval=None,
        )
        call = SimulatedCarrierCall(self.carrier, ws, str(uuid.uuid4()), f"v3:{uuid.uuid4().hex}")
        if send_start:
            with contextlib.suppress(ConnectionClosed):
                await call.send_start(to, from_, {})
        return call
