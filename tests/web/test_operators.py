"""The operators' APIs on a real gateway: live calls during a simulated Twilio call, its events
read back from Redis afterwards, the ended-calls list, the comparison, tokens and bad input."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from legs.twilio.twilio_helpers import TwilioGateway, start_twilio_gateway

from voicegate.audio import caller_speech_ms, load_caller
from voicegate.legs.twilio.sim import TwilioSimulator

from .conftest import EDITOR_TOKEN, VIEW, VIEWER_TOKEN, WEBRTC_TOKEN

CALLED = "+14155550100"  # bank_teller in telephony/numbers.yaml
CALLER = "+15005550123"
ENDPOINTS = ("/api/calls/live", "/api/calls", "/api/compare", "/api/calls/CA1/events")


def http(gateway: TwilioGateway) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=gateway.base_url, trust_env=False, timeout=10)


async def test_the_views_need_the_viewer_or_the_editor_token(gateway: TwilioGateway) -> None:
    async with http(gateway) as client:
        for path in ENDPOINTS:
            for token in (None, WEBRTC_TOKEN, "nope"):
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                assert (await client.get(path, headers=headers)).status_code == 401, path
            for token in ("test-viewer-token-0123456789", EDITOR_TOKEN):
                got = await client.get(path, headers={"Authorization": f"Bearer {token}"})
                assert got.status_code in (200, 404), (path, got.text)
        # the viewer may follow every call's live events too (read-only), the call token may not
        async with client.stream("GET", "/api/events", headers=VIEW) as feed:
            assert feed.status_code == 200
        bad = {"Authorization": f"Bearer {WEBRTC_TOKEN}"}
        assert (await client.get("/api/events", headers=bad)).status_code == 401


async def test_bad_queries_get_a_clear_400(gateway: TwilioGateway) -> None:
    async with http(gateway) as client:
        cases = [
            ("/api/calls/bad id!/events", "invalid call_id"),
            ("/api/calls?since_ms=5000&until_ms=1000", "is after"),
            ("/api/calls?limit=0", "limit must be"),
            ("/api/calls?persona=" + "x" * 65, "at most 64"),
            ("/api/compare?since_ms=-5", "not negative"),
        ]
        for path, message in cases:
            got = await client.get(path, headers=VIEW)
            assert got.status_code == 400 and message in got.json()["detail"], (path, got.text)
        assert (await client.get("/api/compare?since_ms=abc", headers=VIEW)).status_code == 422
        unknown = await client.get("/api/calls/CAnothere/events", headers=VIEW)
        assert unknown.status_code == 404 and "past retention" in unknown.json()["detail"]


async def test_a_call_is_listed_live_then_read_back_from_redis(
    gateway: TwilioGateway, twilio: TwilioSimulator
) -> None:
    speech = load_caller(8000)
    (_, first_end), _ = caller_speech_ms()
    placed = await twilio.place_call(CALLER, CALLED)
    stream = await twilio.open_stream(placed)
    sid = placed.call_sid
    async with http(gateway) as client:
        playing = asyncio.ensure_future(stream.play(speech[: (first_end + 600) * 8]))
        seen: list[dict[str, object]] = []
        while not playing.done():
            rows = (await client.get("/api/calls/live", headers=VIEW)).json()["calls"]
            seen += [r for r in rows if r["call_id"] == sid]
            await asyncio.sleep(0.2)
        await playing
        await stream.play(np.zeros(4000, np.int16))
        await stream.stop()
        assert seen, "the call never showed in the live list"
        row = seen[-1]
        assert (row["leg"], row["persona"], row["from"], row["to"]) == (
            "twilio",
            "bank_teller",
            CALLER,
            CALLED,
        )
        durations = [int(str(r["duration_ms"])) for r in seen]
        assert durations == sorted(durations) and durations[-1] > durations[0]
        assert {r["state"] for r in seen} <= {"caller", "agent", "both", "silence"}
        assert "caller" in {r["state"] for r in seen} or "both" in {r["state"] for r in seen}
        await gateway.events(sid)  # in Redis now
        body = (await client.get(f"/api/calls/{sid}/events", headers=VIEW)).json()
        assert body["live"] is False
        types = [e["type"] for e in body["events"]]
        calls = [t for t in types if t != "leg.status"]  # the stream's status callbacks race
        assert calls[0] == "call.started" and calls[-1] == "call.ended", types
        turns = [e for e in body["events"] if e["type"] == "caller.speech"]
        assert turns and turns[0]["start_ms"] < 1000 and turns[0]["end_ms"] > 3000
        listed = (await client.get("/api/calls?persona=bank_teller", headers=VIEW)).json()
        assert sid in [c["call_id"] for c in listed["calls"]]
        mine = (await client.get(f"/api/calls?number={CALLER[1:]}", headers=VIEW)).json()
        assert [c["call_id"] for c in mine["calls"]][:1] == [sid]
        other = (await client.get("/api/calls?reason=transferred", headers=VIEW)).json()
        assert sid not in [c["call_id"] for c in other["calls"]]
        table = (await client.get("/api/compare", headers=VIEW)).json()
        teller = next(p for p in table["personas"] if p["persona"] == "bank_teller")
        assert teller["calls"] >= 1 and teller["end_reasons"].get("caller_hangup", 0) >= 1


async def test_with_redis_down_a_live_call_still_opens_and_history_says_why(
    redis_factory: Callable[..., Any], tmp_path: Path
) -> None:
    server = redis_factory()
    gw = start_twilio_gateway(
        server.url,
        tmp_path,
        viewer_token=VIEWER_TOKEN,
        webrtc_enabled=False,
    )
    try:
        async with gw.simulator() as twilio, http(gw) as client:
            placed = await twilio.place_call(CALLER, CALLED)
            stream = await twilio.open_stream(placed)
            playing = asyncio.ensure_future(stream.play(np.zeros(8000 * 3, np.int16)))
            try:
                server.stop()
                got = await client.get(f"/api/calls/{placed.call_sid}/events", headers=VIEW)
                assert got.status_code == 200, got.text
                body = got.json()
                assert body["live"] is True and body["events"] == []
                assert "cannot read the call history" in body["history_error"]
                for path in ("/api/compare", "/api/calls", "/api/calls/CAgone/events"):
                    refused = await client.get(path, headers=VIEW)
                    assert refused.status_code == 503, (path, refused.text)
                    assert "cannot read the call history" in refused.json()["detail"]
                live = (await client.get("/api/calls/live", headers=VIEW)).json()["calls"]
                assert [c["call_id"] for c in live] == [placed.call_sid]
            finally:
                await playing
                await stream.stop()
        await gw.wait_idle()
    finally:
        gw.server.stop()
