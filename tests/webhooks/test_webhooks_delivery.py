"""Post-call webhook delivery with the real parts: events written by a real EventLog into a
real redis-server, the consumer group read by WebhookDelivery, reports POSTed over sockets to a
real local HTTP receiver. Timing is checked against the backoff schedule (lower bounds from the
recorded attempt times), never against how fast anything ran."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from voicegate.events import (
    BargeIn,
    CallEnded,
    CallStarted,
    CallTransfer,
    EventLog,
    TranscriptAgent,
)
from voicegate.events.schema import RecordingEnded, RecordingStarted, RecordingUploaded
from voicegate.webhooks import (
    DEAD_LETTER_KEY,
    WebhookDelivery,
    delivery_key,
    idempotency_key,
    replay,
    verify,
)

from .receiver import Receiver, eventually

SECRET = "whsec-test-0123456789"
FAST_EVENTS = dict(backoff_min_s=0.01, backoff_max_s=0.1, spill_interval_s=0.005)


@pytest.fixture
async def make_parts(
    tmp_path: Path,
) -> AsyncIterator[Callable[..., tuple[EventLog, WebhookDelivery, CollectorRegistry]]]:
    """``make(redis_url, url, **delivery_options)``: a started EventLog and WebhookDelivery
    (reports for calls of persona ``hooked`` go to ``url``); all closed at teardown."""
    made: list[tuple[EventLog, WebhookDelivery]] = []

    async def make(
        redis_url: str, url: str, **options: Any
    ) -> tuple[EventLog, WebhookDelivery, CollectorRegistry]:
        registry = CollectorRegistry()
        log = EventLog(
            redis_url, journal_dir=tmp_path / "journal", registry=registry, **FAST_EVENTS
        )
        await log.start()

        def resolve(call: Mapping[str, str]) -> str:
            return url if call.get("persona") == "hooked" else ""

        options.setdefault("settle_s", 0.0)
        options.setdefault("backoff_min_s", 0.2)
        options.setdefault("backoff_max_s", 2.0)
        options.setdefault("consumer", "gw-test")
        hooks = WebhookDelivery(
            redis_url, secret=SECRET, resolve=resolve, registry=registry, **options
        )
        await hooks.start()
        made.append((log, hooks))
        return log, hooks, registry

    yield make  # type: ignore[misc]
    for log, hooks in made:
        await hooks.aclose()
        await log.aclose(1.0)


def emit_call(log: EventLog, call_id: str, persona: str = "hooked") -> None:
    """One short call's events, as a Call logs them."""
    leg = "twilio"
    log.emit(
        CallStarted(
            call_id=call_id,
            leg=leg,
            t=0,
            persona=persona,
            **{"from": "+15005550006"},
            to="+14155550100",
        )
    )
    log.emit(
        TranscriptAgent(
            call_id=call_id, leg=leg, t=900, text="Hello, how can I help?", start_ms=100, end_ms=900
        )
    )
    log.emit(
        BargeIn(
            call_id=call_id,
            leg=leg,
            t=1500,
            caller_onset_ms=1400,
            agent_stop_ms=1460,
            latency_ms=60,
            discarded_ms=120,
            cut_text="your",
        )
    )
    log.emit(
        TranscriptAgent(
            call_id=call_id,
            leg=leg,
            t=1500,
            text="Let me check",
            start_ms=1200,
            end_ms=1460,
            is_heard=False,
            cut_at_ms=1460,
            cut_text="your",
        )
    )
    log.emit(
        CallTransfer(
            call_id=call_id,
            leg=leg,
            t=1600,
            trigger="dtmf",
            destination="human",
            to="+14155550123",
            result="failed",
            detail="busy",
        )
    )
    log.emit(CallEnded(call_id=call_id, leg=leg, t=2000, reason="caller_hangup", duration_ms=2000, bargeins=1))  # fmt: skip


def metric(registry: CollectorRegistry, name: str) -> float:
    return registry.get_sample_value(name) or 0.0


