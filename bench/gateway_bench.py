"""End-to-end capacity benchmark: one real gateway, N speaking callers in other processes.

The gateway is ``voicegate serve`` as its own process with Redis (a throwaway ``redis-server``),
the Twilio leg (or SIP) and the engine ``echo`` (CPU: the edge's own cost) or ``personaplex``
with a synthetic 7B release (random weights with the release's exact file, tensor names and
shapes, written once to ``--model-dir``) on CUDA with a bf16 or fp8 KV cache. The callers run in
``--caller-procs`` worker processes (this script with ``--worker``), each placing its share of
the N calls: ``--leg twilio`` with ``voicegate.legs.twilio.sim`` (signed webhook, signed Media
Streams socket, 20 ms mu-law media at real time, marks echoed on a simulated playout clock),
``--leg sip`` with bench/sip_bench.py's caller (INVITE/200/ACK, 20 ms PCMU RTP, BYE). Every
caller plays speech: the bundled caller recording looped, each call from another point of the
loop, so the voice activity detector runs on every frame as it does for real callers.

Per level, the N calls start staggered over ``--stagger`` s; after a warm-up (``--warmup``) the
measured window of ``--seconds`` begins; the calls hang up just after it ends. One row per level:

  ok          calls that were admitted and played to the end without a protocol error
  gw CPU      gateway process CPU over the window (utime+stime, /proc/PID/stat), % of one core;
              with ``--workers N`` (edge worker processes) the engine process and every worker
  loop        the gateway's main thread (the event loop: /proc/PID/task/PID/stat), % of a core;
              with ``--workers N`` the busiest worker's (the JSON has each, and the engine
              process's CPU)
  /call       gw CPU / N
  wait        how long the event-loop thread was runnable but waited for a core (schedstat),
              % of the window: above a few %, other work on the machine starves the gateway
  callers     the caller processes' CPU, % of a core in all; the JSON has the busiest one's
              (near 100 it would be the limit, and its own lateness would read as holes)
  tick p50/p99  engine tick time (ms): from the voicegate_engine_tick_seconds histogram when the
              gateway exports one, else the gateway's gauges over its last 512 ticks (~41 s)
              read at the window's end (marked ~)
  eng late    engine ticks late + skipped in the window
  late/skip   the leg's 20 ms send ticks run late / skipped (Twilio: skipped + held frames
              dropped)
  holes       Twilio: media messages that found the caller's simulated playout queue empty
              mid-reply (as bench/_gateway.py's playout_holes), per call-minute, and the
              silence they left in ms per call-minute. SIP: packets that came after their
              playout time in a fixed --sip-jitter-ms jitter buffer at the caller (the buffer
              then stretches by that much), same units
  slot o/u    engine slot overruns / underruns (caller frames dropped / ticks without one)
  rtp l/l     SIP only: RTP packets lost / late at the gateway
  first       first-audio time p50 (ms): call start (webhook POST / INVITE sent) -> first agent
              audio at the caller (first media message / first non-silent RTP packet)
  admits      the admission limit that binds at the window's end (voicegate_capacity_binding)
              and the calls it allows (voicegate_capacity_calls): engine slots, the edge's
              event-loop budget or max_calls; calls beyond it are refused (ok < N)

Progress lines go to stderr; the table is printed (stdout) row by row and once more whole at
the end. Numbers vary with the machine: run it on purpose, not in CI.

    python bench/gateway_bench.py --engine echo --levels 5,10 --seconds 10 --caller-procs 2
    python bench/gateway_bench.py --engine echo --leg sip --levels 10,20 --seconds 10
    python bench/gateway_bench.py --engine personaplex --device cuda --kv-cache fp8 \\
        --levels 20,40,80,120,158 --seconds 30 --caller-procs 8        # the GPU machine
    python bench/gateway_bench.py --engine echo --levels 10 --seconds 8 --workers 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _gateway import (
    REPO,
    caller_speech,
    cpu_seconds,
    hist_quantile,
    playout_holes,
    runqueue_wait_seconds,
    scrape,
    start_gateway,
)

from voicegate.demo import LocalRedis, free_port

TOKEN = "bench-auth-token"
PUBLIC = "https://bench.invalid"
CALLED = "+14155550100"  # bank_teller in telephony/numbers.yaml
CALLER = "+15005550006"
RATE_HZ = 8000
FRAME_SAMPLES = 160
FRAME_S = 0.02
LOOP_STEP_SAMPLES = 6160  # each call starts 0.77 s further into the 8 s speech loop
CALLS_PER_SIMULATOR = 10  # Twilio simulators (HTTP clients) shared by this many calls
SILENT_RMS = 200.0  # an RTP payload quieter than this is not yet the agent speaking
DEFAULT_MODEL_DIR = Path(tempfile.gettempdir()) / "voicegate-synthetic-7b"


# --- the caller side (worker processes) --------------------------------------------------------


async def _sleep_until(at: float) -> None:
    delay = at - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def _twilio_call(
    sim: Any,
    index: int,
    start_at: float,
    end_at: float,
    window: tuple[float, float],
    max_silence_ms: float,
) -> dict[str, Any]:
    await _sleep_until(start_at)
    started = time.monotonic()
    try:
        placed = await sim.place_call(CALLER, CALLED)
        if not placed.is_connect:
            return {"ok": False, "why": f"rejected {placed.status_code} {placed.reject_reason}"}
        stream = await sim.open_stream(placed)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return {"ok": False, "why": f"setup: {type(exc).__name__}: {exc}"[:200]}
    if stream.is_closed:
        return {
            "ok": False,
            "why": f"refused {stream.report.close_code} {stream.report.close_reason}",
        }
    audio = caller_speech(max(0.1, end_at - time.monotonic()), RATE_HZ, index * LOOP_STEP_SAMPLES)
    expected = math.ceil(len(audio) / FRAME_SAMPLES)
    # this caller's own lateness: sends in the window more than 5 ms behind their 20 ms schedule
    # (a frame that late can miss its engine tick through no fault of the gateway)
    late = {"n": 0, "max": 0.0, "first": 0.0}

    def on_frame(k: int, sent_at: float) -> None:
        if k == 0:
            late["first"] = sent_at
            return
        behind = sent_at - (late["first"] + k * 0.02)  # Twilio media: 20 ms each
        if window[0] <= sent_at < window[1]:
            late["max"] = max(late["max"], behind)
            if behind > 0.005:
                late["n"] += 1

    frames = await stream.play(audio, on_frame=on_frame)
    closed_early = stream.is_closed
    await stream.stop()
    report = stream.report
    hole_at: list[float] = []
    holes, hole_ms = playout_holes(report, stream.t0, RATE_HZ, window, max_silence_ms, hole_at)
    first = (report.arrivals[0][0] - started) * 1000 if report.arrivals else float("nan")
    why = ""
    if closed_early or frames < expected:
        why = f"closed early ({report.close_code} {report.close_reason}) after {frames} frames"
    elif report.protocol_errors:
        why = "protocol: " + report.protocol_errors[0]
    return {
        "ok": not why,
        "why": why,
        "first_ms": first,
        "holes": holes,
        "hole_ms": hole_ms,
        "hole_at": [round(t, 4) for t in hole_at[:200]],
        "media": report.media_messages,
        "sends_late_5ms": late["n"],
        "send_late_max_ms": late["max"] * 1000,
    }


def rtp_playout(
    arrivals: list[tuple[float, bytes]], window: tuple[float, float], jitter_s: float
) -> tuple[int, float, int]:
    """The agent's RTP through a fixed jitter buffer at the caller: (late, late ms, lost).

    Packet with timestamp ts is due at first arrival + (ts - first ts) / 8 kHz + ``jitter_s``;
    one that comes after that is a hole as long as it is late, and the buffer then plays
    everything that much later (as an adaptive buffer stretches). Lost: sequence numbers never
    seen. Only arrivals inside ``window`` count.
    """
    anchor = first_ts = expected_seq = None
    late = lost = 0
    late_s = 0.0
    for arrived, data in arrivals:
        if len(data) < 12:
            continue
        seq, ts = struct.unpack_from("!HI", data, 2)
        if anchor is None or first_ts is None:
            anchor, first_ts, expected_seq = arrived, ts, (seq + 1) & 0xFFFF
            continue
        inside = window[0] <= arrived < window[1]
        due = anchor + ((ts - first_ts) & 0xFFFFFFFF) / RATE_HZ + jitter_s
        if arrived > due:
            if inside:
                late += 1
                late_s += arrived - due
            anchor += arrived - due
        gap = (seq - (expected_seq or 0)) & 0xFFFF
        if 0 < gap < 1000 and inside:
            lost += gap
        if gap < 1000:
            expected_seq = (seq + 1) & 0xFFFF
    return late, late_s * 1000, lost


def _first_voice(arrivals: list[tuple[float, bytes]]) -> float | None:
    from voicegate.audio import mulaw_decode

    for arrived, data in arrivals:
        pcm = mulaw_decode(data[12:]).astype(np.float32)
        if len(pcm) and float(np.sqrt(np.mean(pcm * pcm))) > SILENT_RMS:
            return arrived
    return None


async def _sip_call(
    gw: tuple[str, int],
    index: int,
    start_at: float,
    end_at: float,
    window: tuple[float, float],
    jitter_s: float,
) -> dict[str, Any]:
    from sip_bench import _Caller

    from voicegate.audio import mulaw_encode

    await _sleep_until(start_at)
    started = time.monotonic()
    caller = _Caller()
    try:
        await caller.dial(gw)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        for transport in (caller.sip_t, caller.rtp_t):
            if transport is not None:
                transport.close()
        return {"ok": False, "why": f"dial: {type(exc).__name__}: {exc}"[:200]}
    audio = caller_speech(max(0.1, end_at - time.monotonic()), RATE_HZ, index * LOOP_STEP_SAMPLES)
    mulaw = mulaw_encode(audio)
    ssrc = int.from_bytes(os.urandom(4), "big")
    send = caller.rtp_t.sendto
    t0 = time.monotonic()
    for k in range(len(mulaw) // FRAME_SAMPLES):
        delay = t0 + k * FRAME_S - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        header = struct.pack("!BBHII", 0x80, 0, k & 0xFFFF, FRAME_SAMPLES * k, ssrc)
        send(header + mulaw[k * FRAME_SAMPLES : (k + 1) * FRAME_SAMPLES], caller.gw_rtp)
    why = ""
    try:
        await caller.hang_up(gw)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        why = f"BYE: {type(exc).__name__}: {exc}"[:200]
    arrivals = caller.rtp.arrivals
    late, late_ms, lost = rtp_playout(arrivals, window, jitter_s)
    voice_at = _first_voice(arrivals)
    return {
        "ok": not why and bool(arrivals),
        "why": why or ("" if arrivals else "no RTP from the gateway"),
        "first_ms": (voice_at - started) * 1000 if voice_at is not None else float("nan"),
        "holes": late,
        "hole_ms": late_ms,
        "lost_at_caller": lost,
        "media": len(arrivals),
    }


async def _worker_main(setup: dict[str, Any], plan: dict[str, Any]) -> list[dict[str, Any]]:
    window = (float(plan["w0"]), float(plan["w1"]))
    end_at = float(plan["end_at"])
    calls = [(int(i), float(at)) for i, at in plan["calls"]]
    if setup["leg"] == "sip":
        gw = (str(setup["sip_host"]), int(setup["sip_port"]))
        jitter_s = float(setup["jitter_ms"]) / 1000
        return list(
            await asyncio.gather(
                *(_sip_call(gw, i, at, end_at, window, jitter_s) for i, at in calls)
            )
        )
    from voicegate.legs.twilio.sim import TwilioSimulator

    sims = [
        TwilioSimulator(setup["base"], PUBLIC, TOKEN)
        for _ in range(max(1, math.ceil(len(calls) / CALLS_PER_SIMULATOR)))
    ]
    try:
        return list(
            await asyncio.gather(
                *(
                    _twilio_call(
                        sims[k % len(sims)], i, at, end_at, window, float(setup["max_hole_ms"])
                    )
                    for k, (i, at) in enumerate(calls)
                )
            )
        )
    finally:
        for sim in sims:
            await sim.aclose()


def worker() -> None:
    """A caller process: reads its setup, says ready, reads its plan, prints its calls (JSON)."""
    setup = json.loads(sys.stdin.readline())
    import voicegate.audio  # noqa: F401 - imported before "ready": the calls must start on time

    if setup["leg"] == "sip":
        import sip_bench  # noqa: F401
    else:
        import voicegate.legs.twilio.sim  # noqa: F401
    print("ready", flush=True)
    plan = json.loads(sys.stdin.readline())
    try:
        import uvloop

        results = uvloop.run(_worker_main(setup, plan))
    except ImportError:
        results = asyncio.run(_worker_main(setup, plan))
    print(json.dumps(results), flush=True)


# --- the gateway side (this process) -----------------------------------------------------------


def prepare_release(root: Path, device: str) -> Path:
    """A synthetic PersonaPlex 7B release in ``root`` (written once, reused after), with a
    random preset for every preset voice the bundled personas name."""
    import torch
    import yaml

    from voicegate.engine.lm import LMConfig
    from voicegate.engine.mimi import MimiConfig
    from voicegate.engine.modeldir import VOICES_DIR_NAME, check_model_dir
    from voicegate.engine.synthetic import make_release_dir, write_voice_preset
    from voicegate.errors import CheckpointError

    lm_config = LMConfig.personaplex_7b()
    marker = root / ".complete"
    try:
        if not marker.is_file():
            raise CheckpointError("not written yet")
        check_model_dir(root)
    except CheckpointError:
        print(f"writing a synthetic 7B release to {root} (once) ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        gen_device = (
            (device if device.startswith("cuda") else "cuda")
            if torch.cuda.is_available()
            else "cpu"
        )
        make_release_dir(root, lm_config, MimiConfig.release(), seed=0, device=gen_device)
        print(f"  written in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    voices = root / VOICES_DIR_NAME
    for i, persona in enumerate(sorted((REPO / "personas").glob("*.yaml"))):
        voice = str((yaml.safe_load(persona.read_text()) or {}).get("voice", ""))
        if (
            voice
            and "/" not in voice
            and "." not in voice
            and not (voices / f"{voice}.pt").exists()
        ):
            write_voice_preset(voices / f"{voice}.pt", lm_config.dim, seed=100 + i)
    marker.touch()
    return root


def _gateway_env(args: argparse.Namespace, redis_url: str, sip_port: int) -> dict[str, str]:
    env = {
        "VOICEGATE_ENGINE": args.engine,
        "VOICEGATE_DEVICE": args.device,
        "VOICEGATE_KV_CACHE_DTYPE": args.kv_cache,
        "VOICEGATE_PUBLIC_URL": PUBLIC,
        "VOICEGATE_TWILIO_AUTH_TOKEN": TOKEN,
        "VOICEGATE_REDIS_URL": redis_url,
        "VOICEGATE_MAX_CALLS": str(args.max_calls if args.max_calls >= 0 else max(args.levels)),
        "VOICEGATE_EDGE_WORKERS": str(args.workers),
    }
    if args.engine == "personaplex":
        env["VOICEGATE_MODEL_DIR"] = str(args.model_dir)
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("VOICEGATE_"):
            raise SystemExit(f"--set: expected VOICEGATE_NAME=VALUE, got {item!r}")
        env[key] = value
    if args.no_webrtc or args.device.startswith("cuda"):
        env["VOICEGATE_WEBRTC_ENABLED"] = "false"  # keeps aiortc and av unimported
    if args.leg == "sip":
        env.update(
            {
                "VOICEGATE_SIP_ENABLED": "true",
                "VOICEGATE_SIP_HOST": "127.0.0.1",
                "VOICEGATE_SIP_PORT": str(sip_port),
                "VOICEGATE_SIP_INVITE_RATE_PER_S": "0",
                "VOICEGATE_RTP_PORT_MIN": "40000",
                "VOICEGATE_RTP_PORT_MAX": "43999",
            }
        )
    return env


def _start_workers(procs: int, setup: dict[str, Any]) -> list[subprocess.Popen[str]]:
    workers = []
    for _ in range(procs):
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent,
        )
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(setup) + "\n")
        proc.stdin.flush()
        workers.append(proc)
    for proc in workers:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"caller process {proc.pid} did not start: {line!r}")
    return workers


def edge_worker_pids(pid: int) -> list[int]:
    """The edge worker processes of a ``voicegate serve --workers N`` (none: one process)."""
    pids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if b"voicegate.edge.worker" in cmdline:
                pids.append(int(child))
    return sorted(pids)


def holes_by_origin(calls: list[dict[str, Any]], near_s: float = 0.015) -> dict[str, int]:
    """Twilio holes split by who stalled: ``gateway`` when a call in another caller process had
    a hole within ``near_s`` too (the one gateway serves every process), ``caller`` when only
    calls of the same process did (that process's own loop ran late), ``alone`` otherwise."""
    holes = sorted((t, c["proc"]) for c in calls for t in c.get("hole_at", []))
    times = np.array([t for t, _ in holes])
    procs = np.array([p for _, p in holes])
    out = {"gateway": 0, "caller": 0, "alone": 0}
    for i, (t, proc) in enumerate(holes):
        lo = int(np.searchsorted(times, t - near_s, side="left"))
        hi = int(np.searchsorted(times, t + near_s, side="right"))
        others = np.delete(procs[lo:hi], i - lo)
        if (others != proc).any():
            out["gateway"] += 1
        elif len(others):
            out["caller"] += 1
        else:
            out["alone"] += 1
    return out


def _pct(values: list[float], q: float) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.percentile(values, q)) if values else float("nan")


