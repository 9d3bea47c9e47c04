"""Twilio placement across a fleet: two real gateways (uvicorn threads) sharing a private Redis
with the fleet on. The voice webhook reaches pod A under the fleet's URL; A places the call on
itself while it has a slot, then on B by answering B's own wss:// URL; the token is honoured
only by B; with every slot taken the call is rejected busy. The webhook's signature is over the
fleet URL, the stream's over the pod's: both pass."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import RedisServer
from voicegate.legs.twilio.security import SignatureChecker
from voicegate.legs.twilio.sim import SimulatedStream, TwilioSimulator

from ..gateway import gateway_settings, start_gateway
from .twilio_helpers import AUTH_TOKEN, PUBLIC_URL, TwilioGateway, start_twilio_gateway

CLOSE_POLICY_VIOLATION = 1008
POD_URLS = {"a": "https://a.gw.test", "b": "https://b.gw.test"}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, TwilioGateway]]:
    redis = RedisServer(tmp_path_factory.mktemp("fleet-redis"))
    redis.start()
    pods: dict[str, TwilioGateway] = {}
    try:
        for pod_id, max_calls in (("a", 1), ("b", 2)):
            settings = gateway_settings(
                redis.url,
                tmp_path_factory.mktemp(f"gw-{pod_id}"),
                public_url=PUBLIC_URL,
                twilio_auth_token=AUTH_TOKEN,
                max_calls=max_calls,
                fleet_enabled=True,
                fleet_pod_id=pod_id,
                fleet_pod_url=POD_URLS[pod_id],
                fleet_heartbeat_s=0.2,
                fleet_ttl_s=1.0,
                fleet_reservation_s=3.0,
            )
            pods[pod_id] = start_gateway(TwilioGateway, settings)
        yield pods
    finally:
        for gw in pods.values():
            gw.server.stop()
        redis.stop()


def on(gw: TwilioGateway, public_url: str) -> TwilioSimulator:
    """Twilio reaching ``gw`` under ``public_url`` (the fleet's, or the pod's own)."""
    return TwilioSimulator(gw.base_url, public_url, AUTH_TOKEN)


async def wait_for(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    for _ in range(int(timeout_s / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def hang_up(
    streams: list[SimulatedStream],
    sims: tuple[TwilioSimulator, ...],
    pods: tuple[TwilioGateway, ...],
) -> None:
    """Stop and close ``streams``, close ``sims``, and wait until ``pods`` are idle."""
    for stream in streams:
        await stream.stop()
        await stream.close()
    for sim in sims:
        await sim.aclose()
    for pod in pods:
        await pod.wait_idle()


async def test_calls_fill_self_then_the_other_pod_then_busy(
    fleet: dict[str, TwilioGateway],
) -> None:
    a, b = fleet["a"], fleet["b"]
    front = on(a, PUBLIC_URL)  # the load balancer sent every webhook to A
    sim_a, sim_b = on(a, POD_URLS["a"]), on(b, POD_URLS["b"])
    streams: list[SimulatedStream] = []
    try:
        first = await front.place_call(to="+14155550100")
        assert first.stream_url == "wss://a.gw.test/twilio/media"
        assert first.connect_action == "https://a.gw.test/twilio/next"
        streams.append(await sim_a.open_stream(first))
        await wait_for(lambda: a.calls.active_count == 1)

        second = await front.place_call(to="+14155550100")
        assert second.stream_url == "wss://b.gw.test/twilio/media"
        assert second.status_callback == "https://b.gw.test/twilio/status"
        # A's stream presented at A (signed for A): A did not issue it for itself, refused
        wrong = await sim_a.open_stream(second)
        await wrong.wait_closed(5)
        assert wrong.report.close_code == CLOSE_POLICY_VIOLATION
        streams.append(await sim_b.open_stream(second))
        await wait_for(lambda: b.calls.active_count == 1)
        assert b.calls.get(second.call_sid) is not None
        assert a.app.state.twilio.stats.placed_elsewhere >= 1

        third = await front.place_call(to="+14155550100")
        assert third.stream_url == "wss://b.gw.test/twilio/media"
        streams.append(await sim_b.open_stream(third))
        await wait_for(lambda: b.calls.active_count == 2)

        full = await front.place_call(to="+14155550100")
        assert not full.is_connect and full.reject_reason == "busy", full.twiml

        # a call ends on B: after B's next heartbeat the fleet has a slot there again
        ended = streams.pop()
        await ended.stop()
        await ended.close()
        await wait_for(lambda: b.calls.active_count == 1)
        await asyncio.sleep(0.5)
        again = await front.place_call(to="+14155550100")
        assert again.stream_url == "wss://b.gw.test/twilio/media", again.twiml
        # never claimed: its reservation lapses (3 s) and the slot is free again
    finally:
        await hang_up(streams, (front, sim_a, sim_b), (a, b))


async def test_a_token_for_another_pod_is_refused_and_left_for_it(
    fleet: dict[str, TwilioGateway],
) -> None:
    a, b = fleet["a"], fleet["b"]
    await asyncio.sleep(3.2)  # the previous test's unclaimed reservation has lapsed
    front = on(b, PUBLIC_URL)  # this time the load balancer picked B
    sim_a, sim_b = on(a, POD_URLS["a"]), on(b, POD_URLS["b"])
    streams: list[SimulatedStream] = []
    try:
        calls = [await front.place_call(to="+14155550101") for _ in range(2)]
        # the voice URL's prompt variables ride in the other pod's <Stream> parameters too
        calls.append(await front.place_call(to="+14155550101", query="caller_name=Ann"))
        assert calls[2].parameters["caller_name"] == "Ann"
        urls = [c.stream_url for c in calls]
        assert urls == [
            "wss://b.gw.test/twilio/media",
            "wss://b.gw.test/twilio/media",
            "wss://a.gw.test/twilio/media",
        ]
        # the call placed on A, presented to B: B holds no grant of A's
        wrong = await sim_b.open_stream(calls[2])
        await wrong.wait_closed(5)
        assert wrong.report.close_code == CLOSE_POLICY_VIOLATION
        streams.append(await sim_a.open_stream(calls[2]))
        await wait_for(lambda: a.calls.active_count == 1)
    finally:
        await hang_up(streams, (front, sim_a, sim_b), (a, b))


async def test_redis_down_the_pod_decides_alone(tmp_path: Path) -> None:
    """No registry answer: the webhook is still answered, by this pod's own admission."""
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    gw = start_twilio_gateway(
        redis.url,
        tmp_path,
        max_calls=1,
        fleet_enabled=True,
        fleet_pod_id="solo",
        fleet_pod_url="https://solo.gw.test",
        fleet_heartbeat_s=0.2,
        fleet_ttl_s=1.0,
    )
    front, direct = on(gw, PUBLIC_URL), on(gw, "https://solo.gw.test")
    try:
        redis.kill()
        placed = await front.place_call(to="+14155550100")
        assert placed.stream_url == "wss://solo.gw.test/twilio/media", placed.twiml
        assert gw.twilio_stats.placement_failures == 1
        stream = await direct.open_stream(placed)
        await wait_for(lambda: gw.calls.active_count == 1)
        busy = await front.place_call(to="+14155550100")  # its one slot is taken
        assert busy.reject_reason == "busy", busy.twiml
        await stream.stop()
        await stream.close()
        await gw.wait_idle()
    finally:
        await front.aclose()
        await direct.aclose()
        gw.server.stop()
        redis.kill()


def test_signatures_for_the_fleet_url_and_the_pod_url_pass_others_do_not() -> None:
    checker = SignatureChecker(AUTH_TOKEN, PUBLIC_URL, (POD_URLS["a"],))
    params = {"CallSid": "CA1", "To": "+14155550100"}
    for base in (PUBLIC_URL, POD_URLS["a"]):
        signer = SignatureChecker(AUTH_TOKEN, base)
        assert (
            checker.check_webhook(
                "/twilio/voice", "", params, signer.sign_webhook("/twilio/voice", params)
            )
            is None
        )
        assert checker.check_upgrade("/twilio/media", signer.sign_upgrade("/twilio/media")) is None
    other = SignatureChecker(AUTH_TOKEN, POD_URLS["b"])
    assert checker.check_upgrade("/twilio/media", other.sign_upgrade("/twilio/media")) is not None
    forged = other.sign_webhook("/twilio/voice", params)
    assert checker.check_webhook("/twilio/voice", "", params, forged) is not None
