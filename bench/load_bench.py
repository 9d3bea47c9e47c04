"""Load benchmark of the Twilio leg: N simultaneous simulated Twilio calls against one gateway.

The gateway runs as its own process (``voicegate serve``) with the ``echo`` engine (so the legs'
own cost is what is measured: mu-law, resampling to 24 kHz and back, voice activity, events,
pacing with marks) and then the ``tiny`` engine. This process plays Twilio for every call with
``voicegate.legs.twilio.sim``: signed webhook, signed upgrade, 20 ms mu-law frames at real time.
The default caller speaks: the bundled caller recording (voicegate/audio/data/caller_8k.wav),
looped, each call starting at another point of the loop, so voice activity detection runs on
every frame as it does for real callers. ``--caller pip`` plays the old caller instead: silence
with a 20 ms 1 kHz pip every second; with the echo engine the pip comes back and its round trip
is timed at the simulator (media message arrival - pip sent). The echo columns are measured for
the pip caller only (an echo of speech has no clean onset to time; mixing pips into speech would
hide them in it), so a speech run prints nan there; it costs the gateway about twice the CPU
per call of the pip caller, whose silence the detector's energy gate mostly skips.
Printed per N (echo, then tiny):
  cpu/call   gateway process CPU (utime+stime from /proc) over the measured window / N, % of a core
  client %   this process (all the simulated Twilio sides) in % of a core: near 100 = the client
             is the bottleneck, not the gateway
  echo p50/p99  pip sent -> its echo's media message received (includes the model's own 80 ms
             frame + 80 ms tick; the gateway-added part is this minus 160 ms)
  in p50/p99    leg ingress: caller media message read -> audio handed to the Call (histogram bucket)
  out p50/p99   leg egress: agent frame pulled -> media message written (histogram bucket)
  ahead p99/max agent audio queued at Twilio (simulated playout clock) at each media arrival
  late/skip  gateway 20 ms send ticks run late / skipped; eng late = engine ticks late
  gaps       media arrivals after the playout queue ran dry mid-reply (underruns at Twilio)
  hole ms    the silence those gaps left, in total
Runs N = 1, 5, 10, 20, ... until the echo p99 passes 400 ms, the gateway uses >= 95% of the
machine, or ticks are skipped. Numbers vary with the machine: run it on purpose, not in CI.

    python bench/load_bench.py --engines echo,tiny --seconds 8 --levels 1,5,10,20,40
    python bench/load_bench.py --engines echo --caller pip      # the echo round trip
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from _gateway import (
    PIP_EVERY_FRAMES,
    caller_audio,
    caller_speech,
    cpu_seconds,
    hist_quantile,
    playout_holes,
    scrape,
    start_gateway,
)

from voicegate.audio import mulaw_decode
from voicegate.demo import LocalRedis
from voicegate.legs.twilio.sim import SimulatedStream, TwilioSimulator

TOKEN = "bench-auth-token"
PUBLIC = "https://bench.invalid"


def echo_delays(stream: SimulatedStream, pip_sent: dict[int, float]) -> list[float]:
    """Pip k sent at t -> arrival of the media message that carried its echo's onset."""
    heard = mulaw_decode(bytes(stream._heard)).astype(np.float32)
    arrivals = stream.report.arrivals
    if not arrivals or len(heard) < 160:
        return []
    offsets = np.array([o for _, o in arrivals])
    times = np.array([t for t, _ in arrivals])
    frames = len(heard) // 80
    energy = np.sqrt(np.mean(heard[: frames * 80].reshape(frames, 80) ** 2, axis=1))
    loud = np.flatnonzero(energy > 2000)
    onsets = [int(loud[0])] if len(loud) else []
    onsets += [int(b) for a, b in zip(loud[:-1], loud[1:], strict=False) if b - a > 10]
    delays = []
    sent = sorted(pip_sent.values())
    for onset in onsets:
        sample = onset * 80
        i = int(np.searchsorted(offsets, sample, side="right")) - 1
        if i < 0:
            continue
        arrived = float(times[i])
        earlier = [s for s in sent if s < arrived]
        if earlier:
            delays.append((arrived - earlier[-1]) * 1000)
    return delays


