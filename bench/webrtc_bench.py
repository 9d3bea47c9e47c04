"""Benchmark of the WebRTC leg: CPU per call and the delay the gateway adds, with N aiortc callers.

The gateway runs as its own process (``voicegate serve``, engine ``echo``, loopback-only ICE)
pinned to core 0; this process plays N browsers with ``voicegate.legs.webrtc.sim`` (aiortc, Opus,
DTLS-SRTP over 127.0.0.1) on core 1. The caller audio is silence with a 20 ms 1 kHz pip every
second; the echo engine sends it back one tick later.

Printed per N:
  cpu/call     gateway process CPU (utime+stime from /proc) over the calls / N, % of one core
               (everything a WebRTC call costs the gateway with a free engine: ICE consent,
               DTLS/SRTP, Opus decode+encode, the leg, the Call's resampling, VAD and events)
  wire p50/p99 pip frame handed to the caller's encoder -> first RTP packet of its echo arriving
               at the caller (no caller-side jitter buffer); includes the engine's own 80 ms
               frame + 80 ms tick, so the gateway-added delay is wire - 160 ms (column "added")
  heard p50    the same up to the decoded echo leaving the caller's aiortc jitter buffer (what a
               browser adds on its side is its own, adaptive, jitter buffer instead)
  in p50/p99   the leg's ingress at the gateway: RTP packet arrived -> its decoded audio handed
               to the Call (jitter buffer + Opus decoding + downmix; histogram bucket bound).
               The egress side is aiortc encoding the pulled frame in its thread pool (the
               per-frame encode cost below) and sending it: no buffering of ours.
Then the codec and leg costs per 20 ms frame, measured in this process (one core, us).

    python bench/webrtc_bench.py --levels 1,5,10,20 --seconds 8
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import av
import httpx
import numpy as np
from _gateway import (
    PIP_EVERY_FRAMES,
    caller_audio,
    cpu_seconds,
    hist_quantile,
    scrape,
    start_gateway,
)

from voicegate.demo import LocalRedis
from voicegate.legs.webrtc.ice import enable_loopback_only
from voicegate.legs.webrtc.media import AgentAudioTrack, MediaCounters, _Converter
from voicegate.legs.webrtc.sim import RATE, WebRtcCaller

TOKEN = "bench-webrtc-token"
FRAME = 960
ENGINE_MS = 160.0  # the echo engine's own part: an 80 ms frame is gathered, then one 80 ms tick


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def open_sessions(base: str) -> float:
    text = httpx.get(base + "/metrics", trust_env=False, timeout=10).text
    for line in text.splitlines():
        if line.startswith("voicegate_webrtc_sessions "):
            return float(line.split()[1])
    return 0.0


def echo_delays(caller: WebRtcCaller) -> tuple[list[float], list[float]]:
    """(wire, heard) delays in ms of each pip's echo."""
    chunks = caller._chunks
    sent = caller.track.sent_at
    pip_sent = [sent[k] for k in range(PIP_EVERY_FRAMES, len(sent), PIP_EVERY_FRAMES)]
    wire: list[float] = []
    heard: list[float] = []
    was_loud = False
    for j, chunk in enumerate(chunks):
        loud = float(np.sqrt(np.mean(chunk.astype(np.float64) ** 2))) > 1500
        if loud and not was_loud:
            arrived = caller.rtp_arrivals.get(caller.recv_pts[j])
            decoded = caller.recv_at[j]
            earlier = [s for s in pip_sent if s < decoded]
            if earlier and arrived is not None:
                wire.append((arrived - earlier[-1]) * 1000)
                heard.append((decoded - earlier[-1]) * 1000)
        was_loud = loud
    return wire, heard


async def one_call(base: str, audio: np.ndarray, seconds: float, out: list[WebRtcCaller]) -> None:
    caller = WebRtcCaller(base, TOKEN, audio)
    try:
        await caller.call("bank_teller")
        await asyncio.sleep(seconds)
    finally:
        await caller.close()
    out.append(caller)


async def run_level(base: str, pid: int, n: int, seconds: float) -> dict[str, float]:
    audio = caller_audio(seconds + 2, RATE)
    callers: list[WebRtcCaller] = []
    before = scrape(base)
    cpu0, wall0, me0 = cpu_seconds(pid), time.monotonic(), time.process_time()
    await asyncio.gather(*(one_call(base, audio, seconds, callers) for _ in range(n)))
    cpu1, wall1, me1 = cpu_seconds(pid), time.monotonic(), time.process_time()
    wire: list[float] = []
    heard: list[float] = []
    for c in callers:
        w, h = echo_delays(c)
        wire += w
        heard += h
    deadline = time.monotonic() + 20
    while (sessions := open_sessions(base)) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)  # the gateway sees each hang-up (DTLS close) and frees the slot
    if sessions:
        print(f"  {sessions:.0f} sessions still open after the callers hung up")
    after = scrape(base)
    return {
        "n": n,
        "ok": len(callers),
        "cpu_pct_per_call": 100 * (cpu1 - cpu0) / (wall1 - wall0) / max(1, n),
        "cpu_pct_total": 100 * (cpu1 - cpu0) / (wall1 - wall0),
        "client_pct": 100 * (me1 - me0) / (wall1 - wall0),
        "wire_p50": pct(wire, 50),
        "wire_p99": pct(wire, 99),
        "added_p50": pct(wire, 50) - ENGINE_MS,
        "heard_p50": pct(heard, 50),
        "pips": len(wire),
        "in_p50": hist_quantile(before, after, "voicegate_webrtc_ingress_seconds", 0.5),
        "in_p99": hist_quantile(before, after, "voicegate_webrtc_ingress_seconds", 0.99),
    }


