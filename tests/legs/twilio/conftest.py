"""A real gateway (uvicorn on a free port, in a thread) with the echo engine and a real Redis."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from voicegate.app import create_app
from voicegate.config import Settings
from voicegate.demo import ServerThread
from voicegate.events import call_events_key
from voicegate.legs.twilio.sim import TwilioSimulator

REPO = Path(__file__).resolve().parents[3]
AUTH_TOKEN = "test-auth-token-0123456789abcdef"
PUBLIC_URL = "https://gw.test"
MAX_CALLS = 2


@dataclass
class Gateway:
    server: ServerThread
    app: Any
    redis_url: str

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def calls(self) -> Any:
        return self.app.state.parts.calls

    @property
    def twilio_stats(self) -> Any:
        return self.app.state.twilio.stats

    def simulator(
        self, auth_token: str = AUTH_TOKEN, public_url: str = PUBLIC_URL
    ) -> TwilioSimulator:
        return TwilioSimulator(self.base_url, public_url, auth_token)

    async def wait_idle(self, timeout_s: float = 5.0) -> None:
        """Until no call is active (polled; fails the test after ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while self.calls.active_count:
            assert time.monotonic() < deadline, f"{self.calls.active_count} calls still active"
            await asyncio.sleep(0.01)

    async def events(
        self, call_id: str, until: str = "call.ended", timeout_s: float = 5.0
    ) -> list[dict[str, str]]:
        return await read_events(self.redis_url, call_id, until, timeout_s)


async def read_events(
    redis_url: str, call_id: str, until: str = "call.ended", timeout_s: float = 5.0
) -> list[dict[str, str]]:
    """The call's events from Redis, once one of type ``until`` is there."""
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            entries = await client.xrange(call_events_key(call_id))
            fields = [dict(f) for _, f in entries]
            if any(f["type"] == until for f in fields):
                return fields
            assert time.monotonic() < deadline, f"no {until} event for {call_id}: {fields}"
            await asyncio.sleep(0.05)
    finally:
        await client.aclose()


def gateway_env(redis_url: str, tmp: Path, port: int, **overrides: str) -> dict[str, str]:
    """Environment for ``voicegate serve`` in a subprocess, like ``gateway_settings``."""
    env = {
        **os.environ,
        "VOICEGATE_ENGINE": "echo",
        "VOICEGATE_HOST": "127.0.0.1",
        "VOICEGATE_PORT": str(port),
        "VOICEGATE_PUBLIC_URL": PUBLIC_URL,
        "VOICEGATE_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "VOICEGATE_REDIS_URL": redis_url,
        "VOICEGATE_PERSONAS_DIR": str(REPO / "personas"),
        "VOICEGATE_NUMBERS_FILE": str(REPO / "telephony" / "numbers.yaml"),
        "VOICEGATE_EVENTS_JOURNAL_DIR": str(tmp / "journal"),
        "VOICEGATE_SIP_ENABLED": "false",
        "VOICEGATE_MAX_CALLS": str(MAX_CALLS),
        "VOICEGATE_LOG_LEVEL": "INFO",
    }
    env.update(overrides)
    return env


def gateway_settings(redis_url: str, tmp: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "engine": "echo",
        "host": "127.0.0.1",
        "public_url": PUBLIC_URL,
        "twilio_auth_token": AUTH_TOKEN,
        "redis_url": redis_url,
        "personas_dir": REPO / "personas",
        "numbers_file": REPO / "telephony" / "numbers.yaml",
        "events_journal_dir": tmp / "journal",
        "sip_enabled": False,
        "max_calls": MAX_CALLS,
        "drain_timeout_s": 1.0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="module")
def gateway(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    app = create_app(gateway_settings(redis_url, tmp_path_factory.mktemp("gw")))
    server = ServerThread(app)
    server.start()
    try:
        yield Gateway(server, app, redis_url)
    finally:
        server.stop()


@pytest.fixture
async def twilio(gateway: Gateway) -> AsyncIterator[TwilioSimulator]:
    async with gateway.simulator() as sim:
        yield sim
    await gateway.wait_idle()
