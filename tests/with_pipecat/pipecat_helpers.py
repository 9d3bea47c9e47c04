"""A real pipecat pipeline around ``VoiceGateS2SService`` for the tests: frames in at real time
from the pipeline worker's source, every frame that reaches either end recorded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pipecat.frames.frames import EndFrame, Frame, InputAudioRawFrame, StartFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from voicegate.pipecat import VoiceGateS2SService

FRAME_S = 0.02
RUN_TIMEOUT_S = 60.0


class Recorder(FrameProcessor):
    """Records every frame that passes in ``direction`` (and passes it on)."""

    def __init__(self, direction: FrameDirection) -> None:
        super().__init__()
        self._direction = direction
        self.frames: list[Frame] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == self._direction and not isinstance(frame, StartFrame):
            self.frames.append(frame)
        await self.push_frame(frame, direction)

    def of(self, kind: type) -> list[Frame]:
        return [f for f in self.frames if isinstance(f, kind)]


@dataclass
class Run:
    """One pipeline: ``[upstream recorder, service, downstream recorder]``."""

    service: VoiceGateS2SService
    up: Recorder = field(default_factory=lambda: Recorder(FrameDirection.UPSTREAM))
    down: Recorder = field(default_factory=lambda: Recorder(FrameDirection.DOWNSTREAM))
    slots_seen: set[int] = field(default_factory=set)

    def worker(self, out_rate_hz: int = 24000) -> PipelineWorker:
        return PipelineWorker(
            Pipeline([self.up, self.service, self.down]),
            params=PipelineParams(audio_in_sample_rate=8000, audio_out_sample_rate=out_rate_hz),
            cancel_on_idle_timeout=False,
            enable_rtvi=False,
        )


def frames_of(pcm: np.ndarray, rate_hz: int = 8000) -> list[InputAudioRawFrame]:
    """20 ms ``InputAudioRawFrame`` s of ``pcm`` (int16 mono)."""
    n = rate_hz // 50
    return [InputAudioRawFrame(pcm[i : i + n].tobytes(), rate_hz, 1) for i in range(0, len(pcm), n)]


async def run_pipelines(
    runs: Sequence[Run], scripts: Sequence[Sequence[Frame]], *, end: bool = True
) -> None:
    """Run each ``Run``'s pipeline with its script fed at real time (audio frames 20 ms apart,
    other frames at once), then ``EndFrame`` (unless the pipeline ended itself first)."""
    runner = WorkerRunner(handle_sigint=False)
    workers = [run.worker() for run in runs]
    started = [asyncio.Event() for _ in runs]
    for worker, event in zip(workers, started, strict=True):

        async def on_started(_worker: object, _frame: object, event: asyncio.Event = event) -> None:
            event.set()

        worker.add_event_handler("on_pipeline_started", on_started)
    await runner.add_workers(*workers)

    async def feed(
        run: Run, worker: PipelineWorker, event: asyncio.Event, script: Sequence[Frame]
    ) -> None:
        await event.wait()
        t0 = time.monotonic()
        k = 0
        for frame in script:
            if worker.has_finished():
                return
            await worker.queue_frame(frame)
            call = run.service.call
            slot = getattr(call, "slot", None)
            if slot is not None:
                run.slots_seen.add(slot.index)
            if isinstance(frame, InputAudioRawFrame):
                k += 1
                wait = t0 + k * FRAME_S - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
        if end and not worker.has_finished():
            await worker.queue_frame(EndFrame())

    feeders = [
        feed(run, worker, event, script)
        for run, worker, event, script in zip(runs, workers, started, scripts, strict=True)
    ]
    await asyncio.wait_for(asyncio.gather(runner.run(), *feeders), RUN_TIMEOUT_S)
