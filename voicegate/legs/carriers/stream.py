"""One carrier media stream (Telnyx, Plivo, Exotel, Vonage) on the gateway side: the socket's single owner and
the Call's leg.

``CarrierMediaStream.run()`` accepts the WebSocket, refuses it (1008) when the upgrade is not
authenticated, waits for the carrier's ``start``, routes the called number to a persona
(numbers.yaml), starts the Call (1013 when no slot is free) and then, in one task, reads: media
-> the carrier's pipecat serializer (at the carrier's own rate both ways: no resampling in
pipecat) -> mu-law/A-law decode (L16 for Exotel, Vonage) -> ``Call.feed_caller_audio``; DTMF -> ``Call.on_dtmf``; ``stop`` or a closed socket ->
``Call.on_leg_closed``. A child task sends the agent's audio: every ``send_ms`` of a monotonic
clock (deadlines ``t0 + k * send_ms``, no drift) that much is pulled from the Call and, unless it
is silence, serialized and sent. Audio goes out at real time, never ahead, so a barge-in's
``clear`` (the serializer's ``InterruptionFrame``) leaves at most one block at the carrier.

Owns: ``CarrierMediaStream``, ``CarrierStats``. Imports audio, the contracts and pipecat's frames
(through the serializer); never the engine or the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from pipecat.frames.frames import InputAudioRawFrame, InputDTMFFrame, InterruptionFrame
from pipecat.frames.frames import OutputAudioRawFrame as _Out
from starlette.websockets import WebSocket, WebSocketDisconnect

from voicegate.contracts import (
    CallAdmission,
    CallInfo,
    CallLike,
    EndReason,
    PersonaRouter,
    TransferOutcome,
    TransferTarget,
)
from voicegate.errors import NoFreeSlot, VoiceGateError
from voicegate.legs.carriers.control import CarrierControl
from voicegate.legs.carriers.protocols import (
    RATE_HZ,
    CarrierProtocol,
    CarrierProtocolError,
    StreamStart,
    parse_message,
)
from voicegate.legs.websocket import close_quietly, frame_of, resolve

__all__ = ["CarrierMediaStream", "CarrierStats"]

log = logging.getLogger("voicegate.legs.carriers")

FRAME_MS = 20
DEFAULT_SEND_MS = 40  # as the Twilio leg: half the messages of 20 ms for 20 ms more wait
SEND_MS_CHOICES = (20, 40, 60, 80)
CLOSE_NORMAL = 1000
CLOSE_POLICY_VIOLATION = 1008
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TRY_AGAIN_LATER = 1013
START_TIMEOUT_S = 10.0
MAX_CATCH_UP_BLOCKS = 3  # after a longer loop stall, skip ahead instead of bursting
LOGGED_ERRORS_PER_CALL = 5
MAX_MALFORMED_PER_CALL = 1000
_UNSAFE_ID = re.compile(r"[^A-Za-z0-9._:@+-]")


@dataclass(slots=True)
class CarrierStats:
    """Plain-int counters of one carrier's leg (published at scrape time)."""

    streams_started: int = 0
    streams_active: int = 0
    streams_refused_auth: int = 0
    streams_refused_busy: int = 0
    streams_refused_start: int = 0
    media_in: int = 0
    media_out: int = 0
    dtmf: int = 0
    clears: int = 0
    malformed_messages: int = 0
    late_ticks: int = 0
    skipped_blocks: int = 0
    transfers: int = 0
    hangups: int = 0  # through the carrier's REST API


