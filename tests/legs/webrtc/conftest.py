"""Real gateways (uvicorn in a thread, real Redis) for the WebRTC leg and page tests.

``gateway`` (module): the echo engine, 2 call places, loopback-only WebRTC, the repo's personas.
``make_gateway(**settings)`` builds another (a private personas copy, the tiny engine, ...).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from voicegate.app import create_app
from voicegate.config import Settings
from voicegate.demo import ServerThread
from voicegate.events import call_events_key

REPO = Path(__file__).resolve().parents[3]
WEBRTC_TOKEN = "test-webrtc-token-0123456789"
EDITOR_TOKEN = "test-editor-token-0123456789"


@dataclass
class Gateway:
    server: ServerThread
    app: Any
    redis_url: str
    personas_dir: Path

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def calls(self) -> Any:
        return self.app.state.parts.calls

    @property
    def webrtc(self) -> Any:
        return self.app.state.webrtc

    def on_loop(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the gateway's event loop and return its result."""
        loop = self.app.state.loop

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), loop).result(5)

    async def wait_idle(self, timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.calls.active_count or self.webrtc.sessions:
            assert time.monotonic() < deadline, (
                f"{self.calls.active_count} calls, {len(self.webrtc.sessions)} sessions still open"
            )
            await asyncio.sleep(0.02)

    async def events(
        self, call_id: str, until: str = "call.ended", timeout_s: float = 8.0
    ) -> list[dict[str, str]]:
        """The call's events from Redis, once one of type ``until`` is there."""
        client = Redis.from_url(self.redis_url, decode_responses=True)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                entries: Any = await client.xrange(call_events_key(call_id))
                fields = [dict(f) for _, f in entries]
                if any(f["type"] == until for f in fields):
                    return fields
                assert time.monotonic() < deadline, f"no {until} event for {call_id}: {fields}"
                await asyncio.sleep(0.05)
        finally:
            await client.aclose()


def gateway_settings(redis_url: str, tmp: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "engine": "echo",
        "host": "127.0.0.1",
        "redis_url": redis_url,
        "personas_dir": REPO / "personas",
        "numbers_file": REPO / "telephony" / "numbers.yaml",
        "events_journal_dir": tmp / "journal",
        "sip_enabled": False,
        "max_calls": 2,
        "drain_timeout_s": 1.0,
        "webrtc_token": WEBRTC_TOKEN,
        "editor_token": EDITOR_TOKEN,
        "webrtc_loopback_only": True,
    }
    values.update(overrides)
    return Settings(**values)


def start_gateway(redis_url: str, tmp: Path, **overrides: Any) -> Gateway:
    settings = gateway_settings(redis_url, tmp, **overrides)
    app = create_app(settings)
    server = ServerThread(app)
    server.start()
    return Gateway(server, app, redis_url, settings.personas_dir)


@pytest.fixture(scope="module")
def gateway(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(redis_url, tmp_path_factory.mktemp("gw"))
    try:
        yield gw
    finally:
        gw.server.stop()
