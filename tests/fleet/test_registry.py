"""The fleet registry against a real Redis (a private redis-server per test: the fleet's keys are
global): placement prefers this pod, then the pod with most free slots; reservations expire or
are claimed by a heartbeat; draining pods are skipped; a lost pod is taken over by exactly one
survivor, whose closer writes the missing call.ended; grants are honoured only by their pod."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from redis.asyncio import Redis

from tests.conftest import RedisServer
from voicegate.errors import ConfigError
from voicegate.events import CallEnded, CallStarted, Event, call_key
from voicegate.fleet import FleetRegistry, LostCallCloser, LostPod, PodState, pod_key


@dataclass
class Pod:
    """What a test pod publishes: its slots and active calls, editable by the test."""

    slots: int
    calls: list[tuple[str, str]] = field(default_factory=list)
    is_draining: bool = False

    def state(self) -> PodState:
        return PodState(self.slots, self.is_draining, list(self.calls))


@pytest.fixture
async def redis_url(redis_factory: Callable[..., RedisServer]) -> AsyncIterator[str]:
    yield redis_factory().url


def make(url: str, pod_id: str, pod: Pod, **kw: float) -> FleetRegistry:
    return FleetRegistry(
        url,
        pod_id=pod_id,
        url=f"https://{pod_id}.voice.test",
        sip=f"{pod_id}:5060",
        state=pod.state,
        heartbeat_s=kw.get("heartbeat_s", 0.1),
        ttl_s=kw.get("ttl_s", 0.5),
        reservation_s=kw.get("reservation_s", 5.0),
    )


async def test_placement_prefers_self_then_most_free_then_none(redis_url: str) -> None:
    a, b, c = Pod(1), Pod(2), Pod(3)
    ra, rb, rc = make(redis_url, "a", a), make(redis_url, "b", b), make(redis_url, "c", c)
    try:
        for r in (ra, rb, rc):
            await r.heartbeat()
        first = await ra.place("call-1")
        assert first is not None and first.is_self and first.pod_id == "a"
        # a is full (its reservation): c has the most free slots
        second = await ra.place("call-2")
        assert second is not None and (second.pod_id, second.url) == ("c", "https://c.voice.test")
        assert not second.is_self and second.free_after == 2
        placed = [await ra.place(f"call-{i}") for i in range(3, 8)]
        assert sorted(p.pod_id for p in placed if p) == ["b", "b", "c", "c"]
        assert placed[-1] is None  # 1 + 2 + 3 slots, all reserved
        assert (ra.placements_local, ra.placements_remote, ra.placements_none) == (1, 5, 1)
    finally:
        for r in (ra, rb, rc):
            await r.aclose()


async def test_concurrent_placements_never_exceed_the_free_slots(redis_url: str) -> None:
    pods = [Pod(2), Pod(1), Pod(1)]
    regs = [make(redis_url, f"p{i}", pod) for i, pod in enumerate(pods)]
    try:
        for r in regs:
            await r.heartbeat()
        results = await asyncio.gather(
            *(regs[i % 3].place(f"c{i}") for i in range(20)),
        )
        placed = [p.pod_id for p in results if p is not None]
        assert sorted(placed) == ["p0", "p0", "p1", "p2"]
    finally:
        for r in regs:
            await r.aclose()


async def test_unclaimed_reservation_is_released_and_a_heartbeat_claims(redis_url: str) -> None:
    pod = Pod(1)
    reg = make(redis_url, "solo", pod, reservation_s=0.3)
    try:
        await reg.heartbeat()
        assert await reg.place("c1") is not None
        assert await reg.place("c2") is None  # the one slot is reserved
        await asyncio.sleep(0.4)
        again = await reg.place("c3")  # c1's stream never came: its slot is back
        assert again is not None and again.is_self
        # c3's stream arrives: the call is active and the heartbeat claims its reservation
        pod.calls.append(("c3", "twilio"))
        assert await reg.heartbeat() == 1
        fields = await reg.pods()
        assert fields["solo"]["active"] == "1"
        await asyncio.sleep(0.4)  # past the reservation time: still full (active, not reserved)
        assert await reg.place("c4") is None
        pod.calls.clear()
        await reg.heartbeat()
        assert await reg.place("c5") is not None
        # c5's call starts and ends between two beats: released, its slot is free at the beat
        reg.release("c5")
        await reg.heartbeat()
        assert await reg.place("c6") is not None
    finally:
        await reg.aclose()


async def test_draining_pod_is_never_chosen(redis_url: str) -> None:
    a, b = Pod(4), Pod(1)
    ra, rb = make(redis_url, "a", a), make(redis_url, "b", b)
    try:
        await rb.heartbeat()
        await ra.start()
        ra.begin_drain()
        for _ in range(50):
            if (await ra.pods())["a"]["draining"] == "1":
                break
            await asyncio.sleep(0.02)
        # a placement asked on the draining pod goes elsewhere, and so does one asked on b
        p1 = await ra.place("c1")
        assert p1 is not None and p1.pod_id == "b"
        assert await rb.place("c2") is None
    finally:
        await ra.aclose()
        await rb.aclose()


class ListSink:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)


async def test_lost_pod_taken_over_once_and_its_open_calls_closed(redis_url: str) -> None:
    dead, s1, s2 = Pod(4, [("c-open", "twilio"), ("c-done", "sip")]), Pod(2), Pod(2)
    closers = [LostCallCloser(ListSink()), LostCallCloser(ListSink())]
    rd = make(redis_url, "dead", dead)
    r1, r2 = make(redis_url, "s1", s1), make(redis_url, "s2", s2)
    r1._on_lost, r2._on_lost = closers[0], closers[1]
    closers[0].registry, closers[1].registry = r1, r2
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        # the call hashes as the EventLog leaves them: one ended, one still active
        started = CallStarted(call_id="c-open", leg="twilio", t_ms=0, persona="p")
        await client.hset(call_key("c-open"), mapping=started.hash_fields())
        await client.hset(call_key("c-done"), mapping={"status": "ended"})
        await rd.heartbeat()
        await r1.heartbeat()
        await r2.heartbeat()
        assert await r1.reap() == []  # alive
        await rd.aclose()  # SIGKILL: no leave, no more beats
        await asyncio.sleep(0.6)  # past the TTL; the survivors beat on
        await r1.heartbeat()
        await r2.heartbeat()
        placed = [await r1.place(f"new-{i}") for i in range(5)]
        assert sorted(p.pod_id for p in placed if p is not None) == ["s1", "s1", "s2", "s2"]
        lost = await asyncio.gather(r1.reap(), r2.reap())
        taken = [pods for pods in lost if pods]
        assert len(taken) == 1 and isinstance(taken[0][0], LostPod)
        assert taken[0][0].pod_id == "dead"
        assert sorted(c.call_id for c in taken[0][0].calls) == ["c-done", "c-open"]
        ended = [e for c in closers for e in c._events.events]  # type: ignore[attr-defined]
        assert len(ended) == 1 and isinstance(ended[0], CallEnded)
        assert (ended[0].call_id, ended[0].reason, ended[0].result) == (
            "c-open",
            "gateway_lost",
            "server_error",
        )
        assert not await client.exists(pod_key("dead", "calls"))
        assert "dead" not in await client.smembers("voicegate:{fleet}:pods")
    finally:
        await client.aclose()
        for r in (r1, r2):
            await r.aclose()


async def test_grant_is_honoured_only_by_its_pod(redis_url: str) -> None:
    rb, rc = make(redis_url, "b", Pod(1)), make(redis_url, "c", Pod(1))
    try:
        await rb.put_grant("tok-1", "b", {"call_id": "c1", "persona": "teller"})
        assert await rc.take_grant("tok-1") is None  # another pod: refused, left for b
        grant = await rb.take_grant("tok-1")
        assert grant is not None and grant["call_id"] == "c1" and grant["pod"] == "b"
        assert await rb.take_grant("tok-1") is None  # used once
        assert await rb.take_grant("") is None
    finally:
        await rb.aclose()
        await rc.aclose()


async def test_leave_removes_the_entry(redis_url: str) -> None:
    reg = make(redis_url, "gone", Pod(2, [("c1", "twilio")]))
    other = make(redis_url, "other", Pod(0))
    try:
        await reg.start()
        await other.heartbeat()
        assert "gone" in await other.pods()
        await reg.leave()
        assert "gone" not in await other.pods()
        assert await other.reap() == []  # left, not lost: nothing to close
    finally:
        await reg.aclose()
        await other.aclose()


@pytest.mark.parametrize(
    ("pod_id", "url", "heartbeat_s", "ttl_s"),
    [
        ("", "https://x", 1, 3),
        ("a:b", "https://x", 1, 3),
        ("a", "ftp://x", 1, 3),
        ("a", "https://x", 3, 3),
    ],
)
def test_bad_settings_are_refused(pod_id: str, url: str, heartbeat_s: float, ttl_s: float) -> None:
    with pytest.raises(ConfigError):
        FleetRegistry(
            "redis://127.0.0.1:1/0",
            pod_id=pod_id,
            url=url,
            sip="",
            state=Pod(1).state,
            heartbeat_s=heartbeat_s,
            ttl_s=ttl_s,
        )


async def test_a_pod_never_takes_itself_over(redis_url: str) -> None:
    """A pod whose own entry lapsed (a stalled loop, or leaving) must not close its own calls."""
    pod = Pod(2, [("c1", "twilio")])
    reg = make(redis_url, "self", pod)
    other = make(redis_url, "other", Pod(1))
    try:
        await reg.heartbeat()
        await asyncio.sleep(0.6)  # past the TTL without a beat
        assert await reg.reap() == []
        await other.heartbeat()
        lost = await other.reap()
        assert [p.pod_id for p in lost] == ["self"]
    finally:
        await reg.aclose()
        await other.aclose()


async def test_a_restarted_pod_closes_the_calls_of_its_previous_process(redis_url: str) -> None:
    """A StatefulSet pod restarted under the same id before its TTL ran out: nobody reaps it, so
    the new process closes what its predecessor listed."""
    before = make(redis_url, "p0", Pod(2, [("old-1", "twilio"), ("old-2", "sip")]))
    await before.heartbeat()
    await before.aclose()  # killed; restarted at once
    closer = LostCallCloser(ListSink())
    after = make(redis_url, "p0", Pod(2))
    after._on_lost, closer.registry = closer, after
    try:
        await after.start()
        ended = closer._events.events  # type: ignore[attr-defined]
        assert sorted(e.call_id for e in ended) == ["old-1", "old-2"]
        assert {e.reason for e in ended} == {"gateway_lost"}
        fields = await after.pods()
        assert fields["p0"]["active"] == "0"
    finally:
        await after.aclose()


async def test_no_pod_is_taken_over_after_a_redis_outage(
    redis_factory: Callable[..., RedisServer],
) -> None:
    """Redis down longer than the TTL, then back (with its data): every entry lapsed meanwhile,
    but the pods are alive; none may close the other's calls, and both re-register."""
    server = redis_factory(is_durable=True)
    pods = [Pod(2, [("outage-a", "twilio")]), Pod(2, [("outage-b", "twilio")])]
    # b beats seldom: after the outage a is back long before b has re-registered
    regs = [
        make(server.url, "a", pods[0], heartbeat_s=0.05),
        make(server.url, "b", pods[1], heartbeat_s=0.45),
    ]
    closers = [LostCallCloser(ListSink()) for _ in regs]
    for reg, closer in zip(regs, closers, strict=True):
        reg._on_lost, closer.registry = closer, reg
    try:
        for reg in regs:
            await reg.start()
        await asyncio.sleep(0.3)
        server.kill()
        await asyncio.sleep(0.8)  # longer than the 0.5 s TTL
        server.start()
        await asyncio.sleep(1.5)  # both beat again; a reaper would have run by now
        assert [c._events.events for c in closers] == [[], []]  # type: ignore[attr-defined]
        assert set(await regs[0].pods()) == {"a", "b"}
    finally:
        for reg in regs:
            await reg.aclose()
