"""Answers from outside endpoints are read only up to a bound (a server that never stops)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from voicegate.calls.context import MAX_ANSWER_BYTES, CallStartWebhook
from voicegate.contracts import CallInfo
from voicegate.http_out import post_bounded


async def endless_server() -> tuple[asyncio.Server, str, list[int]]:
    """Answers every request with 200 and a chunked body that never ends; counts bytes sent."""
    sent = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        writer.write(b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"{" * 4096
        try:
            while True:
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent[0] += len(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/hook", sent


@pytest.mark.timeout(30)
async def test_post_bounded_stops_reading_at_its_limit() -> None:
    server, url, _ = await endless_server()
    async with server, httpx.AsyncClient(trust_env=False, timeout=10) as client:
        answer = await post_bounded(client, url, limit=10_000, content=b"{}")
    assert answer.status_code == 200
    assert answer.is_truncated and len(answer.body) == 10_000


@pytest.mark.timeout(30)
async def test_an_endless_call_start_answer_is_an_error_not_a_buffer() -> None:
    server, url, _ = await endless_server()
    async with server:
        webhook = CallStartWebhook(url, "s" * 32, timeout_s=10.0)
        answer = await webhook.ask(CallInfo("c1", "twilio", "teller", "+15550001"), {})
        await webhook.aclose()
    assert answer.outcome == "error"
    assert f"more than {MAX_ANSWER_BYTES} bytes" in answer.detail
