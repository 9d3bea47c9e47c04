"""One real gateway for the leg tests: the app in uvicorn on a free port (a thread), the echo
engine, the repository's personas and numbers, a real Redis; and the call's events read back.

Each leg's ``conftest.py`` adds its own settings (``gateway_settings(..., **overrides)``) and,
where it needs them, a subclass of ``Gateway`` with the leg's own handles.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from redis.asyncio import Redis

from voicegate.app import create_app
from voicegate.config import Settings
from voicegate.demo import ServerThread
from voicegate.events import call_events_key

REPO = Path(__file__).resolve().parents[2]
MAX_CALLS = 2
EVENTS_TIMEOUT_S = 8.0


async def read_events(
    redis_url: str, call_id: str, until: str = "call.ended", timeout_s: float = EVENTS_TIMEOUT_S
) -> list[dict[str, str]]:
    """The call's events from Redis, once one of type ``until`` is there."""
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            entries: Any = await client.xrange(call_events_key(call_id))
            fields = [{str(k): str(v) for k, v in (f or {}).items()} for _, f in entries or []]
            if any(f["type"] == until for f in fields):
                return fields
            assert time.monotonic() < deadline, f"no {until} event for {call_id}: {fields}"
            await asyncio.sleep(0.05)
    finally:
        await client.aclose()


def context_overrides(
    tmp: Path, persona: str, numbers: str, webhook_url: str, webhook_secret: str
) -> dict[str, Any]:
    """Write ``persona`` (as ``teller``) and ``numbers`` under ``tmp``; the settings that serve
    them, with the call-start webhook at ``webhook_url`` signed with ``webhook_secret``."""
    (tmp / "personas").mkdir()
    (tmp / "personas" / "teller.yaml").write_text(persona)
    (tmp / "numbers.yaml").write_text(numbers)
    return {
        "personas_dir": tmp / "personas",
        "numbers_file": tmp / "numbers.yaml",
        "call_start_webhook_url": webhook_url,
        "call_start_webhook_secret": webhook_secret,
        "call_start_webhook_timeout_s": 2.0,
    }


def gateway_settings(redis_url: str, tmp: Path, **overrides: Any) -> Settings:
    """Settings of a test gateway: echo engine, no SIP, 2 calls, ``overrides`` on top."""
    values: dict[str, Any] = {
        "engine": "echo",
        "host": "127.0.0.1",
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


@dataclass
class Gateway:
    """A started gateway; ``server.stop()`` ends it."""

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

    def on_loop(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the gateway's event loop and return its result."""
        loop: asyncio.AbstractEventLoop = self.app.state.loop

        async def run() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), loop).result(5)

    def busy(self) -> str:
        """What is still open ('' when idle)."""
        count = self.calls.active_count
        return f"{count} calls still active" if count else ""

    async def wait_idle(self, timeout_s: float = 5.0) -> None:
        """Until nothing is open (polled; fails the test after ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while busy := self.busy():
            assert time.monotonic() < deadline, busy
            await asyncio.sleep(0.02)

    def wait_idle_blocking(self, timeout_s: float = 5.0) -> None:
        """``wait_idle`` for a test outside the event loop."""
        deadline = time.monotonic() + timeout_s
        while busy := self.busy():
            assert time.monotonic() < deadline, busy
            time.sleep(0.02)

    async def events(
        self, call_id: str, until: str = "call.ended", timeout_s: float = EVENTS_TIMEOUT_S
    ) -> list[dict[str, str]]:
        """The call's events from Redis, once one of type ``until`` is there."""
        return await read_events(self.redis_url, call_id, until, timeout_s)


G = TypeVar("G", bound=Gateway)


def start_gateway(kind: type[G], settings: Settings) -> G:
    """Create the app for ``settings``, serve it, and wrap it in ``kind``."""
    app = create_app(settings)
    server = ServerThread(app)
    server.start()
    return kind(server, app, settings.redis_url, settings.personas_dir)


def serving(gw: G) -> Iterator[G]:
    """For a fixture: ``yield from serving(start_...(...))`` hands out ``gw`` and stops it after."""
    try:
        yield gw
    finally:
        gw.server.stop()
