"""CPU cost of a Call's per-frame path: microseconds of CPU per 20 ms of call, per call.

Drives one Call the way a leg and the engine do (feed 20 ms of caller audio, pull 20 ms of
agent audio, one engine tick handed over every 80 ms; the caller is the bundled recording,
looped, so the VAD sees speech and pauses) with the real resamplers and voice
activity detector of ``voicegate.audio``, and prints a table per leg rate, with the caller VAD
on and off. The engine's own work is not counted; its thread's share (``on_tick``: the copy into
the ring) is shown apart. The budget is 1% of a core per call for the whole edge, i.e. 200 us
per 20 ms with the leg's codec and events included.

It also times the alternative to the lock-free ring: ``loop.call_soon_threadsafe`` from an
engine-like thread (the self-pipe write on that thread plus the handle run on the loop).

Run:  python bench/calls_bench.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time

import numpy as np

from voicegate.audio import StreamingResampler, load_caller
from voicegate.calls import CallConfig, CallInfo, CallManager, EndReason
from voicegate.engine.base import FRAME_SAMPLES, EngineStats, SlotStats, TickOutput


class _Leg:
    def __init__(self, rate_hz: int) -> None:
        self._rate_hz = rate_hz

    @property
    def rate_hz(self) -> int:
        return self._rate_hz

    def clear_playout(self) -> None:
        pass

    def request_hangup(self, reason: EndReason) -> None:
        pass


class _Events:
    def emit(self, event: object) -> None:
        pass


class _Slot:
    index = 0
    persona_key = "p"
    stats = SlotStats()

    def push(self, pcm: np.ndarray) -> None:
        pass

    def leave(self) -> None:
        pass


class _Engine:
    """Just enough Engine for a join: the bench calls the sink itself."""

    name = "bench"
    max_slots = 1
    active_slots = 0

    def __init__(self) -> None:
        self.sink: object = None

    def join(self, persona_key: str, sink: object) -> _Slot:
        self.sink = sink
        return _Slot()

    def stats(self) -> EngineStats:
        return EngineStats()


def _caller(n: int, rate: int) -> np.ndarray:
    """The bundled caller recording (speech and pauses), looped, at the leg's rate."""
    x = load_caller(8000)
    if rate != 8000:
        up = StreamingResampler(8000, rate)
        x = (np.concatenate([up.process(x), up.process(np.zeros(800, np.int16))]) * 32767).astype(
            np.int16
        )
    reps = n // len(x) + 1
    return np.tile(x, reps)[:n]


