"""What the leg load benchmarks share: a `voicegate serve` subprocess, its CPU, its metrics,
the callers' audio (the bundled speech recording or pips) and the playout holes a caller heard.

Imported by bench/load_bench.py, sip_bench.py, webrtc_bench.py and gateway_bench.py (run as
scripts, so this folder is on sys.path). Not part of the package and never run by the tests.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from voicegate.audio.samples import load_caller
from voicegate.demo import free_port

REPO = Path(__file__).resolve().parent.parent
PIP_EVERY_FRAMES = 50  # 1 s: longer than any echo round trip, so an echo is never aliased
TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def caller_audio(seconds: float, rate_hz: int) -> np.ndarray:
    """Silence with one 20 ms 1 kHz pip every PIP_EVERY_FRAMES frames, int16 at ``rate_hz``."""
    frame = rate_hz // 50
    n = int(seconds * rate_hz)
    pcm = np.zeros(n, dtype=np.int16)
    t = np.arange(frame) / rate_hz
    pip = (10000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    for k in range(PIP_EVERY_FRAMES, n // frame - 1, PIP_EVERY_FRAMES):
        pcm[k * frame : (k + 1) * frame] = pip
    return pcm


def caller_speech(seconds: float, rate_hz: int = 8000, offset_samples: int = 0) -> np.ndarray:
    """The bundled caller recording (8 s of speech and pauses) looped, int16 at ``rate_hz``.

    ``offset_samples`` starts the loop part-way in, so that many callers do not speak in step.
    Speech keeps the voice activity detector busy on every frame (its energy gate skips most
    of the pip caller's silence), which is what real callers cost the gateway.
    """
    clip = load_caller(rate_hz)
    n = int(seconds * rate_hz)
    reps = (offset_samples % len(clip) + n) // len(clip) + 1
    start = offset_samples % len(clip)
    return np.tile(clip, reps)[start : start + n].copy()


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User + system CPU seconds of a process (or of its thread ``tid``), from /proc."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S


def runqueue_wait_seconds(pid: int, tid: int | None = None) -> float:
    """Seconds a thread (the process's main thread by default) was runnable but waited for a
    core, from /proc/PID/task/TID/schedstat: high when other work on the machine starves it."""
    fields = Path(f"/proc/{pid}/task/{tid or pid}/schedstat").read_text().split()
    return int(fields[1]) / 1e9


def playout_holes(
    report: Any,
    t0: float,
    rate_hz: int = 8000,
    window: tuple[float, float] | None = None,
    max_silence_ms: float = 40.0,
    at: list[float] | None = None,
) -> tuple[int, float]:
    """Holes the caller heard mid-reply in a simulated Twilio playout queue: (count, total ms).

    ``report`` is a ``StreamReport`` (its ``arrivals``: arrival time and start offset on the
    playout timeline in samples, one per media message), ``t0`` the stream's start. A hole is a
    media message that found the queue empty (it starts playing on arrival), came more than 5 ms
    after the usual spacing (one message's length: the caller's own network and loop jitter is
    not counted) and follows at most ``max_silence_ms`` of silence: the agent was still talking
    (the gateway sends no silent frames, so a longer silence is a pause between replies) and the
    next piece came late. With 20 ms messages this is bench/load_bench.py's former ``gaps_of``.
    Its length is that silence; a message's length is the report's mean (media bytes / media
    messages: one mu-law byte per sample), so 20, 40 or more ms per message all read right.
    Only arrivals inside ``window`` (monotonic from, to) count when one is given. ``at`` gets
    each hole's arrival time (monotonic), to tell a gateway stall (holes on many calls at once,
    in every caller process) from a caller process's own.
    """
    arrivals = report.arrivals
    if len(arrivals) < 2 or not report.media_messages:
        return 0, 0.0
    usual = report.media_bytes / report.media_messages  # samples per message
    times = np.fromiter((t for t, _ in arrivals), np.float64, len(arrivals))
    offsets = np.fromiter((o for _, o in arrivals), np.int64, len(arrivals))
    # dry: it started playing at once (its start offset is its arrival time on the timeline)
    dry = offsets / rate_hz - (times - t0) < 0.0005
    silence = np.diff(offsets) - usual  # samples between the previous message's end and this
    hole = (
        dry[1:]
        & (silence > 0)
        & (silence <= max_silence_ms * rate_hz / 1000)
        & (np.diff(times) > usual / rate_hz + 0.005)
    )
    if window is not None:
        hole &= (times[1:] >= window[0]) & (times[1:] < window[1])
    if at is not None:
        at.extend(times[1:][hole].tolist())
    return int(hole.sum()), float(silence[hole].sum()) * 1000 / rate_hz


def scrape(base: str) -> dict[str, float]:
    """Every sample of the gateway's /metrics, by its full name with labels."""
    text = httpx.get(base + "/metrics", timeout=10, trust_env=False).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            pass
    return out


def hist_quantile(before: dict[str, float], after: dict[str, float], name: str, q: float) -> float:
    """The q-quantile (ms, upper bucket bound) of a histogram's observations between scrapes."""
    pattern = re.compile(rf'^{name}_bucket\{{le="([^"]+)"\}}$')
    buckets = []
    for key, value in after.items():
        m = pattern.match(key)
        if m:
            le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
            buckets.append((le, value - before.get(key, 0.0)))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return float("nan")
    for le, count in buckets:
        if count >= q * total:
            return le * 1000
    return float("inf")


def start_gateway(
    env_extra: dict[str, str],
    tmp: Path,
    pin: bool,
    name: str = "gateway",
    ready_timeout_s: float = 180.0,
) -> tuple[subprocess.Popen[bytes], str]:
    """`voicegate serve` on a free port with ``env_extra``; returns once /readyz says ready."""
    port = free_port()
    env = {
        **os.environ,
        "VOICEGATE_HOST": "127.0.0.1",
        "VOICEGATE_PORT": str(port),
        "VOICEGATE_PERSONAS_DIR": str(REPO / "personas"),
        "VOICEGATE_NUMBERS_FILE": str(REPO / "telephony" / "numbers.yaml"),
        "VOICEGATE_EVENTS_JOURNAL_DIR": str(tmp / f"journal-{name}"),
        "VOICEGATE_SIP_ENABLED": "false",
        "VOICEGATE_LOG_LEVEL": "WARNING",
        **env_extra,  # a bench's own settings win over these defaults
    }
    cmd = [sys.executable, "-m", "voicegate", "serve"]
    if pin:
        cmd = ["taskset", "-c", "0", *cmd]  # the gateway gets core 0, the callers core 1
    log_path = tmp / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=log)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + ready_timeout_s
    while True:
        try:
            if httpx.get(base + "/readyz", timeout=2, trust_env=False).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not become ready: " + log_path.read_text()[-2000:])
        time.sleep(0.2)