def frame_costs(iterations: int = 2000) -> list[tuple[str, float]]:
    """Microseconds per 20 ms frame of each piece of the leg, in this process."""
    from aiortc.codecs.opus import OpusDecoder, OpusEncoder
    from aiortc.jitterbuffer import JitterFrame

    t = np.arange(FRAME) / RATE
    mono = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    stereo = np.repeat(mono, 2)

    def frame_of(pcm: np.ndarray, layout: str, pts: int) -> av.AudioFrame:
        f = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout=layout)
        f.sample_rate, f.pts, f.time_base = RATE, pts, fractions.Fraction(1, RATE)
        return f

    encoder, decoder = OpusEncoder(), OpusDecoder()
    payloads = []
    start = time.perf_counter()
    for i in range(iterations):
        data, _ = encoder.encode(frame_of(mono, "mono", i * FRAME))
        payloads.append(data[0])
    enc = (time.perf_counter() - start) / iterations * 1e6
    start = time.perf_counter()
    decoded = []
    for i, p in enumerate(payloads):
        decoded += decoder.decode(JitterFrame(p, i * FRAME))
    dec = (time.perf_counter() - start) / iterations * 1e6
    convert = _Converter(MediaCounters())
    rx = frame_of(stereo, "stereo", 0)
    start = time.perf_counter()
    for _ in range(iterations):
        convert(rx)
    conv = (time.perf_counter() - start) / iterations * 1e6
    ticks = iter(range(10**9))
    # a clock 20 ms further at every frame: always due, so the frame work is timed, not the sleep
    track = AgentAudioTrack(lambda n: mono, MediaCounters(), clock=lambda: next(ticks) * 0.02)

    async def pull_frames() -> float:
        s = time.perf_counter()
        for _ in range(iterations):
            await track.recv()
        return (time.perf_counter() - s) / iterations * 1e6

    out_track = asyncio.run(pull_frames())
    return [
        ("Opus encode (aiortc, mono 48k in)", enc),
        ("Opus decode (aiortc, 48k stereo out)", dec),
        ("received frame -> mono int16", conv),
        ("agent frame (pull + av.AudioFrame)", out_track),
    ]


COLUMNS = (
    ("n", "N", "{:>4.0f}"),
    ("cpu_pct_per_call", "cpu/call %", "{:>10.2f}"),
    ("cpu_pct_total", "cpu tot %", "{:>9.1f}"),
    ("client_pct", "client %", "{:>8.0f}"),
    ("wire_p50", "wire p50", "{:>8.0f}"),
    ("wire_p99", "wire p99", "{:>8.0f}"),
    ("added_p50", "added p50", "{:>9.0f}"),
    ("heard_p50", "heard p50", "{:>9.0f}"),
    ("pips", "pips", "{:>5.0f}"),
    ("in_p50", "in p50", "{:>6.0f}"),
    ("in_p99", "in p99", "{:>6.0f}"),
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--levels", default="1,5,10,20")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument(
        "--prefetch", default="1,4", help="gateway jitter prefetch values to compare (4 = aiortc's)"
    )
    args = parser.parse_args()
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    levels = [int(x) for x in args.levels.split(",")]
    enable_loopback_only()  # our callers gather 127.0.0.1 like the gateway (traffic stays local)
    print("per 20 ms frame (this process, one core):")
    for name, us in frame_costs():
        print(f"  {name:<40} {us:>7.1f} us  ({us / 200:.2f}% of a core per call)")
    if pin:
        os.sched_setaffinity(0, {1})
    with tempfile.TemporaryDirectory() as tmp:
        redis = LocalRedis(Path(tmp))
        try:
            for prefetch in [int(x) for x in args.prefetch.split(",")]:
                run_gateway(redis.url, levels, Path(tmp), pin, prefetch, args.seconds)
        finally:
            redis.close()


def run_gateway(
    redis_url: str, levels: list[int], tmp: Path, pin: bool, prefetch: int, seconds: float
) -> None:
    proc, base = start_gateway(
        {
            "VOICEGATE_ENGINE": "echo",
            "VOICEGATE_REDIS_URL": redis_url,
            "VOICEGATE_MAX_CALLS": str(max(levels)),
            "VOICEGATE_WEBRTC_TOKEN": TOKEN,
            "VOICEGATE_WEBRTC_LOOPBACK_ONLY": "true",
            "VOICEGATE_WEBRTC_JITTER_PREFETCH": str(prefetch),
        },
        tmp,
        pin,
    )
    try:
        where = "gateway pinned to core 0, callers on core 1" if pin else "cores shared"
        print(f"\nengine=echo, jitter prefetch {prefetch} ({where}; ms; {seconds:.0f} s calls)")
        print("  ".join(title for _, title, _ in COLUMNS))
        for n in levels:
            row = asyncio.run(run_level(base, proc.pid, n, seconds))
            print("  ".join(fmt.format(row[key]) for key, _, fmt in COLUMNS), flush=True)
            if row["cpu_pct_total"] >= 95 or row["client_pct"] >= 90:
                print(f"  a core is saturated at N={n}: the delays above it are not the gateway's")
                break
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    main()
