"""Call history benchmark: what the operators' list and persona comparison cost, and what they do
to the event loop that carries the calls.

    python3 bench/history_bench.py                       # 20 000 calls (6 entries each)
    python3 bench/history_bench.py --calls 2000          # smoke

Starts a private ``redis-server``, writes ``--calls`` calls (``call.started``, 4 other events,
``call.ended`` with dynamics) straight into the streams and hashes the way the EventLog lays
them out, then times ``CallHistory.ended_calls`` and ``CallHistory.compare`` over all of them
while a 20 ms ticker runs on the same event loop (a stand-in for the legs' send clocks): the
ticker's worst lateness says whether the read blocked the loop. Prints a table. Never run as a
test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis  # noqa: E402

from voicegate.events.schema import (  # noqa: E402
    GLOBAL_EVENTS_KEY,
    CallDynamics,
    CallEnded,
    CallerSpeech,
    CallStarted,
    Dtmf,
    TranscriptAgent,
    call_events_key,
    call_key,
    encode_fields,
)
from voicegate.web.history import CallHistory, Period  # noqa: E402

PERSONAS = ["bank_teller", "support_agent", "wise_teacher", "night_nurse"]
TICK_MS = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fill(client: redis.Redis, calls: int, seed: int = 7) -> int:
    rng = random.Random(seed)
    entries = 0
    pipe = client.pipeline(transaction=False)
    for k in range(calls):
        call_id = f"B{k:08d}"
        common = {"call_id": call_id, "leg": "twilio"}
        dur = rng.randint(20_000, 600_000)
        started = CallStarted(**common, t_ms=0, persona=rng.choice(PERSONAS), from_=f"+1{k:010d}")
        events = [
            started,
            CallerSpeech(**common, t_ms=2000, start_ms=300, end_ms=2000),
            TranscriptAgent(**common, t_ms=5000, text="hello " * 20, start_ms=2400, end_ms=5000),
            Dtmf(**common, t_ms=6000, digit="1"),
            CallerSpeech(**common, t_ms=9000, start_ms=6500, end_ms=9000),
            CallEnded(
                **common,
                t_ms=dur,
                reason=rng.choice(["caller_hangup", "transferred", "agent_hangup"]),
                duration_ms=dur,
                bargeins=rng.randint(0, 8),
                dynamics=CallDynamics(
                    caller_talk_ms=dur // 3,
                    agent_talk_ms=dur // 2,
                    overlap_ms=dur // 30,
                    response_gaps=5,
                    response_gap_p50_ms=rng.uniform(200, 900),
                    response_gap_p90_ms=rng.uniform(900, 2000),
                ),
            ),
        ]
        for ev in events:
            fields = encode_fields(ev)
            pipe.xadd(call_events_key(call_id), fields)  # type: ignore[arg-type]
            pipe.xadd(GLOBAL_EVENTS_KEY, fields)  # type: ignore[arg-type]
            entries += 1
        pipe.hset(call_key(call_id), mapping=started.hash_fields())
        if k % 500 == 499:
            pipe.execute()
    pipe.execute()
    return entries


async def timed(label: str, fn: object, *args: object, **kwargs: object) -> dict[str, object]:
    worst_late_ms = 0.0
    stop = False

    async def ticker() -> None:
        nonlocal worst_late_ms
        due = time.perf_counter()
        while not stop:
            due += TICK_MS / 1000
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            worst_late_ms = max(worst_late_ms, (time.perf_counter() - due) * 1000)

    task = asyncio.get_running_loop().create_task(ticker())
    await asyncio.sleep(0.1)
    t0 = time.perf_counter()
    result = await fn(*args, **kwargs)  # type: ignore[operator]
    elapsed = time.perf_counter() - t0
    stop = True
    await task
    rows = (
        len(result.get("calls", [])) if isinstance(result.get("calls"), list) else result["calls"]
    )
    return {
        "read": label,
        "s": round(elapsed, 3),
        "rows": rows,
        "tick_late_max_ms": round(worst_late_ms, 1),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("redis-server is not installed")
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="history-bench-")
    proc = subprocess.Popen(
        [server, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", tmp],
        stdout=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        t0 = time.perf_counter()
        entries = fill(client, args.calls)
        fill_s = time.perf_counter() - t0
        history = CallHistory(f"redis://127.0.0.1:{port}/0")
        period = Period.last(3600)

        async def idle() -> dict[str, object]:
            await asyncio.sleep(1.0)
            return {"calls": []}

        rows = [
            await timed("(nothing: the ticker alone, 1 s)", idle),
            await timed("ended_calls(all, limit 200)", history.ended_calls, period),
            await timed(
                "ended_calls(persona filter)",
                history.ended_calls,
                period,
                persona="night_nurse",
                limit=1000,
            ),
            await timed("compare", history.compare, period),
        ]
        history.close()
    finally:
        proc.terminate()
        proc.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{args.calls} calls, {entries} global stream entries (written in {fill_s:.1f} s)")
    print(f"{'read':<34} {'seconds':>8} {'rows':>6} {'20 ms ticker late max (ms)':>28}")
    for r in rows:
        print(f"{r['read']:<34} {r['s']:>8} {r['rows']:>6} {r['tick_late_max_ms']:>28}")
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    asyncio.run(main())
