"""Leg load of the carrier legs (Telnyx, Plivo, Exotel, Vonage over pipecat's serializers) beside
Twilio's.

One ``voicegate serve`` process with the echo engine (so the figures are the edge's own cost:
leg, codec, resampling, VAD, events), Redis (a throwaway ``redis-server``) and the Twilio,
Telnyx and Plivo legs on. For each leg in turn, N simulated calls (each carrier's simulator:
``voicegate.legs.twilio.sim``, ``voicegate.legs.carriers.sim``) play the bundled caller speech
at real time for ``--seconds``; the gateway's CPU over that window (/proc) gives CPU per call.
Then ``--probes`` single calls measure the round trip: 600 ms of silence, a 300 ms tone; the
echo engine returns the tone one 80 ms tick later, so ``first agent audio - tone sent`` is the
same model delay for every leg and the differences between legs are what each leg adds.

    python bench/carrier_bench.py                       # 5 calls per leg, 8 s, 3 probes
    python bench/carrier_bench.py --calls 20 --seconds 20 --probes 5

Prints one row per leg: calls ok, gateway CPU (% of one core) under load and idle (no call:
the engine thread's ticks, timers), per call ``(load - idle) / N``, the round trip p50/max (ms)
and its difference to Twilio's. Run on purpose, not in CI; numbers vary with the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _gateway import caller_speech, cpu_seconds, start_gateway

from voicegate.demo import LocalRedis
from voicegate.legs.carriers.sim import CarrierSimulator
from voicegate.legs.twilio.sim import TwilioSimulator

TWILIO_TOKEN = "bench-auth-token"
CARRIER_TOKEN = "bench-carrier-token"
PLIVO_TOKEN = "bench-plivo-token"
PUBLIC = "https://bench.invalid"
CALLED = "+14155550101"  # support_agent
CALLER = "+15005550006"
RATE_HZ = 8000
LOOP_STEP_SAMPLES = 6160
LEGS = ("twilio", "telnyx", "plivo", "exotel", "vonage")


class _Call:
    """One call on any leg: ``play``, ``hang_up``, the arrival times of the agent's media."""

    def __init__(self, leg: str, stream: Any) -> None:
        self.leg = leg
        self.stream = stream

    async def play(self, pcm: np.ndarray) -> int:
        return int(await self.stream.play(pcm))

    async def hang_up(self) -> None:
        if self.leg == "twilio":
            await self.stream.stop()
        else:
            await self.stream.hang_up()

    @property
    def arrivals(self) -> list[float]:
        report = self.stream.report
        return [a[0] for a in report.arrivals] if self.leg == "twilio" else list(report.arrivals)

    @property
    def errors(self) -> list[str]:
        return list(self.stream.report.protocol_errors)


async def open_call(leg: str, base: str) -> _Call:
    ws_base = "ws" + base[len("http") :]
    if leg == "twilio":
        sim = TwilioSimulator(base, PUBLIC, TWILIO_TOKEN)
        placed = await sim.place_call(CALLER, CALLED)
        stream = await sim.open_stream(placed)
        await sim.aclose()
        return _Call(leg, stream)
    carrier = CarrierSimulator(
        leg,
        ws_base,
        token=CARRIER_TOKEN,
        plivo_auth_token=PLIVO_TOKEN,
        public_url="wss://bench.invalid",
    )
    return _Call(leg, await carrier.connect(to=CALLED, from_=CALLER))


async def load(leg: str, base: str, pid: int, calls: int, seconds: float) -> dict[str, Any]:
    ramp_s = 1.0
    opened = [await open_call(leg, base) for _ in range(calls)]
    audio = [
        caller_speech(seconds + ramp_s + 0.5, RATE_HZ, i * LOOP_STEP_SAMPLES) for i in range(calls)
    ]
    plays = [asyncio.create_task(c.play(a)) for c, a in zip(opened, audio, strict=True)]
    await asyncio.sleep(ramp_s)
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    cpu1, t1 = cpu_seconds(pid), time.monotonic()
    await asyncio.gather(*plays)
    for c in opened:
        await c.hang_up()
    ok = sum(1 for c in opened if c.arrivals and not c.errors)
    pct = (cpu1 - cpu0) / (t1 - t0) * 100
    return {"ok": ok, "cpu_pct": pct, "per_call_pct": pct / calls}