def run_level(
    args: argparse.Namespace, base: str, pid: int, sip_port: int, n: int
) -> dict[str, Any]:
    setup = {
        "leg": args.leg,
        "base": base,
        "sip_host": "127.0.0.1",
        "sip_port": sip_port,
        "jitter_ms": args.sip_jitter_ms,
        "max_hole_ms": args.max_hole_ms,
    }
    procs = max(1, min(args.caller_procs, n))
    workers = _start_workers(procs, setup)
    t0 = time.monotonic() + 0.3
    w0 = t0 + args.stagger + args.warmup
    w1 = w0 + args.seconds
    end_at = w1 + 0.3
    shares: list[list[tuple[int, float]]] = [[] for _ in workers]
    for i in range(n):
        shares[i % procs].append((i, t0 + i * args.stagger / n))
    for proc, share in zip(workers, shares, strict=True):
        assert proc.stdin is not None
        plan = {"calls": share, "w0": w0, "w1": w1, "end_at": end_at}
        proc.stdin.write(json.dumps(plan) + "\n")
        proc.stdin.flush()

    # with edge workers the event loops are theirs; the engine process runs the tick thread
    loop_pids = edge_worker_pids(pid) or [pid]
    gateway_pids = sorted({pid, *loop_pids})

    def sample() -> tuple[float, float, list[float], list[float], dict[str, float], list[float]]:
        now = time.monotonic()
        gw = sum(cpu_seconds(p) for p in gateway_pids)
        loops = [cpu_seconds(p, p) for p in loop_pids] + [cpu_seconds(pid)]
        waits = [runqueue_wait_seconds(p) for p in loop_pids]
        callers = [cpu_seconds(w.pid) for w in workers]
        return now, gw, loops, callers, scrape(base), waits

    time.sleep(max(0.0, w0 - time.monotonic()))
    a = sample()
    time.sleep(max(0.0, w1 - time.monotonic()))
    b = sample()
    calls: list[dict[str, Any]] = []
    for k, proc in enumerate(workers):
        out, _ = proc.communicate(timeout=120)
        lines = out.strip().splitlines()
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"caller process {proc.pid} failed (exit {proc.returncode})")
        calls += [{**c, "proc": k} for c in json.loads(lines[-1])]
    wall = b[0] - a[0]
    before, after = a[4], b[4]
    ended = scrape(base)  # the calls have hung up: their per-call counters are in

    def d(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    ok = [c for c in calls if c["ok"]]
    call_min = max(1, len(ok)) * wall / 60
    if any(k.startswith("voicegate_engine_tick_seconds_bucket") for k in after):
        tick = (
            hist_quantile(before, after, "voicegate_engine_tick_seconds", 0.5),
            hist_quantile(before, after, "voicegate_engine_tick_seconds", 0.99),
            "",
        )
    else:
        tick = (
            after.get("voicegate_engine_tick_ms_p50", float("nan")),
            after.get("voicegate_engine_tick_ms_p99", float("nan")),
            "~",
        )
    leg = "twilio" if args.leg == "twilio" else "sip"
    skipped = d(f"voicegate_{leg}_skipped_ticks_total")
    if leg == "twilio":
        skipped += d("voicegate_twilio_held_frames_dropped_total")
    capacity = {
        key.split('"')[1]: value
        for key, value in after.items()
        if key.startswith('voicegate_capacity_calls{limit="')
    }
    binding = [
        key.split('"')[1]
        for key, value in after.items()
        if key.startswith('voicegate_capacity_binding{limit="') and value == 1
    ]
    where = holes_by_origin(ok)
    failures: dict[str, int] = {}
    for c in calls:
        if not c["ok"]:
            key = c["why"].split(":")[0][:60]
            failures[key] = failures.get(key, 0) + 1
    return {
        "leg": args.leg,
        "engine": args.engine,
        "kv_cache": args.kv_cache if args.engine == "personaplex" else "",
        "n": n,
        "ok": len(ok),
        "failures": failures,
        "window_s": wall,
        "gw_cpu_pct": 100 * (b[1] - a[1]) / wall,
        # the busiest event loop (one per edge worker); the engine process's CPU apart
        "loop_cpu_pct": max(
            100 * (y - x) / wall for x, y in zip(a[2][:-1], b[2][:-1], strict=True)
        ),
        "loops_cpu_pct": [100 * (y - x) / wall for x, y in zip(a[2][:-1], b[2][:-1], strict=True)],
        "engine_proc_cpu_pct": 100 * (b[2][-1] - a[2][-1]) / wall,
        "workers": len(loop_pids) if loop_pids != [pid] else 1,
        "cpu_pct_per_call": 100 * (b[1] - a[1]) / wall / n,
        "loop_runqueue_wait_pct": max(
            100 * (y - x) / wall for x, y in zip(a[5], b[5], strict=True)
        ),
        "callers_cpu_pct": 100 * (sum(b[3]) - sum(a[3])) / wall,
        "busiest_caller_proc_cpu_pct": max(
            100 * (y - x) / wall for x, y in zip(a[3], b[3], strict=True)
        ),
        "caller_procs": procs,
        "tick_p50_ms": tick[0],
        "tick_p99_ms": tick[1],
        "tick_source": "gauge, last 512 ticks" if tick[2] else "histogram, window",
        "eng_late": d("voicegate_engine_late_ticks_total")
        + d("voicegate_engine_skipped_ticks_total"),
        "sends_late": d(f"voicegate_{leg}_late_ticks_total"),
        "sends_skipped": skipped,
        "holes": sum(c["holes"] for c in ok),
        "hole_ms": sum(c["hole_ms"] for c in ok),
        "holes_per_call_min": sum(c["holes"] for c in ok) / call_min,
        "hole_ms_per_call_min": sum(c["hole_ms"] for c in ok) / call_min,
        "slot_overruns": d("voicegate_engine_slot_overruns_total"),
        "slot_underruns": d("voicegate_engine_slot_underruns_total"),
        "rtp_lost": d("voicegate_sip_rtp_lost_total"),
        "rtp_late": d("voicegate_sip_rtp_late_total"),
        "holes_origin": where,
        "lost_at_caller": sum(c.get("lost_at_caller", 0) for c in ok),
        "first_audio_p50_ms": _pct([c["first_ms"] for c in ok], 50),
        "max_slots": after.get("voicegate_engine_max_slots", float("nan")),
        "capacity": capacity,  # calls each admission limit allows, at the window's end
        "binding": ",".join(binding),
        "edge_loop_utilisation": after.get("voicegate_edge_loop_utilisation", float("nan")),
        "edge_cost_per_call": after.get("voicegate_edge_cost_per_call", float("nan")),
        # the callers' own sends more than 5 ms behind schedule, and the worst one
        "caller_sends_late": sum(c.get("sends_late_5ms", 0) for c in ok),
        "caller_send_late_max_ms": max((c.get("send_late_max_ms", 0.0) for c in ok), default=0.0),
        # Twilio reply cushions in the window (auto: the loop's recent lateness): how many, mean
        "cushions": d("voicegate_twilio_cushion_seconds_count"),
        "cushion_mean_ms": 1000
        * d("voicegate_twilio_cushion_seconds_sum")
        / max(1.0, d("voicegate_twilio_cushion_seconds_count")),
        # event-loop probes (every 20 ms, every worker's) that woke more than 5 / 10 ms late
        "loop_lag_over_5ms": d("voicegate_event_loop_lag_seconds_count")
        - d('voicegate_event_loop_lag_seconds_bucket{le="0.005"}'),
        "loop_lag_over_10ms": d("voicegate_event_loop_lag_seconds_count")
        - d('voicegate_event_loop_lag_seconds_bucket{le="0.01"}'),
        # caller frames at the engine's ring: all in the window, those that missed their
        # tick (placed 8-28 ms ahead, one seen over 40 ms ahead of the next tick missed the
        # tick before), and those less than 2 / 5 ms ahead of their tick
        "frames": d("voicegate_caller_frame_lead_seconds_count"),
        "frames_late": d("voicegate_caller_frame_lead_seconds_count")
        - d('voicegate_caller_frame_lead_seconds_bucket{le="0.04"}'),
        "frames_2ms": d('voicegate_caller_frame_lead_seconds_bucket{le="0.002"}'),
        "frames_5ms": d('voicegate_caller_frame_lead_seconds_bucket{le="0.005"}'),
        # gateway playout underruns (a pull found no agent audio) over the level's calls, whole
        # calls (read after they ended): the agent's audio not there in time at the gateway
        "playout_underruns": ended.get(f'voicegate_call_underruns_sum{{leg="{args.leg}"}}', 0.0)
        - before.get(f'voicegate_call_underruns_sum{{leg="{args.leg}"}}', 0.0),
        # garbage collections in the window (every worker's): full ones, and any over 20 ms
        "gc_full": d('voicegate_gc_pause_seconds_count{generation="2"}'),
        "gc_over_5ms": sum(
            d(f'voicegate_gc_pause_seconds_count{{generation="{g}"}}')
            - d(f'voicegate_gc_pause_seconds_bucket{{generation="{g}",le="0.005"}}')
            for g in range(3)
        ),
        "gc_seconds": sum(
            d(f'voicegate_gc_pause_seconds_sum{{generation="{g}"}}') for g in range(3)
        ),
        "gc_over_20ms": sum(
            d(f'voicegate_gc_pause_seconds_count{{generation="{g}"}}')
            - d(f'voicegate_gc_pause_seconds_bucket{{generation="{g}",le="0.02"}}')
            for g in range(3)
        ),
    }


def _f(value: float, digits: int = 0) -> str:
    return "nan" if math.isnan(value) else f"{value:,.{digits}f}"


COLUMNS: tuple[tuple[str, int], ...] = (
    ("N", 4),
    ("ok", 4),
    ("gw CPU%", 7),
    ("loop%", 6),
    ("/call%", 6),
    ("wait%", 5),
    ("callers%", 8),
    ("tick p50/p99 ms", 15),
    ("eng late", 8),
    ("late/skip", 11),
    ("holes/call-min", 14),
    ("hole ms/call-min", 16),
    ("slot o/u", 9),
    ("rtp l/l", 9),
    ("first p50", 9),
    ("admits", 12),
)


def format_row(row: dict[str, Any]) -> str:
    tick_mark = "~" if row["tick_source"].startswith("gauge") else ""
    cells = (
        str(row["n"]),
        str(row["ok"]),
        _f(row["gw_cpu_pct"]),
        _f(row["loop_cpu_pct"]),
        _f(row["cpu_pct_per_call"], 2),
        _f(row["loop_runqueue_wait_pct"]),
        _f(row["callers_cpu_pct"]),
        f"{tick_mark}{_f(row['tick_p50_ms'], 2)} / {_f(row['tick_p99_ms'], 2)}",
        _f(row["eng_late"]),
        f"{_f(row['sends_late'])} / {_f(row['sends_skipped'])}",
        _f(row["holes_per_call_min"], 2),
        _f(row["hole_ms_per_call_min"], 1),
        f"{_f(row['slot_overruns'])} / {_f(row['slot_underruns'])}",
        f"{_f(row['rtp_lost'])} / {_f(row['rtp_late'])}" if row["leg"] == "sip" else "-",
        _f(row["first_audio_p50_ms"]),
        _admits(row),
    )
    return "  ".join(cell.rjust(width) for cell, (_, width) in zip(cells, COLUMNS, strict=True))


def _admits(row: dict[str, Any]) -> str:
    """The binding admission limit at the window's end: calls it allows and its name."""
    binding = row["binding"].split(",")[0]
    if not binding:
        return "-"
    return f"{_f(row['capacity'].get(binding, float('nan')))} {binding}"


def header() -> str:
    return "  ".join(title.rjust(width) for title, width in COLUMNS)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--engine", choices=("echo", "personaplex", "tiny"), default="echo")
    parser.add_argument(
        "--device",
        default="",
        help="cpu or cuda[:N] (default: cuda for personaplex, cpu otherwise)",
    )
    parser.add_argument("--kv-cache", choices=("bf16", "fp8"), default="bf16")
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=DEFAULT_MODEL_DIR,
        help="where the synthetic 7B release is written once and reused",
    )
    parser.add_argument("--leg", choices=("twilio", "sip"), default="twilio")
    parser.add_argument("--levels", default="20,40,80")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured window per level")
    parser.add_argument(
        "--warmup",
        type=float,
        default=4.0,
        help="seconds after the last call started before the window opens",
    )
    parser.add_argument("--stagger", type=float, default=2.0, help="calls start over this long")
    parser.add_argument("--caller-procs", type=int, default=2)
    parser.add_argument(
        "--sip-jitter-ms",
        type=float,
        default=40.0,
        help="the SIP caller's fixed jitter buffer (for its holes column)",
    )
    parser.add_argument(
        "--max-hole-ms",
        type=float,
        default=40.0,
        help="Twilio: a silence up to this long after agent audio is a hole, a longer one a "
        "pause between replies (40: the former load_bench gaps_of with 20 ms messages)",
    )
    parser.add_argument(
        "--max-calls",
        type=int,
        default=-1,
        help="VOICEGATE_MAX_CALLS (default: the largest level; 0: the engine's)",
    )
    parser.add_argument(
        "--redis-server",
        type=Path,
        default=None,
        help="a redis-server binary to use instead of the one on PATH",
    )
    parser.add_argument(
        "--no-webrtc",
        action="store_true",
        help="VOICEGATE_WEBRTC_ENABLED=false (always so on CUDA)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="VOICEGATE_NAME=VALUE",
        help="a gateway setting, e.g. VOICEGATE_EDGE_LOOP_BUDGET_PCT=0 (no edge admission "
        "limit) or VOICEGATE_TWILIO_SEND_MS=20; repeatable",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="edge worker processes (VOICEGATE_EDGE_WORKERS; 1: one gateway process). With N > 1 "
        "gw CPU sums the engine process and every worker, loop and wait are the busiest worker's",
    )
    parser.add_argument("--ready-timeout", type=float, default=900.0)
    parser.add_argument(
        "--prepare-only",
        action="store_true",
        help="write the synthetic release to --model-dir and exit (a run of its own on the GPU "
        "machine: it takes a minute or two, once per machine)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    parser.add_argument(
        "--keep-log",
        type=Path,
        default=None,
        help="copy the gateway's log (stderr) here at the end",
    )
    args = parser.parse_args()
    if args.worker:
        worker()
        return
    args.levels = [int(x) for x in args.levels.split(",") if x.strip()]
    if not args.levels or min(args.levels) < 1:
        parser.error(f"--levels: expected positive call counts, got {args.levels}")
    if args.caller_procs < 1:
        parser.error("--caller-procs: expected at least 1")
    if not args.device:
        args.device = "cuda" if args.engine == "personaplex" else "cpu"
    if args.redis_server is not None:
        binary = args.redis_server.resolve()
        if binary.name != "redis-server" or not os.access(binary, os.X_OK):
            parser.error(f"--redis-server: expected an executable named redis-server, got {binary}")
        os.environ["PATH"] = f"{binary.parent}{os.pathsep}{os.environ.get('PATH', '')}"
    if args.engine == "personaplex" or args.prepare_only:
        prepare_release(args.model_dir, args.device)
        if args.prepare_only:
            return

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        redis = LocalRedis(Path(tmp))
        sip_port = free_port()
        try:
            proc, base = start_gateway(
                _gateway_env(args, redis.url, sip_port),
                Path(tmp),
                pin=False,
                ready_timeout_s=args.ready_timeout,
            )
            try:
                slots = scrape(base).get("voicegate_engine_max_slots", float("nan"))
                title = (
                    f"{args.leg} calls, engine={args.engine}"
                    + (f" ({args.kv_cache} KV cache)" if args.engine == "personaplex" else "")
                    + f" on {args.device}, {_f(slots)} engine slots; speech callers in "
                    f"{args.caller_procs} processes; {args.seconds:.0f} s window after "
                    f"{args.stagger:.0f} s ramp + {args.warmup:.0f} s warm-up; "
                    f"{os.cpu_count()} host cores; CPU in % of one core, times in ms"
                    + (
                        f"; {args.workers} edge workers (gw CPU: engine process + workers; "
                        "loop, wait: the busiest worker's)"
                        if args.workers > 1
                        else ""
                    )
                )
                print(title, flush=True)
                print(header(), flush=True)
                for n in args.levels:
                    _wait_idle(base)
                    row = run_level(args, base, proc.pid, sip_port, n)
                    rows.append(row)
                    print(format_row(row), flush=True)
                    if row["workers"] > 1:
                        print(
                            f"  N={n} event loop per worker: "
                            + ", ".join(f"{x:.0f}%" for x in row["loops_cpu_pct"])
                            + f"; engine process {row['engine_proc_cpu_pct']:.0f}%",
                            file=sys.stderr,
                            flush=True,
                        )
                    print(
                        f"  N={n} garbage collections in the window: {row['gc_full']:.0f} full, "
                        f"{row['gc_over_5ms']:.0f} over 5 ms, {row['gc_over_20ms']:.0f} over 20 ms, "
                        f"{row['gc_seconds'] * 1000:.0f} ms in all (the workers' own; the engine "
                        "process logs its own)",
                        file=sys.stderr,
                        flush=True,
                    )
                    print(
                        f"  N={n} caller frames at the engine's ring: {row['frames']:.0f}, of "
                        f"which {row['frames_late']:.0f} missed their tick, "
                        f"{row['frames_2ms']:.0f} under 2 ms and {row['frames_5ms']:.0f} under "
                        f"5 ms before it; gateway playout underruns over the calls: "
                        f"{row['playout_underruns']:.0f}",
                        file=sys.stderr,
                        flush=True,
                    )
                    print(
                        f"  N={n} event-loop probes late (every 20 ms per worker): "
                        f"{row['loop_lag_over_5ms']:.0f} over 5 ms, "
                        f"{row['loop_lag_over_10ms']:.0f} over 10 ms; auto reply cushions: "
                        f"{row['cushions']:.0f}, mean {row['cushion_mean_ms']:.1f} ms; "
                        "caller sends over 5 ms "
                        f"late: {row['caller_sends_late']} (worst "
                        f"{row['caller_send_late_max_ms']:.1f} ms)",
                        file=sys.stderr,
                        flush=True,
                    )
                    if row["holes"]:
                        print(
                            f"  N={n} holes by origin (a hole on calls of other caller processes "
                            f"within 15 ms: gateway; of its own only: caller): "
                            f"{row['holes_origin']}",
                            file=sys.stderr,
                            flush=True,
                        )
                    if row["failures"]:
                        print(
                            f"  N={n} failed calls: {row['failures']}", file=sys.stderr, flush=True
                        )
                    if args.json is not None:
                        args.json.write_text(json.dumps(rows, indent=1) + "\n")
            finally:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                if args.keep_log is not None:
                    shutil.copyfile(Path(tmp) / "gateway.log", args.keep_log)
        finally:
            redis.close()
    print("\n" + title)
    print(header())
    for row in rows:
        print(format_row(row))
    print(
        "(~ = engine tick p50/p99 from the gateway's gauges over its last 512 ticks)"
        if any(r["tick_source"].startswith("gauge") for r in rows)
        else "",
        flush=True,
    )


def _wait_idle(base: str, timeout_s: float = 60.0) -> None:
    """Until the previous level's calls have left the engine."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if scrape(base).get("voicegate_engine_active_slots", 0.0) == 0:
            return
        time.sleep(0.5)
    print("  (calls of the previous level still active)", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