async def one_call(
    twilio: TwilioSimulator, audio: np.ndarray, out: list, is_pip: bool = True
) -> None:
    placed = await twilio.place_call("+15005550006", "+14155550100")
    if not placed.is_connect:
        out.append(("rejected", None, {}))
        return
    stream = await twilio.open_stream(placed)
    pip_sent: dict[int, float] = {}

    def on_frame(k: int, sent_at: float) -> None:
        if is_pip and k % PIP_EVERY_FRAMES == 0:
            pip_sent[k] = sent_at

    frames = await stream.play(audio, on_frame=on_frame)
    await stream.stop()
    out.append(("ok", stream, pip_sent, frames))


async def run_level(
    base: str, pid: int, n: int, seconds: float, caller: str = "speech"
) -> dict[str, float]:
    is_pip = caller == "pip"
    pip_audio = caller_audio(seconds, 8000) if is_pip else None
    # speech: each call starts 0.77 s further into the 8 s loop than the one before
    audios = [
        pip_audio if pip_audio is not None else caller_speech(seconds, 8000, i * 6160)
        for i in range(n)
    ]
    before = scrape(base)
    cpu0, wall0 = cpu_seconds(pid), time.monotonic()
    client0 = sum(os.times()[:2])
    results: list = []
    twilios = [TwilioSimulator(base, PUBLIC, TOKEN) for _ in range(max(1, n // 10))]
    try:
        await asyncio.gather(
            *(one_call(twilios[i % len(twilios)], audios[i], results, is_pip) for i in range(n))
        )
    finally:
        for t in twilios:
            await t.aclose()
    cpu1, wall1 = cpu_seconds(pid), time.monotonic()
    client1 = sum(os.times()[:2])
    await asyncio.sleep(0.3)
    after = scrape(base)
    ok = [r for r in results if r[0] == "ok"]
    delays: list[float] = []
    ahead: list[float] = []
    gaps = 0
    hole_ms = 0.0
    for _, stream, pip_sent, _ in ok:
        if is_pip:
            delays += echo_delays(stream, pip_sent)
        ahead += stream.report.ahead_samples_ms
        count, ms = playout_holes(stream.report, stream.t0)
        gaps += count
        hole_ms += ms
    d = lambda k: after.get(k, 0.0) - before.get(k, 0.0)  # noqa: E731
    return {
        "n": n,
        "ok": len(ok),
        "cpu_pct_per_call": 100 * (cpu1 - cpu0) / (wall1 - wall0) / max(1, n),
        "cpu_pct_total": 100 * (cpu1 - cpu0) / (wall1 - wall0),
        "client_pct": 100 * (client1 - client0) / (wall1 - wall0),
        "echo_p50": float(np.percentile(delays, 50)) if delays else float("nan"),
        "echo_p99": float(np.percentile(delays, 99)) if delays else float("nan"),
        "pips": len(delays),
        "in_p50": hist_quantile(before, after, "voicegate_twilio_ingress_seconds", 0.5),
        "in_p99": hist_quantile(before, after, "voicegate_twilio_ingress_seconds", 0.99),
        "out_p50": hist_quantile(before, after, "voicegate_twilio_egress_seconds", 0.5),
        "out_p99": hist_quantile(before, after, "voicegate_twilio_egress_seconds", 0.99),
        "ahead_p99": float(np.percentile(ahead, 99)) if ahead else float("nan"),
        "ahead_max": max(ahead) if ahead else float("nan"),
        "late": d("voicegate_twilio_late_ticks_total"),
        "skipped": d("voicegate_twilio_skipped_ticks_total")
        + d("voicegate_twilio_held_frames_dropped_total"),
        "eng_late": d("voicegate_engine_late_ticks_total")
        + d("voicegate_engine_skipped_ticks_total"),
        "overruns": d("voicegate_engine_slot_overruns_total"),
        "gaps": gaps,
        "hole_ms": hole_ms,
    }


COLUMNS = (
    ("n", "N", "{:>4.0f}"),
    ("cpu_pct_per_call", "cpu/call %", "{:>10.2f}"),
    ("cpu_pct_total", "cpu tot %", "{:>9.1f}"),
    ("client_pct", "client %", "{:>8.0f}"),
    ("echo_p50", "echo p50", "{:>8.0f}"),
    ("echo_p99", "echo p99", "{:>8.0f}"),
    ("in_p50", "in p50", "{:>7.2f}"),
    ("in_p99", "in p99", "{:>7.2f}"),
    ("out_p50", "out p50", "{:>7.2f}"),
    ("out_p99", "out p99", "{:>7.2f}"),
    ("ahead_p99", "ahead p99", "{:>9.0f}"),
    ("ahead_max", "ahead max", "{:>9.0f}"),
    ("late", "late", "{:>6.0f}"),
    ("skipped", "skip", "{:>5.0f}"),
    ("eng_late", "eng late", "{:>8.0f}"),
    ("overruns", "ovr", "{:>5.0f}"),
    ("gaps", "gaps", "{:>5.0f}"),
    ("hole_ms", "hole ms", "{:>7.0f}"),
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engines", default="echo,tiny")
    parser.add_argument("--levels", default="1,5,10,20,30,40,60,80")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument(
        "--caller",
        choices=("speech", "pip"),
        default="speech",
        help="speech: the bundled recording looped (default); pip: silence with a pip a second "
        "(the only caller the echo columns are timed for)",
    )
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin the gateway to core 0 and us to core 1"
    )
    args = parser.parse_args()
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    if pin:
        os.sched_setaffinity(0, {1})
    levels = [int(x) for x in args.levels.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        redis = LocalRedis(Path(tmp))
        try:
            for engine in args.engines.split(","):
                proc, base = start_gateway(
                    {
                        "VOICEGATE_ENGINE": engine,
                        "VOICEGATE_PUBLIC_URL": PUBLIC,
                        "VOICEGATE_TWILIO_AUTH_TOKEN": TOKEN,
                        "VOICEGATE_REDIS_URL": redis.url,
                        "VOICEGATE_MAX_CALLS": str(max(levels)),
                    },
                    Path(tmp),
                    pin,
                    name=f"gateway-{engine}",
                )
                try:
                    where = "gateway pinned to 1 core" if pin else f"{os.cpu_count()} cores shared"
                    print(
                        f"\nengine={engine}, {args.caller} caller  ({where}; times in ms; "
                        f"{args.seconds:.0f} s calls)"
                    )
                    print("  ".join(title for _, title, _ in COLUMNS))
                    for n in levels:
                        row = asyncio.run(run_level(base, proc.pid, n, args.seconds, args.caller))
                        print(
                            "  ".join(fmt.format(row[key]) for key, _, fmt in COLUMNS), flush=True
                        )
                        if row["ok"] < n:
                            print(f"  ({n - int(row['ok'])} calls rejected)")
                        cores = 1 if pin else (os.cpu_count() or 1)
                        overloaded = (
                            row["cpu_pct_total"] >= 95 * cores
                            or row["skipped"] > 0
                            or (engine == "echo" and row["echo_p99"] > 400)
                            or row["eng_late"] > 5 * n
                        )
                        if overloaded:
                            print(f"  stops keeping up at N={n}")
                            break
                finally:
                    proc.send_signal(signal.SIGINT)
                    try:
                        proc.wait(30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
        finally:
            redis.close()


if __name__ == "__main__":
    main()
