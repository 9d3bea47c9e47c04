"""Hostile uploads beside a live call: RSS of a real `voicegate serve` and the call's audio.

Starts the gateway (echo engine; Redis from VOICEGATE_REDIS_URL), places a simulated Twilio call
that plays a tone, then sends unsigned 512 MB uploads to POST /twilio/voice at once
(Content-Length announced, as curl sends a file). Prints each answer, the seconds to it and the
bytes sent when it came, the gateway's peak and current RSS (/proc/PID/status), and the longest
gap between the call's agent media messages meanwhile (20 ms when unharmed). Run on purpose,
never by the tests:

    VOICEGATE_REDIS_URL=redis://127.0.0.1:6379/0 python bench/upload_probe.py

The gateway serves the code of the checkout this file sits in: for a before/after, copy it into
the ``bench/`` of an export of the older commit and run it there (with that tree on PYTHONPATH).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _gateway import REPO, start_gateway

from voicegate.legs.twilio.sim import TwilioSimulator

AUTH_TOKEN = "probe-auth-token"
PUBLIC_URL = "https://gw.probe"
CHUNK = b"x" * (1024 * 1024)


def vm_mb(pid: int, field: str = "VmRSS") -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (the peak) of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def upload(host: str, port: int, total: int, signature: str) -> tuple[str, float, int]:
    """A POST of ``total`` bytes (unsigned when ``signature`` is empty); stops sending once
    the answer is in."""
    t0 = time.monotonic()
    reader, writer = await asyncio.open_connection(host, port)
    head = (
        f"POST /twilio/voice HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {total}\r\n"
    )
    if signature:
        head += f"X-Twilio-Signature: {signature}\r\n"
    writer.write((head + "\r\n").encode())
    answer = asyncio.create_task(reader.readline())
    sent = 0
    try:
        while sent < total and not answer.done():
            writer.write(CHUNK[: total - sent])
            await writer.drain()
            sent += min(len(CHUNK), total - sent)
    except ConnectionError:
        pass
    try:
        status = (await asyncio.wait_for(answer, 120)).decode().strip()
    except (ConnectionError, asyncio.IncompleteReadError, TimeoutError) as exc:
        status = f"no answer ({type(exc).__name__})"
    writer.close()
    return status, time.monotonic() - t0, sent


async def probe(uploads: int, size_mb: int, signature: str) -> None:
    env = {
        "VOICEGATE_ENGINE": "echo",
        "VOICEGATE_PUBLIC_URL": PUBLIC_URL,
        "VOICEGATE_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
    }
    with tempfile.TemporaryDirectory() as tmp:
        proc, base = start_gateway(env, Path(tmp), pin=False, name="upload-probe")
        try:
            host, port = base.split("//")[1].split(":")
            async with TwilioSimulator(base, PUBLIC_URL, AUTH_TOKEN) as twilio:
                placed = await twilio.place_call("+15005550006", "+14155550100")
                stream = await twilio.open_stream(placed)
                t = np.arange(8000 * 120) / 8000
                pcm = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
                playing = asyncio.create_task(stream.play(pcm))
                await asyncio.sleep(1.0)
                print(f"code: {REPO}")
                print(f"VmRSS with the call up, before the uploads: {vm_mb(proc.pid):.0f} MB")
                first = len(stream.report.arrivals)
                size = size_mb * 1024 * 1024
                results = await asyncio.gather(
                    *(upload(host, int(port), size, signature) for _ in range(uploads))
                )
                await asyncio.sleep(0.5)
                times = [a[0] for a in stream.report.arrivals[max(0, first - 1) :]]
                gap_ms = max(np.diff(times), default=float("nan")) * 1000
                kind = f"signed {signature!r}" if signature else "unsigned"
                print(f"{uploads} concurrent {kind} uploads of {size_mb} MB:")
                for status, seconds, sent in results:
                    print(f"  {status}: after {seconds:.2f} s, {sent / 2**20:.0f} MB sent")
                print(f"VmHWM (peak): {vm_mb(proc.pid, 'VmHWM'):.0f} MB")
                print(f"VmRSS 0.5 s after: {vm_mb(proc.pid):.0f} MB")
                print(f"longest gap between the call's agent media messages: {gap_ms:.0f} ms")
                print(f"call still up: {not stream.is_closed}")
                playing.cancel()
                await stream.stop()
        finally:
            proc.terminate()
            proc.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=2)
    parser.add_argument("--size-mb", type=int, default=512)
    parser.add_argument("--signature", default="", help="an X-Twilio-Signature to send (forged)")
    args = parser.parse_args()
    if "VOICEGATE_REDIS_URL" not in os.environ:
        sys.exit("set VOICEGATE_REDIS_URL to a running Redis")
    asyncio.run(probe(args.uploads, args.size_mb, args.signature))


if __name__ == "__main__":
    main()
