"""EventLog benchmark: emit() cost and writer throughput against a local redis-server.

    python bench/events_bench.py [--events 20000] [--redis-url redis://...]
    python bench/events_bench.py --outage-s 60 --calls 100     # the DESIGN.md budget row

Without --redis-url it starts its own ``redis-server`` on a free port (no persistence) and also
measures the outage path (server killed: journal spill; server back: replay). Prints a table.
Run on purpose; never part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis

from voicegate.events import CallEnded, CallStarted, Dtmf, Event, EventLog, TranscriptAgent

BURST = 100  # events emitted back to back before yielding to the loop (a busy tick's worth)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, workdir: Path, is_durable: bool = False) -> None:
        self.is_durable = is_durable  # AOF fsynced per write: what Redis acked survives kill
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server not on PATH (apt-get install redis-server)")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes" if self.is_durable else "no", "--appendfsync", "always",
             "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(500):
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.01)
        raise SystemExit("redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def make_events(n: int, call_id: str) -> list[Event]:
    out: list[Event] = [CallStarted(call_id=call_id, leg="twilio", t_ms=0, persona="teller")]
    for i in range(1, n - 1):
        if i % 4 == 0:
            out.append(
                TranscriptAgent(
                    call_id=call_id,
                    leg="twilio",
                    t_ms=i,
                    text="Thank you for calling First Neuron Bank, how can I help?",
                    start_ms=i,
                    end_ms=i + 2000,
                )
            )
        else:
            out.append(Dtmf(call_id=call_id, leg="twilio", t_ms=i, digit="5"))
    out.append(
        CallEnded(call_id=call_id, leg="twilio", t_ms=n, reason="caller_hangup", duration_ms=n)
    )
    return out


async def emit_all(log: EventLog, events: list[Event], samples_ns: list[int]) -> None:
    clock = time.perf_counter_ns
    for i in range(0, len(events), BURST):
        for ev in events[i : i + BURST]:
            t0 = clock()
            log.emit(ev)
            samples_ns.append(clock() - t0)
        await asyncio.sleep(0)
        while log.stats().queued > log.queue_max // 2:  # stay under the bound: no drops
            await asyncio.sleep(0.001)


def pct(samples: list[int], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))] / 1000.0


async def run(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="events-bench-"))
    server: Server | None = None
    url = args.redis_url
    if url is None:
        server = Server(tmp)
        server.start()
        url = server.url
    rows: list[tuple[str, str]] = []

    # construction + encoding cost of the models themselves (the caller pays this, not emit)
    t0 = time.perf_counter()
    for i in range(20000):
        Dtmf(call_id="c", leg="twilio", t_ms=i, digit="5")
    rows.append(("Dtmf(...) construction, us", f"{(time.perf_counter() - t0) / 20000 * 1e6:.2f}"))

    n = args.events
    log = EventLog(url, journal_dir=tmp / "journal", queue_max=10_000)
    await log.start()
    r = aioredis.Redis.from_url(url)
    await r.config_resetstat()
    events = make_events(n, "bench-up")
    samples: list[int] = []
    t0 = time.perf_counter()
    await emit_all(log, events, samples)
    ok = await log.wait_idle(timeout_s=120)
    dt = time.perf_counter() - t0
    s = log.stats()
    assert ok and s.dropped == 0 and s.written == n, s
    stats = await r.info("commandstats")
    evalsha = stats.get("cmdstat_evalsha", {})
    rows += [
        ("emit() Redis up, us p50 / p99 / mean",
         f"{pct(samples, 0.5):.1f} / {pct(samples, 0.99):.1f} / {statistics.fmean(samples) / 1000:.1f}"),
        ("writer throughput, events/s (emit to in Redis)", f"{n / dt:,.0f}"),
        ("events per pipeline (mean)", f"{n / max(1, s.batches):.0f}"),
        ("Redis CPU per event (Lua script), us", f"{evalsha.get('usec_per_call', 0):.1f}"),
    ]  # fmt: skip

    if server is not None:
        server.kill()
        events = make_events(n, "bench-down")
        samples = []
        journaled0 = s.journaled
        t0 = time.perf_counter()
        await emit_all(log, events, samples)
        while log.stats().journaled - journaled0 < n:
            await asyncio.sleep(0.001)
        dt_spill = time.perf_counter() - t0
        rows += [
            ("emit() Redis down, us p50 / p99 / mean",
             f"{pct(samples, 0.5):.1f} / {pct(samples, 0.99):.1f} / {statistics.fmean(samples) / 1000:.1f}"),
            ("journal spill, events/s (fsync per batch)", f"{n / dt_spill:,.0f}"),
            ("queue peak while down (bound 10000)", f"{log.stats().queue_peak}"),
        ]  # fmt: skip
        replayed0 = log.stats().replayed
        server.start()
        t0 = time.perf_counter()
        ok = await log.wait_idle(timeout_s=120)
        dt_replay = time.perf_counter() - t0
        s = log.stats()
        assert ok and s.dropped == 0 and s.replayed - replayed0 == n, s
        rows.append(("replay after restart, events/s (incl. reconnect)", f"{n / dt_replay:,.0f}"))
    await log.aclose()
    await r.aclose()
    if server is not None:
        server.kill()
    shutil.rmtree(tmp, ignore_errors=True)

    width = max(len(k) for k, _ in rows)
    print(f"EventLog benchmark: {n} events (3/4 Dtmf, 1/4 TranscriptAgent), bursts of {BURST}")
    print(f"{'measure'.ljust(width)} | value")
    print(f"{'-' * width}-|------")
    for k, v in rows:
        print(f"{k.ljust(width)} | {v}")


async def outage(args: argparse.Namespace) -> None:
    """N calls emit like real ones (a 20 ms frame clock, an event every ~0.5 s each) while
    Redis is killed for ``outage_s`` seconds mid-call; report loss, memory and frame lateness."""
    tmp = Path(tempfile.mkdtemp(prefix="events-outage-"))
    server = Server(tmp, is_durable=True)
    server.start()
    log = EventLog(server.url, journal_dir=tmp / "journal")
    await log.start()
    lead_s, tail_s = 3.0, 3.0
    total_s = lead_s + args.outage_s + tail_s
    lateness_ms: dict[str, list[float]] = {"before": [], "outage": [], "after": []}
    phase = {"now": "before"}
    emit_ns: list[int] = []
    peak = {"journal": 0}
    loop = asyncio.get_running_loop()

    async def one_call(k: int) -> None:
        call_id = f"soak-{k}"
        log.emit(CallStarted(call_id=call_id, leg="twilio", t_ms=0, persona="teller"))
        t0 = loop.time() + (k % 25) * 0.0008
        frame = 0
        while (now := loop.time()) - t0 < total_s:
            frame += 1
            due = t0 + frame * 0.02
            if due > now:
                await asyncio.sleep(due - now)
            lateness_ms[phase["now"]].append((loop.time() - due) * 1000)
            if frame % 25 == 0:  # every 0.5 s of call time
                ev = TranscriptAgent(
                    call_id=call_id, leg="twilio", t_ms=frame * 20, text="All right, one moment.",
                    start_ms=frame * 20 - 400, end_ms=frame * 20,
                )  # fmt: skip
                c0 = time.perf_counter_ns()
                log.emit(ev)
                emit_ns.append(time.perf_counter_ns() - c0)
        log.emit(CallEnded(call_id=call_id, leg="twilio", t_ms=frame * 20, reason="caller_hangup",
                           duration_ms=frame * 20))  # fmt: skip

    async def chaos() -> None:
        await asyncio.sleep(lead_s)
        await asyncio.to_thread(server.kill)  # off the loop: the bench must not stall the calls
        phase["now"] = "outage"
        t_end = loop.time() + args.outage_s
        while loop.time() < t_end:
            peak["journal"] = max(peak["journal"], log.stats().journal_bytes)
            await asyncio.sleep(0.1)
        await asyncio.to_thread(server.start)  # loading the AOF takes a while
        phase["now"] = "after"

    await asyncio.gather(chaos(), *(one_call(k) for k in range(args.calls)))
    ok = await log.wait_idle(timeout_s=120)
    s = log.stats()
    r = aioredis.Redis.from_url(server.url)
    in_redis = 0
    for k in range(args.calls):
        in_redis += await r.xlen(f"voicegate:call:soak-{k}:events")
    await r.aclose()
    await log.aclose()
    server.kill()
    shutil.rmtree(tmp, ignore_errors=True)

    def late(p: str) -> str:
        v = sorted(lateness_ms[p])
        return f"{v[len(v) // 2]:.2f} / {v[int(0.99 * len(v))]:.2f} / {v[-1]:.2f}"

    rows = [
        ("calls x duration", f"{args.calls} x {total_s:.0f} s, Redis killed for {args.outage_s:.0f} s"),
        ("events emitted / in Redis after / dropped", f"{s.emitted} / {in_redis} / {s.dropped}"),
        ("journaled / replayed / duplicates skipped", f"{s.journaled} / {s.replayed} / {s.duplicates_skipped}"),
        ("queue peak (bound 10000) / journal peak bytes", f"{s.queue_peak} / {peak['journal']:,}"),
        ("emit() us p50 / p99", f"{pct(emit_ns, 0.5):.1f} / {pct(emit_ns, 0.99):.1f}"),
        ("frame clock lateness ms p50/p99/max, before", late("before")),
        ("... during the outage", late("outage")),
        ("... after restart (replay)", late("after")),
        ("all written after restart", str(ok and in_redis == s.emitted)),
    ]  # fmt: skip
    width = max(len(k) for k, _ in rows)
    print(f"{'outage soak'.ljust(width)} | value")
    print(f"{'-' * width}-|------")
    for k, v in rows:
        print(f"{k.ljust(width)} | {v}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--redis-url", default=None, help="use this Redis (skips the outage rows)")
    parser.add_argument("--outage-s", type=float, default=0, help="run the outage soak instead")
    parser.add_argument("--calls", type=int, default=100, help="calls in the outage soak")
    args = parser.parse_args()
    asyncio.run(outage(args) if args.outage_s else run(args))


if __name__ == "__main__":
    main()