async def probe(leg: str, base: str) -> float:
    """ms from sending the tone's first frame to the first agent media message back."""
    call = await open_call(leg, base)
    t = np.arange(int(0.3 * RATE_HZ)) / RATE_HZ
    tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    silence = np.zeros(int(0.6 * RATE_HZ), np.int16)
    await call.play(silence)
    sent = time.monotonic()
    await call.play(np.concatenate([tone, np.zeros(int(0.6 * RATE_HZ), np.int16)]))
    await call.hang_up()
    after = [a for a in call.arrivals if a >= sent]
    return (after[0] - sent) * 1000 if after else float("nan")


async def idle_cpu_pct(pid: int, seconds: float) -> float:
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    return (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0) * 100


async def run(args: argparse.Namespace, base: str, pid: int) -> list[dict[str, Any]]:
    rows = []
    idle = await idle_cpu_pct(pid, min(args.seconds, 4.0))
    print(f"  idle gateway: {idle:.1f}% of a core", file=sys.stderr, flush=True)
    for leg in args.legs:
        row: dict[str, Any] = {"leg": leg, **await load(leg, base, pid, args.calls, args.seconds)}
        row["idle_pct"] = idle
        row["per_call_pct"] = (row["cpu_pct"] - idle) / args.calls
        await asyncio.sleep(1.0)
        delays = [await probe(leg, base) for _ in range(args.probes)]
        row["rtt_p50"] = statistics.median(delays)
        row["rtt_max"] = max(delays)
        rows.append(row)
        print(f"  {leg}: {row}", file=sys.stderr, flush=True)
        await asyncio.sleep(1.0)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--probes", type=int, default=3)
    parser.add_argument("--legs", default=",".join(LEGS))
    args = parser.parse_args()
    args.legs = [leg for leg in args.legs.split(",") if leg]
    with tempfile.TemporaryDirectory() as tmp:
        redis = LocalRedis(Path(tmp))
        try:
            env = {
                "VOICEGATE_ENGINE": "echo",
                "VOICEGATE_REDIS_URL": redis.url,
                "VOICEGATE_PUBLIC_URL": PUBLIC,
                "VOICEGATE_TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
                "VOICEGATE_CARRIERS": "telnyx,plivo,exotel,vonage",
                "VOICEGATE_CARRIER_TOKEN": CARRIER_TOKEN,
                "VOICEGATE_PLIVO_AUTH_TOKEN": PLIVO_TOKEN,
                "VOICEGATE_WEBRTC_ENABLED": "false",
                "VOICEGATE_MAX_CALLS": str(args.calls + 1),
            }
            proc, base = start_gateway(env, Path(tmp), pin=False)
            try:
                rows = asyncio.run(run(args, base, proc.pid))
            finally:
                proc.terminate()
                proc.wait(10)
        finally:
            redis.close()
    twilio = next((r for r in rows if r["leg"] == "twilio"), None)
    print(
        f"echo engine, {args.calls} speech calls per leg, {args.seconds:.0f} s window, "
        f"{args.probes} round-trip probes; CPU in % of one core"
    )
    print(
        f"{'leg':8} {'ok':>4} {'gw CPU':>7} {'idle':>5} {'/call':>6} {'rtt p50':>8} "
        f"{'rtt max':>8} {'vs twilio':>9}"
    )
    for r in rows:
        diff = r["rtt_p50"] - twilio["rtt_p50"] if twilio is not None else float("nan")
        print(
            f"{r['leg']:8} {r['ok']:>4} {r['cpu_pct']:>7.1f} {r['idle_pct']:>5.1f} "
            f"{r['per_call_pct']:>6.2f} "
            f"{r['rtt_p50']:>8.0f} {r['rtt_max']:>8.0f} {diff:>+9.0f}"
        )


if __name__ == "__main__":
    main()
