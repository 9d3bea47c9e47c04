"""``VoiceGateS2SService``: a pipecat speech-to-speech processor whose call is an engine slot.

Place it between a transport's input and output (``Pipeline([transport.input(), service,
transport.output()])``). Each pipeline's call is a ``voicegate.calls.Call`` admitted by the
``SharedEngine`` (one engine for every pipeline of the process); this processor is the Call's leg:

* ``InputAudioRawFrame`` -> ``Call.feed_caller_audio`` (at the pipeline's output rate: a frame of
  another rate goes through VoiceGate's ``StreamingResampler`` first, never soxr, whose block
  buffering adds 12-150 ms of bursty delay); ``InputDTMFFrame`` -> ``Call.on_dtmf``.
* every 20 ms of a monotonic clock the agent's audio is pulled from the Call and pushed as an
  ``OutputAudioRawFrame`` (silence is not pushed), and the agent's words, as they are played, as
  ``TTSTextFrame`` s (``text_type`` ``word``, spaces included).
* a barge-in (the Call's caller voice activity over the agent) broadcasts pipecat's
  ``InterruptionFrame`` both ways: the output transport drops the audio it holds.
* the call flow's hang-up (or a limit, an engine fault) pushes ``EndWorkerFrame``; a transfer
  pushes a ``VoiceGateTransferFrame`` downstream and, once ``on_transfer`` (if given) accepts it,
  ends the pipeline the same way. ``EndFrame``/``CancelFrame`` end the call (caller hang-up).

The agent's audio is pushed at real time, not ahead: what an interruption drops is at most one
20 ms frame plus whatever the output transport buffers.

Owns: ``VoiceGateS2SService``, ``VoiceGateTransferFrame``. Imports pipecat (the extra).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pipecat.frames.frames import (
    CancelFrame,
    ControlFrame,
    EndFrame,
    EndWorkerFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    OutputAudioRawFrame,
    StartFrame,
    TTSTextFrame,
)
from pipecat.processors.frame_processor import (
    FrameDirection,
    FrameProcessor,
    FrameProcessorSetup,
)

from voicegate.audio import StreamingResampler
from voicegate.contracts import CallLike, EndReason, TransferOutcome, TransferTarget
from voicegate.errors import ConfigError, VoiceGateError
from voicegate.personas.schema import Persona
from voicegate.pipecat.engine import SharedEngine

__all__ = ["VoiceGateS2SService", "VoiceGateTransferFrame"]

log = logging.getLogger("voicegate.pipecat")

FRAME_MS = 20
LEG_RATES_HZ = (8000, 16000, 24000, 48000)
MAX_LAG_S = 0.2  # a loop stall longer than this restarts the output clock instead of bursting
WORD = "word"

TransferHandler = Callable[[TransferTarget], Awaitable[bool]]


@dataclass
class VoiceGateTransferFrame(ControlFrame):
    """The persona's call flow hands the caller to a person: ``to`` is an E.164 number or a
    SIP URI (``destination`` its name in the persona). The application executes it (a carrier
    REST call, a SIP REFER); the pipeline then ends."""

    destination: str = ""
    to: str = ""
    handoff_id: str = ""


class VoiceGateS2SService(FrameProcessor):
    """A VoiceGate persona on a slot of the process-wide engine, as a pipecat processor.

    ``persona``: a name in the ``SharedEngine``'s personas folder, or a ``Persona``.
    ``on_transfer``: awaited with the target when the call flow transfers; True when the
    application handed the caller on (the pipeline then ends), False to keep the call.
    """

    def __init__(
        self,
        shared: SharedEngine,
        *,
        persona: str | Persona,
        call_id: str = "",
        from_: str = "",
        to: str = "",
        on_transfer: TransferHandler | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._shared = shared
        self._persona = persona
        self._persona_key = ""
        self._call_id = call_id
        self._from = from_
        self._to = to
        self._on_transfer = on_transfer
        self._rate_hz = 0
        self._frame_samples = 0
        self._call: CallLike | None = None
        self._in_resamplers: dict[int, StreamingResampler] = {}
        self._texts: list[str] = []
        self._is_interrupt_pending = False
        self._end_reason: EndReason | None = None
        self._transfer: TransferTarget | None = None
        self._play_task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self.frames_out = 0
        self.interruptions = 0
        self.clock_resets = 0

    # -- LegTransport / LegControl (called by the Call, on the event loop) --------------------

    @property
    def rate_hz(self) -> int:
        return self._rate_hz

    @property
    def call(self) -> CallLike | None:
        """The Call once the pipeline started (``voicegate.calls.Call``)."""
        return self._call

    def clear_playout(self) -> None:
        self._is_interrupt_pending = True
        self._poke()

    def request_hangup(self, reason: EndReason) -> None:
        if self._end_reason is None:
            self._end_reason = reason
            self._poke()

    def transfer(self, target: TransferTarget) -> None:
        self._transfer = target
        self._poke()

    def on_agent_text(self, t_ms: int, text: str) -> None:
        self._texts.append(text)

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    # -- pipecat --------------------------------------------------------------------------------

    async def setup(self, setup: FrameProcessorSetup | Any) -> None:
        """Start the shared engine (first pipeline only) and load the persona: slow start-up
        work belongs here, run alongside the other processors' set-up."""
        await super().setup(setup)
        rate = int(setup.audio_out_sample_rate)
        if rate not in LEG_RATES_HZ:
            raise ConfigError(
                f"pipecat: audio_out_sample_rate must be one of {LEG_RATES_HZ}, got {rate}"
            )
        self._rate_hz = rate
        self._frame_samples = rate * FRAME_MS // 1000
        await self._shared.start()
        self._persona_key = await self._shared.persona(self._persona)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            self._feed(frame)
            if self._is_interrupt_pending:
                await self._interrupt()
        elif isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            await self._start_call()
        elif isinstance(frame, InputDTMFFrame):
            if self._call is not None:
                self._call.on_dtmf(str(frame.button.value))
        elif isinstance(frame, (EndFrame, CancelFrame)):
            await self._stop()
            await self.push_frame(frame, direction)
        else:
            await self.push_frame(frame, direction)

    async def cleanup(self) -> None:
        await self._stop()
        await super().cleanup()

    async def _start_call(self) -> None:
        if not self._persona_key:
            return  # set-up failed and said why (pipecat then applies its unusable policy)
        try:
            self._call = self._shared.start_call(
                self, self._persona_key, call_id=self._call_id, from_=self._from, to=self._to
            )
        except VoiceGateError as exc:  # NoFreeSlot, an unknown persona
            await self.push_error(f"VoiceGate: the call could not start: {exc}", exception=exc)
            await self.push_frame(EndWorkerFrame(reason=f"voicegate: {exc}"))
            return
        self._wake = asyncio.Event()
        self._play_task = self.create_task(self._play(), name="voicegate-playout")

    async def _stop(self) -> None:
        call = self._call
        if call is not None:
            call.on_leg_closed(EndReason.CALLER_HANGUP)  # idempotent; no-op once ended
        task, self._play_task = self._play_task, None
        if task is not None:
            await self.cancel_task(task)

    def _feed(self, frame: InputAudioRawFrame) -> None:
        call = self._call
        if call is None:
            return
        pcm: npt.NDArray[np.int16] = np.frombuffer(frame.audio, dtype=np.int16)
        if frame.num_channels > 1:
            pcm = pcm.reshape(-1, frame.num_channels).mean(axis=1).astype(np.int16)
        if frame.sample_rate != self._rate_hz:
            rs = self._in_resamplers.get(frame.sample_rate)
            if rs is None:
                rs = self._in_resamplers[frame.sample_rate] = StreamingResampler(
                    frame.sample_rate, self._rate_hz
                )
            y = rs.process(pcm)
            pcm = np.clip(y * 32768.0, -32768, 32767).astype(np.int16)
        call.feed_caller_audio(pcm)

    async def _interrupt(self) -> None:
        self._is_interrupt_pending = False
        self.interruptions += 1
        await self.broadcast_interruption()

    async def _play(self) -> None:
        """The agent's side: every 20 ms pull from the Call, push audio and words."""
        call = self._call
        wake = self._wake
        assert call is not None and wake is not None
        clock = time.monotonic
        frame_s = FRAME_MS / 1000
        n = self._frame_samples
        rate = self._rate_hz
        start = clock()
        k = 0
        while True:
            k += 1
            wait = start + k * frame_s - clock()
            if wait > 0:
                wake.clear()
                try:
                    await asyncio.wait_for(wake.wait(), wait)
                except TimeoutError:
                    pass
            elif wait < -MAX_LAG_S:
                self.clock_resets += 1
                start = clock() - k * frame_s
            if self._is_interrupt_pending:
                await self._interrupt()
            if self._transfer is not None:
                await self._hand_off(self._transfer)
            if self._end_reason is not None:
                await self.push_frame(EndWorkerFrame(reason=self._end_reason.value))
                return
            if clock() < start + k * frame_s:
                k -= 1  # woken early for an interruption or a transfer: this frame is not due
                continue
            pcm = call.pull_agent_audio(n)
            if pcm.any():
                self.frames_out += 1
                await self.push_frame(OutputAudioRawFrame(pcm.tobytes(), rate, 1))
            if self._texts:
                texts, self._texts = self._texts, []
                for text in texts:
                    frame = TTSTextFrame(text, WORD)
                    frame.includes_inter_frame_spaces = True
                    await self.push_frame(frame)

    async def _hand_off(self, target: TransferTarget) -> None:
        call = self._call
        assert call is not None
        self._transfer = None
        await self.push_frame(
            VoiceGateTransferFrame(
                destination=target.destination, to=target.to, handoff_id=target.handoff_id
            )
        )
        if self._on_transfer is None:
            is_handed_off, detail = True, "VoiceGateTransferFrame pushed; the pipeline ends"
        else:
            try:
                is_handed_off = await self._on_transfer(target)
                detail = "on_transfer accepted" if is_handed_off else "on_transfer declined"
            except Exception as exc:
                log.exception("pipecat call %s: on_transfer failed", self._call_id)
                is_handed_off, detail = False, f"on_transfer failed: {exc!r}"
        outcome = TransferOutcome.HANDED_OFF if is_handed_off else TransferOutcome.FAILED
        call.on_transfer_result(target, outcome, detail)
        if is_handed_off and self._end_reason is None:
            self._end_reason = EndReason.TRANSFERRED
