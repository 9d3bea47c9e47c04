"""One Twilio Media Stream on the gateway side: the socket's single owner and the Call's leg.

``TwilioMediaStream.run()`` owns the WebSocket from accept to close (STYLE rule 8: one task per
socket). It accepts, refuses with 1008 (policy violation) when the upgrade's signature or the
``start`` message's call token is bad, starts the Call, and then multiplexes in one loop:

* inbound: ``media`` -> mu-law decode -> ``Call.feed_caller_audio``; ``dtmf`` -> ``Call.on_dtmf``;
  ``mark`` -> playout accounting; ``stop`` or a dropped socket -> ``Call.on_leg_closed`` at once.
  A malformed message is logged (first few per call, then counted) and reported as an ``error``
  event; the call goes on.
* outbound: every ``send_ms`` (20-80 ms, a multiple of 20) of a monotonic clock (no drift:
  deadlines are ``t0 + k * send_ms``) that much audio is pulled from the Call, mu-law encoded
  and sent as one ``media`` followed by a ``mark``; frames are held back while Twilio may
  already have ``max_ahead_ms`` queued (marks not yet echoed), so an interruption never leaves
  more than that to hear. Twilio plays media payloads of any length in order; a 40 ms payload
  halves the messages and timer wake-ups per call against 20 ms (the event loop's per-message
  cost is most of the edge's CPU, see shared/reference/edge-profile.md) for at most 20 ms more
  wait before fresh audio is pulled. Sent at real time, each message reaches Twilio as its
  queue runs dry, so one that leaves late is a gap in the caller's audio; ``cushion_ms`` of
  silence sent ahead of a reply (whenever the queue is dry by this pacing) stays queued there
  for the rest of it and absorbs that much lateness, at that much more delay. ``cushion_ms=-1``
  (auto) sizes it at each reply from ``lateness()``, the event loop's recent worst lateness
  (``voicegate.looplag``): no delay while the loop keeps time, as much as it lately ran late
  when it does. The Call's playout clock does not count the cushion: its times run that much
  ahead of what Twilio plays.
* ``clear_playout()`` (the Call, at barge-in) drops held frames and sends ``clear``;
  ``request_hangup()`` closes the socket (Twilio then requests the ``<Connect action>``, which
  answers ``<Hangup/>``).
* ``transfer(target)`` (``LegControl``) and an agent hang-up: no more audio is pulled, the
  agent audio already sent is let play (its last mark's echo, waited for a bounded time: the
  close itself may drop Twilio's queue), the decision is recorded in ``NextSteps`` under the
  CallSid, and the socket is closed; the ``<Connect action>`` then dials or hangs up
  (``routes``). A transfer is reported ``HANDED_OFF`` once the socket is closed.
* a media watchdog (a timer, about once a second, never per frame): Twilio sends media every
  20 ms for the whole call, silence included, so a stream whose media stopped for
  ``media_timeout_s`` while its socket stays open is a frozen peer: the call ends
  ``media_timeout`` (the WebSocket ping would find it only ~35 s later, as a hang-up).

Owns: ``TwilioMediaStream``. Imports audio and the contracts; never the engine or the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from starlette.websockets import WebSocket, WebSocketDisconnect

from voicegate.audio import mulaw_decode, mulaw_encode
from voicegate.contracts import (
    CallAdmission,
    CallInfo,
    CallLike,
    EndReason,
    TransferOutcome,
    TransferTarget,
)
from voicegate.errors import (
    CallRefused,
    NoFreeSlot,
    TwilioError,
    TwilioProtocolError,
    VoiceGateError,
)
from voicegate.legs.twilio.metrics import TwilioLegStats
from voicegate.legs.twilio.nextsteps import DIAL, HANGUP, NextStep, NextSteps
from voicegate.legs.twilio.playout import DEFAULT_MAX_AHEAD_MS, PlayoutTracker
from voicegate.legs.twilio.protocol import (
    Connected,
    Dtmf,
    InboundEvent,
    Mark,
    Media,
    SequenceTracker,
    Start,
    Stop,
    UnknownEvent,
    encode_clear,
    encode_mark,
    encode_media,
    parse_event,
)
from voicegate.legs.twilio.security import CallGrant, CallTokens
from voicegate.legs.twilio.twiml import MAX_SIP_URI_CHARS
from voicegate.legs.websocket import close_quietly, frame_of, resolve

__all__ = [
    "CLOSE_POLICY_VIOLATION",
    "CLOSE_TRY_AGAIN_LATER",
    "ErrorReporter",
    "TwilioMediaStream",
]

log = logging.getLogger("voicegate.legs.twilio")

RATE_HZ = 8000
FRAME_MS = 20
FRAME_S = FRAME_MS / 1000
FRAME_SAMPLES = RATE_HZ * FRAME_MS // 1000
CLOSE_NORMAL = 1000
CLOSE_POLICY_VIOLATION = 1008  # RFC 6455 7.4.1
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TRY_AGAIN_LATER = 1013
START_TIMEOUT_S = 10.0
MAX_HELD_FRAMES = 10  # 200 ms: beyond this Twilio has stopped echoing marks; drop the oldest
DEFAULT_SEND_MS = 40
MAX_CUSHION_MS = 40  # with a 40 ms send, 80 of the 100 ms Twilio may hold
_SILENCE = b"\xff" * (MAX_CUSHION_MS * RATE_HZ // 1000)  # mu-law
SEND_MS_CHOICES = (20, 40, 60, 80)
TIMER_SLACK_S = 0.001
MAX_MESSAGES_WITHOUT_YIELD = 4
MAX_CATCH_UP_FRAMES = 5  # after a longer loop stall, skip ahead instead of bursting
LOGGED_ERRORS_PER_CALL = 5
MAX_MALFORMED_PER_CALL = 1000  # a peer this broken is not a phone call: hang up
MEDIA_TIMEOUT_S = 10.0
PLAYED_MARGIN_S = 1.0  # wait for the last mark's echo: the audio it follows plus this
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


class ErrorReporter(Protocol):
    """Reports a non-fatal call error as an ``error`` event (``code``, ``message``, call time)."""

    def __call__(
        self, call_id: str, t_ms: int, code: str, message: str, is_fatal: bool
    ) -> None: ...


class TwilioMediaStream:
    """The Twilio leg of one call. Create per WebSocket, then ``await run()``."""

    def __init__(
        self,
        ws: WebSocket,
        *,
        calls: CallAdmission,
        tokens: CallTokens,
        stats: TwilioLegStats,
        report_error: ErrorReporter | None = None,
        max_ahead_ms: int = DEFAULT_MAX_AHEAD_MS,
        send_ms: int = DEFAULT_SEND_MS,
        start_timeout_s: float = START_TIMEOUT_S,
        media_timeout_s: float = MEDIA_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
        next_steps: NextSteps | None = None,
        overflow: Callable[[str], str] | None = None,
        fetch_grant: Callable[[str], Awaitable[None]] | None = None,
        cushion_ms: int = 0,
        lateness: Callable[[], float] | None = None,
    ) -> None:
        if send_ms not in SEND_MS_CHOICES:
            raise ValueError(f"twilio: send_ms must be one of {SEND_MS_CHOICES}, got {send_ms}")
        if not -1 <= cushion_ms <= MAX_CUSHION_MS:
            raise ValueError(
                f"twilio: cushion_ms must be -1 (auto) or 0..{MAX_CUSHION_MS}, got {cushion_ms}"
            )
        self._ws = ws
        # silence sent ahead of a reply (when Twilio's queue is dry by our pacing): it stays
        # queued there for the rest of the reply, so a send that leaves up to that much late
        # still finds audio queued; mu-law 0xFF is silence. Auto: sized at each reply
        self._lateness = lateness if cushion_ms < 0 else None
        self._cushion = _SILENCE[: max(0, cushion_ms) * RATE_HZ // 1000]
        self._block_frames = send_ms // FRAME_MS
        self._block_s = send_ms / 1000
        self._calls = calls
        self._tokens = tokens
        self._stats = stats
        self._report_error = report_error
        self._start_timeout_s = start_timeout_s
        self._clock = clock
        self._playout = PlayoutTracker(max_ahead_ms)
        self._sequence = SequenceTracker()
        self._held: deque[npt.NDArray[np.int16]] = deque()
        self._call: CallLike | None = None
        self._grant: CallGrant | None = None
        self._stream_sid = ""
        self._t0 = 0.0
        self._wake: asyncio.Future[None] | None = None
        self._is_clear_requested = False
        self._hangup_reason: EndReason | None = None
        self._is_leg_closed = False
        self._malformed = 0
        self._pending_close = (CLOSE_POLICY_VIOLATION, "refused")
        self._next_steps = next_steps
        self._overflow = overflow
        self._fetch_grant = fetch_grant  # a fleet: a token another pod issued for this one
        self._handoff: tuple[TransferTarget, str] | None = None  # (target, fallback_say)
        self._is_waiting_played = False
        self._media_timeout_s = media_timeout_s  # 0: no watchdog
        self._media_in = 0  # this stream's media messages (the watchdog reads it)

    # -- LegTransport (called by the Call, on the event loop) --------------------------------

    @property
    def rate_hz(self) -> int:
        return RATE_HZ

    @property
    def queued_ms(self) -> int:
        """Agent audio sent and not yet confirmed played, plus frames held back here."""
        return int(self._playout.ahead_ms(self._clock() * 1000)) + len(self._held) * FRAME_MS

    @property
    def call_id(self) -> str:
        return self._grant.call_id if self._grant else ""

    def clear_playout(self) -> None:
        """Drop the agent audio queued at Twilio (sends ``clear`` from the owner task)."""
        self._is_clear_requested = True
        self._wakeup()

    def request_hangup(self, reason: EndReason) -> None:
        """Close the stream from our side; Twilio then hangs up. Idempotent."""
        if self._hangup_reason is None:
            self._hangup_reason = reason
            self._wakeup()

    def transfer(self, target: TransferTarget) -> None:
        """``LegControl``: end the stream so that the ``<Connect action>`` dials ``target``.

        Non-blocking; the outcome goes to ``Call.on_transfer_result`` once: ``HANDED_OFF`` when
        the socket is closed, ``FAILED`` at once when ``target`` cannot be dialled by Twilio.
        """
        call = self._call
        if call is None:
            return
        problem = _undialable(target.to)
        if problem is None and self._next_steps is None:
            problem = "the Twilio leg keeps no next steps (not wired)"
        if problem is None and (self._handoff is not None or self._hangup_reason is not None):
            problem = "the stream is already ending"
        if problem is not None:
            log.warning(
                "twilio call %s: transfer to %s refused: %s", self.call_id, target.to, problem
            )
            call.on_transfer_result(target, TransferOutcome.FAILED, problem)
            return
        fallback = getattr(call, "fallback_say", "")
        self._handoff = (target, fallback if isinstance(fallback, str) else "")
        self._wakeup()

    def _wakeup(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    # -- the owner task ----------------------------------------------------------------------

    async def run(self, signature_problem: str | None) -> None:
        """Own the socket until the call ends; never raises for a peer's misbehaviour."""
        ws = self._ws
        await ws.accept()
        if signature_problem is not None:
            self._stats.streams_refused_signature += 1
            log.warning(
                "twilio stream refused (close %d): %s", CLOSE_POLICY_VIOLATION, signature_problem
            )
            await self._close(CLOSE_POLICY_VIOLATION, "invalid signature")
            return
        try:
            start = await asyncio.wait_for(self._await_start(), self._start_timeout_s)
        except TimeoutError:
            log.warning(
                "twilio stream refused: no start message within %.0f s", self._start_timeout_s
            )
            await self._close(CLOSE_POLICY_VIOLATION, "no start message")
            return
        if start is None:
            return  # the peer closed or stopped before starting
        if self._fetch_grant is not None:
            await self._fetch_grant(start.custom_parameters.get("token") or "")
        if not await self._admit(start):
            await self._close(*self._pending_close)
            return
        self._stats.streams_started += 1
        self._stats.streams_active += 1
        try:
            await self._serve()
        except WebSocketDisconnect:
            self._leg_closed(EndReason.CALLER_HANGUP)  # the socket died while we were sending
        except Exception:
            log.exception("twilio stream %s (call %s) failed", self._stream_sid, self.call_id)
            self._leg_closed(EndReason.ERROR)
            await self._close(CLOSE_INTERNAL_ERROR, "internal error")
        finally:
            self._stats.streams_active -= 1
            self._leg_closed(EndReason.CALLER_HANGUP)  # no-op if already closed

    async def _await_start(self) -> Start | None:
        while True:
            message = await self._ws.receive()
            if message["type"] == "websocket.disconnect":
                return None
            try:
                event = parse_event(frame_of(message, TwilioProtocolError))
            except TwilioProtocolError as exc:
                self._on_malformed(exc)
                continue
            if isinstance(event, Start):
                return event
            if isinstance(event, Stop):
                await self._close(CLOSE_NORMAL, "stopped")
                return None
            if isinstance(event, Media):
                self._stats.media_before_start += 1

    async def _admit(self, start: Start) -> bool:
        """Redeem the call token and start the Call; closes the socket when refused."""
        self._stream_sid = start.stream_sid
        try:
            grant = self._tokens.consume(start.custom_parameters.get("token"), start.call_sid)
        except TwilioError as exc:
            self._stats.streams_refused_token += 1
            log.warning(
                "twilio stream %s refused (close %d): %s",
                start.stream_sid,
                CLOSE_POLICY_VIOLATION,
                exc,
            )
            self._schedule_close(CLOSE_POLICY_VIOLATION, "invalid call token")
            return False
        self._grant = grant
        info = CallInfo(
            call_id=grant.call_id,
            leg="twilio",
            persona=grant.persona,
            from_=grant.from_,
            to=grant.to,
            leg_call_ref=start.call_sid,
            # the <Parameter>s of the TwiML that started the stream, but our call token
            call_data={
                k: v for k, v in start.custom_parameters.items() if k not in ("token", "persona")
            },
        )
        try:
            prepare = getattr(self._calls, "prepare_call", None)  # the call-start webhook
            if prepare is not None:
                info = await prepare(info)
            self._call = self._calls.start_call(info, self)
        except CallRefused as exc:
            self._stats.streams_refused_busy += 1
            log.warning("twilio call %s refused at stream start: %s", grant.call_id, exc)
            self._schedule_close(CLOSE_TRY_AGAIN_LATER, "call refused")
            return False
        except NoFreeSlot as exc:
            self._stats.streams_refused_busy += 1
            overflow = self._overflow(grant.to) if self._overflow is not None else ""
            log.warning(
                "twilio call %s refused at stream start: %s%s",
                grant.call_id,
                exc,
                f"; the <Connect action> dials the overflow {overflow}" if overflow else "",
            )
            if overflow:
                self._stats.overflow_dials += 1
                self._record(
                    NextStep(
                        grant.call_id,
                        DIAL,
                        TransferTarget("overflow", overflow),
                        trigger="overflow",
                    )
                )
            self._schedule_close(CLOSE_TRY_AGAIN_LATER, "no free slot")
            return False
        except VoiceGateError as exc:
            log.error("twilio call %s could not start: %s", grant.call_id, exc)
            self._schedule_close(CLOSE_INTERNAL_ERROR, "call could not start")
            return False
        self._t0 = self._clock()
        log.info(
            "twilio call %s started: CallSid %s stream %s persona %s",
            grant.call_id,
            start.call_sid,
            start.stream_sid,
            grant.persona,
        )
        return True

    def _schedule_close(self, code: int, reason: str) -> None:
        self._pending_close = (code, reason)

    async def _serve(self) -> None:
        """Read in this (the owner) task; a child task paces and sends the agent's audio."""
        ws = self._ws
        clock = self._clock
        writer = asyncio.get_running_loop().create_task(
            self._write_loop(), name=f"twilio-out-{self.call_id}"
        )
        self._close_after: tuple[int, str] | None = None
        watchdog = _MediaWatchdog(self) if self._media_timeout_s > 0 else None
        unyielded = 0
        try:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    self._leg_closed(EndReason.CALLER_HANGUP)
                    return
                if not self._on_message(message, clock()) or writer.done():
                    return
                unyielded += 1
                if unyielded >= MAX_MESSAGES_WITHOUT_YIELD:
                    # receive() does not suspend while a backlog is queued: after a burst, let
                    # the other calls' 20 ms send ticks run instead of draining it in one go
                    unyielded = 0
                    await asyncio.sleep(0)
        finally:
            if watchdog is not None:
                watchdog.cancel()
            if not writer.done():
                writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
                await writer  # a writer failure was logged and ended the call there
            if self._close_after is not None:
                await self._close(*self._close_after)

    async def _write_loop(self) -> None:
        """Every 20 ms of the clock: one frame from the Call to Twilio; ``clear`` on request."""
        loop = asyncio.get_running_loop()
        clock = self._clock
        stats = self._stats
        block_s = self._block_s
        next_tick = self._t0 + block_s
        try:
            while True:
                wake = loop.create_future()
                self._wake = wake
                timer = loop.call_later(max(0.0, next_tick - clock()), resolve, wake)
                await wake
                timer.cancel()
                if self._handoff is not None:
                    await self._hand_off(*self._handoff)
                    return
                if self._hangup_reason is not None:
                    reason = self._hangup_reason
                    if reason is EndReason.AGENT_HANGUP:
                        await self._await_played()  # the goodbye
                        self._record(NextStep(self.call_id, HANGUP, trigger=reason.value))
                    await self._close(CLOSE_NORMAL, reason.value)
                    self._leg_closed(reason)
                    return
                if self._is_clear_requested:
                    await self._send_clear()
                # uvloop's timers have 1 ms granularity and may fire up to 1 ms early: a tick
                # that is due within the slack runs now instead of spinning on 0 ms timers
                now = clock() + TIMER_SLACK_S
                if self._held:
                    await self._flush_held(now)  # a mark echo made room
                if now >= next_tick:
                    behind = int((now - next_tick) / block_s)  # whole blocks
                    if behind * self._block_frames >= MAX_CATCH_UP_FRAMES:
                        # the loop stalled: drop those frames, but pull them, so that the Call's
                        # playout clock stays real time (not pulling would delay all later audio)
                        self._skip_frames(behind * self._block_frames)
                        next_tick += behind * block_s
                    elif behind:
                        stats.late_ticks += 1
                    while next_tick <= now:
                        await self._on_tick()
                        next_tick += block_s
        except WebSocketDisconnect:
            self._leg_closed(EndReason.CALLER_HANGUP)  # the socket died under a send
        except Exception:
            log.exception("twilio call %s: sending failed", self.call_id)
            self._leg_closed(EndReason.ERROR)
            await self._close(CLOSE_INTERNAL_ERROR, "internal error")
        finally:
            self._wake = None

    async def _hand_off(self, target: TransferTarget, fallback_say: str) -> None:
        """Let the audio sent play, record the dial, close the socket, report ``HANDED_OFF``."""
        call = self._call
        assert call is not None
        await self._await_played()
        self._record(
            NextStep(self.call_id, DIAL, target, fallback_say, trigger="transfer", t0=self._t0)
        )
        self._leg_closed(None)  # the Call ends itself as transferred, not as a hang-up
        self._stats.transfers += 1
        await self._close(CLOSE_NORMAL, "transfer")
        log.info(
            "twilio call %s: stream closed for the transfer to %s (%s)",
            self.call_id,
            target.destination,
            target.to,
        )
        call.on_transfer_result(
            target, TransferOutcome.HANDED_OFF, f"stream closed; <Connect action> dials {target.to}"
        )

    async def _await_played(self) -> None:
        """Stop sending and wait until Twilio echoes the last mark (the audio sent has
        played), for at most that audio's length plus ``PLAYED_MARGIN_S``."""
        self._held.clear()
        playout = self._playout
        if playout.pending_marks == 0:
            return
        loop = asyncio.get_running_loop()
        clock = self._clock
        deadline = clock() + playout.unconfirmed_ms / 1000 + PLAYED_MARGIN_S
        self._is_waiting_played = True
        try:
            while playout.pending_marks:
                left = deadline - clock()
                if left <= 0:
                    self._stats.played_wait_timeouts += 1
                    log.info(
                        "twilio call %s: no echo of the last mark within %.1f s; closing",
                        self.call_id,
                        playout.unconfirmed_ms / 1000 + PLAYED_MARGIN_S,
                    )
                    return
                wake = loop.create_future()
                self._wake = wake
                timer = loop.call_later(left, resolve, wake)
                await wake
                timer.cancel()
        finally:
            self._is_waiting_played = False

    def _record(self, step: NextStep) -> None:
        grant = self._grant
        if self._next_steps is not None and grant is not None and grant.call_sid:
            self._next_steps.put(grant.call_sid, step)

    def _on_message(self, message: Mapping[str, Any], arrived: float) -> bool:
        """Handle one inbound message; False when the stream is over."""
        call = self._call
        assert call is not None
        stats = self._stats
        try:
            event: InboundEvent = parse_event(frame_of(message, TwilioProtocolError))
        except TwilioProtocolError as exc:
            self._on_malformed(exc)
            if self._malformed > MAX_MALFORMED_PER_CALL:
                log.error(
                    "twilio call %s: %d malformed messages, hanging up",
                    self.call_id,
                    self._malformed,
                )
                self._leg_closed(EndReason.ERROR)
                self._close_after = (CLOSE_POLICY_VIOLATION, "too many malformed messages")
                return False
            return True
        self._sequence.note(event.sequence_number if not isinstance(event, Connected) else None)
        if isinstance(event, Media):
            payload = event.payload
            self._media_in += 1
            stats.media_in += 1
            stats.media_in_bytes += len(payload)
            if payload:
                call.feed_caller_audio(mulaw_decode(payload))
                stats.ingress_ms.observe((self._clock() - arrived) * 1000)
        elif isinstance(event, Mark):
            stats.marks_in += 1
            if not self._playout.on_mark(event.name, arrived * 1000):
                stats.marks_unknown += 1
            elif self._held or self._is_waiting_played:
                self._wakeup()  # room for the frames held back, or the last mark played
        elif isinstance(event, Dtmf):
            stats.dtmf += 1
            call.on_dtmf(event.digit)
        elif isinstance(event, Stop):
            log.info("twilio call %s: stop (caller hung up)", self.call_id)
            self._leg_closed(EndReason.CALLER_HANGUP)
            self._close_after = (CLOSE_NORMAL, "stopped")
            return False
        elif isinstance(event, UnknownEvent):
            stats.unknown_events += 1
        elif isinstance(event, Start):
            self._on_malformed(TwilioProtocolError(f"call {self.call_id}: a second start message"))
        return True

    async def _on_tick(self) -> None:
        """One ``send_ms`` step of the agent's playout clock: pull a block, send it or hold it."""
        call = self._call
        assert call is not None
        pulled = self._clock()
        frames = self._block_frames
        pcm = call.pull_agent_audio(FRAME_SAMPLES * frames)
        held = self._held
        if not held:
            if not pcm.any():
                return  # silence: Twilio plays silence when its queue is empty
            now_ms = pulled * 1000
            pad = self._onset_pad() if self._playout.paced_ahead_ms(now_ms) < 0.5 else b""
            if self._playout.room_ms(now_ms) >= FRAME_MS * frames + len(pad) * 1000 // RATE_HZ:
                payload = mulaw_encode(pcm)
                await self._send_audio(pad + payload if pad else payload, pulled)
                return
        for k in range(frames):  # held back frame by frame: sent as room allows
            if len(held) >= MAX_HELD_FRAMES:
                held.popleft()
                self._stats.held_frames_dropped += 1
            held.append(pcm[k * FRAME_SAMPLES : (k + 1) * FRAME_SAMPLES].copy())
        await self._flush_held(pulled)

    def _onset_pad(self) -> bytes:
        """The cushion ahead of a reply: fixed, or (auto) the loop's recent worst lateness."""
        lateness = self._lateness
        if lateness is None:
            return self._cushion
        ms = min(MAX_CUSHION_MS, math.ceil(lateness() * 1000))
        self._stats.cushion_ms.observe(ms)
        return _SILENCE[: ms * RATE_HZ // 1000]

    def _skip_frames(self, n: int) -> None:
        call = self._call
        assert call is not None
        self._stats.skipped_ticks += n
        for _ in range(n):
            call.pull_agent_audio(FRAME_SAMPLES)

    async def _flush_held(self, since: float) -> None:
        held = self._held
        n = min(len(held), int(max(0.0, self._playout.room_ms(self._clock() * 1000)) // FRAME_MS))
        if n == 0:
            return
        frames = [held.popleft() for _ in range(n)]
        pcm = frames[0] if n == 1 else np.concatenate(frames)
        await self._send_audio(mulaw_encode(pcm), since)

    async def _send_audio(self, payload: bytes, pulled: float) -> None:
        stats = self._stats
        duration_ms = len(payload) * 1000 // RATE_HZ
        await self._ws.send_text(encode_media(self._stream_sid, payload))
        stats.egress_ms.observe((self._clock() - pulled) * 1000)
        now_ms = self._clock() * 1000
        name = self._playout.on_sent(duration_ms, now_ms)
        stats.ahead_ms.observe(self._playout.ahead_ms(now_ms))
        await self._ws.send_text(encode_mark(self._stream_sid, name))
        stats.media_out += 1
        stats.media_out_bytes += len(payload)
        stats.marks_out += 1

    async def _send_clear(self) -> None:
        self._is_clear_requested = False
        held_ms = len(self._held) * FRAME_MS
        self._held.clear()
        now_ms = self._clock() * 1000
        if self._playout.sent_ms == 0:
            return  # nothing was ever sent on this stream
        # sent even when the estimate says Twilio's queue is empty: one small message, and it
        # makes the caller's side right if Twilio was playing behind what the marks told us
        cut_ms = int(self._playout.on_clear(now_ms))
        await self._ws.send_text(encode_clear(self._stream_sid))
        self._stats.clears += 1
        self._stats.cleared_ms += cut_ms + held_ms
        log.info(
            "twilio call %s: clear, cut %d ms queued at Twilio and %d ms held",
            self.call_id,
            cut_ms,
            held_ms,
        )

    # -- endings and errors ------------------------------------------------------------------

    def _leg_closed(self, reason: EndReason | None) -> None:
        """Tell the Call once that the leg is gone (``None``: count it, tell nobody)."""
        if self._is_leg_closed or self._call is None:
            return
        self._is_leg_closed = True
        stats = self._stats
        stats.sequence_missing += self._sequence.missing
        stats.sequence_reordered += self._sequence.reordered
        if reason is not None:
            self._call.on_leg_closed(reason)

    async def _close(self, code: int, reason: str) -> None:
        await close_quietly(self._ws, code, reason)

    def _on_malformed(self, exc: TwilioProtocolError) -> None:
        self._malformed += 1
        self._stats.malformed_messages += 1
        if self._malformed <= LOGGED_ERRORS_PER_CALL or self._malformed % 100 == 0:
            log.warning(
                "twilio call %s stream %s: malformed message #%d: %s",
                self.call_id or "?",
                self._stream_sid or "?",
                self._malformed,
                exc,
            )
            if self._report_error is not None and self._grant is not None:
                t_ms = max(0, int((self._clock() - self._t0) * 1000)) if self._t0 else 0
                self._report_error(
                    self._grant.call_id, t_ms, "malformed_message", str(exc)[:2000], False
                )


def _undialable(to: str) -> str | None:
    """Why Twilio's ``<Dial>`` cannot take ``to`` (None when it can)."""
    if _E164.match(to):
        return None
    if to.lower().startswith(("sip:", "sips:")) and "@" in to:
        if len(to) > MAX_SIP_URI_CHARS:
            return f"SIP URI of {len(to)} characters: Twilio's <Sip> takes under 255"
        return None
    return f"{to!r} is neither an E.164 number nor a SIP URI"


class _MediaWatchdog:
    """Ends the call when the stream's media stopped for ``media_timeout_s`` (socket open)."""

    def __init__(self, stream: TwilioMediaStream) -> None:
        self._stream = stream
        self._interval_s = min(1.0, stream._media_timeout_s / 4)
        self._seen = stream._media_in
        self._seen_at = stream._clock()
        self._timer = asyncio.get_running_loop().call_later(self._interval_s, self._check)

    def _check(self) -> None:
        stream = self._stream
        now = stream._clock()
        if stream._media_in != self._seen:
            self._seen, self._seen_at = stream._media_in, now
        elif now - self._seen_at >= stream._media_timeout_s:
            log.warning(
                "twilio call %s: no media for %.1f s with the socket open, hanging up",
                stream.call_id,
                now - self._seen_at,
            )
            stream.request_hangup(EndReason.MEDIA_TIMEOUT)
            return
        self._timer = asyncio.get_running_loop().call_later(self._interval_s, self._check)

    def cancel(self) -> None:
        self._timer.cancel()
