"""examples/pipecat_bot.py over real sockets: pipecat's FastAPI WebSocket transport served by
uvicorn, a client sending pipecat's protobuf audio frames, two clients sharing one engine."""

from __future__ import annotations

import asyncio
import importlib.util
import time
from pathlib import Path
from types import ModuleType

import numpy as np
from pipecat.frames.frames import InputAudioRawFrame, OutputAudioRawFrame
from pipecat.serializers.protobuf import ProtobufFrameSerializer
from websockets.asyncio.client import connect

from tests.legs.gateway import REPO
from voicegate.demo import ServerThread
from voicegate.pipecat import SharedEngine


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "pipecat_bot", REPO / "examples" / "pipecat_bot.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tone(seconds: float, rate_hz: int = 16000) -> np.ndarray:
    t = np.arange(int(rate_hz * seconds)) / rate_hz
    return (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)


async def talk(url: str, pcm: np.ndarray) -> list[InputAudioRawFrame]:
    """Send ``pcm`` (16 kHz) at real time as protobuf audio frames; what came back."""
    serializer = ProtobufFrameSerializer()
    heard: list[InputAudioRawFrame] = []
    async with connect(url, proxy=None) as ws:

        async def receive() -> None:
            async for message in ws:
                frame = await serializer.deserialize(message)
                if isinstance(frame, InputAudioRawFrame):
                    heard.append(frame)

        reader = asyncio.create_task(receive())
        t0 = time.monotonic()
        for k, i in enumerate(range(0, len(pcm), 320)):
            data = await serializer.serialize(
                OutputAudioRawFrame(pcm[i : i + 320].tobytes(), 16000, 1)
            )
            await ws.send(data)
            wait = t0 + (k + 1) * 0.02 - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        await asyncio.sleep(0.5)
        reader.cancel()
    return heard


async def test_two_clients_of_the_example_bot_hear_the_agent(tmp_path: Path) -> None:
    bot = load_example()
    shared = SharedEngine("echo", personas_dir=REPO / "personas", max_calls=2)
    server = ServerThread(bot.create_app(shared, "support_agent"))
    server.start()
    try:
        url = f"ws://127.0.0.1:{server.port}/ws"
        first, second = await asyncio.gather(
            talk(url, tone(1.5)), talk(url + "?persona=bank_teller", tone(1.5))
        )
        for heard in (first, second):
            assert heard and {(f.sample_rate, f.num_channels) for f in heard} == {(24000, 1)}
            pcm = np.frombuffer(b"".join(f.audio for f in heard), np.int16)
            assert np.abs(pcm.astype(np.int32)).max() > 2000  # the echo engine's copy of the tone
        assert shared.engine.max_slots == 2
    finally:
        server.stop()
