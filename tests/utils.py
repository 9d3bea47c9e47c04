"""Shared test helpers (import as ``from utils import ...``: pytest puts tests/ on sys.path).

- ``LoopbackLeg``: an in-memory LegTransport that records clears and hang-ups.
- ``RecordingEvents``: an EventSink that keeps every emitted event.
- ``ExactResampler``: an integer-ratio resampler without filter or delay (positions stay exact).
- ``ManualClock``, ``ScheduledSlot``: a hand-set clock and a Slot double on an 80 ms tick grid
  (``next_tick_at``) that records each push, for frame-phase tests.
- ``EnergyVad``: a deterministic voice detector with the audio VAD's interface (tests only).
- ``ScriptedEngine``: an Engine (engine/base.py contract) whose outputs a test scripts, ticked by
  hand (``engine.tick()``); ``speech()``/``SILENCE`` are ticks of agent audio.
- ``make_manager()``: a CallManager with ``ExactResampler``, ``EnergyVad`` and ``frozen_clock``.
- ``run_call()``: drive a Call on a simulated 20 ms clock, ticking an engine every 80 ms, and
  collect what the leg pulled.
- ``upload()``: a hostile HTTP upload over a raw socket that stops once the server answered.
- ``Operator``: a call-start webhook endpoint (real HTTP server) that checks signatures.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import numpy.typing as npt

from voicegate.calls import CallManager
from voicegate.calls.handoff import SIGNATURE_HEADER, verify
from voicegate.contracts import EndReason
from voicegate.engine.base import FRAME_SAMPLES, EngineStats, SlotSink, SlotStats, TickOutput
from voicegate.errors import NoFreeSlot, UnknownPersona

__all__ = [
    "CHUNK_BYTES",
    "SILENCE",
    "EnergyVad",
    "ExactResampler",
    "FakeSlot",
    "LoopbackLeg",
    "ManualClock",
    "RecordingEvents",
    "ScheduledSlot",
    "ScriptedEngine",
    "Upload",
    "frozen_clock",
    "make_manager",
    "run_call",
    "speech",
    "tone",
    "upload",
]

_TICK_S = 0.08  # the engine's tick, for ScheduledSlot


def frozen_clock() -> float:
    """A clock that never moves: with ``run_call`` every tick is pulled the moment it arrives."""
    return 0.0


class LoopbackLeg:
    """A LegTransport double: its clock is what it pulled; it records clears and hang-ups."""

    def __init__(self, rate_hz: int = 8000, queued_ms: int = 0) -> None:
        self._rate_hz = rate_hz
        self.queued_ms = queued_ms  # far-side audio the leg would report as queued
        self.clears: list[int] = []  # pulled samples at each clear
        self.hangups: list[EndReason] = []
        self.pulled = 0

    @property
    def rate_hz(self) -> int:
        return self._rate_hz

    def clear_playout(self) -> None:
        self.clears.append(self.pulled)

    def request_hangup(self, reason: EndReason) -> None:
        self.hangups.append(reason)


class RecordingEvents:
    """EventSink double: keeps events in order."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def emit(self, event: Any) -> None:
        self.events.append(event)

    def of_type(self, cls: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, cls)]

    def types(self) -> list[str]:
        return [type(e).type for e in self.events]