async def test_a_receiver_failing_three_times_gets_one_delivery_after_four_attempts(
    redis_factory: Callable[..., Any], make_parts: Any
) -> None:
    redis = redis_factory()
    with Receiver(fail_first=3) as rx:
        log, hooks, registry = await make_parts(redis.url, rx.url)
        emit_call(log, "c-flaky")
        await eventually(lambda: hooks.delivered == 1, 30, f"not delivered: {rx.attempts}")
        hits = rx.attempts

        assert [h.status for h in hits] == [500, 500, 500, 200]
        assert len(rx.acked) == 1
        # the same bytes and key every time, each attempt signed anew and verifiable
        assert len({h.body for h in hits}) == 1
        assert {h.key for h in hits} == {idempotency_key("c-flaky")}
        assert all(verify(h.body, h.headers["voicegate-signature"], SECRET) for h in hits)
        # backoff respected: attempt k+1 no earlier than the smallest delay the schedule allows
        # after attempt k (min 0.2 s doubling, jitter in [d/2, d])
        gaps = [b.at - a.at for a, b in zip(hits, hits[1:], strict=False)]
        lower = [0.2 * 2**k / 2 for k in range(3)]
        assert all(g >= lo for g, lo in zip(gaps, lower, strict=True)), (gaps, lower)

        report = json.loads(hits[-1].body)
        assert report["call_id"] == "c-flaky" and report["type"] == "call.ended"
        assert report["id"] == idempotency_key("c-flaky")
        assert report["persona"] == "hooked" and report["caller"] == "+15005550006"
        assert report["reason"] == "caller_hangup" and report["duration_ms"] == 2000
        assert [s["text"] for s in report["transcript"]["agent"]] == [
            "Hello, how can I help?",
            "Let me check",
        ]
        assert report["transcript"]["agent"][1]["heard"] is False
        assert report["transcript"]["caller"] == []
        assert report["bargeins"][0]["latency_ms"] == 60
        assert report["transfers"][0]["result"] == "failed"
        assert report["recording"] is None

        client = Redis.from_url(redis.url, decode_responses=True)
        state = await client.hgetall(delivery_key("c-flaky"))
        await client.aclose()
        assert state["status"] == "delivered" and state["attempts"] == "4"
        assert metric(registry, "voicegate_webhook_delivered_total") == 1
        assert metric(registry, "voicegate_webhook_retried_total") == 3
        assert metric(registry, "voicegate_webhook_dead_lettered_total") == 0
        assert metric(registry, "voicegate_webhook_delivery_seconds_count") == 1
        # acknowledged: never sent again (another call passes through meanwhile)
        emit_call(log, "c-next")
        await eventually(lambda: hooks.delivered == 2, 20, "second call not delivered")
        assert [h.key for h in rx.acked].count(idempotency_key("c-flaky")) == 1


async def test_a_call_without_a_webhook_sends_nothing(
    redis_factory: Callable[..., Any], make_parts: Any
) -> None:
    redis = redis_factory()
    with Receiver() as rx:
        log, hooks, _ = await make_parts(redis.url, rx.url)
        emit_call(log, "c-plain", persona="other")
        emit_call(log, "c-hooked")
        await eventually(lambda: hooks.delivered == 1, 20, "not delivered")
        await eventually(lambda: hooks.skipped == 1, 20, "not skipped")
        assert [json.loads(h.body)["call_id"] for h in rx.attempts] == ["c-hooked"]


async def test_a_receiver_that_never_answers_2xx_is_dead_lettered_then_replayed(
    redis_factory: Callable[..., Any], make_parts: Any
) -> None:
    redis = redis_factory()
    with Receiver() as rx:
        rx.is_failing = True
        log, hooks, registry = await make_parts(
            redis.url, rx.url, retry_for_s=1.5, backoff_min_s=0.1, backoff_max_s=0.4
        )
        emit_call(log, "c-dead")
        await eventually(lambda: hooks.dead_lettered == 1, 20, "not dead-lettered")
        client = Redis.from_url(redis.url, decode_responses=True)
        try:
            (entry,) = await client.xrange(DEAD_LETTER_KEY)
            dead = entry[1]
            n = len(rx.attempts)
            assert dead["call_id"] == "c-dead" and dead["last_error"].startswith("HTTP 500")
            assert int(dead["attempts"]) == n >= 2
            state = await client.hgetall(delivery_key("c-dead"))
            assert state["status"] == "dead"
            # every attempt began inside the retry window; none came after the dead letter
            assert float(state["last_attempt_ts"]) < float(state["dead_ts"])
            assert float(state["dead_ts"]) >= float(state["ended_ts"]) + 1.5
            await asyncio.sleep(0.8)  # longer than the longest backoff (0.4 s)
            assert len(rx.attempts) == n
            assert metric(registry, "voicegate_webhook_dead_lettered_total") == 1
            assert metric(registry, "voicegate_webhook_delivered_total") == 0

            # the operator fixes the receiver and replays: same body, same key, signed now
            rx.is_failing = False
            result = await replay(redis.url, "c-dead", secret=SECRET)
            assert result.attempt.ok and result.url == rx.url
            assert rx.attempts[-1].body == rx.attempts[0].body
            assert rx.attempts[-1].key == idempotency_key("c-dead")
            state = await client.hgetall(delivery_key("c-dead"))
            assert state["status"] == "delivered"
        finally:
            await client.aclose()


async def test_redis_down_when_the_call_ends_is_delivered_once_it_is_back(
    redis_factory: Callable[..., Any], make_parts: Any
) -> None:
    redis = redis_factory(is_durable=True)
    with Receiver() as rx:
        log, hooks, _ = await make_parts(redis.url, rx.url)
        emit_call(log, "c-warmup")  # the group exists and works
        await eventually(lambda: hooks.delivered == 1, 20, "warm-up not delivered")
        redis.kill()
        emit_call(log, "c-outage")  # journaled on disk by the EventLog
        await eventually(lambda: not hooks.is_redis_up, 10, "consumer did not see the outage")
        await eventually(lambda: log.stats().journaled > 0, 10, "nothing journaled")
        assert len(rx.attempts) == 1
        redis.start()
        await eventually(lambda: hooks.delivered == 2, 30, f"not delivered: {rx.attempts}")
        keys = [h.key for h in rx.acked]
        assert keys == [idempotency_key("c-warmup"), idempotency_key("c-outage")]