def _speechy(n: int, rate: int, seed: int) -> np.ndarray:
    """Noise bursts modulated at a syllable rate: speech-like on/off for the VAD."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    env = (np.sin(2 * np.pi * 0.4 * t) > 0) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))
    return (rng.standard_normal(n) * 3000 * env).clip(-32768, 32767).astype(np.int16)


def bench_call(rate: int, is_vad: bool, seconds: float) -> tuple[float, float, float]:
    """(us per 20 ms on the loop, us per 20 ms on the engine thread, p99 us per loop step)."""
    engine = _Engine()
    calls = CallManager(
        engine,  # type: ignore[arg-type]
        _Events(),
        config=CallConfig(is_caller_vad_enabled=is_vad),
    )
    call = calls.start_call(CallInfo("bench", "bench", "p"), _Leg(rate))
    n = rate // 50
    steps = int(seconds * 50)
    caller = _caller((steps + 200) * n, rate)
    agent = _speechy(steps * FRAME_SAMPLES // 4, 24_000, 2).astype(np.float32) / 32768.0
    out = TickOutput(frame_index=0, pcm=np.zeros(FRAME_SAMPLES, np.float32), text_token=0, text="")
    sink = engine.sink
    assert sink is not None
    step_ns = np.zeros(steps, dtype=np.int64)
    tick_ns = 0
    clock = time.thread_time_ns
    for k in range(200):  # warm-up
        call.feed_caller_audio(caller[k * n : (k + 1) * n])
        call.pull_agent_audio(n)
    for k in range(steps):
        if k % 4 == 3:
            j = k // 4
            out.pcm = agent[j * FRAME_SAMPLES : (j + 1) * FRAME_SAMPLES]
            out.text = " word" if j % 3 == 0 else ""
            t0 = clock()
            sink.on_tick(out)  # type: ignore[attr-defined]
            tick_ns += clock() - t0
        t0 = clock()
        call.feed_caller_audio(caller[k * n : (k + 1) * n])
        call.pull_agent_audio(n)
        step_ns[k] = clock() - t0
    call.on_leg_closed(EndReason.CALLER_HANGUP)
    assert call.playout.underruns == 0, call.playout.underruns
    return (
        float(step_ns.mean()) / 1000.0,
        tick_ns / steps / 1000.0,
        float(np.percentile(step_ns, 99)) / 1000.0,
    )


def bench_hop(n: int = 20_000) -> tuple[float, float]:
    """call_soon_threadsafe from another thread: (us on that thread, us on the loop) per hop."""
    loop = asyncio.new_event_loop()
    done = threading.Event()
    count = [0]
    loop_ns = [0]

    def handler() -> None:
        count[0] += 1
        if count[0] == n:
            done.set()

    def run_loop() -> None:
        asyncio.set_event_loop(loop)
        t0 = time.thread_time_ns()
        loop.run_until_complete(asyncio.to_thread(done.wait))
        loop_ns[0] = time.thread_time_ns() - t0

    th = threading.Thread(target=run_loop)
    th.start()
    time.sleep(0.05)
    t0 = time.thread_time_ns()
    for _ in range(n):
        loop.call_soon_threadsafe(handler)
        time.sleep(0)  # let the loop wake per hop, as 80 ms ticks would
    sender_ns = time.thread_time_ns() - t0
    th.join()
    loop.close()
    return sender_ns / n / 1000.0, loop_ns[0] / n / 1000.0


class _RecordingLeg(_Leg):
    def __init__(self, rate_hz: int) -> None:
        super().__init__(rate_hz)
        self.clears = 0

    def clear_playout(self) -> None:
        self.clears += 1


async def _live(n_calls: int, seconds: float) -> tuple[int, int, int, int, int, float]:
    from voicegate.engine import BatchedEngine, EchoModel, PersonaPrompt, TickMode

    engine = BatchedEngine(EchoModel(max_slots=max(n_calls, 1)), mode=TickMode.SERVING)
    engine.start()
    try:
        engine.load_persona(PersonaPrompt("p", "echo", "NATF0"))
        calls_mgr = CallManager(engine, _Events())
        clip = load_caller(8000)
        calls = [
            calls_mgr.start_call(CallInfo(f"live{i}", "bench", "p"), _RecordingLeg(8000))
            for i in range(n_calls)
        ]
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        late = 0
        cpu0 = time.process_time()
        steps = int(seconds * 50)
        for k in range(steps):
            wait = t0 + k * 0.02 - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -0.02:
                late += 1
            for i, call in enumerate(calls):
                j = (k * 160 + i * 997) % (len(clip) - 160)
                call.feed_caller_audio(clip[j : j + 160])
                call.pull_agent_audio(160)
        cpu = time.process_time() - cpu0
        stats = engine.stats()
        underruns = sum(c.playout.underruns for c in calls)
        overruns = sum(c.playout.overruns for c in calls)
        lost = sum(c.ticks_lost for c in calls)
        for call in calls:
            call.on_leg_closed(EndReason.CALLER_HANGUP)
    finally:
        engine.close()
    return underruns, overruns, lost, late, stats.late_ticks, cpu / seconds * 100.0 / n_calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="call audio per row")
    parser.add_argument(
        "--live", default="1,20,50", help="call counts for the real-time run ('' to skip)"
    )
    parser.add_argument("--live-seconds", type=float, default=10.0)
    args = parser.parse_args()
    print(f"Call per-frame path, {args.seconds:g} s of call audio per row (thread CPU time)")
    print(
        f"{'leg rate':>9} {'caller VAD':>10} {'loop us/20ms':>13} {'p99 us/step':>12} "
        f"{'engine-thread us/20ms':>22} {'% of a core':>12}"
    )
    for rate in (8000, 16000, 48000):
        for is_vad in (False, True):
            loop_us, tick_us, p99 = bench_call(rate, is_vad, args.seconds)
            pct = (loop_us + tick_us) / 20_000.0 * 100.0
            print(
                f"{rate:>9} {'on' if is_vad else 'off':>10} {loop_us:>13.1f} {p99:>12.1f} "
                f"{tick_us:>22.2f} {pct:>11.2f}%"
            )
    sender, loop_side = bench_hop()
    print()
    print("Alternative hand-over per tick: loop.call_soon_threadsafe (not used)")
    print(
        f"  engine thread {sender:.1f} us + loop {loop_side:.1f} us per hop "
        f"(the ring's on_tick above costs the engine thread only the copy)"
    )
    if args.live:
        print()
        print("Real time: N calls on one event loop, 20 ms steps on the loop's clock, the echo")
        print(
            f"engine ticking on its own thread (serving mode), caller VAD on, {args.live_seconds:g} s"
        )
        print(
            f"{'calls':>6} {'underruns':>10} {'overruns':>9} {'ticks lost':>11} "
            f"{'late steps':>11} {'late ticks':>11} {'CPU %/call':>11}"
        )
        for n in (int(x) for x in args.live.split(",")):
            u, o, lost, late, late_ticks, pct = asyncio.run(_live(n, args.live_seconds))
            print(f"{n:>6} {u:>10} {o:>9} {lost:>11} {late:>11} {late_ticks:>11} {pct:>10.2f}%")
        print("(CPU of the whole process per call: the Call's path, the VAD and the echo engine;")
        print(" no codec or socket: the legs' benchmarks measure those)")


if __name__ == "__main__":
    main()
