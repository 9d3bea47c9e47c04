"""Benchmark of the SIP leg's RTP edge: CPU per call and the delay it adds.

Two parts:

1. ``edge``: the RTP edge alone, in this process, with a do-nothing Call: per 20 ms frame, the
   receive path (``datagram_received``: latch check, RTP parse, reorder, G.711 decode, hand-off)
   and the send path (pull 160 samples, G.711 encode, RTP pack, ``sendto`` on a real socket).
   Printed as microseconds per frame and % of one core per call (50 frames/s each way).
2. ``calls``: N simultaneous SIP calls against a real gateway process (``voicegate serve``,
   engine ``echo``, SIP on loopback), each placed from this process (INVITE/200/ACK, then 20 ms
   PCMU RTP on a monotonic clock, BYE at the end). The caller audio is silence with a 20 ms
   1 kHz pip every second; the echo engine sends it back and its round trip is timed at the
   caller (pip sent -> first RTP packet of its echo received). As for ``bench/load_bench.py``
   (the Twilio leg), the echo includes the model's own 80 ms frame + 80 ms tick, so the part
   the gateway adds is the echo minus 160 ms; the RTP edge's own share is ingress + egress.

Printed per N: gateway CPU per call (% of a core, utime+stime from /proc over the window),
echo p50/p99 (ms), late/skipped 20 ms send ticks, RTP packets lost/late at the gateway, engine
ticks late or skipped and slot input overruns (the engine side, for comparison).
Numbers vary with the machine: run it on purpose, not in CI.

    python bench/sip_bench.py --levels 1,10,20,40 --seconds 8
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _gateway import PIP_EVERY_FRAMES, caller_audio, cpu_seconds, scrape, start_gateway

from voicegate.audio import mulaw_decode, mulaw_encode
from voicegate.demo import LocalRedis, free_port
from voicegate.legs.sip.media import RtpSession
from voicegate.legs.sip.metrics import SipStats
from voicegate.legs.sip.sdp import negotiate, parse_sdp

FRAME_S = 0.02


# --- part 1: the edge alone ------------------------------------------------------------------


class _NullCall:
    def __init__(self) -> None:
        self.pcm = np.zeros(160, np.int16)
        self.fed = 0

    def feed_caller_audio(self, pcm: np.ndarray) -> None:
        self.fed += len(pcm)

    def pull_agent_audio(self, n: int) -> np.ndarray:
        return self.pcm[:n]

    def on_dtmf(self, digit: str) -> None:
        pass

    def on_leg_closed(self, reason: Any) -> None:
        pass


def _offer(port: int) -> str:
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    )


async def edge_bench(frames: int) -> dict[str, float]:
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setblocking(False)
    plan = negotiate(parse_sdp(_offer(sink.getsockname()[1])))
    stats = SipStats()
    session = await RtpSession.open(
        plan, stats, host="127.0.0.1", port_min=42000, port_max=42999, on_timeout=lambda d: None
    )
    call = _NullCall()
    session.attach(call)
    tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(160) / 8000)).astype(np.int16)
    call.pcm = tone
    payload = mulaw_encode(tone)
    packets = [
        struct.pack("!BBHII", 0x80, 0, i & 0xFFFF, 160 * i, 1234) + payload for i in range(frames)
    ]
    source = ("127.0.0.1", sink.getsockname()[1])
    t0 = time.perf_counter()
    for data in packets:
        session.datagram_received(data, source)
    t1 = time.perf_counter()
    for _ in range(frames):
        session.on_tick(0.0, 1, 0)
        try:
            while True:
                sink.recv(2048)
        except BlockingIOError:
            pass
    t2 = time.perf_counter()
    session.close_nowait()
    sink.close()
    assert call.fed == 160 * frames
    rx_us = (t1 - t0) / frames * 1e6
    tx_us = (t2 - t1) / frames * 1e6
    return {
        "rx_us": rx_us,
        "tx_us": tx_us,
        "core_pct_per_call": (rx_us + tx_us) * 50 / 1e6 * 100,
    }


# --- part 2: N calls against a gateway process ----------------------------------------------


class _Rtp(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.arrivals: list[tuple[float, bytes]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.arrivals.append((time.monotonic(), data))


class _Sip(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait(data)


def _request(
    method: str,
    gw: tuple[str, int],
    sip_port: int,
    call_id: str,
    cseq: int,
    to_tag: str,
    body: str = "",
) -> bytes:
    to = f"<sip:teller@{gw[0]}:{gw[1]}>" + (f";tag={to_tag}" if to_tag else "")
    return (
        f"{method} sip:teller@{gw[0]}:{gw[1]} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{sip_port};branch=z9hG4bK{os.urandom(6).hex()};rport\r\n"
        f"From: <sip:bench@127.0.0.1:{sip_port}>;tag=b{call_id[:8]}\r\nTo: {to}\r\n"
        f"Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n"
        f"Contact: <sip:bench@127.0.0.1:{sip_port}>\r\nMax-Forwards: 70\r\n"
        + ("Content-Type: application/sdp\r\n" if body else "")
        + f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


async def _wait_code(sip: _Sip, code: int, timeout_s: float = 10.0) -> bytes:
    deadline = time.monotonic() + timeout_s
    while True:
        data = await asyncio.wait_for(sip.queue.get(), max(0.01, deadline - time.monotonic()))
        if data.startswith(f"SIP/2.0 {code} ".encode()):
            return data
        if data.startswith(b"SIP/2.0 4") or data.startswith(b"SIP/2.0 5"):
            raise RuntimeError(data.split(b"\r\n", 1)[0].decode())


class _Caller:
    """One simulated SIP caller: its SIP and RTP sockets, the gateway's RTP address, what it heard."""

    def __init__(self) -> None:
        self.sip_t: Any = None
        self.rtp_t: Any = None
        self.sip = _Sip()
        self.rtp = _Rtp()
        self.call_id = os.urandom(8).hex()
        self.tag = ""
        self.gw_rtp: tuple[str, int] = ("", 0)
        self.sip_port = 0

    async def dial(self, gw: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        self.sip_t, _ = await loop.create_datagram_endpoint(
            lambda: self.sip, local_addr=("127.0.0.1", 0)
        )
        self.rtp_t, _ = await loop.create_datagram_endpoint(
            lambda: self.rtp, local_addr=("127.0.0.1", 0)
        )
        self.sip_port = self.sip_t.get_extra_info("sockname")[1]
        rtp_port = self.rtp_t.get_extra_info("sockname")[1]
        self.sip_t.sendto(
            _request("INVITE", gw, self.sip_port, self.call_id, 1, "", _offer(rtp_port)), gw
        )
        ok = await _wait_code(self.sip, 200)
        to_tag = re.search(rb"^To:.*;tag=([^;\r\n]+)", ok, re.M | re.I)
        self.tag = to_tag.group(1).decode() if to_tag else ""
        m = re.search(rb"m=audio (\d+)", ok)
        assert m is not None
        self.gw_rtp = (gw[0], int(m.group(1)))
        self.sip_t.sendto(_request("ACK", gw, self.sip_port, self.call_id, 1, self.tag), gw)

    async def hang_up(self, gw: tuple[str, int]) -> None:
        try:
            self.sip_t.sendto(_request("BYE", gw, self.sip_port, self.call_id, 2, self.tag), gw)
            await _wait_code(self.sip, 200)
        finally:
            self.sip_t.close()
            self.rtp_t.close()

    def echo_delays(self, sent: dict[int, float]) -> list[float]:
        """Onset of each echoed pip -> the pip sent most recently before it."""
        delays: list[float] = []
        sent_times = sorted(sent.values())
        was_loud = False
        for arrived, data in self.rtp.arrivals:
            pcm = mulaw_decode(data[12:]).astype(np.float32)
            loud = bool(len(pcm)) and float(np.sqrt(np.mean(pcm * pcm))) > 2000
            if loud and not was_loud:
                earlier = [s for s in sent_times if s < arrived]
                if earlier:
                    delays.append((arrived - earlier[-1]) * 1000)
            was_loud = loud
        return delays


async def stream_all(callers: list[_Caller], audio: np.ndarray) -> list[dict[int, float]]:
    """One 20 ms clock sends every caller's frame k (callers are offset by a frame phase each)."""
    payloads = [mulaw_encode(audio[i : i + 160]) for i in range(0, len(audio) - 159, 160)]
    sent: list[dict[int, float]] = [{} for _ in callers]
    t0 = time.monotonic()
    for k, payload in enumerate(payloads):
        delay = t0 + k * FRAME_S - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        header = struct.pack("!BBHII", 0x80, 0, k & 0xFFFF, 160 * k, 4321)
        now = time.monotonic()
        for i, caller in enumerate(callers):
            caller.rtp_t.sendto(header + payload, caller.gw_rtp)
            if k % PIP_EVERY_FRAMES == 0 and k:
                sent[i][k] = now
    await asyncio.sleep(0.5)
    return sent


async def run_level(
    base: str, pid: int, gw: tuple[str, int], n: int, seconds: float
) -> dict[str, float]:
    audio = caller_audio(seconds, 8000)
    callers = [_Caller() for _ in range(n)]
    failed = 0
    # calls arrive over about a second, as they would from a trunk, not in one instant
    spread_s = min(1.0, 0.02 * n)
    dialled = await asyncio.gather(
        *(_staggered(c.dial(gw), i * spread_s / max(1, n)) for i, c in enumerate(callers)),
        return_exceptions=True,
    )
    up = [c for c, r in zip(callers, dialled, strict=True) if not isinstance(r, BaseException)]
    failed += n - len(up)
    await asyncio.sleep(0.3)
    before = scrape(base)
    cpu0, wall0 = cpu_seconds(pid), time.monotonic()
    sent = await stream_all(up, audio)
    cpu1, wall1 = cpu_seconds(pid), time.monotonic()
    after = scrape(base)
    hung = await asyncio.gather(*(c.hang_up(gw) for c in up), return_exceptions=True)
    failed += sum(1 for r in hung if isinstance(r, BaseException))
    delays = [d for c, s in zip(up, sent, strict=True) for d in c.echo_delays(s)]

    def d(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    return {
        "n": n,
        "failed": failed,
        "cpu_pct_per_call": 100 * (cpu1 - cpu0) / (wall1 - wall0) / n,
        "cpu_pct_total": 100 * (cpu1 - cpu0) / (wall1 - wall0),
        "echo_p50": float(np.percentile(delays, 50)) if delays else float("nan"),
        "echo_p99": float(np.percentile(delays, 99)) if delays else float("nan"),
        "pips": len(delays),
        "late": d("voicegate_sip_late_ticks_total"),
        "skipped": d("voicegate_sip_skipped_ticks_total"),
        "lost": d("voicegate_sip_rtp_lost_total"),
        "late_pkts": d("voicegate_sip_rtp_late_total"),
        "eng_late": d("voicegate_engine_late_ticks_total")
        + d("voicegate_engine_skipped_ticks_total"),
        "overruns": d("voicegate_engine_slot_overruns_total"),
    }


async def _staggered(coro: Any, delay_s: float) -> Any:
    await asyncio.sleep(delay_s)
    return await coro


COLUMNS = (
    ("n", "N", "{:>4.0f}"),
    ("failed", "fail", "{:>4.0f}"),
    ("cpu_pct_per_call", "cpu/call %", "{:>10.2f}"),
    ("cpu_pct_total", "cpu tot %", "{:>9.1f}"),
    ("echo_p50", "echo p50", "{:>8.0f}"),
    ("echo_p99", "echo p99", "{:>8.0f}"),
    ("pips", "pips", "{:>5.0f}"),
    ("late", "late", "{:>5.0f}"),
    ("skipped", "skip", "{:>5.0f}"),
    ("lost", "lost", "{:>5.0f}"),
    ("late_pkts", "late pkts", "{:>9.0f}"),
    ("eng_late", "eng late", "{:>8.0f}"),
    ("overruns", "ovr", "{:>5.0f}"),
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--levels", default="1,10,20,40")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--edge-frames", type=int, default=20000)
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin the gateway to core 0 and us to core 1"
    )
    parser.add_argument("--edge-only", action="store_true")
    args = parser.parse_args()

    edge = asyncio.run(edge_bench(args.edge_frames))
    print(f"RTP edge alone ({args.edge_frames} frames, PCMU, in-process, null Call)")
    print("  receive us/frame  send us/frame  core % per call (50+50 frames/s)")
    print(f"  {edge['rx_us']:>16.1f}  {edge['tx_us']:>13.1f}  {edge['core_pct_per_call']:>30.3f}")
    if args.edge_only:
        return
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    if pin:
        os.sched_setaffinity(0, {1})
    levels = [int(x) for x in args.levels.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        redis = LocalRedis(Path(tmp))
        sip_port = free_port()
        proc, base = start_gateway(
            {
                "VOICEGATE_ENGINE": "echo",
                "VOICEGATE_REDIS_URL": redis.url,
                "VOICEGATE_SIP_ENABLED": "true",
                "VOICEGATE_SIP_HOST": "127.0.0.1",
                "VOICEGATE_SIP_PORT": str(sip_port),
                "VOICEGATE_SIP_INVITE_RATE_PER_S": "0",
                "VOICEGATE_RTP_PORT_MIN": "40000",
                "VOICEGATE_RTP_PORT_MAX": "40999",
                "VOICEGATE_MAX_CALLS": str(max(levels)),
            },
            Path(tmp),
            pin,
        )
        try:
            where = "gateway pinned to 1 core" if pin else f"{os.cpu_count()} cores shared"
            print(f"\nSIP calls, engine=echo ({where}; times in ms; {args.seconds:.0f} s calls)")
            print("  ".join(title for _, title, _ in COLUMNS))
            for n in levels:
                row = asyncio.run(
                    run_level(base, proc.pid, ("127.0.0.1", sip_port), n, args.seconds)
                )
                print("  ".join(fmt.format(row[key]) for key, _, fmt in COLUMNS), flush=True)
                cores = 1 if pin else (os.cpu_count() or 1)
                if (
                    row["cpu_pct_total"] >= 95 * cores
                    or row["skipped"] > 0
                    or row["echo_p99"] > 400
                ):
                    print(f"  stops keeping up at N={n}")
                    break
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            redis.close()


if __name__ == "__main__":
    main()
