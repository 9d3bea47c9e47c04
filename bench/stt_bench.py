"""Caller STT cost in the tick: the engine with and without the STT, same run, same GPU.

    python bench/stt_bench.py                          # GPU: 7B + stt-1b-en_fr shapes, random weights
    python bench/stt_bench.py --stt 2.6b               # the same with stt-2.6b-en's shapes
    python bench/stt_bench.py --shapes tiny --device cpu --ticks 3 --batches 1,max \
        --fp8-batches max --max 3                      # CPU smoke of the same code paths

For each batch (1 and the most that fits with the STT with the production bf16 cache; 80 and
the most that fits with the STT with the fp8 KV cache), the engine (``BatchedEngine`` over
``TorchTickModel``, CUDA graphs, the STT with its own graphs and compiled kernels) is built
with and without the STT at the same batch, and timed on full windows (every slot's LM window
and STT window full: the worst case) and just after the joins. "calls" is the engine's own
admission figure (``realtime_slots``: calls whose worst tick stays within 80 ms, measured at
warm-up with every row active) at that batch, at most the batch. "max" is the gateway's own
start-up estimate (``backends.slot_budget``) taken just before the row, with and without the
STT; without it the engine is also built at its own maximum, for the calls per GPU each way.
An OOM with the STT is reported (where, and the memory then) and retried with 2% fewer slots
(``--step-down``). The STT weights are random in the release's shapes (the 1B has the 4
end-of-turn heads). Prints a table last; never run as a test.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests"))

import torch  # noqa: E402
import torch._dynamo  # noqa: E402
from engine_bench import (  # noqa: E402
    GIB,
    PROMPT,
    NullSink,
    build_ours,
    fill_window,
    free_cuda,
    is_oom,
    pct,
    set_variant,
    sync,
    time_ticks,
)

from voicegate.engine.attention_decode import triton_available  # noqa: E402
from voicegate.engine.backends import slot_budget  # noqa: E402
from voicegate.engine.base import PersonaPrompt  # noqa: E402
from voicegate.engine.runtime import BatchedEngine, TickMode  # noqa: E402
from voicegate.engine.stt import Stt, SttConfig, load_asr_tokenizer  # noqa: E402
from voicegate.engine.synthetic import make_asr_dir, tiny_stt_config  # noqa: E402
from voicegate.engine.tokenizer import TextTokenizer  # noqa: E402
from voicegate.engine.torch_model import TorchTickModel  # noqa: E402

log = logging.getLogger("bench")


def stt_config(shapes: str, which: str) -> SttConfig:
    if shapes == "tiny":
        return tiny_stt_config()
    return SttConfig.stt_1b_en_fr() if which == "1b" else SttConfig.stt_2p6b_en()


def build_stt(config: SttConfig, device: torch.device, workdir: Path) -> tuple[Stt, TextTokenizer]:
    """Random weights on the device; the tokenizer from a synthetic folder (tiny weights)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    small = SttConfig.tiny(text_card=config.text_card, n_q=config.n_q, context=4)
    files = make_asr_dir(workdir / "asr", small)  # a padded tokenizer of text_card pieces
    return Stt.random(config, device, dtype, seed=0), load_asr_tokenizer(files)


def fill_stt_window(model: TorchTickModel, n: int) -> None:
    if model.stt is None:
        return
    state, context = model.stt.state, model.stt.config.context
    state.positions_host[:n] = 2 * context
    state.positions.copy_(torch.from_numpy(state.positions_host))


def slots_fit(parts: tuple[Any, ...], stt: Stt | None, kv_dtype: torch.dtype | None) -> int:
    """The gateway's own start-up estimate (``backends.slot_budget``) from the memory free now
    (after freeing what the previous rows left)."""
    lm, mimi, _, _ = parts
    if lm.device.type != "cuda":
        return 4
    free_cuda(lm.device)
    return slot_budget(lm, mimi, stt, kv_dtype).fit


def memory_note(device: torch.device) -> str:
    """Allocated / reserved by PyTorch and free on the device (what an OOM report needs)."""
    if device.type != "cuda":
        return ""
    free, total = torch.cuda.mem_get_info(device)
    return (
        f"allocated {torch.cuda.memory_allocated(device) / GIB:.2f} GiB, reserved "
        f"{torch.cuda.memory_reserved(device) / GIB:.2f} GiB, free {free / GIB:.2f} of "
        f"{total / GIB:.2f} GiB"
    )


def where(exc: BaseException) -> str:
    """The innermost voicegate frame of ``exc``'s traceback (what allocated)."""
    found = "?"
    for frame in traceback.extract_tb(exc.__traceback__):
        if "voicegate" in frame.filename or "stt_bench" in frame.filename:
            found = f"{Path(frame.filename).name}:{frame.lineno} {frame.name}: {frame.line}"
    return found


