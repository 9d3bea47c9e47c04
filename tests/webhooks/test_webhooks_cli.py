"""``voicegate webhooks replay CALL_ID`` as a command: stored report, real Redis, real receiver."""

from __future__ import annotations

import json

import pytest
from redis import Redis
from typer.testing import CliRunner

from voicegate.cli import app
from voicegate.webhooks import delivery_key, idempotency_key, verify

from .receiver import Receiver

SECRET = "whsec-cli"


def test_replay_sends_the_stored_report_and_records_it(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = json.dumps({"type": "call.ended", "call_id": "c-cli"})
    client = Redis.from_url(redis_url, decode_responses=True)
    key = delivery_key("c-cli")
    client.delete(key)
    monkeypatch.setenv("VOICEGATE_REDIS_URL", redis_url)
    monkeypatch.setenv("VOICEGATE_WEBHOOK_SECRET", SECRET)
    runner = CliRunner()
    try:
        with Receiver() as rx:
            client.hset(key, mapping={"url": rx.url, "body": body, "status": "dead"})
            result = runner.invoke(app, ["webhooks", "replay", "c-cli"])
            assert result.exit_code == 0, result.output
            assert "delivered" in result.output
            (hit,) = rx.attempts
            assert hit.body == body.encode() and hit.key == idempotency_key("c-cli")
            assert verify(hit.body, hit.headers["voicegate-signature"], SECRET)
            assert client.hget(key, "status") == "delivered"

            rx.is_failing = True
            result = runner.invoke(app, ["webhooks", "replay", "c-cli"])
            assert result.exit_code == 1 and "HTTP 500" in result.output

        result = runner.invoke(app, ["webhooks", "replay", "c-nothing-here"])
        assert result.exit_code == 2 and "no report and no events" in result.output
    finally:
        client.delete(key)
        client.close()
