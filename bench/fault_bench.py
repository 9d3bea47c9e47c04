"""Engine fault to every caller off the engine: N live simulated Twilio calls, then the engine
breaks (the TEST-only fault-injecting model: raise, NaN audio, a hung tick), and the time from
the fault being seen to each call's end is measured.

The gateway runs as its own process (``voicegate serve``, echo engine by default) with
``VOICEGATE_ENGINE_FAULT=<kind>``: the fault comes ``--settle`` seconds after all N calls are in.
This process plays Twilio for every call (the bundled speech recording, looped, at real time).
Printed per fault kind:
  ended p50/max  the fault seen (``voicegate_engine_last_fault_time_seconds``) -> each call's
                 ``call.ended`` event (its ``ts``, wall-clock ms, written by the gateway)
  closed max     the fault seen -> the last caller's Media Stream closed (seen here)
  unready..ready /readyz 503 seen first -> 200 again (the rebuild, polled every 20 ms)
  reasons        call.ended reasons
For ``hang`` the fault is seen ``VOICEGATE_ENGINE_TICK_TIMEOUT_S`` (2 s) after the hung tick
began: add that for the time from the tick's start. Numbers vary with the machine and its load:
run it on purpose, not in CI.

    python bench/fault_bench.py                       # 20 calls, raise, nan, hang, echo engine
    python bench/fault_bench.py --calls 20 --kinds hang --engine tiny
    python bench/fault_bench.py --overflow +14155550199   # calls handed to an overflow number

With ``--overflow`` the numbers file gets that overflow destination: every call is transferred
(the stream lets its queued audio play, closes, and ``<Connect action>`` dials the overflow), so
"ended" is the fault -> the call handed off (``call.ended`` reason ``overflow``).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from _gateway import REPO, caller_speech, scrape, start_gateway
from redis.asyncio import Redis

from voicegate.demo import LocalRedis
from voicegate.events import call_events_key
from voicegate.legs.twilio.sim import SimulatedStream, TwilioSimulator

PUBLIC = "https://gw.bench"
TOKEN = "bench-auth-token-0123456789abcdef"
CALLED = "+14155550100"


async def call_ended_ts(redis_url: str, call_sid: str, timeout_s: float = 15.0) -> dict[str, str]:
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            entries: Any = await client.xrange(call_events_key(call_sid))
            for _, fields in entries or []:
                if fields.get("type") == "call.ended":
                    return {str(k): str(v) for k, v in fields.items()}
            if time.monotonic() > deadline:
                return {}
            await asyncio.sleep(0.05)
    finally:
        await client.aclose()


async def watch_readyz(base: str, seen: dict[str, float], stop: asyncio.Event) -> None:
    async with httpx.AsyncClient(trust_env=False, timeout=2) as client:
        while not stop.is_set():
            try:
                code = (await client.get(base + "/readyz")).status_code
            except httpx.HTTPError:
                code = 0
            now = time.time()
            if code == 503 and "unready" not in seen:
                seen["unready"] = now
            if code == 200 and "unready" in seen and "ready" not in seen:
                seen["ready"] = now
                return
            await asyncio.sleep(0.02)


async def run_kind(base: str, redis_url: str, n: int) -> dict[str, Any]:
    closed_at: dict[str, float] = {}
    async with TwilioSimulator(base, PUBLIC, TOKEN) as twilio:
        streams: list[SimulatedStream] = []
        plays = []
        for k in range(n):
            placed = await twilio.place_call("+15005550006", CALLED)
            if not placed.is_connect:
                raise RuntimeError(f"call {k} refused: {placed.twiml}")
            stream = await twilio.open_stream(placed)
            streams.append(stream)
            pcm = caller_speech(60, 8000, offset_samples=k * 1777)
            plays.append(asyncio.create_task(stream.play(pcm)))
        seen: dict[str, float] = {}
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch_readyz(base, seen, stop))

        async def closed(stream: SimulatedStream) -> None:
            await stream.wait_closed(60)
            closed_at[stream.call.call_sid] = time.time()

        await asyncio.gather(*(closed(s) for s in streams))
        await asyncio.gather(*plays)
        try:
            await asyncio.wait_for(watcher, 60)
        except TimeoutError:
            stop.set()
    fault_at = scrape(base).get("voicegate_engine_last_fault_time_seconds", 0.0)
    ended = [await call_ended_ts(redis_url, s.call.call_sid) for s in streams]
    ended_ms = np.array([int(e["ts"]) - fault_at * 1000 for e in ended if e])
    reasons: dict[str, int] = {}
    for e in ended:
        reasons[e.get("reason", "none")] = reasons.get(e.get("reason", "none"), 0) + 1
    return {
        "ended_p50": float(np.percentile(ended_ms, 50)) if len(ended_ms) else float("nan"),
        "ended_max": float(ended_ms.max()) if len(ended_ms) else float("nan"),
        "closed_max": (max(closed_at.values()) - fault_at) * 1000,
        "rebuild": (seen.get("ready", float("nan")) - seen.get("unready", float("nan"))) * 1000,
        "reasons": ",".join(f"{k}={v}" for k, v in sorted(reasons.items())),
        "missing": n - len(ended_ms),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--kinds", default="raise,nan,hang")
    parser.add_argument("--engine", default="echo")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds of calls before it")
    parser.add_argument("--repeat", type=int, default=1, help="runs per kind")
    parser.add_argument("--overflow", default="", help="overflow number or SIP URI for all calls")
    args = parser.parse_args()
    print(
        f"engine={args.engine}, {args.calls} live Twilio calls, fault {args.settle:g} s after "
        "all are in; times in ms from the fault being seen"
    )
    print(
        f"{'kind':<6} {'ended p50':>9} {'ended max':>9} {'closed max':>10} {'rebuild':>8}  reasons"
    )
    with tempfile.TemporaryDirectory() as tmp:
        numbers: dict[str, str] = {}
        if args.overflow:
            path = Path(tmp) / "numbers.yaml"
            shipped = (REPO / "telephony" / "numbers.yaml").read_text()
            path.write_text(shipped + f'overflow:\n  default: "{args.overflow}"\n')
            numbers["VOICEGATE_NUMBERS_FILE"] = str(path)
        redis = LocalRedis(Path(tmp))
        try:
            for kind in args.kinds.split(","):
                for run in range(args.repeat):
                    proc, base = start_gateway(
                        {
                            "VOICEGATE_ENGINE": args.engine,
                            "VOICEGATE_PUBLIC_URL": PUBLIC,
                            "VOICEGATE_TWILIO_AUTH_TOKEN": TOKEN,
                            "VOICEGATE_REDIS_URL": redis.url,
                            "VOICEGATE_MAX_CALLS": str(args.calls),
                            "VOICEGATE_ENGINE_FAULT": kind,
                            "VOICEGATE_ENGINE_FAULT_CALLS": str(args.calls),
                            "VOICEGATE_ENGINE_FAULT_AFTER_S": str(args.settle),
                            **numbers,
                        },
                        Path(tmp),
                        pin=False,
                        name=f"gateway-{kind}-{run}",
                    )
                    try:
                        row = asyncio.run(run_kind(base, redis.url, args.calls))
                    finally:
                        proc.send_signal(signal.SIGINT)
                        try:
                            proc.wait(30)
                        except subprocess.TimeoutExpired:
                            proc.kill()
                    print(
                        f"{kind:<6} {row['ended_p50']:>9.0f} {row['ended_max']:>9.0f} "
                        f"{row['closed_max']:>10.0f} {row['rebuild']:>8.0f}  {row['reasons']}"
                        + (f" ({row['missing']} without call.ended)" if row["missing"] else ""),
                        flush=True,
                    )
        finally:
            redis.close()


if __name__ == "__main__":
    main()