def bench_one(
    parts: tuple[Any, ...],
    caller: tuple[Stt, TextTokenizer] | None,
    variant: str,
    batch: int,
    n_ticks: int,
    device: torch.device,
    manual_fp8: bool,
) -> dict[str, float]:
    lm, mimi, tokenizer, voices = parts
    kv_dtype = set_variant(lm, variant, manual_fp8)
    if caller is not None:
        caller[0].attention = None  # the engine gives it the LM's kernel for an 8-bit cache
    row: dict[str, float] = {"batch": batch}
    model: TorchTickModel | None = None
    engine: BatchedEngine | None = None
    try:
        started = time.perf_counter()
        model = TorchTickModel(
            "bench",
            lm,
            mimi,
            tokenizer,
            voices,
            batch,
            kv_dtype=kv_dtype,
            stt=caller[0] if caller else None,
            stt_tokenizer=caller[1] if caller else None,
        )
        engine = BatchedEngine(model, mode=TickMode.MANUAL, seed=0)
        engine._admit_measured = lambda: None  # type: ignore[method-assign]  # noqa: SLF001 (time every row)
        engine.start()
        sync(device)
        row["start_s"] = time.perf_counter() - started
        row["calls"] = float(model.realtime_slots) if model.realtime_slots is not None else np.nan
        if model.worst_tick_ms is not None:
            row["worst_ms"] = model.worst_tick_ms[1]
        engine.load_persona(PersonaPrompt("bank", PROMPT, "NATF0"))
        slots = [engine.join("bank", NullSink(), seed=i) for i in range(batch)]
        engine.tick()
        fresh, _ = time_ticks(engine, slots, n_ticks, device)
        row["fresh_p50_ms"], row["fresh_p99_ms"] = pct(fresh, 50), pct(fresh, 99)
        fill_window(model, batch)
        fill_stt_window(model, batch)
        full, _ = time_ticks(engine, slots, n_ticks, device)
        row["full_p50_ms"], row["full_p99_ms"] = pct(full, 50), pct(full, 99)
        if device.type == "cuda":
            row["alloc_gib"] = torch.cuda.max_memory_allocated(device) / GIB
    finally:
        if engine is not None:
            engine.close()
        if model is not None:
            model.close()
        del engine, model
        free_cuda(device)
    return row


def run_one(
    parts: tuple[Any, ...],
    caller: tuple[Stt, TextTokenizer] | None,
    variant: str,
    batch: int,
    args: argparse.Namespace,
    device: torch.device,
    manual_fp8: bool,
) -> dict[str, float] | None:
    """``bench_one``, or None after an error (reported with where it happened and the memory
    then). The exception (its traceback holds the half-built model's tensors) is dropped
    before the memory is freed, so the next row starts from the same free memory."""
    label = "on" if caller is not None else "off"
    note = ""
    try:
        return bench_one(parts, caller, variant, batch, args.ticks, device, manual_fp8)
    except Exception as exc:  # noqa: BLE001 (report and go on)
        if not is_oom(exc):
            traceback.print_exc()
        note = f"{variant} batch {batch} stt {label}: {str(exc)[:300]!r} at {where(exc)}; "
        note += memory_note(device)
        exc.__traceback__ = None
    finally:
        if note:
            free_cuda(device)
            print(f"{note}; after freeing: {memory_note(device)}", flush=True)
    return None


