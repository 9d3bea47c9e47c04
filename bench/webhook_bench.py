"""Post-call webhook delivery under a flaky receiver: delivered, duplicates, latency.

    python bench/webhook_bench.py [--calls 100] [--fail 0.3] [--hang 0.05] [--outage-s 3]

Starts its own ``redis-server`` (AOF fsynced, so a kill keeps what it acknowledged), a real
EventLog writing each call's events (call.started, agent transcript, barge-in, call.ended:
direct event injection, no engine), the real WebhookDelivery consumer group, and a local HTTP
receiver over sockets that answers 500 to a ``--fail`` share of POSTs, lets a ``--hang`` share
run past the client's timeout, and 200 otherwise. With ``--outage-s`` Redis is killed after
half the calls ended and restarted that much later. Counts at the receiver: reports
acknowledged per idempotency key (duplicates = acknowledgements beyond the first), attempts,
and the delivery latency from call.ended to the receiver's 2xx (p50/p99/max). Prints a table.
Run on purpose; never part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from events_bench import Server  # bench/ is on sys.path when run as a script
from prometheus_client import CollectorRegistry

from voicegate.events import BargeIn, CallEnded, CallStarted, EventLog, TranscriptAgent
from voicegate.webhooks import WebhookDelivery, verify

SECRET = "bench-secret"


class FlakyReceiver:
    """A threaded HTTP receiver; records (key, status, time, ended_ts) per POST."""

    def __init__(self, fail: float, hang: float, hang_s: float, seed: int) -> None:
        self.rng = random.Random(seed)
        self.hits: list[tuple[str, int, float, float, bool]] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with owner.lock:
                    roll = owner.rng.random()
                status = 500 if roll < fail else 200
                if fail <= roll < fail + hang:
                    time.sleep(hang_s)  # past the client's timeout: it gave up, no ack
                    status = 599
                report = json.loads(body)
                is_signed = verify(body, self.headers.get("voicegate-signature", ""), SECRET)
                with owner.lock:
                    owner.hits.append(
                        (
                            self.headers.get("idempotency-key", ""),
                            status,
                            time.time(),
                            report["ended_ts"] / 1000,
                            is_signed,
                        )
                    )
                try:
                    self.send_response(200 if status == 200 else 500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        ThreadingHTTPServer.request_queue_size = 256  # a burst of retries must not be refused
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def acked(self) -> dict[str, int]:
        with self.lock:
            return dict(Counter(k for k, s, *_ in self.hits if s == 200))


def emit_call(log: EventLog, call_id: str) -> None:
    leg = "twilio"
    log.emit(
        CallStarted(call_id=call_id, leg=leg, t_ms=0, persona="bank_teller", to="+14155550100")
    )
    log.emit(
        TranscriptAgent(
            call_id=call_id,
            leg=leg,
            t_ms=2000,
            text="Thank you for calling First Neuron Bank, how can I help?",
            start_ms=200,
            end_ms=2000,
        )
    )
    log.emit(
        BargeIn(
            call_id=call_id,
            leg=leg,
            t_ms=2500,
            caller_onset_ms=2400,
            agent_stop_ms=2460,
            latency_ms=60,
        )
    )
    log.emit(CallEnded(call_id=call_id, leg=leg, t_ms=30000, reason="caller_hangup", duration_ms=30000))  # fmt: skip


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        redis = Server(Path(tmp), is_durable=True)
        redis.start()
        rx = FlakyReceiver(args.fail, args.hang, args.timeout_s + 0.5, args.seed)
        registry = CollectorRegistry()
        log = EventLog(
            redis.url, journal_dir=Path(tmp) / "journal", registry=registry, backoff_max_s=0.5
        )
        await log.start()

        def resolve(call: Mapping[str, str]) -> str:
            return rx.url

        hooks = WebhookDelivery(
            redis.url,
            secret=SECRET,
            resolve=resolve,
            registry=registry,
            consumer="bench",
            settle_s=args.settle_s,
            backoff_min_s=args.backoff_min_s,
            backoff_max_s=args.backoff_max_s,
            timeout_s=args.timeout_s,
            retry_for_s=args.retry_for_s,
        )
        await hooks.start()
        t0 = time.monotonic()
        gap = args.spread_s / args.calls
        outage_at = args.calls // 2 if args.outage_s > 0 else -1
        for i in range(args.calls):
            emit_call(log, f"bench-{args.seed}-{i}")
            if i == outage_at:
                redis.kill()
                loop = asyncio.get_running_loop()
                loop.call_later(args.outage_s, redis.start)
            await asyncio.sleep(gap)
        deadline = time.monotonic() + args.wait_s
        while time.monotonic() < deadline and len(rx.acked()) + hooks.dead_lettered < args.calls:
            await asyncio.sleep(0.1)
        elapsed = time.monotonic() - t0
        await asyncio.sleep(1.0)  # anything sent twice would show now
        acked = rx.acked()
        with rx.lock:
            hits = list(rx.hits)
        first_ack: dict[str, float] = {}
        for key, status, at, ended, _ in hits:
            if status == 200 and key not in first_ack:
                first_ack[key] = at - ended
        latencies = list(first_ack.values())
        counts = [
            registry.get_sample_value(f"voicegate_webhook_{name}_total") or 0.0
            for name in ("delivered", "retried", "dead_lettered")
        ]
        await hooks.aclose()
        await log.aclose()
        redis.kill()
        rx.server.shutdown()

    statuses = Counter(s for _, s, *_ in hits)
    rows = [
        ("calls", args.calls),
        ("receiver: fail / hang share", f"{args.fail:.2f} / {args.hang:.2f}"),
        ("redis outage (s)", args.outage_s),
        ("delivered (distinct reports acknowledged)", len(acked)),
        ("duplicates (acks beyond the first per key)", sum(n - 1 for n in acked.values())),
        ("dead-lettered", hooks.dead_lettered),
        ("attempts (receiver: 200 / 500 / timed out)", f"{len(hits)} ({statuses[200]} / {statuses[500]} / {statuses[599]})"),
        ("all attempts signed correctly", all(h[4] for h in hits)),
        ("delivery latency p50 (s)", f"{pct(latencies, 50):.2f}"),
        ("delivery latency p99 (s)", f"{pct(latencies, 99):.2f}"),
        ("delivery latency max (s)", f"{max(latencies, default=float('nan')):.2f}"),
        ("metrics delivered / retried / dead-lettered", " / ".join(f"{c:.0f}" for c in counts)),
        ("wall time (s)", f"{elapsed:.1f}"),
    ]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    print(f"| {'what'.ljust(width)} | value |")
    print(f"|{'-' * (width + 2)}|-------|")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--calls", type=int, default=100)
    p.add_argument("--spread-s", type=float, default=5.0, help="calls end over this long")
    p.add_argument("--fail", type=float, default=0.3, help="share of POSTs answered 500")
    p.add_argument("--hang", type=float, default=0.05, help="share of POSTs that time out")
    p.add_argument("--outage-s", type=float, default=0.0, help="Redis down this long mid-run")
    p.add_argument("--settle-s", type=float, default=0.0)
    p.add_argument("--backoff-min-s", type=float, default=0.5)
    p.add_argument("--backoff-max-s", type=float, default=4.0)
    p.add_argument("--timeout-s", type=float, default=1.0)
    p.add_argument("--retry-for-s", type=float, default=120.0)
    p.add_argument("--wait-s", type=float, default=90.0, help="most time to wait for the rest")
    p.add_argument("--seed", type=int, default=1)
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
