"""CPU per call of ``VoiceGateS2SService``: N pipecat pipelines in this process, one echo engine.

Each pipeline is ``[VoiceGateS2SService, sink]`` run by pipecat's ``PipelineWorker``; the
bundled caller speech goes in as 20 ms ``InputAudioRawFrame`` s at 16 kHz (resampled to the
24 kHz pipeline output rate by VoiceGate's resampler), the agent's audio comes out as 20 ms
``OutputAudioRawFrame`` s. After a ramp, the process CPU over ``--seconds`` (/proc) less the
idle engine's, per call, is the service's cost with pipecat's frame machinery: no transport,
no network. The echo engine makes it the edge's own cost (the model is the GPU's).

    python bench/pipecat_bench.py --calls 10 --seconds 6

Run on purpose, not in CI; numbers vary with the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

import numpy as np
from _gateway import cpu_seconds
from loguru import logger
from pipecat.frames.frames import EndFrame, Frame, InputAudioRawFrame, OutputAudioRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from voicegate.audio.samples import load_caller
from voicegate.pipecat import SharedEngine, VoiceGateS2SService

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IN_RATE_HZ = 16000


class Count(FrameProcessor):
    """Counts the agent's audio frames (and passes every frame on)."""

    def __init__(self) -> None:
        super().__init__()
        self.audio = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, OutputAudioRawFrame):
            self.audio += 1
        await self.push_frame(frame, direction)


def speech_16k(seconds: float, offset: int) -> np.ndarray:
    clip = load_caller(8000)
    clip16 = np.repeat(clip, 2)  # a plain 2x: good enough to keep the VAD busy on speech
    n = int(seconds * IN_RATE_HZ)
    return np.tile(clip16, n // len(clip16) + 2)[offset : offset + n]


async def run(calls: int, seconds: float) -> None:
    shared = SharedEngine("echo", personas_dir=os.path.join(REPO, "personas"), max_calls=calls)
    await shared.start()
    pid = os.getpid()
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(min(seconds, 3.0))
    idle = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0) * 100
    sinks = [Count() for _ in range(calls)]
    workers = [
        PipelineWorker(
            Pipeline([VoiceGateS2SService(shared, persona="support_agent"), sink]),
            params=PipelineParams(audio_in_sample_rate=IN_RATE_HZ, audio_out_sample_rate=24000),
            cancel_on_idle_timeout=False,
            enable_rtvi=False,
        )
        for sink in sinks
    ]
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(*workers)
    ramp_s = 1.5
    total_s = ramp_s + seconds + 0.5

    async def feed(worker: PipelineWorker, k: int) -> None:
        while shared.calls.active_count < calls:  # wait for every pipeline's call
            await asyncio.sleep(0.02)
        pcm = speech_16k(total_s, k * 12320)
        start = time.monotonic()
        for i, offset in enumerate(range(0, len(pcm), 320)):
            await worker.queue_frame(
                InputAudioRawFrame(pcm[offset : offset + 320].tobytes(), IN_RATE_HZ, 1)
            )
            wait = start + (i + 1) * 0.02 - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        await worker.queue_frame(EndFrame())

    async def measure() -> float:
        while shared.calls.active_count < calls:
            await asyncio.sleep(0.02)
        await asyncio.sleep(ramp_s)
        c0, s0 = cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(seconds)
        return (cpu_seconds(pid) - c0) / (time.monotonic() - s0) * 100

    measured = asyncio.create_task(measure())
    await asyncio.gather(runner.run(), measured, *(feed(w, k) for k, w in enumerate(workers)))
    load = measured.result()
    await shared.aclose()
    frames = sum(s.audio for s in sinks)
    print(
        f"echo engine, {calls} pipecat pipelines in one process, {seconds:.0f} s window; CPU in % of one core"
    )
    print(f"{'calls':>5} {'CPU':>6} {'idle':>5} {'/call':>6} {'agent frames':>13}")
    print(f"{calls:>5} {load:>6.1f} {idle:>5.1f} {(load - idle) / calls:>6.2f} {frames:>13}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    asyncio.run(run(args.calls, args.seconds))


if __name__ == "__main__":
    main()