class ExactResampler:
    """Integer-ratio resampler with no filter and no delay: positions stay exact."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate, self.out_rate = in_rate, out_rate

    def process(self, x: npt.NDArray[np.generic]) -> npt.NDArray[np.float32]:
        y = x.astype(np.float32) / (32768.0 if x.dtype == np.int16 else 1.0)
        if self.out_rate >= self.in_rate:
            return np.repeat(y, self.out_rate // self.in_rate)
        return y[:: self.in_rate // self.out_rate].copy()


class ManualClock:
    """A clock a test sets by hand (``clock.now = t``)."""

    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


class ScheduledSlot:
    """A Slot double on a tick grid ``first_tick + k * 80 ms``; records each push."""

    def __init__(self, clock: ManualClock, first_tick: float | None) -> None:
        self.clock = clock
        self.first_tick = first_tick
        self.pushes: list[tuple[float, npt.NDArray[np.float32]]] = []
        self.stats = SlotStats()
        self.index = 0
        self.persona_key = "p"
        self.is_active = True

    def next_tick_at(self) -> float | None:
        if self.first_tick is None:
            return None
        k = np.floor((self.clock.now - self.first_tick) / _TICK_S) + 1
        return self.first_tick + max(0.0, k) * _TICK_S

    def push(self, pcm: npt.NDArray[np.float32]) -> None:
        self.pushes.append((self.clock.now, pcm.copy()))

    def leads(self) -> list[float]:
        """Per push: how long the frame waits for the tick that takes it."""
        out = []
        for t, _ in self.pushes:
            self.clock.now, now = t, self.clock.now
            at = self.next_tick_at()
            self.clock.now = now
            assert at is not None
            out.append(at - t)
        return out

    def leave(self) -> None:
        self.is_active = False


def make_manager(engine: object, events: object, **kw: object) -> CallManager:
    """A CallManager with exact resamplers, the energy VAD and a frozen clock (each overridable)."""
    kw.setdefault("resampler_factory", ExactResampler)
    kw.setdefault("vad_factory", lambda rate: EnergyVad(rate))
    kw.setdefault("clock", frozen_clock)
    return CallManager(engine, events, **kw)  # type: ignore[arg-type]


class EnergyVad:
    """Speech = a chunk's peak above ``threshold``; speech ends after ``hangover_ms`` of quiet.

    Exposes ``speech_start_ms`` / ``speech_stop_ms`` in stream ms, as the audio VAD does; with
    ``confirm_ms`` it reports an onset only that long after it (backdated), like Silero's start.
    """

    def __init__(
        self,
        rate_hz: int = 8000,
        threshold: int = 1000,
        hangover_ms: int = 100,
        confirm_ms: int = 0,
    ) -> None:
        self.rate_hz = rate_hz
        self.confirm_samples = rate_hz * confirm_ms // 1000  # loud this long before reporting
        self.threshold = threshold
        self.hangover_samples = rate_hz * hangover_ms // 1000
        self.samples = 0
        self.is_speech = False
        self.speech_start_ms = 0
        self.speech_stop_ms = 0
        self._last_loud_end = 0
        self._loud_start = -1

    def process(self, pcm: npt.NDArray[np.int16]) -> bool:
        start = self.samples
        self.samples += len(pcm)
        mag = np.abs(pcm.astype(np.int32))
        if len(pcm) and int(mag.max()) >= self.threshold:
            if self._loud_start < 0:
                self._loud_start = start + int(np.flatnonzero(mag >= self.threshold)[0])
            if not self.is_speech and self.samples - self._loud_start >= self.confirm_samples:
                self.speech_start_ms = self._loud_start * 1000 // self.rate_hz
                self.is_speech = True
            self._last_loud_end = self.samples
        elif self.samples - self._last_loud_end >= self.hangover_samples:
            self._loud_start = -1
            if self.is_speech:
                self.is_speech = False
                self.speech_stop_ms = self._last_loud_end * 1000 // self.rate_hz
        return self.is_speech


def tone(n: int, rate_hz: int = 8000, hz: float = 440.0, amp: float = 0.3) -> npt.NDArray[np.int16]:
    """A sine burst (int16)."""
    t = np.arange(n) / rate_hz
    return (np.sin(2 * np.pi * hz * t) * amp * 32767).astype(np.int16)


def run_call(
    call: Any,
    caller_pcm: npt.NDArray[np.int16],
    *,
    tick: Callable[[], object] | None,
    leg: LoopbackLeg | None = None,
    frame_ms: int = 20,
    tick_every: int = 4,
    extra_frames: int = 0,
    on_frame: Callable[[int], None] | None = None,
) -> npt.NDArray[np.int16]:
    """Feed ``caller_pcm`` in ``frame_ms`` chunks on a simulated clock and return what was pulled.

    Each step: feed one chunk, tick the engine every ``tick_every`` steps, pull one chunk.
    ``extra_frames`` steps of silence follow. Stops early when the call ends.
    """
    rate = call.rate_hz
    n = rate * frame_ms // 1000
    steps = (len(caller_pcm) + n - 1) // n + extra_frames
    padded = np.zeros(steps * n, dtype=np.int16)
    padded[: len(caller_pcm)] = caller_pcm
    out = []
    for k in range(steps):
        if not call.is_active:
            break
        if on_frame is not None:
            on_frame(k)
        call.feed_caller_audio(padded[k * n : (k + 1) * n])
        if tick is not None and k % tick_every == tick_every - 1:
            tick()
        out.append(call.pull_agent_audio(n).copy())
        if leg is not None:
            leg.pulled += n
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int16)


# --- a scripted engine -------------------------------------------------------------------

Script = Callable[[int, int, npt.NDArray[np.float32]], tuple[npt.NDArray[np.float32], str]]


def speech(amp: float = 0.3, hz: float = 300.0) -> npt.NDArray[np.float32]:
    """One tick (80 ms, 24 kHz) of a loud tone standing in for agent speech."""
    t = np.arange(FRAME_SAMPLES) / 24_000
    return (np.sin(2 * np.pi * hz * t) * amp).astype(np.float32)


SILENCE = np.zeros(FRAME_SAMPLES, dtype=np.float32)


class FakeSlot:
    def __init__(self, engine: ScriptedEngine, index: int, call_index: int, sink: SlotSink) -> None:
        self._engine = engine
        self._index = index
        self.call_index = call_index
        self.sink = sink
        self.inputs: deque[npt.NDArray[np.float32]] = deque(maxlen=4)
        self.frames = 0
        self.is_active = True
        self._stats = SlotStats()

    @property
    def index(self) -> int:
        return self._index

    @property
    def persona_key(self) -> str:
        return "p"

    @property
    def stats(self) -> SlotStats:
        return self._stats

    def push(self, pcm: npt.NDArray[np.float32]) -> None:
        assert pcm.shape == (FRAME_SAMPLES,)
        self.inputs.append(pcm.copy())

    def leave(self) -> None:
        self.is_active = False


class ScriptedEngine:
    """Engine double: fixed slots, scripted outputs, manual ticks."""

    def __init__(self, script: Script, max_slots: int = 4) -> None:
        self._script = script
        self._max_slots = max_slots
        self.slots: list[FakeSlot] = []
        self.text_prompts: list[str | None] = []  # each join's own text prompt (per-call)
        self.personas = {"p"}
        self.ticks = 0

    @property
    def name(self) -> str:
        return "scripted"

    @property
    def max_slots(self) -> int:
        return self._max_slots

    @property
    def active_slots(self) -> int:
        return sum(1 for s in self.slots if s.is_active)

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def load_persona(self, prompt: object) -> None:
        pass

    def has_persona(self, key: str) -> bool:
        return key in self.personas

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def join(self, persona_key: str, sink: SlotSink, *, text_prompt: str | None = None) -> FakeSlot:
        if persona_key not in self.personas:
            raise UnknownPersona(persona_key)
        if self.active_slots >= self._max_slots:
            raise NoFreeSlot("full")
        slot = FakeSlot(self, self.active_slots, len(self.slots), sink)
        self.slots.append(slot)
        self.text_prompts.append(text_prompt)
        return slot

    def stats(self) -> EngineStats:
        return EngineStats(
            ticks=self.ticks, active_slots=self.active_slots, max_slots=self._max_slots
        )

    def tick(self) -> None:
        self.ticks += 1
        for slot in self.slots:
            if not slot.is_active:
                continue
            frame = slot.inputs.popleft() if slot.inputs else SILENCE
            pcm, text = self._script(slot.call_index, slot.frames, frame)
            slot.sink.on_tick(TickOutput(frame_index=slot.frames, pcm=pcm, text_token=0, text=text))
            slot.frames += 1


CHUNK_BYTES = 16 * 1024


@dataclass
class Upload:
    """What came back of ``upload``: the status, the lower-cased headers, the body bytes sent."""

    status: int
    headers: str
    body_bytes_sent: int


async def upload(
    base_url: str,
    path: str,
    headers: dict[str, str],
    *,
    content_length: int | None,
    total_bytes: int,
) -> Upload:
    """POST ``total_bytes`` over a raw socket (chunked when ``content_length`` is None), one
    16 KiB chunk at a time, and stop sending as soon as the response has come back: how much
    of the body was sent when the server answered shows whether it refused while streaming."""
    url = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    head = [f"POST {path} HTTP/1.1", f"Host: {url.netloc}"]
    head.extend(f"{name}: {value}" for name, value in headers.items())
    if content_length is None:
        head.append("Transfer-Encoding: chunked")
    else:
        head.append(f"Content-Length: {content_length}")
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
    await writer.drain()
    answer = asyncio.create_task(reader.readuntil(b"\r\n\r\n"))
    chunk = b"a=" + b"x" * (CHUNK_BYTES - 2)
    sent = 0
    try:
        while sent < total_bytes:
            # give the server time to answer before the first chunks: what matters is whether
            # it answers before the upload is over, not how fast (generous for a loaded CI)
            wait_s = 1.0 if sent == 0 else 0.05 if sent < 8 * CHUNK_BYTES else 0.0
            done, _ = await asyncio.wait({answer}, timeout=wait_s)
            if done:
                break
            try:
                if content_length is None:
                    writer.write(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                else:
                    writer.write(chunk)
                await writer.drain()
            except ConnectionError:
                break  # the server closed on us: its answer is in
            sent += len(chunk)
        response = await asyncio.wait_for(answer, 30)
    finally:
        answer.cancel()
        writer.close()
    status_line, _, headers = response.decode("latin-1").partition("\r\n")
    return Upload(int(status_line.split()[1]), headers.lower(), sent)


class Operator:
    """An operator's call-start webhook endpoint (a real HTTP server on a free local port):
    checks the signature with ``secret``, answers per call_id (status, JSON body, delay)."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.requests: list[dict[str, Any]] = []
        self.answers: dict[str, tuple[int, bytes, float]] = {}  # call_id -> status, body, delay
        self.default: tuple[int, bytes, float] | None = None  # for calls not in ``answers``
        self.bad_signatures = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if not verify(body, self.headers.get(SIGNATURE_HEADER, ""), secret):
                    outer.bad_signatures += 1
                document = json.loads(body)
                outer.requests.append(document)
                fallback = outer.default or (204, b"", 0.0)
                status, answer, delay = outer.answers.get(document["call_id"], fallback)
                time.sleep(delay)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/call-start"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, call_id: str, doc: object, status: int = 200, delay_s: float = 0.0) -> None:
        self.answers[call_id] = (status, json.dumps(doc).encode(), delay_s)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
