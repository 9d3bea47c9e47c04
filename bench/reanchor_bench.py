"""Re-anchoring benchmark: what one re-anchor costs, and the tick while re-anchors run.

    python3 bench/reanchor_bench.py --device cuda                  # 7B shapes, random weights
    python3 bench/reanchor_bench.py --device cpu --shapes tiny --batch 2 --ticks 200  # smoke

(1) One re-anchor of a slot due (position 3000 - margin) with the 7B shapes: the whole prefill
of the kept frames in one pass, the same in chunks of ``--chunks`` positions (each chunk's
time: what it adds to the tick it follows), and the swap. (2) The tick at ``--batch`` calls
(default: the slots that fit the GPU, capped by ``--max-batch``) with every call's position
spread over one re-anchor period, so that re-anchors come due at the rate a GPU full of calls
of ``--call-min`` minutes needs, against the same batch with re-anchoring off. A tick is one
``engine.tick()`` (graph replay, outputs, and the re-anchor chunk after it) wall clock; a tick
over 80 ms is late. Prints a table last (and ``--json``). Never run as a test.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from engine_bench import NullSink, pct, sync  # noqa: E402  (this folder, run as a script)

from voicegate.engine.attention_decode import TritonDecodeAttention, triton_available  # noqa: E402
from voicegate.engine.backends import tiny_lm_config  # noqa: E402
from voicegate.engine.base import FRAME_SAMPLES, PersonaPrompt  # noqa: E402
from voicegate.engine.capacity import measure_state_bytes, slots_that_fit  # noqa: E402
from voicegate.engine.lm import LM, LMConfig, PromptState, Reanchorer  # noqa: E402
from voicegate.engine.lm.reanchor import DEFAULT_MARGIN_FRAMES  # noqa: E402
from voicegate.engine.mimi import MimiConfig, MimiModel, MimiStreamer  # noqa: E402
from voicegate.engine.runtime import BatchedEngine, TickMode  # noqa: E402
from voicegate.engine.synthetic import write_synthetic_tokenizer  # noqa: E402
from voicegate.engine.tokenizer import RELEASE_TOKENIZER_NAME, load_text_tokenizer  # noqa: E402
from voicegate.engine.torch_model import REANCHOR_CHUNK_FRAMES, TorchTickModel  # noqa: E402
from voicegate.engine.voices import VoiceBank  # noqa: E402

BUDGET_MS = 80.0
FRAME_HZ = 12.5
PROMPT = (
    "You are a friendly bank teller at Northwind Savings. Greet the caller, ask how you can "
    "help, and answer questions about accounts, cards, loans, transfers and branch hours. "
    "Keep answers short, confirm numbers back to the caller, never ask for a full card number "
    "or a PIN, and offer to transfer to a human colleague when the caller asks for one."
)


def alloc_retries(device: torch.device) -> int:
    if device.type != "cuda":
        return 0
    return int(torch.cuda.memory_stats(device).get("num_alloc_retries", 0))


def build(shapes: str, device: torch.device, workdir: Path) -> tuple[LM, MimiModel, object]:
    if shapes == "7b":
        lm_config, mimi_config = LMConfig.personaplex_7b(), MimiConfig.release()
    else:
        lm_config, mimi_config = tiny_lm_config(1000), MimiConfig.tiny()
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    workdir.mkdir(parents=True, exist_ok=True)
    write_synthetic_tokenizer(workdir / RELEASE_TOKENIZER_NAME, lm_config.text_card)
    tokenizer = load_text_tokenizer(workdir)
    lm = LM.random(lm_config, device, dtype, seed=0)
    mimi = MimiModel(mimi_config).init_random_(seed=0).to(device)
    return lm, mimi, tokenizer


def one_reanchor(
    model: TorchTickModel,
    prompt: PromptState,
    keep: int,
    chunks: list[int],
    repeats: int,
    margin: int,
) -> dict[str, float]:
    """Slot 0 due: the whole prefill at once, then in chunks (times per chunk), the swap."""
    lm, state, device = model.lm, model.state, model.device
    lm.load_slot(state, 0, prompt)
    row: dict[str, float] = {"prompt_frames": float(prompt.length)}

    def at_due(anchor: Reanchorer) -> None:
        state.positions_host[0] = anchor.trigger_position
        state.positions[0] = anchor.trigger_position

    anchor = Reanchorer(lm, state, keep_frames=keep, margin_frames=margin, chunk_frames=margin)
    row["kept_frames"] = float(anchor.kept_frames(prompt.length, anchor.trigger_position))
    whole: list[float] = []
    swap: list[float] = []
    for _ in range(repeats):
        at_due(anchor)
        job = anchor.begin(0, prompt)
        assert job is not None
        sync(device)
        started = time.perf_counter()
        anchor.advance(job, whole=True)
        whole.append((time.perf_counter() - started) * 1000)
        reference = anchor.workspace[:, :, :, : job.workspace_position(job.done)].clone()
        started = time.perf_counter()
        anchor.finish(job)
        sync(device)
        swap.append((time.perf_counter() - started) * 1000)
    row["whole_ms"] = min(whole)
    row["swap_ms"] = min(swap)
    anchor.close()
    del anchor
    for chunk in chunks:
        anchor = Reanchorer(lm, state, keep_frames=keep, margin_frames=margin, chunk_frames=chunk)
        if device.type == "cuda":
            row[f"chunk{chunk}_capture_s"] = anchor.capture()
        times: list[float] = []
        for _ in range(repeats):
            at_due(anchor)
            job = anchor.begin(0, prompt)
            assert job is not None
            while True:
                sync(device)
                started = time.perf_counter()
                is_done = anchor.advance(job)
                times.append((time.perf_counter() - started) * 1000)
                if is_done:
                    break
            rebuilt = anchor.workspace[:, :, :, : reference.shape[3]].float()
            error = (rebuilt - reference.float()).abs().max() / reference.float().abs().max()
            row[f"chunk{chunk}_rel_err"] = float(error)  # chunks vs one whole pass
            anchor.finish(job)
        row[f"chunk{chunk}_p50_ms"] = pct(times, 50)
        row[f"chunk{chunk}_max_ms"] = max(times)
        row[f"chunk{chunk}_n"] = float(math.ceil(row["kept_frames"] / chunk))
        anchor.close()
        del anchor
    return row


def under_load(
    model: TorchTickModel,
    prompt_key: str,
    batch: int,
    ticks: int,
    period: int,
    device: torch.device,
) -> dict[str, float]:
    """Ticks with every call's position spread over one re-anchor period (due in turn)."""
    engine = BatchedEngine(model, mode=TickMode.MANUAL, seed=0)
    engine._admit_measured = lambda: None  # type: ignore[method-assign]  # noqa: SLF001 (every row)
    engine.start()
    try:
        persona = PersonaPrompt(prompt_key, PROMPT, "NATF0")
        engine.load_persona(persona)
        slots = [engine.join(prompt_key, NullSink(), seed=i) for i in range(batch)]
        frame = (np.random.default_rng(0).standard_normal(FRAME_SAMPLES) * 0.1).astype(np.float32)
        for slot in slots:
            slot.push(frame)
        engine.tick()  # applies the joins
        state, context = model.state, model.lm.config.context
        due = context - (model._reanchor.margin_frames if model._reanchor else 250)  # noqa: SLF001
        for i in range(batch):  # call i comes due after i * period / batch ticks
            state.positions_host[i] = due - 1 - (i * period) // batch
        state.positions.copy_(torch.from_numpy(state.positions_host))
        times: list[float] = []
        late: list[str] = []  # what each late tick had in it (to trace outliers)
        retries = alloc_retries(device)
        for i in range(ticks):
            for slot in slots:
                slot.push(frame)
            sync(device)
            job = model._job  # noqa: SLF001 (a chunk runs after this tick if set or due)
            chunks = job.chunks if job is not None else -1
            started = time.perf_counter()
            engine.tick()
            times.append((time.perf_counter() - started) * 1000)
            if times[-1] > BUDGET_MS:
                after = alloc_retries(device)
                late.append(
                    f"tick {i}: {times[-1]:.1f} ms, job chunk {chunks}, "
                    f"allocator retries +{after - retries}, gc {gc.get_count()}"
                )
            retries = alloc_retries(device)
        stats = engine.stats()
        for line in late[:12]:
            print(f"  late: {line}", flush=True)
        return {
            "tick_p50_ms": pct(times, 50),
            "tick_p99_ms": pct(times, 99),
            "tick_max_ms": max(times),
            "late_ticks": float(sum(t > BUDGET_MS for t in times)),
            "reanchors": float(stats.reanchors),
            "reanchors_per_min": stats.reanchors / (ticks / FRAME_HZ / 60),
            "max_position": float(state.positions_host[:batch].max()),
        }
    finally:
        engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", choices=["7b", "tiny"], default="7b")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--keep", type=int, default=1500, help="VOICEGATE_REANCHOR_FRAMES")
    parser.add_argument("--chunk", type=int, default=REANCHOR_CHUNK_FRAMES, help="under load")
    parser.add_argument("--chunks", default="64,128,192", help="chunk sizes timed alone")
    parser.add_argument("--batch", type=int, default=0, help="calls (0: the slots that fit)")
    parser.add_argument("--max-batch", type=int, default=80, help="cap for --batch 0")
    parser.add_argument("--call-min", type=float, default=20.0, help="call length (rate)")
    parser.add_argument("--ticks", type=int, default=0, help="0: two re-anchor periods")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--attention", choices=["sdpa", "triton"], default="")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/voicegate-bench"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    if device.type == "cpu":
        torch.set_num_threads(1)
    lm, mimi, tokenizer = build(args.shapes, device, args.workdir)
    attention = args.attention or (
        "triton" if device.type == "cuda" and triton_available() else "sdpa"
    )
    lm.attention = TritonDecodeAttention() if attention == "triton" else None
    voices = VoiceBank(mimi, None, fake_presets=True)
    batch = args.batch
    if batch <= 0:
        if device.type == "cuda":
            per_slot = measure_state_bytes(lambda: (lm.new_state(1), MimiStreamer(mimi, 1)), device)
            free, total = torch.cuda.mem_get_info(device)
            c = lm.config
            free -= c.num_layers * 2 * c.num_heads * c.context * c.head_dim * 2  # workspace
            batch = slots_that_fit(free, total, per_slot, args.max_batch).slots
        else:
            batch = 2
    results: dict[str, object] = {
        "shapes": args.shapes,
        "device": str(torch.cuda.get_device_name(device)) if device.type == "cuda" else "cpu",
        "attention": attention,
        "batch": batch,
        "keep": args.keep,
        "chunk": args.chunk,
    }

    # (1) one re-anchor, alone
    model = TorchTickModel(
        "bench", lm, mimi, tokenizer, voices, 1, use_cuda_graph=False, reanchor_frames=0
    )
    prompt = model.prepare_persona(PersonaPrompt("bank", PROMPT, "NATF0"))
    assert isinstance(prompt, PromptState)
    margin_frames = min(DEFAULT_MARGIN_FRAMES, lm.config.context // 8)  # as TorchTickModel's
    chunks = [int(x) for x in args.chunks.split(",") if x and int(x) <= margin_frames]
    margin = min(DEFAULT_MARGIN_FRAMES, lm.config.context // 8)  # as TorchTickModel's
    one = one_reanchor(model, prompt, args.keep, chunks, args.repeats, margin)
    model.close()
    del model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    results["one"] = one
    print(f"one re-anchor: {json.dumps(one)}", flush=True)

    # (2) the tick at the batch, re-anchors at the rate calls of --call-min minutes need
    c = lm.config
    kept = int(one["kept_frames"])
    lag = math.ceil(kept / args.chunk) + 1
    period = c.context - margin - (prompt.length + kept + lag)
    call_frames = args.call_min * 60 * FRAME_HZ
    first = c.context - margin - prompt.length  # live frames before a call's first re-anchor
    share = max(0.0, (call_frames - first) / call_frames)  # calls old enough to re-anchor
    results["period_frames"] = period
    results["needed_per_min"] = share * batch / period * FRAME_HZ * 60
    ticks = args.ticks or 2 * period
    rows: dict[str, dict[str, float]] = {}
    for label, keep in (("off", 0), ("on", args.keep)):
        model = TorchTickModel(
            "bench",
            lm,
            mimi,
            tokenizer,
            voices,
            batch,
            reanchor_frames=keep,
            reanchor_chunk_frames=args.chunk,
            reanchor_margin_frames=margin,
        )
        try:
            rows[label] = under_load(model, "bank", batch, ticks, period, device)
        finally:
            model.close()
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
        print(f"re-anchoring {label}: {json.dumps(rows[label])}", flush=True)
    results["load"] = rows
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1) + "\n")

    print()
    print(
        f"## re-anchor ({args.shapes}, {results['device']}, {attention}, keep {args.keep}, "
        f"prompt {prompt.length} frames)"
    )
    print("| one re-anchor | ms |")
    print("|---|---|")
    print(f"| whole prefill of {kept} frames, one pass | {one['whole_ms']:.1f} |")
    for chunk in chunks:
        print(
            f"| chunk of {chunk} (x{int(one[f'chunk{chunk}_n'])}): p50 / max | "
            f"{one[f'chunk{chunk}_p50_ms']:.1f} / {one[f'chunk{chunk}_max_ms']:.1f} "
            f"(KV vs one pass: rel. error {one[f'chunk{chunk}_rel_err']:.1e}) |"
        )
    print(f"| swap (copy into the slot) | {one['swap_ms']:.2f} |")
    print()
    print(
        f"| batch {batch}, {ticks} ticks, chunk {args.chunk} | tick p50 | p99 | max | late "
        f"| re-anchors/min (needed for {args.call_min:g}-min calls: "
        f"{results['needed_per_min']:.1f}) |"
    )
    print("|---|---|---|---|---|---|")
    for label, row in rows.items():
        print(
            f"| re-anchoring {label} | {row['tick_p50_ms']:.1f} | {row['tick_p99_ms']:.1f} | "
            f"{row['tick_max_ms']:.1f} | {int(row['late_ticks'])} | "
            f"{row['reanchors_per_min']:.1f} |"
        )


if __name__ == "__main__":
    main()
