"""Join benchmark: calls that join with their own (per-call) text prompt while others talk.

    python3 bench/join_bench.py --device cuda                       # 7B shapes, random weights
    python3 bench/join_bench.py --device cpu --shapes tiny --live 1,4 --seconds 3   # smoke

For each live-call count (``--live``, default 1 and 80): a serving-mode engine (the real tick
thread, 80 ms on the monotonic clock, CUDA graphs) with that many calls whose windows are full
(the worst-case tick), first ``--seconds`` with no joins (the baseline), then ``--seconds``
of ``--rate`` joins per second, each with its own text prompt of ``--prompt-tokens`` tokens
(the persona's prompt with per-call variables): its voice phases come from the persona's
cache, its text phases are prefilled between ticks. A joined call leaves ``--hold-s`` after
its first output (every join is measured, however long it waited); one with no output after
``--give-up-s`` leaves and counts as unserved.

Per row: join time p50/p99 over every join of the storm (``join()`` to the call's prompt state
in its slot: what the call waits before its first step) and join to first output (one tick
more), unserved joins (refused for want of a free slot, or no output by ``--give-up-s``), the
ticks, late ticks (a tick that ended after the next was due) and skipped ticks, the tick p99, and the per-call prompt passes: how many, calls per pass, engine
ms per pass (the model synchronizes the device before a pass returns; the slots' loads
included), passes forced without room, and the cost the engine's pacing fitted to them
(fixed ms + us per padded text position: the fixed shapes' rows x steps; and, on a model that
timed its shapes at warm-up (CUDA), what passes took beyond those times: fixed ms + ms per
call). Before the rows, one call's prompt alone: eager passes, the fixed-shape pass
(``lm.textpass``, replayed from a CUDA graph when graphs are on) for 1, 2 and 4 calls, and the
bare pass of every shape; then the loads of computed prompts into the slots of a real tick
model (the rows' cache dtype): 1 call, 4 one by one (``reset_slot``) and 4 together
(``reset_slots``). Budget: join p99 <= 150 ms and no late tick. Prints a table last (and
``--json``). Never run as a test.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from math import nan
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from engine_bench import VARIANTS, NullSink, build_ours, pct, set_variant, sync  # noqa: E402

from voicegate.engine.attention_decode import triton_available  # noqa: E402
from voicegate.engine.base import PersonaPrompt, SamplingParams, TickOutput  # noqa: E402
from voicegate.engine.graphs import graphs_enabled  # noqa: E402
from voicegate.engine.lm import system_prompt_text  # noqa: E402
from voicegate.engine.lm.textpass import TextPhasePass  # noqa: E402
from voicegate.engine.runtime import CALL_PROMPT_SAMPLES, BatchedEngine, TickMode  # noqa: E402
from voicegate.engine.runtime import _fit_cost as fit_cost  # noqa: E402
from voicegate.engine.runtime import _fit_extra as fit_extra  # noqa: E402
from voicegate.engine.torch_model import TorchTickModel  # noqa: E402
from voicegate.errors import NoFreeSlot  # noqa: E402

PERSONA = "bank"
BASE_PROMPT = (
    "You work for First Neuron Bank and your name is Sanni. You are speaking with {name}, a "
    "{tier} customer. Greet them by name, ask how you can help, and answer questions about "
    "accounts, cards, loans, transfers and branch hours."
)
FILLER = (
    " Keep answers short, confirm numbers back to the caller, never ask for a full card number "
    "or a PIN, and offer to transfer to a human colleague when the caller asks for one."
)


class FirstOutput:
    """A joining call's sink: when its first output came (engine thread)."""

    def __init__(self) -> None:
        self.first_s: float | None = None  # perf_counter (engine thread)

    def on_tick(self, out: TickOutput) -> None:
        if self.first_s is None:
            self.first_s = time.perf_counter()


