"""Fleet benchmark: what placement adds to the voice webhook, and what one call leaves in Redis.

    python bench/fleet_bench.py [--webhooks 300] [--call-s 30]

Starts its own redis-server and gateways in this process (echo engine, uvicorn threads on
127.0.0.1), then prints two tables:

1. webhook -> TwiML latency, sequential signed webhooks from the Twilio simulator, for: one
   gateway with the fleet off (local admission only); the fleet on with the webhook at a pod with
   a free slot (placed on itself: one Lua EVALSHA); the webhook at a pod that is draining (placed
   on the other pod: the EVALSHA plus the grant SET). Reservations lapse after 0.2 s, so slots
   never run out.
2. one Twilio call of ``--call-s`` seconds of the bundled caller speech on the echo engine:
   events by type, events per call-minute, bytes of the call's Redis keys (MEMORY USAGE) and the
   global stream's bytes per entry. The echo engine emits no agent text, so transcript.agent
   events are not in this count (SCALING.md adds them from the speech rate).

Run on purpose (about a minute); never part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from voicegate.app import create_app
from voicegate.audio.samples import load_caller
from voicegate.config import Settings
from voicegate.demo import ServerThread, free_port
from voicegate.events import (
    GLOBAL_EVENTS_KEY,
    BargeIn,
    CallEnded,
    CallStarted,
    EventLog,
    TranscriptAgent,
    call_events_key,
    call_key,
)
from voicegate.legs.twilio.sim import TwilioSimulator

REPO = Path(__file__).resolve().parent.parent
TOKEN = "bench-auth-token-0123456789abcdef"
FRONT = "https://fleet.bench"
TO = "+14155550101"


def settings(redis_url: str, tmp: Path, name: str, **kw: Any) -> Settings:
    values: dict[str, Any] = {
        "engine": "echo",
        "host": "127.0.0.1",
        "redis_url": redis_url,
        "public_url": FRONT,
        "twilio_auth_token": TOKEN,
        "personas_dir": REPO / "personas",
        "numbers_file": REPO / "telephony" / "numbers.yaml",
        "events_journal_dir": tmp / name / "journal",
        "sip_enabled": False,
        "webrtc_enabled": False,
        "max_calls": 200,
        "log_level": "WARNING",
    }
    values.update(kw)
    return Settings(**values)


def fleet_kw(pod: str) -> dict[str, Any]:
    return {
        "fleet_enabled": True,
        "fleet_pod_id": pod,
        "fleet_pod_url": f"https://{pod}.fleet.bench",
        "fleet_heartbeat_s": 0.2,
        "fleet_ttl_s": 1.0,
        "fleet_reservation_s": 0.2,
    }


def serve(s: Settings) -> tuple[ServerThread, Any]:
    app = create_app(s)
    server = ServerThread(app)
    server.start()
    return server, app


async def webhook_ms(sim: TwilioSimulator, n: int, expect: str) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        placed = await sim.place_call(to=TO)
        out.append((time.perf_counter() - t0) * 1000)
        if expect not in placed.stream_url:
            raise RuntimeError(f"expected a stream on {expect}: {placed.twiml[:200]}")
    return out


def row(name: str, ms: list[float]) -> str:
    ms = sorted(ms)
    q = lambda p: ms[min(len(ms) - 1, int(p * len(ms)))]  # noqa: E731
    return f"| {name} | {len(ms)} | {statistics.median(ms):.2f} | {q(0.9):.2f} | {q(0.99):.2f} | {ms[-1]:.2f} |"


async def placement(redis_url: str, tmp: Path, n: int) -> None:
    single, _ = serve(settings(redis_url, tmp, "single"))
    a, app_a = serve(settings(redis_url, tmp, "a", **fleet_kw("a")))
    b, _ = serve(settings(redis_url, tmp, "b", **fleet_kw("b")))
    try:
        sims = [TwilioSimulator(x.base_url, FRONT, TOKEN) for x in (single, a, b)]
        for sim in sims:  # warm-up: connections, first requests
            await sim.place_call(to=TO)
        off = await webhook_ms(sims[0], n, "wss://")
        local = await webhook_ms(sims[2], n, "b.fleet.bench")

        async def drain_a() -> None:
            app_a.state.twilio.begin_drain()
            app_a.state.fleet.begin_drain()

        asyncio.run_coroutine_threadsafe(drain_a(), app_a.state.loop).result(5)
        await asyncio.sleep(0.5)
        remote = await webhook_ms(sims[1], n, "b.fleet.bench")
        print("\n| webhook -> TwiML | n | p50 ms | p90 ms | p99 ms | max ms |")
        print("|---|---|---|---|---|---|")
        print(row("one gateway, fleet off", off))
        print(row("fleet on, placed on itself", local))
        print(row("fleet on, placed on the other pod", remote))
        for sim in sims:
            await sim.aclose()
    finally:
        for server in (single, a, b):
            server.stop()


async def one_call(redis_url: str, tmp: Path, seconds: float) -> None:
    server, _ = serve(settings(redis_url, tmp, "call"))
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        sim = TwilioSimulator(server.base_url, FRONT, TOKEN)
        placed = await sim.place_call(to=TO)
        stream = await sim.open_stream(placed)
        clip = load_caller(8000)
        reps = int(seconds * 8000) // len(clip) + 1
        pcm = (clip.tolist() * reps)[: int(seconds * 8000)]
        import numpy as np

        await stream.play(np.asarray(pcm, dtype=np.int16))
        await stream.stop()
        await stream.close()
        call_id = placed.call_sid
        for _ in range(200):
            if await redis.hget(call_key(call_id), "status") == "ended":
                break
            await asyncio.sleep(0.05)
        entries = await redis.xrange(call_events_key(call_id))
        kinds = Counter(f["type"] for _, f in entries)
        call_bytes = int(await redis.memory_usage(call_key(call_id)) or 0)
        stream_bytes = int(await redis.memory_usage(call_events_key(call_id)) or 0)
        glob_len = int(await redis.xlen(GLOBAL_EVENTS_KEY))
        glob_bytes = int(await redis.memory_usage(GLOBAL_EVENTS_KEY, samples=0) or 0)
        minutes = seconds / 60
        print(f"\none Twilio call, {seconds:.0f} s of caller speech, echo engine")
        print("| what | value |")
        print("|---|---|")
        print(
            f"| events | {len(entries)} ({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))}) |"
        )
        print(f"| events per call-minute | {len(entries) / minutes:.1f} |")
        print(f"| call hash bytes | {call_bytes} |")
        print(
            f"| call stream bytes | {stream_bytes} ({stream_bytes / max(1, len(entries)):.0f} per event) |"
        )
        print(
            f"| global stream bytes per entry | {glob_bytes / max(1, glob_len):.0f} ({glob_len} entries) |"
        )
        await sim.aclose()
    finally:
        await redis.aclose()
        server.stop()


SEGMENT = "Sure, I can help with that. Could you tell me the postcode on the account, please?"


async def bytes_at_scale(redis_url: str, tmp: Path, calls: int, segments: int) -> None:
    """``calls`` calls of ``segments`` agent sentences (80 characters) and a barge-in per five,
    written through the EventLog: Redis bytes per event once streams hold many entries."""
    log = EventLog(redis_url, journal_dir=tmp / "scale-journal")
    await log.start()
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        before_len = int(await redis.xlen(GLOBAL_EVENTS_KEY))
        before_bytes = int(await redis.memory_usage(GLOBAL_EVENTS_KEY, samples=0) or 0)
        for c in range(calls):
            cid = f"scale-{c:05d}"
            log.emit(CallStarted(call_id=cid, leg="twilio", t_ms=0, persona="support_agent",
                                 from_="+15550100", to=TO, leg_call_ref="CA" + "0" * 32))  # fmt: skip
            for k in range(segments):
                t = 4000 * k
                log.emit(TranscriptAgent(call_id=cid, leg="twilio", t_ms=t + 3000, text=SEGMENT,
                                         start_ms=t, end_ms=t + 3000))  # fmt: skip
                if k % 5 == 4:
                    log.emit(BargeIn(call_id=cid, leg="twilio", t_ms=t + 3100, caller_onset_ms=t + 2900,
                                     agent_stop_ms=t + 3050, latency_ms=150, discarded_ms=80))  # fmt: skip
            log.emit(CallEnded(call_id=cid, leg="twilio", t_ms=60_000, reason="caller_hangup",
                               duration_ms=60_000, frames=750))  # fmt: skip
            await asyncio.sleep(0)
        await log.wait_idle(30)
        glob_len = int(await redis.xlen(GLOBAL_EVENTS_KEY)) - before_len
        glob_bytes = int(await redis.memory_usage(GLOBAL_EVENTS_KEY, samples=0) or 0) - before_bytes
        per_call = int(await redis.memory_usage(call_events_key("scale-00000"), samples=0) or 0)
        per_hash = int(await redis.memory_usage(call_key("scale-00000")) or 0)
        n = int(await redis.xlen(call_events_key("scale-00000")))
        print(
            f"\nRedis bytes at scale: {calls} calls x {n} events (transcript segments, barge-ins)"
        )
        print("| what | bytes |")
        print("|---|---|")
        print(f"| global stream, per entry | {glob_bytes / max(1, glob_len):.0f} |")
        print(
            f"| one call's stream ({n} events) | {per_call} ({per_call / max(1, n):.0f} per event) |"
        )
        print(f"| one call's hash | {per_hash} |")
    finally:
        await redis.aclose()
        await log.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--webhooks", type=int, default=300)
    parser.add_argument("--call-s", type=float, default=30.0)
    args = parser.parse_args()
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed")
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        port = free_port()
        redis = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", tmpdir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            time.sleep(0.3)
            url = f"redis://127.0.0.1:{port}/0"
            await placement(url, tmp, args.webhooks)
            await one_call(url, tmp, args.call_s)
            await bytes_at_scale(url, tmp, calls=200, segments=15)
        finally:
            redis.kill()
            redis.wait()


if __name__ == "__main__":
    asyncio.run(main())
