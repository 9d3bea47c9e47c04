"""EventLog through Redis outages: a killed server, a hung server, restarts, full journals."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from voicegate.events import (
    GLOBAL_EVENTS_KEY,
    CallEnded,
    CallStarted,
    Dtmf,
    EventLog,
    WriterState,
    call_events_key,
)

MakeLog = Callable[..., EventLog]


def dtmf(call_id: str, t_ms: int) -> Dtmf:
    return Dtmf(call_id=call_id, leg="twilio", t_ms=t_ms, digit="5")


async def until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll until predicate() holds (a deadline only against hangs, not a timing assert)."""
    for _ in range(int(timeout_s / 0.005)):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


async def stream_ts(url: str, call_id: str) -> tuple[list[int], list[int]]:
    """The ``t`` of a call's entries in its own stream and in the global stream, in order."""
    r = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        own = [int(f["t"]) for _, f in await r.xrange(call_events_key(call_id))]
        glob = [
            int(f["t"]) for _, f in await r.xrange(GLOBAL_EVENTS_KEY) if f["call_id"] == call_id
        ]
    finally:
        await r.aclose()
    return own, glob


def segments(journal: Path) -> list[Path]:
    return sorted(journal.rglob("*.jnl"))


async def test_kill_and_restart_mid_call(
    make_log: MakeLog, redis_factory: Callable[..., Any], tmp_path: Path
) -> None:
    server = redis_factory(is_durable=True)
    journal = tmp_path / "journal"
    log = make_log(server.url, journal_dir=journal)
    await log.start()
    calls = ["a1", "b2"]
    n = 300
    for c in calls:
        log.emit(CallStarted(call_id=c, leg="twilio", t_ms=0, persona="teller"))
    for i in range(1, n):
        if i == 100:
            await until(lambda: log.stats().queued == 0)
            assert log.stats().written > 0
            server.kill()
        if i == 200:
            assert not log.stats().is_redis_up and log.stats().journaled > 0
            assert segments(journal)
            server.start()
        for c in calls:
            # returns at once while Redis is dead: emit is synchronous and only appends to memory
            assert log.emit(dtmf(c, i)) is None
        await asyncio.sleep(0.002)  # a call emits between 20 ms frames, not in one burst
    for c in calls:
        log.emit(CallEnded(call_id=c, leg="twilio", t_ms=n, reason="caller_hangup", duration_ms=n))
    assert await log.wait_idle(timeout_s=20)
    s = log.stats()
    assert s.dropped == 0 and s.replayed > 0 and s.journal_bytes == 0
    assert s.written == len(calls) * (n + 1)
    assert segments(journal) == []
    for c in calls:
        own, glob = await stream_ts(server.url, c)
        assert own == list(range(n + 1))  # every event once, in order
        assert glob == own