def call_prompt(tokenizer: Any, n_tokens: int, i: int) -> str:
    """A per-call prompt of about ``n_tokens`` model tokens (tags included), unique to call i."""
    text = BASE_PROMPT.format(name=f"Caller Number {i}", tier=("gold", "standard")[i % 2])
    while len(tokenizer.encode(system_prompt_text(text + FILLER))) <= n_tokens:
        text += FILLER
    words = text.split(" ")
    while len(words) > 1 and len(tokenizer.encode(system_prompt_text(" ".join(words)))) > n_tokens:
        words.pop()
    return " ".join(words)


def fill_windows(model: TorchTickModel, n: int) -> None:
    """Slots 0..n-1 as calls past the attention window (the worst-case tick); engine thread."""
    state, context = model.state, model.lm.config.context
    for i in range(n):
        state.positions_host[i] = 2 * context + i
    state.positions.copy_(torch.from_numpy(state.positions_host))


def timed(fn: Any, device: torch.device, repeats: int) -> float:
    """The fastest of ``repeats`` runs of ``fn`` after a first one, ms (device synchronized)."""
    times = []
    for _ in range(repeats + 1):
        sync(device)
        started = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - started) * 1000)
    return min(times[1:])


def alone(parts: Any, prompt_tokens: int, device: torch.device, repeats: int) -> dict[str, float]:
    """One call's prompt computed alone: the whole prefill (voice and text phases, what a
    per-call prompt would cost without the voice cache), the text phases only, and the text
    phases of 4 calls in one pass (per call)."""
    lm, mimi, tokenizer, voices = parts
    voice = voices.resolve(PersonaPrompt(PERSONA, "", "NATF0"))
    persona = lm.prefill(voice, tokenizer.encode(system_prompt_text(BASE_PROMPT)))
    ids = [
        tokenizer.encode(system_prompt_text(call_prompt(tokenizer, prompt_tokens, i)))
        for i in range(4)
    ]

    def timed_ms(fn: Any) -> float:
        return timed(fn, device, repeats)

    text = TextPhasePass(lm)
    try:
        capture_s = text.capture() if graphs_enabled(device) else 0.0
        with torch.inference_mode():
            out = {
                "voice_frames": float(voice.n_frames),
                "text_tokens": float(len(ids[0])),
                "whole_prefill_ms": timed_ms(lambda: lm.prefill(voice, ids[0])),
                "text_phases_ms": timed_ms(lambda: lm.prefill_text_phases([persona], ids[:1])),
                "text_phases_x4_ms": timed_ms(lambda: lm.prefill_text_phases([persona] * 4, ids))
                / 4,
                # the fixed-shape pass (a CUDA graph when captured), copies in and out included
                "captured": float(text.is_captured),
                "capture_s": capture_s,
                "pass_ms": timed_ms(lambda: text.prefill([persona], ids[:1])),
                "pass_x2_ms": timed_ms(lambda: text.prefill([persona] * 2, ids[:2])) / 2,
                "pass_x4_ms": timed_ms(lambda: text.prefill([persona] * 4, ids)) / 4,
                "pass_eager": float(text.eager_passes),
            }
            # the bare pass of every shape (the slowest of 3): what pacing can expect
            for (rows, steps), ms in text.time_passes(3).items():
                out[f"shape_{rows}x{steps}_ms"] = ms
            return out
    finally:
        text.close()


