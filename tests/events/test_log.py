"""EventLog against a live redis-server: keys, TTLs, pipelining, metrics, fan-out, bad events."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, generate_latest

from voicegate.config import Settings
from voicegate.errors import ConfigError
from voicegate.events import (
    GLOBAL_EVENTS_KEY,
    CallEnded,
    CallStarted,
    Dtmf,
    EventLog,
    TranscriptAgent,
    call_events_key,
    call_key,
    decode_fields,
)

MakeLog = Callable[..., EventLog]


def started(call_id: str) -> CallStarted:
    return CallStarted(
        call_id=call_id, leg="twilio", t_ms=0, persona="teller", from_="+1555", to="+1666"
    )


def ended(call_id: str, t_ms: int = 9000) -> CallEnded:
    return CallEnded(
        call_id=call_id, leg="twilio", t_ms=t_ms, reason="caller_hangup", duration_ms=t_ms
    )


async def call_stream(r: aioredis.Redis, call_id: str) -> list[dict[str, str]]:
    return [f for _, f in await r.xrange(call_events_key(call_id))]


async def global_stream(r: aioredis.Redis, call_id: str) -> list[dict[str, str]]:
    return [f for _, f in await r.xrange(GLOBAL_EVENTS_KEY) if f["call_id"] == call_id]


def test_emit_is_synchronous() -> None:
    assert not inspect.iscoroutinefunction(EventLog.emit)


async def test_call_keys_and_ttl(
    make_log: MakeLog, redis_url: str, rclient: aioredis.Redis, call_id: str
) -> None:
    log = make_log(redis_url, retention_s=3600)
    await log.start()
    log.emit(started(call_id))
    log.emit(Dtmf(call_id=call_id, leg="twilio", t_ms=500, digit="5"))
    assert await log.wait_idle()
    meta = await rclient.hgetall(call_key(call_id))
    assert meta["persona"] == "teller" and meta["from"] == "+1555" and meta["status"] == "active"
    # before the end only the safety TTL (retention + a day) guards the keys
    assert 3600 < await rclient.ttl(call_key(call_id)) <= 3600 + 86400
    assert 3600 < await rclient.ttl(call_events_key(call_id)) <= 3600 + 86400

    log.emit(ended(call_id))
    assert await log.wait_idle()
    meta = await rclient.hgetall(call_key(call_id))
    assert meta["status"] == "ended" and meta["reason"] == "caller_hangup"
    assert meta["started_ts"] and meta["ended_ts"]
    assert 3500 < await rclient.ttl(call_key(call_id)) <= 3600
    assert 3500 < await rclient.ttl(call_events_key(call_id)) <= 3600
    assert await rclient.ttl(GLOBAL_EVENTS_KEY) == -1  # the global stream is trimmed, never expired

    types = [f["type"] for f in await call_stream(rclient, call_id)]
    assert types == ["call.started", "dtmf", "call.ended"]
    assert [f["type"] for f in await global_stream(rclient, call_id)] == types

    # a late event (a status callback after the end) keeps the retention TTL
    log.emit(Dtmf(call_id=call_id, leg="twilio", t_ms=9500, digit="1"))
    assert await log.wait_idle()
    assert 3500 < await rclient.ttl(call_events_key(call_id)) <= 3600


async def test_entries_decode_to_the_emitted_events(
    make_log: MakeLog, redis_url: str, rclient: aioredis.Redis, call_id: str
) -> None:
    log = make_log(redis_url)
    await log.start()
    sent = [
        started(call_id),
        TranscriptAgent(
            call_id=call_id,
            leg="twilio",
            t_ms=900,
            text="Hi, Sanni here.",
            start_ms=100,
            end_ms=900,
        ),
        ended(call_id),
    ]
    for ev in sent:
        log.emit(ev)
    assert await log.wait_idle()
    got = [decode_fields(f) for f in await call_stream(rclient, call_id)]
    assert got == sent


async def test_writer_pipelines_many_events(
    make_log: MakeLog, redis_url: str, rclient: aioredis.Redis, call_id: str
) -> None:
    n = 3000
    log = make_log(redis_url, batch_max=256)
    await log.start()
    log.emit(started(call_id))
    for i in range(1, n):
        log.emit(Dtmf(call_id=call_id, leg="twilio", t_ms=i, digit="5"))
    assert await log.wait_idle(timeout_s=30)
    s = log.stats()
    assert s.written == n and s.dropped == 0 and s.journaled == 0
    assert s.batches <= n // 200  # batched, not one round trip per event
    ts = [int(f["t"]) for f in await call_stream(rclient, call_id)]
    assert ts == list(range(n))
    assert [int(f["t"]) for f in await global_stream(rclient, call_id)] == ts


async def test_metrics_on_the_registry(make_log: MakeLog, redis_url: str, call_id: str) -> None:
    registry = CollectorRegistry()
    log = make_log(redis_url, registry=registry)
    await log.start()
    for i in range(3):
        log.emit(Dtmf(call_id=call_id, leg="sip", t_ms=i, digit="1"))
    assert await log.wait_idle()
    text = generate_latest(registry).decode()
    for line in (
        "voicegate_events_queued 0.0",
        "voicegate_events_written_total 3.0",
        "voicegate_events_journaled_total 0.0",
        "voicegate_events_replayed_total 0.0",
        'voicegate_events_dropped_total{reason="queue_full"} 0.0',
        "voicegate_events_redis_up 1.0",
    ):
        assert line in text
    with pytest.raises(ValueError):  # one EventLog per registry
        EventLog(redis_url, journal_dir="unused", registry=registry)


async def test_from_settings(redis_url: str, tmp_path: object) -> None:
    settings = Settings(redis_url=redis_url, events_journal_dir=tmp_path, events_queue_max=123)  # type: ignore[arg-type]
    log = EventLog.from_settings(settings, CollectorRegistry())
    assert log.queue_max == 123 and log.redis_url == redis_url
    assert log.retention_s == settings.events_retention_s
    assert log.global_maxlen == settings.events_stream_maxlen
    assert log.journal_max_bytes == settings.events_journal_max_bytes


def test_bad_url_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a Redis URL"):
        EventLog("http://localhost", journal_dir=tmp_path)


async def test_bad_events_are_dropped_alone(
    make_log: MakeLog, redis_url: str, rclient: aioredis.Redis, call_id: str
) -> None:
    log = make_log(redis_url)
    await log.start()
    log.emit(started(call_id))
    oversized = CallEnded(
        call_id=call_id,
        leg="twilio",
        t_ms=1,
        reason="error",
        duration_ms=1,
        counters={"k" * 70_000: 1},
    )
    log.emit(oversized)  # never raises
    log.emit("not an event")  # type: ignore[arg-type]
    log.emit(ended(call_id))
    assert await log.wait_idle()
    s = log.stats()
    assert s.dropped_malformed == 2 and s.written == 2
    assert [f["type"] for f in await call_stream(rclient, call_id)] == [
        "call.started",
        "call.ended",
    ]


async def test_redis_rejection_drops_one_event(
    make_log: MakeLog, redis_url: str, rclient: aioredis.Redis, call_id: str
) -> None:
    # a foreign value of the wrong type at a call key: that call's event fails, others pass
    bad = call_id + "-bad"
    await rclient.set(call_key(bad), "not a hash")
    log = make_log(redis_url)
    await log.start()
    log.emit(started(call_id))
    log.emit(started(bad))
    log.emit(ended(call_id))
    assert await log.wait_idle()
    s = log.stats()
    assert s.dropped_redis_rejected == 1 and s.written == 2
    assert len(await call_stream(rclient, call_id)) == 2
    await rclient.delete(call_key(bad))


async def test_emit_from_another_thread(
    make_log: MakeLog, redis_url: str, rclient: aioredis.Redis, call_id: str
) -> None:
    log = make_log(redis_url)
    await log.start()

    def worker() -> None:
        for i in range(100):
            log.emit(Dtmf(call_id=call_id, leg="sip", t_ms=i, digit="9"))

    thread = threading.Thread(target=worker)
    thread.start()
    await asyncio.to_thread(thread.join)
    await asyncio.sleep(0.05)
    assert await log.wait_idle()
    assert [int(f["t"]) for f in await call_stream(rclient, call_id)] == list(range(100))


async def test_subscribe_fan_out(make_log: MakeLog, redis_url: str, call_id: str) -> None:
    log = make_log(redis_url)
    await log.start()
    everything = log.subscribe()
    mine = log.subscribe(call_id=call_id, maxsize=2)
    other = call_id + "-other"
    for i in range(5):
        log.emit(Dtmf(call_id=call_id, leg="sip", t_ms=i, digit="1"))
    log.emit(Dtmf(call_id=other, leg="sip", t_ms=0, digit="2"))
    # the slow subscriber lost 3 events, nobody waited for it
    assert mine.dropped == 3 and log.stats().subscriber_dropped == 3
    got = [await mine.get(), await mine.get()]
    assert [e.t_ms for e in got if e is not None] == [0, 1]
    mine.close()
    assert await mine.get() is None
    seen = []
    for _ in range(6):
        ev = await everything.get()
        assert ev is not None
        seen.append((ev.call_id, ev.t_ms))
    assert seen == [(call_id, i) for i in range(5)] + [(other, 0)]
    await log.aclose()
    assert [e async for e in everything] == []  # closing the log ends its subscriptions


async def test_emit_after_close_is_counted(make_log: MakeLog, redis_url: str, call_id: str) -> None:
    log = make_log(redis_url)
    await log.start()
    await log.aclose()
    log.emit(started(call_id))
    assert log.stats().dropped_closed == 1


async def test_aclose_flushes_to_redis(
    make_log: MakeLog, redis_url: str, rclient: aioredis.Redis, call_id: str, tmp_path: Path
) -> None:
    log = make_log(redis_url, journal_dir=tmp_path / "j")
    await log.start()
    for i in range(500):
        log.emit(Dtmf(call_id=call_id, leg="sip", t_ms=i, digit="3"))
    await log.aclose(timeout_s=10)
    s = log.stats()
    assert s.written == 500 and s.journaled == 0 and s.queued == 0
    assert len(await call_stream(rclient, call_id)) == 500
    assert list((tmp_path / "j").iterdir()) == []  # a clean close leaves no journal folder