def graph_check(device: torch.device, workdir: Path, ticks: int = 24) -> dict[str, float]:
    """CUDA graphs against eager ticks, tiny shapes with a 32-codebook Mimi and a 32-codebook
    STT whose window (16) wraps: the caller tokens must be equal, the end-of-turn and agent
    audio equal to float rounding. Two calls, the second joining late."""
    import dataclasses

    from voicegate.engine.backends import tiny_lm_config
    from voicegate.engine.lm import LM
    from voicegate.engine.mimi import MimiConfig, MimiModel
    from voicegate.engine.tokenizer import load_text_tokenizer
    from voicegate.engine.voices import VoiceBank

    config = dataclasses.replace(tiny_stt_config(n_q=32), context=16)
    files = make_asr_dir(workdir / "asr-check", config, seed=2)
    prompt = PersonaPrompt("bank", PROMPT, "NATF0")
    outputs = []
    for use_graph in (False, True):
        tokenizer = load_text_tokenizer(None)
        lm = LM.random(tiny_lm_config(tokenizer.vocab_size), device, torch.float32, seed=1)
        mimi_config = dataclasses.replace(MimiConfig.tiny(), n_q=32)
        mimi = MimiModel(mimi_config).init_random_(seed=2).to(device)
        stt = Stt.from_checkpoint(files.model, files.config, device, torch.float32)
        model = TorchTickModel(
            "check",
            lm,
            mimi,
            tokenizer,
            VoiceBank(mimi, None, fake_presets=True),
            2,
            use_cuda_graph=use_graph and device.type == "cuda",  # CPU: eager twice
            stt=stt,
            stt_tokenizer=load_asr_tokenizer(files),
        )
        model.warmup()
        state = model.prepare_persona(prompt)
        rng = np.random.default_rng(0)
        got = []
        for t in range(ticks):
            if t in (0, ticks // 3):
                model.reset_slot(0 if t == 0 else 1, state, prompt.sampling, seed=t)
            active = np.array([True, t >= ticks // 3])
            pcm = (rng.standard_normal((2, 1920)) * 0.1).astype(np.float32)
            audio, _ = model.step(pcm, active, 2)
            caller = model.caller_outputs()
            assert caller is not None
            got.append((audio.copy(), caller[0].copy(), caller[1].copy()))
        outputs.append(got)
        model.close()
    eager, graphed = outputs
    return {
        "caller_tokens_equal": float(
            all(np.array_equal(a[1], b[1]) for a, b in zip(eager, graphed, strict=True))
        ),
        "end_of_turn_max_diff": max(
            float(np.abs(a[2] - b[2]).max()) for a, b in zip(eager, graphed, strict=True)
        ),
        "audio_max_diff": max(
            float(np.abs(a[0] - b[0]).max()) for a, b in zip(eager, graphed, strict=True)
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", choices=["7b", "tiny"], default="7b")
    parser.add_argument("--stt", choices=["1b", "2.6b"], default="1b")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--ticks", type=int, default=40)
    parser.add_argument(
        "--batches", default="1,max", help="bf16 KV cache; max: the most that fits with the STT"
    )
    parser.add_argument("--fp8-batches", default="80,max", help="fp8 KV cache")
    parser.add_argument(
        "--max", type=int, default=0, help="the batch of 'max' (0: what memory fits)"
    )
    parser.add_argument(
        "--step-down",
        type=int,
        default=2,
        help="after an OOM with the STT, retry this many times with 2%% fewer slots",
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/voicegate-stt-bench"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--graph-check-only", action="store_true", help="CUDA graphs vs eager, then stop"
    )
    parser.add_argument(
        "--time-budget-s",
        type=float,
        default=540.0,
        help="start no new row after this long (the device tool stops a command at 600 s)",
    )
    args = parser.parse_args()
    started = time.perf_counter()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    device = torch.device(args.device)
    config = stt_config(args.shapes, args.stt)
    header: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "shapes": args.shapes,
        "stt": config.name,
        "stt_layers": config.num_layers,
        "stt_context": config.context,
        "ticks": args.ticks,
    }
    print(json.dumps(header), flush=True)
    if device.type == "cuda" or args.graph_check_only:
        try:
            header["graph_check"] = graph_check(device, args.workdir)
        except Exception:  # noqa: BLE001 (the timing still runs)
            traceback.print_exc()
            header["graph_check"] = "failed (see log)"
        print("graph check", json.dumps(header["graph_check"]), flush=True)
        if args.graph_check_only:
            return
        # the check's tiny float32 shapes must not make the real shapes' compiled kernels
        # dynamic (dynamo's automatic dynamic shapes on a second shape of the same code)
        torch._dynamo.reset()
    parts = build_ours(args.shapes, device, args.workdir / args.shapes)
    caller = build_stt(config, device, args.workdir / args.shapes)
    sync(device)
    if device.type == "cuda":
        header["weights_gib"] = round(torch.cuda.memory_allocated(device) / GIB, 2)
    manual_fp8 = device.type != "cuda"
    has_fp8 = triton_available() and device.type == "cuda"
    # the production defaults: masked SDPA over a bf16 cache, the Triton kernel over fp8, step
    # kernels compiled on CUDA (``backends.load_release_model``, ``_fused.compile_enabled``)
    on_cuda = device.type == "cuda"
    bf16 = "sdpa+c" if on_cuda else "sdpa"
    fp8 = "fp8+c" if has_fp8 else bf16
    kv8 = torch.float8_e4m3fn if has_fp8 else None
    plan = [(bf16, spec, None) for spec in args.batches.split(",") if spec]
    plan += [(fp8, spec, kv8) for spec in args.fp8_batches.split(",") if spec]
    rows: list[Row] = []
    for variant, spec, kv in plan:
        if time.perf_counter() - started > args.time_budget_s:
            print(f"{variant} batch {spec}: skipped (time budget)", flush=True)
            rows.append(Row(variant, spec))
            continue
        row = Row(variant, spec)
        batch = int(spec) if spec != "max" else 0
        if spec == "max":
            # the engine's own estimate, taken now: each way at the most that fits it
            row.fit_off = args.max or slots_fit(parts, None, kv)
            row.fit_on = args.max or slots_fit(parts, caller[0], kv)
            batch = row.fit_on
            print(f"{variant} max: {row.fit_off} slots fit without the STT, {row.fit_on} with")
        # with the STT first: an OOM there steps down a few slots (on the clock), and the
        # tick without it is then timed at the same batch
        tried = batch
        for _ in range(1 + args.step_down):
            if time.perf_counter() - started > args.time_budget_s:
                break
            row.on = run_one(parts, caller, variant, tried, args, device, manual_fp8)
            if row.on is not None:
                break
            tried -= max(1, tried // 50)
        row.batch = tried if row.on is not None else batch
        if time.perf_counter() - started <= args.time_budget_s:
            row.off = run_one(parts, None, variant, row.batch, args, device, manual_fp8)
        if spec == "max" and row.fit_off > row.batch:
            # calls per GPU without the STT: at the most that fits without it
            if time.perf_counter() - started <= args.time_budget_s:
                row.off_max = run_one(parts, None, variant, row.fit_off, args, device, manual_fp8)
        for label, got in (("on", row.on), ("off", row.off), ("off at its max", row.off_max)):
            if got is not None:
                print(variant, label, json.dumps(got), flush=True)
        rows.append(row)
        write_json(args.json, header, rows, started)  # after each row: a killed run keeps them
    write_json(args.json, header, rows, started)
    print(json.dumps(header))
    print()
    print_table(rows)


def write_json(path: Path | None, header: dict[str, object], rows: list[Row], t0: float) -> None:
    header["elapsed_s"] = round(time.perf_counter() - t0, 1)
    if path is not None:
        out = {"header": header, "rows": [dataclasses.asdict(r) for r in rows]}
        path.write_text(json.dumps(out, indent=1))


@dataclasses.dataclass
class Row:
    """One line of the table: a variant at a batch, without and with the STT."""

    variant: str
    spec: str  # the batch asked for ("max": the most that fits with the STT)
    batch: int = 0  # the batch both ways were timed at
    on: dict[str, float] | None = None
    off: dict[str, float] | None = None
    fit_off: int = 0  # "max": slots that fit without / with the STT (engine's estimate)
    fit_on: int = 0
    off_max: dict[str, float] | None = None  # "max": without the STT at fit_off


def print_table(rows: list[Row]) -> None:
    cols = (
        "variant batch | full p50/p99 off | full p50/p99 on | +p99 | fresh p99 off/on | "
        "calls off/on"
    )
    print(cols)
    print("-" * len(cols))
    for row in rows:
        off, on = row.off, row.on
        if off is None or on is None:
            batch = row.batch or row.spec
            print(f"{row.variant:>7} {batch!s:>5} | not run (failed or over the time budget)")
            continue
        grow = 100.0 * (on["full_p99_ms"] / off["full_p99_ms"] - 1.0)
        print(
            f"{row.variant:>7} {row.batch:>5} | "
            f"{off['full_p50_ms']:7.2f} /{off['full_p99_ms']:7.2f} | "
            f"{on['full_p50_ms']:7.2f} /{on['full_p99_ms']:7.2f} | {grow:+5.1f}% | "
            f"{off['fresh_p99_ms']:7.2f} /{on['fresh_p99_ms']:7.2f} | "
            f"{calls(off):4.0f} /{calls(on):4.0f}"
        )
    print()
    for row in rows:
        if row.spec != "max":
            continue
        alone = row.off_max if row.off_max is not None else row.off
        print(f"{row.variant} maximum: {row.fit_off} slots fit without the STT, {row.fit_on} with")
        if alone is None or row.on is None:
            print("  calls per GPU: not measured (a row failed or ran out of time)")
            continue
        off_calls, on_calls = calls(alone), calls(row.on)
        cost = 100.0 * (1.0 - on_calls / off_calls) if off_calls > 0 else float("nan")
        print(
            f"  calls per GPU: {off_calls:.0f} without the STT (batch {alone['batch']:.0f}, "
            f"full p99 {alone['full_p99_ms']:.2f} ms), {on_calls:.0f} with it (batch "
            f"{row.on['batch']:.0f}, full p99 {row.on['full_p99_ms']:.2f} ms): the STT costs "
            f"{cost:.1f}% of the calls"
        )


def calls(result: dict[str, float]) -> float:
    """Calls one engine of that batch admits: its measured real-time figure, at most the
    batch (CPU: the batch)."""
    value = result.get("calls", float("nan"))
    return result["batch"] if np.isnan(value) else min(value, result["batch"])


if __name__ == "__main__":
    main()