class BlackHole:
    """A TCP server that accepts connections and never answers (a hung Redis)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"redis://127.0.0.1:{self.sock.getsockname()[1]}/0"

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def black_hole() -> AsyncIterator[BlackHole]:
    hole = BlackHole()
    yield hole  # type: ignore[misc]
    hole.close()


async def test_hung_redis_times_out_into_the_journal(
    make_log: MakeLog, black_hole: BlackHole
) -> None:
    log = make_log(black_hole.url)
    await log.start()
    for i in range(50):
        log.emit(dtmf("hung1", i))
        await asyncio.sleep(0.001)
    # the short socket timeout, not redis-py's retries, decides: everything ends up journaled
    await until(lambda: log.stats().journaled == 50)
    s = log.stats()
    assert not s.is_redis_up and s.written == 0 and s.queued == 0 and s.dropped == 0


async def log_while_down(
    make_log: MakeLog, server: Any, journal: Path, call_id: str, n: int
) -> EventLog:
    """A started EventLog on ``server`` (down) that was handed ``n`` events of ``call_id``."""
    log = make_log(server.url, journal_dir=journal)
    await log.start()
    for i in range(n):
        log.emit(dtmf(call_id, i))
    return log


async def test_journal_survives_a_restart(
    make_log: MakeLog, redis_factory: Callable[..., Any], tmp_path: Path
) -> None:
    server = redis_factory()
    server.kill()
    journal = tmp_path / "journal"
    first = await log_while_down(make_log, server, journal, "r1", 40)
    await first.aclose(timeout_s=1.0)  # Redis down: everything stays journaled
    assert first.stats().journaled == 40 and first.stats().dropped == 0
    kept = segments(journal)
    assert kept
    backup = tmp_path / "backup"
    shutil.copytree(journal / kept[0].parent.name, backup)

    server.start()
    second = make_log(server.url, journal_dir=journal)
    await second.start()
    second.emit(dtmf("r1", 40))  # newer than the journal: must land after it
    assert await second.wait_idle()
    assert second.stats().replayed == 40
    assert segments(journal) == []
    assert await stream_ts(server.url, "r1") == (list(range(41)), list(range(41)))

    # a crash after the replay but before the segment was deleted: the same journal again,
    # plus a torn last line; the replay writes nothing twice
    shutil.copytree(backup, journal / "crashed")
    seg = segments(journal)[0]
    with open(seg, "ab") as f:
        f.write(b'["half a rec')
    third = make_log(server.url, journal_dir=journal)
    await third.start()
    assert await third.wait_idle()
    s = third.stats()
    assert s.duplicates_skipped == 40 and s.written == 0 and s.journal_corrupt_lines == 1
    assert segments(journal) == [] and not (journal / "crashed").exists()
    assert await stream_ts(server.url, "r1") == (list(range(41)), list(range(41)))


async def test_live_writer_journal_is_not_adopted(
    make_log: MakeLog, redis_factory: Callable[..., Any], tmp_path: Path
) -> None:
    server = redis_factory()
    server.kill()
    journal = tmp_path / "journal"
    a = await log_while_down(make_log, server, journal, "live1", 10)
    await until(lambda: a.stats().journaled == 10)
    b = make_log(server.url, journal_dir=journal)
    await b.start()
    assert b.stats().journal_bytes == 0  # a's folder is locked: a replays it itself
    assert a.stats().journal_bytes > 0


async def test_memory_stays_bounded_while_redis_is_down(
    make_log: MakeLog, redis_factory: Callable[..., Any], tmp_path: Path
) -> None:
    server = redis_factory()
    server.kill()
    bound = 200
    log = make_log(server.url, queue_max=bound)
    await log.start()
    n = 0
    for _ in range(40):
        for _ in range(bound // 4):
            log.emit(dtmf("m1", n))
            n += 1
        await until(lambda: log.stats().queued < bound // 2)  # the writer keeps up via the journal
    s = log.stats()
    assert s.queue_peak <= bound and s.dropped == 0
    await until(lambda: log.stats().journaled == n)
    server.start()
    assert await log.wait_idle(timeout_s=20)
    assert log.stats().replayed == n
    assert (await stream_ts(server.url, "m1"))[0] == list(range(n))


async def test_drops_only_when_the_journal_is_also_unavailable(
    make_log: MakeLog, redis_factory: Callable[..., Any]
) -> None:
    server = redis_factory()
    server.kill()
    bound = 100
    # a journal that fills after a few events
    log = make_log(server.url, queue_max=bound, journal_max_bytes=3000)
    await log.start()
    for i in range(50):
        log.emit(dtmf("d1", i))  # never raises, never blocks
        await asyncio.sleep(0.001)
    await until(lambda: log.stats().journaled > 0 and log.stats().queued < 50)
    s = log.stats()
    assert s.dropped == 0 and s.journaled + s.queued == 50  # journal full: the rest held in memory
    for i in range(50, 600):
        log.emit(dtmf("d1", i))
        if i % 10 == 0:
            await asyncio.sleep(0.001)
    s = log.stats()
    assert s.queue_peak == bound and s.queued <= bound
    assert s.dropped_queue_full > 0 and s.dropped == s.dropped_queue_full
    assert s.journaled + s.queued + s.dropped_queue_full == 600
    kept = s.journaled + s.queued
    server.start()
    assert await log.wait_idle(timeout_s=20)
    own, glob = await stream_ts(server.url, "d1")
    # the oldest events survive in order; the newest were dropped (drop-newest policy)
    assert own == list(range(kept)) and glob == own


async def test_redis_out_of_memory_is_an_outage(
    make_log: MakeLog, redis_factory: Callable[..., Any]
) -> None:
    server = redis_factory()
    admin = aioredis.Redis.from_url(server.url)
    try:
        log = make_log(server.url)
        await log.start()
        log.emit(dtmf("oom1", 0))
        assert await log.wait_idle()
        await admin.config_set("maxmemory", "1")  # every write is now refused with OOM
        for i in range(1, 30):
            log.emit(dtmf("oom1", i))
            await asyncio.sleep(0.001)
        await until(lambda: log.stats().journaled == 29)
        s = log.stats()
        assert s.dropped == 0 and s.written == 1  # "OOM" is "not now", not "drop it"
        await admin.config_set("maxmemory", "0")
        assert await log.wait_idle(timeout_s=20)
        assert log.stats().replayed == 29
        assert await stream_ts(server.url, "oom1") == (list(range(30)), list(range(30)))
    finally:
        await admin.aclose()


async def test_the_writer_state_follows_the_outage_cycle(
    make_log: MakeLog,
    redis_factory: Callable[..., Any],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="voicegate.events")
    server = redis_factory(is_durable=True)
    log = make_log(server.url, journal_dir=tmp_path / "journal")
    assert log.state is WriterState.NEW
    await log.start()
    await until(lambda: log.state is WriterState.CONNECTED)
    server.kill()
    for i in range(5):  # the writer finds Redis gone when it writes
        log.emit(dtmf("st1", i))
    await until(lambda: log.state is WriterState.OUTAGE and log.stats().journaled == 5)
    server.start()
    await until(lambda: log.state is WriterState.CONNECTED)
    assert log.stats().replayed == 5
    await log.aclose()
    assert log.state is WriterState.CLOSED
    changes = [r.getMessage() for r in caplog.records if r.getMessage().startswith("event writer:")]
    assert changes == [
        "event writer: new -> starting",
        "event writer: starting -> connected",
        "event writer: connected -> outage",
        "event writer: outage -> replaying",
        "event writer: replaying -> connected",
        "event writer: connected -> closing",
        "event writer: closing -> closed",
    ]
