"""Hostile uploads to the Twilio webhooks beside a live call, over real sockets: an unsigned or
oversized body is refused while it streams in (by its Content-Length before any byte of it is
read, or by the bytes read for a chunked body without one), and the call's audio goes on."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from utils import upload

from voicegate.legs.twilio.routes import MAX_FORM_BYTES
from voicegate.legs.twilio.sim import TwilioSimulator

from .twilio_helpers import TwilioGateway

CALLED = "+14155550100"
CALLER = "+15005550006"
HUGE_BYTES = 512 * 1024 * 1024  # what the probe sent


@pytest.mark.parametrize(
    ("signature", "content_length", "status"),
    [
        (None, HUGE_BYTES, 403),  # unsigned: refused before the body, whatever its size
        (None, None, 403),
        ("bogus", HUGE_BYTES, 413),  # announced too large: refused before the body
        ("bogus", None, 413),  # chunked, no length: refused once the bytes read pass the bound
    ],
)
async def test_oversized_or_unsigned_webhook_is_refused_while_streaming_beside_a_live_call(
    gateway: TwilioGateway,
    twilio: TwilioSimulator,
    signature: str | None,
    content_length: int | None,
    status: int,
) -> None:
    placed = await twilio.place_call(CALLER, CALLED)
    stream = await twilio.open_stream(placed)
    t = np.arange(8000 * 3) / 8000
    playing = asyncio.create_task(
        stream.play((8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16))
    )
    await asyncio.sleep(0.3)
    refused = gateway.twilio_stats.webhooks_refused
    heard_before = stream.report.media_messages
    results = await asyncio.gather(
        *(
            upload(
                gateway.base_url,
                path,
                _signed(signature),
                content_length=content_length,
                total_bytes=64 * 1024 * 1024,
            )
            for path in ("/twilio/voice", "/twilio/status", "/twilio/voice")
        )
    )
    for result in results:
        assert result.status == status
        assert "connection: close" in result.headers  # the rest of the upload is not read
        if content_length is not None or signature is None:
            assert result.body_bytes_sent == 0  # answered before a byte of the body was sent
        else:  # answered once the bound was passed, long before the upload was over
            assert MAX_FORM_BYTES < result.body_bytes_sent < 1024 * 1024
    assert gateway.twilio_stats.webhooks_refused == refused + 3
    # the live call went on: still open, its audio kept coming back, it ends normally
    await asyncio.sleep(0.2)
    assert not stream.is_closed
    assert stream.report.media_messages > heard_before
    await playing
    await stream.stop()
    events = await gateway.events(placed.call_sid)
    assert events[-1]["reason"] == "caller_hangup"
    # and a real signed webhook is still answered
    again = await twilio.place_call(CALLER, CALLED)
    assert again.is_connect


async def test_a_form_at_the_bound_is_read_and_checked(gateway: TwilioGateway) -> None:
    for length, status in ((MAX_FORM_BYTES, 403), (MAX_FORM_BYTES + 1, 413)):
        result = await upload(
            gateway.base_url,
            "/twilio/voice",
            _signed("bogus"),
            content_length=length,
            total_bytes=length,
        )
        assert result.status == status


def _signed(signature: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if signature is not None:
        headers["X-Twilio-Signature"] = signature
    return headers