def loads(
    parts: Any, variant: str, prompt_tokens: int, device: torch.device, repeats: int
) -> dict[str, float]:
    """Per-call prompts (computed) loaded into the slots of a real tick model with the rows'
    cache dtype, ms: one call, 4 one by one (``reset_slot`` each) and 4 together
    (``reset_slots``: what a pass of 4 does). Each synchronizes the device at its end."""
    lm, mimi, tokenizer, voices = parts
    kv_dtype = set_variant(lm, variant, manual_fp8=False)
    model = TorchTickModel(
        "loads", lm, mimi, tokenizer, voices, 4, kv_dtype=kv_dtype, use_cuda_graph=False
    )
    try:
        persona = model.prepare_persona(
            PersonaPrompt(
                PERSONA, BASE_PROMPT.format(name="our customer", tier="standard"), "NATF0"
            )
        )
        states = model.prepare_calls(
            [(persona, call_prompt(tokenizer, prompt_tokens, i)) for i in range(4)]
        )
        items = [(i, state, SamplingParams(), i) for i, state in enumerate(states)]

        def apart() -> None:
            for item in items:
                model.reset_slot(*item)

        return {
            "load_1_ms": timed(lambda: model.reset_slot(*items[0]), device, repeats),
            "load_x4_apart_ms": timed(apart, device, repeats),
            "load_x4_ms": timed(lambda: model.reset_slots(items), device, repeats),
        }
    finally:
        model.close()