class CarrierMediaStream:
    """The leg of one carrier call. Create per WebSocket, then ``await run(problem)``."""

    def __init__(
        self,
        ws: WebSocket,
        protocol: CarrierProtocol,
        *,
        calls: CallAdmission,
        router: PersonaRouter,
        stats: CarrierStats,
        query: Mapping[str, str] | None = None,
        send_ms: int = DEFAULT_SEND_MS,
        start_timeout_s: float = START_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
        control: CarrierControl | None = None,
    ) -> None:
        if send_ms not in SEND_MS_CHOICES:
            raise ValueError(f"{protocol.name}: send_ms must be one of {SEND_MS_CHOICES}")
        self._ws = ws
        self._protocol = protocol
        self._calls = calls
        self._router = router
        self._stats = stats
        self._query = dict(query or {})
        self._send_ms = send_ms
        self._block_s = send_ms / 1000
        self._rate_hz = RATE_HZ  # the carrier's start may say otherwise (Vonage: 16 kHz)
        self._start_timeout_s = start_timeout_s
        self._clock = clock
        self._call: CallLike | None = None
        self._serializer: Any = None
        self._call_id = ""
        self._wake: asyncio.Future[None] | None = None
        self._is_clear_requested = False
        self._hangup_reason: EndReason | None = None
        self._is_leg_closed = False
        self._malformed = 0
        self._control = control
        self._start: StreamStart | None = None
        self._handoff: TransferTarget | None = None

    # -- LegTransport (called by the Call, on the event loop) ---------------------------------

    @property
    def rate_hz(self) -> int:
        return self._rate_hz

    @property
    def call_id(self) -> str:
        return self._call_id

    def clear_playout(self) -> None:
        self._is_clear_requested = True
        self._wakeup()

    def request_hangup(self, reason: EndReason) -> None:
        if self._hangup_reason is None:
            self._hangup_reason = reason
            self._wakeup()

    def transfer(self, target: TransferTarget) -> None:
        """``LegControl``: hand the caller to ``target.to`` through the carrier's REST API
        (non-blocking); ``unsupported`` without call control for this carrier."""
        call = self._call
        if call is None:
            return
        name = self._protocol.name
        if self._control is None:
            detail = f"the {name} leg has no call control configured (a REST API key)"
            call.on_transfer_result(target, TransferOutcome.UNSUPPORTED, detail)
            return
        if self._handoff is not None or self._hangup_reason is not None:
            call.on_transfer_result(target, TransferOutcome.FAILED, "the stream is ending")
            return
        self._handoff = target
        self._wakeup()

    def _wakeup(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    # -- the owner task ------------------------------------------------------------------------

    async def run(self, auth_problem: str | None) -> None:
        """Own the socket until the call ends; never raises for a peer's misbehaviour."""
        name = self._protocol.name
        await self._ws.accept()
        if auth_problem is not None:
            self._stats.streams_refused_auth += 1
            log.warning("%s stream refused (close 1008): %s", name, auth_problem)
            await self._close(CLOSE_POLICY_VIOLATION, "not authenticated")
            return
        try:
            start = await asyncio.wait_for(self._await_start(), self._start_timeout_s)
        except TimeoutError:
            self._stats.streams_refused_start += 1
            log.warning("%s stream refused: no start within %.0f s", name, self._start_timeout_s)
            await self._close(CLOSE_POLICY_VIOLATION, "no start message")
            return
        except CarrierProtocolError as exc:
            self._stats.streams_refused_start += 1
            log.warning("%s stream refused (close 1008): %s", name, exc)
            await self._close(CLOSE_POLICY_VIOLATION, "bad start message")
            return
        if start is None:
            return
        code = await self._admit(start)
        if code is not None:
            await self._close(*code)
            return
        stats = self._stats
        stats.streams_started += 1
        stats.streams_active += 1
        try:
            await self._serve()
        except WebSocketDisconnect:
            self._leg_closed(EndReason.CALLER_HANGUP)
        except Exception:
            log.exception("%s call %s failed", name, self._call_id)
            self._leg_closed(EndReason.ERROR)
            await self._close(CLOSE_INTERNAL_ERROR, "internal error")
        finally:
            stats.streams_active -= 1
            self._leg_closed(EndReason.CALLER_HANGUP)

    async def _await_start(self) -> StreamStart | None:
        protocol = self._protocol
        while True:
            message = await self._ws.receive()
            if message["type"] == "websocket.disconnect":
                return None
            if message.get("bytes") is not None:
                continue  # audio before the start: nothing to feed yet
            event = parse_message(frame_of(message, CarrierProtocolError), protocol.name)
            if event["event"] == protocol.start_event:
                return protocol.parse_start(event)
            if event["event"] in protocol.stop_events:
                return None

    async def _admit(self, start: StreamStart) -> tuple[int, str] | None:
        """Route and start the Call; the close code and reason when refused."""
        name = self._protocol.name
        to = start.to or self._query.get("to", "")
        from_ = start.from_ or self._query.get("from", "")
        persona = self._router.route(to)
        self._call_id = call_id = f"{name}-{_UNSAFE_ID.sub('_', start.call_ref)[:100]}"
        self._rate_hz = start.rate_hz
        self._start = start
        serializer = self._protocol.make_serializer(start)
        # the pipeline rate is the carrier's own: pipecat resamples nothing
        await serializer.setup(types.SimpleNamespace(audio_in_sample_rate=start.rate_hz))
        self._serializer = serializer
        info = CallInfo(call_id, name, persona, from_=from_, to=to, leg_call_ref=start.call_ref)
        try:
            self._call = self._calls.start_call(info, self)
        except NoFreeSlot as exc:
            self._stats.streams_refused_busy += 1
            log.warning("%s call %s refused at stream start: %s", name, call_id, exc)
            return (CLOSE_TRY_AGAIN_LATER, "no free slot")
        except VoiceGateError as exc:
            log.error("%s call %s could not start: %s", name, call_id, exc)
            return (CLOSE_INTERNAL_ERROR, "call could not start")
        log.info(
            "%s call %s started: stream %s persona %s to %s",
            name,
            call_id,
            start.stream_id,
            persona,
            to or "?",
        )
        return None

    async def _serve(self) -> None:
        writer = asyncio.get_running_loop().create_task(
            self._write_loop(), name=f"{self._protocol.name}-out-{self._call_id}"
        )
        try:
            while True:
                message = await self._ws.receive()
                if message["type"] == "websocket.disconnect":
                    self._leg_closed(EndReason.CALLER_HANGUP)
                    return
                if not await self._on_message(message) or writer.done():
                    return
        finally:
            if not writer.done():
                writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
                await writer

    async def _on_message(self, message: Mapping[str, Any]) -> bool:
        """One inbound message; False when the stream is over."""
        call = self._call
        assert call is not None
        stats = self._stats
        try:
            data = frame_of(message, CarrierProtocolError)
            # the serializer parses media and DTMF itself: one JSON parse per media message
            frame = await self._serializer.deserialize(data)
            if isinstance(frame, InputAudioRawFrame):
                stats.media_in += 1
                call.feed_caller_audio(np.frombuffer(frame.audio, dtype=np.int16))
                return True
            if isinstance(frame, InputDTMFFrame):
                stats.dtmf += 1
                call.on_dtmf(str(frame.button.value))
                return True
            event = parse_message(data, self._protocol.name)["event"]
            if event == "media":  # the serializer found no audio in it
                raise CarrierProtocolError(
                    f"{self._protocol.name}: media message without a base64 mu-law payload"
                )
        except (CarrierProtocolError, ValueError, TypeError) as exc:
            return self._on_malformed(exc)
        if event in self._protocol.stop_events:
            log.info("%s call %s: %s (caller hung up)", self._protocol.name, self._call_id, event)
            self._leg_closed(EndReason.CALLER_HANGUP)
            await self._close(CLOSE_NORMAL, "stopped")
            return False
        return True

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        clock = self._clock
        call = self._call
        assert call is not None
        block_s = self._block_s
        rate = self._rate_hz
        n = rate * self._send_ms // 1000
        max_ms = self._protocol.max_message_ms
        step = rate * max_ms // 1000 if max_ms else n  # samples per message
        stats = self._stats
        next_tick = clock() + block_s
        try:
            while True:
                wake = loop.create_future()
                self._wake = wake
                timer = loop.call_later(max(0.0, next_tick - clock()), resolve, wake)
                await wake
                timer.cancel()
                if self._handoff is not None and await self._hand_off(self._handoff):
                    return
                if self._hangup_reason is not None:
                    reason = self._hangup_reason
                    await self._hang_up(reason)
                    return
                if self._is_clear_requested:
                    self._is_clear_requested = False
                    clear = await self._serializer.serialize(InterruptionFrame())
                    if clear:
                        await self._ws.send_text(clear)
                        stats.clears += 1
                now = clock() + 0.001
                if now < next_tick:
                    continue
                behind = int((now - next_tick) / block_s)
                if behind >= MAX_CATCH_UP_BLOCKS:
                    for _ in range(behind):  # pulled, not sent: the playout clock stays real time
                        call.pull_agent_audio(n)
                    stats.skipped_blocks += behind
                    next_tick += behind * block_s
                elif behind:
                    stats.late_ticks += 1
                while next_tick <= now:
                    next_tick += block_s
                    pcm = call.pull_agent_audio(n)
                    if not pcm.any():
                        continue
                    for i in range(0, n, step):
                        data = await self._serializer.serialize(
                            _Out(pcm[i : i + step].tobytes(), rate, 1)
                        )
                        if isinstance(data, bytes):
                            await self._ws.send_bytes(data)
                        elif data:
                            await self._ws.send_text(data)
                        stats.media_out += 1
        except WebSocketDisconnect:
            self._leg_closed(EndReason.CALLER_HANGUP)
        except Exception:
            log.exception("%s call %s: sending failed", self._protocol.name, self._call_id)
            self._leg_closed(EndReason.ERROR)
            await self._close(CLOSE_INTERNAL_ERROR, "internal error")
        finally:
            self._wake = None

    async def _hand_off(self, target: TransferTarget) -> bool:
        """Ask the carrier to transfer; True when the call has left us (socket closed)."""
        self._handoff = None
        call, control, start = self._call, self._control, self._start
        assert call is not None and control is not None and start is not None
        name = self._protocol.name
        problem = await control.transfer(start.call_ref, target.to)
        if problem is not None:
            log.warning(
                "%s call %s: transfer to %s failed: %s", name, self._call_id, target.to, problem
            )
            call.on_transfer_result(target, TransferOutcome.FAILED, problem)
            return False
        self._stats.transfers += 1
        self._leg_closed(None)  # the Call ends itself as transferred, not as a hang-up
        await self._close(CLOSE_NORMAL, "transfer")
        log.info("%s call %s: transferred to %s", name, self._call_id, target.to)
        call.on_transfer_result(
            target, TransferOutcome.HANDED_OFF, f"{name} transfer to {target.to}"
        )
        return True

    async def _hang_up(self, reason: EndReason) -> None:
        """Our side ends the call: the carrier's REST hang-up where configured (closing the
        media socket alone leaves a Telnyx call up), then the socket."""
        control, start = self._control, self._start
        if control is not None and start is not None and reason is not EndReason.CALLER_HANGUP:
            problem = await control.hang_up(start.call_ref)
            if problem is not None:
                log.warning(
                    "%s call %s: hang-up failed: %s", self._protocol.name, self._call_id, problem
                )
            else:
                self._stats.hangups += 1
        await self._close(CLOSE_NORMAL, reason.value)
        self._leg_closed(reason)

    # -- endings and errors --------------------------------------------------------------------

    def _leg_closed(self, reason: EndReason | None) -> None:
        """Tell the Call once that the leg is gone (``None``: note it, tell nobody)."""
        if self._is_leg_closed or self._call is None:
            return
        self._is_leg_closed = True
        if reason is not None:
            self._call.on_leg_closed(reason)

    async def _close(self, code: int, reason: str) -> None:
        await close_quietly(self._ws, code, reason)

    def _on_malformed(self, exc: Exception) -> bool:
        self._malformed += 1
        self._stats.malformed_messages += 1
        if self._malformed <= LOGGED_ERRORS_PER_CALL:
            log.warning(
                "%s call %s: malformed message #%d: %s",
                self._protocol.name,
                self._call_id,
                self._malformed,
                exc,
            )
        if self._malformed > MAX_MALFORMED_PER_CALL:
            self._leg_closed(EndReason.ERROR)
            return False
        return True
