"""Caller STT cost in the tick: the engine with and without the STT, same run, same GPU.

    python bench/stt_bench.py                          # GPU: 7B + stt-1b-en_fr shapes, random weights
    python bench/stt_bench.py --stt 2.6b               # the same with stt-2.6b-en's shapes
    python bench/stt_bench.py --shapes tiny --device cpu --ticks 3 --batches 1,2 \
        --fp8-batches max --max 3                      # CPU smoke of the same code paths

For each batch (1 and 80 with the production bf16 cache; 80 and the largest batch that fits
memory with the STT's state, with the fp8 KV cache), the engine (``BatchedEngine`` over ``TorchTickModel``,
CUDA graphs, the STT with its own graphs) is built twice, without and with the STT, and timed
on full windows (every slot's LM window and STT window full: the worst case) and just after
the joins. "calls" is the engine's own admission figure (``realtime_slots``: calls whose worst
tick stays within 80 ms, measured at warm-up with every row active) at that batch; "fit" is how
many slots memory holds. The STT weights are random in the release's shapes (the 1B has the 4
end-of-turn heads). Prints a table last; never run as a test.
"""

from __future__ import annotations

import argparse
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
from voicegate.engine.base import PersonaPrompt  # noqa: E402
from voicegate.engine.capacity import measure_state_bytes, slots_that_fit  # noqa: E402
from voicegate.engine.mimi import MimiStreamer  # noqa: E402
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
    lm, mimi, _, _ = parts
    if lm.device.type != "cuda":
        return 4
    per_slot = measure_state_bytes(
        lambda: (
            lm.new_state(1, kv_dtype=kv_dtype),
            MimiStreamer(mimi, 1, stt.config.n_q if stt is not None else None),
            stt.new_state(1, kv_dtype) if stt is not None else None,
        ),
        lm.device,
    )
    free, total = torch.cuda.mem_get_info(lm.device)
    return slots_that_fit(free, total, per_slot).fit


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
    try:
        started = time.perf_counter()
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
        engine.close()
        model.close()
        del engine, model
        free_cuda(device)
    return row


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
    parser.add_argument("--batches", default="1,80", help="bf16 KV cache")
    parser.add_argument("--fp8-batches", default="80,max", help="fp8 KV cache; max: --max")
    parser.add_argument("--max", type=int, default=0, help="fp8 maximum (0: what memory fits)")
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
    fit = {
        "off": slots_fit(parts, None, kv8),
        "on": slots_fit(parts, caller[0], kv8),
    }
    header["fp8_fit_without_stt"], header["fp8_fit_with_stt"] = fit["off"], fit["on"]
    # bf16: 80 calls of 1.47 GiB of KV each nearly fill an H200; the STT's state (94 MiB per
    # call for the 1B, 141 MiB for the 2.6B) and weights may not fit beside them
    bf16_fit = slots_fit(parts, caller[0], None)
    header["bf16_fit_without_stt"] = slots_fit(parts, None, None)
    header["bf16_fit_with_stt"] = bf16_fit
    top = args.max or fit["on"]
    plan = []
    for b in (int(b) for b in args.batches.split(",") if b):
        plan.append((bf16, b))
        if b > bf16_fit > 0:  # also the most that fit with the STT, both ways
            plan.append((bf16, bf16_fit))
    plan += [(fp8, top if b == "max" else int(b)) for b in args.fp8_batches.split(",") if b]
    rows: list[dict[str, object]] = []
    for variant, batch in plan:
        if time.perf_counter() - started > args.time_budget_s:
            print(f"{variant} batch {batch}: skipped (time budget)", flush=True)
            rows.append({"variant": variant, "batch": batch})
            continue
        pair: dict[str, dict[str, float]] = {}
        for label, stt in (("off", None), ("on", caller)):
            try:
                pair[label] = bench_one(parts, stt, variant, batch, args.ticks, device, manual_fp8)
            except Exception as exc:  # noqa: BLE001 (report and go on)
                if not is_oom(exc):
                    traceback.print_exc()
                print(f"{variant} batch {batch} stt {label}: {exc!r}", flush=True)
                free_cuda(device)
            if label in pair:
                print(variant, label, json.dumps(pair[label]), flush=True)
        rows.append({"variant": variant, "batch": batch, **pair})
    if args.json is not None:
        args.json.write_text(json.dumps({"header": header, "rows": rows}, indent=1))
    header["elapsed_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(header))
    print()
    cols = "variant batch | full p50/p99 off | full p50/p99 on | +p99 | fresh p99 off/on | calls off/on"
    print(cols)
    print("-" * len(cols))
    for row in rows:
        off, on = row.get("off"), row.get("on")
        if not isinstance(off, dict) or not isinstance(on, dict):
            print(
                f"{row['variant']:>7} {row['batch']:>5} | not run (failed or over the time budget)"
            )
            continue
        grow = 100.0 * (on["full_p99_ms"] / off["full_p99_ms"] - 1.0)
        print(
            f"{row['variant']:>7} {row['batch']:>5} | "
            f"{off['full_p50_ms']:7.2f} /{off['full_p99_ms']:7.2f} | "
            f"{on['full_p50_ms']:7.2f} /{on['full_p99_ms']:7.2f} | {grow:+5.1f}% | "
            f"{off['fresh_p99_ms']:7.2f} /{on['fresh_p99_ms']:7.2f} | "
            f"{off.get('calls', float('nan')):4.0f} /{on.get('calls', float('nan')):4.0f}"
        )
    print(f"memory (fp8 KV): {fit['off']} slots fit without the STT, {fit['on']} with it")
    print(
        f"memory (bf16 KV): {header['bf16_fit_without_stt']} slots fit without the STT, "
        f"{bf16_fit} with it"
    )


if __name__ == "__main__":
    main()
