"""Closing a lost pod's calls through real EventLogs and Redis: the survivor's gateway_lost is
the call's one call.ended, and a call.ended the lost pod writes later (it was only stalled, or
its journal is replayed) is dropped as a duplicate."""

from __future__ import annotations

import asyncio
from pathlib import Path

from redis.asyncio import Redis

from voicegate.events import CallEnded, CallStarted, EventLog, call_events_key, call_key
from voicegate.fleet import FleetRegistry, LostCall, LostCallCloser, LostPod, PodState


async def test_one_call_ended_per_call_even_when_the_lost_pod_writes_later(
    redis_url: str, tmp_path: Path
) -> None:
    pod_log = EventLog(redis_url, journal_dir=tmp_path / "pod")
    survivor_log = EventLog(redis_url, journal_dir=tmp_path / "survivor")
    await pod_log.start()
    await survivor_log.start()
    registry = FleetRegistry(
        redis_url, pod_id="survivor-lost-test", url="https://s.test", sip="",
        state=lambda: PodState(1, False, []),
    )  # fmt: skip
    closer = LostCallCloser(survivor_log)
    closer.registry = registry
    redis = Redis.from_url(redis_url, decode_responses=True)
    call_id = "lost-call-0001"
    try:
        pod_log.emit(CallStarted(call_id=call_id, leg="twilio", t_ms=0, persona="p"))
        assert await pod_log.wait_idle(5)
        await closer(LostPod("stalled-pod", (LostCall(call_id, "twilio"),)))
        assert await survivor_log.wait_idle(5)
        assert await redis.hget(call_key(call_id), "reason") == "gateway_lost"
        # the pod was alive after all: its own call.ended arrives later
        pod_log.emit(
            CallEnded(
                call_id=call_id, leg="twilio", t_ms=900, reason="caller_hangup", duration_ms=900
            )
        )
        assert await pod_log.wait_idle(5)
        # and a second survivor closing it again changes nothing either
        await closer(LostPod("stalled-pod", (LostCall(call_id, "twilio"),)))
        assert closer.closed == 1
        await asyncio.sleep(0.1)
        entries = await redis.xrange(call_events_key(call_id))
        ended = [f for _, f in entries if f["type"] == "call.ended"]
        assert [f["reason"] for f in ended] == ["gateway_lost"]
        assert pod_log.stats().duplicates_skipped >= 1
    finally:
        await redis.aclose()
        await registry.aclose()
        await pod_log.aclose()
        await survivor_log.aclose()