async def test_another_gateway_takes_over_what_a_dead_one_left(
    redis_factory: Callable[..., Any], make_parts: Any
) -> None:
    redis = redis_factory()
    with Receiver() as rx:
        rx.is_failing = True
        log, a, _ = await make_parts(redis.url, rx.url, consumer="gw-a", claim_idle_s=0.6)
        emit_call(log, "c-orphan")
        await eventually(lambda: len(rx.attempts) >= 1, 20, "gw-a made no attempt")
        await a.aclose()  # gw-a is gone: its entry stays pending in the group, owned by gw-a
        n_before = len(rx.attempts)
        rx.is_failing = False
        _, b, _ = await make_parts(redis.url, rx.url, consumer="gw-b", claim_idle_s=0.6)
        await eventually(lambda: b.delivered == 1, 20, f"gw-b did not deliver: {rx.attempts}")
        assert len(rx.attempts) == n_before + 1 and len(rx.acked) == 1
        assert rx.acked[0].key == idempotency_key("c-orphan")


async def test_410_gone_dead_letters_at_once(
    redis_factory: Callable[..., Any], make_parts: Any
) -> None:
    redis = redis_factory()
    with Receiver(fail_status=410) as rx:
        rx.is_failing = True
        log, hooks, _ = await make_parts(redis.url, rx.url)
        emit_call(log, "c-gone")
        await eventually(lambda: hooks.dead_lettered == 1, 20, "not dead-lettered")
        assert len(rx.attempts) == 1 and hooks.retried == 0
        client = Redis.from_url(redis.url, decode_responses=True)
        (entry,) = await client.xrange(DEAD_LETTER_KEY)
        await client.aclose()
        assert entry[1]["last_error"].startswith("HTTP 410")


def emit_recorded_call(log: EventLog, call_id: str) -> str:
    """A recorded call's events up to its call.ended (its recording.ended comes later)."""
    path = f"/var/recordings/2026-12-03/{call_id}.wav"
    log.emit(CallStarted(call_id=call_id, leg="twilio", t=0, persona="hooked", to="+14155550100"))
    log.emit(RecordingStarted(call_id=call_id, leg="twilio", t=0, path=path, rate_hz=8000))
    log.emit(CallEnded(call_id=call_id, leg="twilio", t=3000, reason="caller_hangup", duration_ms=3000))  # fmt: skip
    return path


def recording_ended(call_id: str, path: str) -> RecordingEnded:
    return RecordingEnded(
        call_id=call_id,
        leg="twilio",
        t=3000,
        path=path,
        duration_ms=3000,
        size_bytes=96_044,
        status="complete",
    )


async def test_a_recorded_calls_report_waits_for_its_recording_and_upload(
    redis_factory: Callable[..., Any], make_parts: Any
) -> None:
    redis = redis_factory()
    with Receiver() as rx:
        log, hooks, _ = await make_parts(
            redis.url, rx.url, settle_s=0.1, recording_wait_s=30.0, is_upload_expected=True
        )
        path = emit_recorded_call(log, "c-rec")
        await asyncio.sleep(1.0)  # well past the settle time: the report waits
        assert rx.attempts == []
        log.emit(recording_ended("c-rec", path))
        await asyncio.sleep(0.5)  # uploads are on: it waits for the upload's outcome too
        assert rx.attempts == []
        url = "http://s3.test/calls/rec/2026-12-03/c-rec.wav"
        log.emit(
            RecordingUploaded(
                call_id="c-rec",
                leg="twilio",
                t=3000,
                path=path,
                status="uploaded",
                url=url,
                bucket="calls",
                key="rec/2026-12-03/c-rec.wav",
                attempts=2,
                upload_ms=150,
            )
        )
        await eventually(lambda: hooks.delivered == 1, 20, f"not delivered: {rx.attempts}")
    (hit,) = rx.attempts
    recording = json.loads(hit.body)["recording"]
    assert recording["path"] == path and recording["status"] == "complete"
    assert recording["duration_ms"] == 3000
    assert recording["upload"]["status"] == "uploaded" and recording["upload"]["url"] == url
    assert recording["upload"]["key"] == "rec/2026-12-03/c-rec.wav"
    assert recording["upload"]["attempts"] == 2


async def test_a_recording_that_never_ends_delays_the_report_a_bounded_time(
    redis_factory: Callable[..., Any], make_parts: Any
) -> None:
    redis = redis_factory()
    with Receiver() as rx:
        log, hooks, _ = await make_parts(redis.url, rx.url, settle_s=0.1, recording_wait_s=0.6)
        emit_recorded_call(log, "c-lost")  # e.g. the writer thread died with the process
        await eventually(lambda: hooks.delivered == 1, 20, f"not delivered: {rx.attempts}")
    (hit,) = rx.attempts
    report = json.loads(hit.body)
    assert report["call_id"] == "c-lost" and report["recording"] is None