def run(
    parts: Any,
    variant: str,
    live: int,
    join_slots: int,
    rate: float,
    seconds: float,
    hold_s: float,
    give_up_s: float,
    prompt_tokens: int,
    device: torch.device,
) -> dict[str, float]:
    lm, mimi, tokenizer, voices = parts
    kv_dtype = set_variant(lm, variant, manual_fp8=False)
    model = TorchTickModel(
        "bench", lm, mimi, tokenizer, voices, live + join_slots, kv_dtype=kv_dtype
    )
    # the live calls' windows are filled on the engine thread, between two ticks (no race)
    todo: list[int] = []
    plain = model.between_ticks

    def between_ticks(active: np.ndarray) -> list[Any]:
        if todo:
            fill_windows(model, todo.pop())
        return plain(active)

    model.between_ticks = between_ticks  # type: ignore[method-assign]
    engine = BatchedEngine(model, mode=TickMode.SERVING, seed=0)
    engine._admit_measured = lambda: None  # type: ignore[method-assign]  # noqa: SLF001 (all rows)
    engine.start()
    try:
        persona = PersonaPrompt(
            PERSONA, BASE_PROMPT.format(name="our customer", tier="standard"), "NATF0"
        )
        engine.load_persona(persona)
        prompts = [call_prompt(tokenizer, prompt_tokens, i) for i in range(64)]
        for i in range(live):
            engine.join(PERSONA, NullSink(), seed=i)
        time.sleep(0.5)
        todo.append(live)
        # warm the per-call prefill (first-use costs: kernels, allocator) outside the figures
        for i in range(3):
            slot = engine.join(PERSONA, NullSink(), seed=900 + i, text_prompt=prompts[i])
            time.sleep(0.3)
            slot.leave()
        time.sleep(0.5)

        def snapshot() -> tuple[int, int, int, float, int, int, int]:
            s = engine.stats()
            return (
                s.ticks,
                s.late_ticks,
                s.skipped_ticks,
                s.call_prompt_ms,
                s.call_prompt_passes,
                s.call_prompt_done,
                s.call_prompt_forced,
            )

        base0 = snapshot()
        time.sleep(seconds)
        base1 = snapshot()
        joins_before = engine._join_ms_n  # noqa: SLF001 (the storm's joins only)
        started = time.perf_counter()
        sinks: list[tuple[float, FirstOutput]] = []
        staying: list[tuple[float, FirstOutput, Any]] = []  # (joined, sink, slot)
        refused = unserved = 0
        period = 1.0 / rate

        def leave_due(now: float, is_last: bool) -> int:
            """Calls whose hold after their first output is over leave (all when last);
            returns how many left with no output after ``give_up_s``."""
            gave_up = 0
            for entry in list(staying):
                joined_s, sink, slot = entry
                first = sink.first_s
                if is_last or (first is not None and now >= first + hold_s):
                    staying.remove(entry)
                    slot.leave()
                    gave_up += int(first is None)
                elif first is None and now >= joined_s + give_up_s:
                    staying.remove(entry)
                    slot.leave()
                    gave_up += 1
            return gave_up

        n = 0
        while time.perf_counter() - started < seconds:
            due = started + n * period
            now = time.perf_counter()
            if due > now:
                time.sleep(due - now)
            unserved += leave_due(time.perf_counter(), False)
            sink = FirstOutput()
            joined_s = time.perf_counter()
            try:
                slot = engine.join(PERSONA, sink, seed=1000 + n, text_prompt=prompts[n % 64])
            except NoFreeSlot:
                refused += 1
            else:
                sinks.append((joined_s, sink))
                staying.append((joined_s, sink, slot))
            n += 1
        end = time.perf_counter() + give_up_s
        while staying and time.perf_counter() < end:
            time.sleep(0.02)
            unserved += leave_due(time.perf_counter(), False)
        unserved += leave_due(time.perf_counter(), True)
        storm = snapshot()
        joins_n = engine._join_ms_n - joins_before  # noqa: SLF001
        ring = engine._join_ms  # noqa: SLF001
        size = len(ring)
        join_ms = [float(ring[i % size]) for i in range(joins_before, joins_before + joins_n)][
            -size:
        ]
        first_ms = [(s.first_s - t) * 1000 for t, s in sinks if s.first_s is not None]
        passes = storm[4] - base1[4]
        costs = engine._pass_cost  # noqa: SLF001 (what the pacing fitted its passes to)
        fixed_s, per_token_s = fit_cost(costs[: min(engine._pass_cost_n, CALL_PROMPT_SAMPLES)])  # noqa: SLF001
        # beyond the shapes timed at warm-up (CUDA graphs), per call: NaN when not timed
        n_extra = min(engine._pass_extra_n, CALL_PROMPT_SAMPLES)  # noqa: SLF001
        extra = fit_extra(engine._pass_extra[:n_extra]) if n_extra else (nan, nan)  # noqa: SLF001
        stats = engine.stats()
        return {
            "live": float(live),
            "joins": float(len(sinks)),
            "refused": float(refused),
            "unserved": float(unserved),
            "join_p50_ms": pct(join_ms, 50),
            "join_p99_ms": pct(join_ms, 99),
            "join_max_ms": max(join_ms) if join_ms else float("nan"),
            "first_out_p50_ms": pct(first_ms, 50),
            "first_out_p99_ms": pct(first_ms, 99),
            "passes": float(passes),
            "calls_per_pass": (storm[5] - base1[5]) / max(passes, 1),
            "pass_ms": (storm[3] - base1[3]) / max(passes, 1),
            "forced_passes": float(storm[6] - base1[6]),
            "fit_fixed_ms": fixed_s * 1000.0,
            "fit_per_token_us": per_token_s * 1e6,
            "fit_extra_fixed_ms": extra[0] * 1000.0,
            "fit_extra_per_call_ms": extra[1] * 1000.0,
            "timed_shapes": float(len(model.text_pass.pass_ms)),
            "base_ticks": float(base1[0] - base0[0]),
            "base_late": float(base1[1] - base0[1]),
            "ticks": float(storm[0] - base1[0]),
            "late_ticks": float(storm[1] - base1[1]),
            "skipped_ticks": float(storm[2] - base1[2]),
            "tick_p99_ms": stats.tick_ms_p99,
            "text_pass_captured": float(model.text_pass.is_captured),
            "text_pass_eager": float(model.text_pass.eager_passes),
        }
    finally:
        engine.close()
        model.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", choices=["7b", "tiny"], default="7b")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="")
    parser.add_argument("--live", default="1,80", help="live calls, comma-separated")
    parser.add_argument("--join-slots", type=int, default=12, help="slots for joining calls")
    parser.add_argument("--rate", type=float, default=20.0, help="joins per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="baseline and storm each")
    parser.add_argument(
        "--hold-s", type=float, default=0.3, help="a call's stay after its first output"
    )
    parser.add_argument(
        "--give-up-s", type=float, default=2.0, help="a call with no output by then leaves"
    )
    parser.add_argument("--prompt-tokens", type=int, default=200)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/voicegate-bench"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    if device.type == "cpu":
        torch.set_num_threads(1)
    variant = args.variant or (
        "fp8" if device.type == "cuda" and triton_available() else "sdpa"
    )  # 80 live calls + the joining ones fit an H200 with the 8-bit cache
    parts = build_ours(args.shapes, device, args.workdir)
    one = alone(parts, args.prompt_tokens, device, repeats=5)
    print(json.dumps(one), flush=True)
    load = loads(parts, variant, args.prompt_tokens, device, repeats=5)
    print(json.dumps(load), flush=True)
    rows = []
    for live in [int(x) for x in args.live.split(",") if x]:
        row = run(
            parts,
            variant,
            live,
            args.join_slots,
            args.rate,
            args.seconds,
            args.hold_s,
            args.give_up_s,
            args.prompt_tokens,
            device,
        )
        print(json.dumps(row), flush=True)
        rows.append(row)
    results = {
        "shapes": args.shapes,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "variant": variant,
        "rate": args.rate,
        "prompt_tokens": args.prompt_tokens,
        "alone": one,
        "loads": load,
        "rows": rows,
    }
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    print(
        f"\none call's prompt alone ({one['voice_frames']:.0f} voice frames, "
        f"{one['text_tokens']:.0f} text tokens): whole prefill {one['whole_prefill_ms']:.1f} ms, "
        f"text phases only {one['text_phases_ms']:.1f} ms, "
        f"in a pass of 4 {one['text_phases_x4_ms']:.1f} ms per call; fixed-shape pass "
        f"({'CUDA graph' if one['captured'] else 'eager'}): 1 call {one['pass_ms']:.1f} ms, "
        f"2 calls {one['pass_x2_ms']:.1f} ms per call, 4 calls {one['pass_x4_ms']:.1f} ms per call"
    )
    shapes = {k[6:-3]: v for k, v in one.items() if k.startswith("shape_")}
    print(
        "bare pass per shape (rows x steps), ms: "
        + ", ".join(f"{k} {v:.1f}" for k, v in shapes.items())
    )
    print(
        f"load into the slots ({variant}): 1 call {load['load_1_ms']:.1f} ms, 4 one by one "
        f"{load['load_x4_apart_ms']:.1f} ms, 4 together {load['load_x4_ms']:.1f} ms"
    )
    print(
        f"\njoins with a {args.prompt_tokens}-token per-call prompt at {args.rate:g}/s, "
        f"{args.shapes} shapes, {results['device']}, {variant} "
        "(budget: join p99 <= 150 ms, no late tick)"
    )
    head = (
        "| live | joins | unserved | join p50 ms | join p99 ms | 1st out p99 ms | passes "
        "| calls/pass | ms/pass | forced | fit: fixed ms + us/token "
        "| beyond timed shapes: fixed + per call ms | ticks | late (no joins) "
        "| late | skipped | tick p99 ms |"
    )
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        print(
            f"| {r['live']:.0f} | {r['joins']:.0f} | {r['unserved'] + r['refused']:.0f} | "
            f"{r['join_p50_ms']:.1f} | {r['join_p99_ms']:.1f} | {r['first_out_p99_ms']:.1f} | "
            f"{r['passes']:.0f} | {r['calls_per_pass']:.1f} | {r['pass_ms']:.1f} | "
            f"{r['forced_passes']:.0f} | {r['fit_fixed_ms']:.1f} + {r['fit_per_token_us']:.1f} | "
            f"{r['fit_extra_fixed_ms']:.1f} + {r['fit_extra_per_call_ms']:.1f} | "
            f"{r['ticks']:.0f} | {r['base_late']:.0f} | {r['late_ticks']:.0f} | "
            f"{r['skipped_ticks']:.0f} | {r['tick_p99_ms']:.1f} |"
        )


if __name__ == "__main__":
    main()
