"""Per-call context on the Twilio leg, the real app over real sockets: the voice URL's query
travels in the stream's <Parameter>s into the call's prompt variables, the numbers file adds
its own, and the call-start webhook (a real local HTTP server) can refuse a call."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from utils import Operator

from ..gateway import context_overrides, gateway_settings, serving
from .twilio_helpers import TwilioGateway, start_twilio_gateway

CALLED = "+14155550100"
PERSONA = """\
description: A teller who knows the caller.
voice: NATF0
variables:
  caller_name: {default: "our customer"}
  account_tier: {default: standard}
text_prompt: You are speaking with {caller_name}, a {account_tier} customer.
"""
NUMBERS = f"""\
default: teller
numbers:
  "{CALLED}": teller
variables:
  "{CALLED}": {{account_tier: gold}}
"""


@pytest.fixture(scope="module")
def context_gateway(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory, operator: Operator
) -> Iterator[TwilioGateway]:
    tmp = tmp_path_factory.mktemp("ctx")
    yield from serving(
        start_twilio_gateway(
            redis_url,
            tmp,
            **context_overrides(tmp, PERSONA, NUMBERS, operator.url, operator.secret),
        )
    )


async def test_the_voice_urls_query_and_the_numbers_file_reach_the_calls_variables(
    context_gateway: TwilioGateway, operator: Operator
) -> None:
    async with context_gateway.simulator() as twilio:
        placed = await twilio.place_call("+15550001", CALLED, query="caller_name=Alice&Bad=1")
        assert placed.parameters["caller_name"] == "Alice" and "Bad" not in placed.parameters
        stream = await twilio.open_stream(placed)
        await stream.play_silence(400)
        await stream.stop()
    await context_gateway.wait_idle()
    events = await context_gateway.events(placed.call_sid)
    (context,) = [e for e in events if e["type"] == "call.context"]
    assert json.loads(context["sources"]) == {
        "caller_name": "call",
        "account_tier": "numbers",
    }
    assert context["webhook"] == "ok"
    (request,) = [r for r in operator.requests if r["call_id"] == placed.call_sid]
    assert request["variables"] == {
        "caller_number": "+15550001",
        "called_number": CALLED,
        "caller_name": "Alice",
        "account_tier": "gold",
    }
    assert operator.bad_signatures == 0


async def test_a_call_the_webhook_refuses_never_starts(
    context_gateway: TwilioGateway, operator: Operator, twilio_sid: str = "CA" + "7" * 32
) -> None:
    operator.answer(twilio_sid, {"action": "refuse"})
    async with context_gateway.simulator() as twilio:
        placed = await twilio.place_call("+15550002", CALLED, call_sid=twilio_sid)
        stream = await twilio.open_stream(placed)
        await stream.wait_closed(5)
        assert stream.report.close_code == 1013  # try again later: the call is not taken
    events = await context_gateway.events(twilio_sid, until="call.context")
    assert "call.started" not in [e["type"] for e in events]
    (context,) = [e for e in events if e["type"] == "call.context"]
    assert context["action"] == "refuse"
    assert context_gateway.calls.active_count == 0


async def test_a_webhook_without_a_secret_stops_start_up(redis_url: str, tmp_path: Path) -> None:
    from voicegate.app import create_app
    from voicegate.errors import ConfigError

    settings = gateway_settings(redis_url, tmp_path, call_start_webhook_url="http://127.0.0.1:9/x")
    app = create_app(settings)
    with pytest.raises(ConfigError, match="CALL_START_WEBHOOK_SECRET"):
        async with app.router.lifespan_context(app):
            pass
