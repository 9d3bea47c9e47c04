"""Fixtures for the events tests: EventLogs on a temporary journal, a Redis client."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from voicegate.events import EventLog

# Outage tests must take seconds, not the production 2 s backoff. The socket timeouts stay at the
# production values: shorter ones made a healthy Redis look down on a loaded 2-core CI machine.
FAST = dict(
    socket_timeout_s=1.0,
    connect_timeout_s=0.5,
    backoff_min_s=0.01,
    backoff_max_s=0.1,
    spill_interval_s=0.005,
)

_ids = itertools.count(1)


@pytest.fixture
def call_id(request: pytest.FixtureRequest) -> str:
    """A call id unique in the session-wide Redis."""
    return f"t{next(_ids)}-{request.node.name[:40].replace('[', '.').replace(']', '')}"


@pytest.fixture
async def make_log(tmp_path: Path) -> AsyncIterator[Callable[..., EventLog]]:
    """``make_log(url, **kwargs) -> EventLog`` (not started) with a journal under tmp_path;
    every log made is closed at teardown."""
    logs: list[EventLog] = []

    def make(url: str, **kwargs: Any) -> EventLog:
        kwargs.setdefault("journal_dir", tmp_path / "journal")
        kwargs.setdefault("registry", CollectorRegistry())
        for k, v in FAST.items():
            kwargs.setdefault(k, v)
        log = EventLog(url, **kwargs)
        logs.append(log)
        return log

    yield make
    for log in logs:
        await log.aclose(timeout_s=1.0)


@pytest.fixture
async def rclient(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()
