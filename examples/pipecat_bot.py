"""A pipecat voice bot whose agent is a VoiceGate persona on a shared batched engine.

Every WebSocket client gets its own pipecat pipeline ``[transport.input(), VoiceGateS2SService,
transport.output()]`` over pipecat's FastAPI WebSocket transport (protobuf frames: pipecat's web
and Python clients speak them); all pipelines are slots of one ``SharedEngine`` in this process.

    pip install 'voicegate[pipecat]'
    python examples/pipecat_bot.py --engine tiny --persona support_agent          # CPU, no weights
    python examples/pipecat_bot.py --engine personaplex --model-dir /models/personaplex \\
        --device cuda --events-url redis://localhost:6379/0                        # a GPU host

Then connect a pipecat client to ``ws://HOST:8765/ws`` (``?persona=NAME`` picks another persona
from the folder). Send 16 kHz mono audio; the agent's audio comes back at 24 kHz.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, WebSocket
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.serializers.protobuf import ProtobufFrameSerializer
from pipecat.transports.websocket.fastapi import (
    FastAPIWebsocketParams,
    FastAPIWebsocketTransport,
)
from pipecat.workers.runner import WorkerRunner

from voicegate.pipecat import SharedEngine, VoiceGateS2SService

REPO = Path(__file__).resolve().parents[1]
IN_RATE_HZ = 16_000
OUT_RATE_HZ = 24_000


def create_app(shared: SharedEngine, persona: str) -> FastAPI:
    """The bot's FastAPI app: ``WS /ws`` runs one pipeline per connection."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await shared.start()  # the engine is built and warmed once, before the first caller
        yield
        await shared.aclose()

    app = FastAPI(lifespan=lifespan)

    @app.websocket("/ws")
    async def bot(websocket: WebSocket) -> None:
        await websocket.accept()
        transport = FastAPIWebsocketTransport(
            websocket,
            FastAPIWebsocketParams(
                audio_in_enabled=True,
                audio_out_enabled=True,
                add_wav_header=False,
                serializer=ProtobufFrameSerializer(),
            ),
        )
        agent = VoiceGateS2SService(shared, persona=websocket.query_params.get("persona", persona))
        worker = PipelineWorker(
            Pipeline([transport.input(), agent, transport.output()]),
            params=PipelineParams(
                audio_in_sample_rate=IN_RATE_HZ, audio_out_sample_rate=OUT_RATE_HZ
            ),
            enable_rtvi=False,
        )

        async def on_client_disconnected(_transport: object, _client: object) -> None:
            await worker.cancel()

        transport.add_event_handler("on_client_disconnected", on_client_disconnected)

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        await runner.run()

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", default="tiny", choices=["tiny", "echo", "personaplex"])
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--personas-dir", type=Path, default=REPO / "personas")
    parser.add_argument("--persona", default="support_agent")
    parser.add_argument("--max-calls", type=int, default=8)
    parser.add_argument("--events-url", default="", help="Redis URL for the calls' events")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    shared = SharedEngine(
        args.engine,
        personas_dir=args.personas_dir,
        events_url=args.events_url,
        max_calls=args.max_calls,
        model_dir=args.model_dir,
        device=args.device,
    )
    uvicorn.run(create_app(shared, args.persona), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
