"""What the leg load benchmarks share: a `voicegate serve` subprocess, its CPU, its metrics.

Imported by bench/load_bench.py, sip_bench.py and webrtc_bench.py (run as scripts, so this
folder is on sys.path). Not part of the package and never run by the tests.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

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


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S


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
    env_extra: dict[str, str], tmp: Path, pin: bool, name: str = "gateway"
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
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(base + "/readyz", timeout=2, trust_env=False).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not become ready: " + log_path.read_text()[-2000:])
        time.sleep(0.2)
