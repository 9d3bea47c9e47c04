"""Engine benchmark and GPU smoke run: random weights with the real shapes, real loading code.

    python bench/engine_bench.py --shapes 7b --device cuda --batches 1,8,max --ticks 50
    python bench/engine_bench.py --shapes tiny --device cpu --batches 1,4 --ticks 10

Writes a random-weights release folder (the real file names, tensor names and shapes; the LM in
the 16-step release layout, bf16), loads it through ``load_release_model`` (the personaplex
backend's path), then for each batch size joins that many calls with a persona and times
engine ticks: fresh calls (just past the prompt) and calls whose attention window is full
(a call past 240 s, the worst case), and each phase alone (Mimi encode, LM step with the
depformer, Mimi decode; fresh calls, synchronised around each). Prints a table last.

Importable with only torch, numpy, safetensors and sentencepiece (+ protobuf, which
sentencepiece uses for its model proto): nothing of fastapi, pydantic or redis is on this path.
Never run as a test. Issue 4 extends it (split timings, the reference runtime side by side).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from voicegate.engine.backends import load_release_model, tiny_lm_config  # noqa: E402
from voicegate.engine.base import FRAME_SAMPLES, PersonaPrompt, TickOutput  # noqa: E402
from voicegate.engine.graphs import NO_CUDA_GRAPH_ENV  # noqa: E402
from voicegate.engine.lm import LMConfig  # noqa: E402
from voicegate.engine.mimi import MimiConfig  # noqa: E402
from voicegate.engine.modeldir import check_model_dir  # noqa: E402
from voicegate.engine.runtime import BatchedEngine, TickMode  # noqa: E402
from voicegate.engine.slots import SlotHandle  # noqa: E402
from voicegate.engine.synthetic import make_release_dir  # noqa: E402
from voicegate.engine.torch_model import TorchTickModel  # noqa: E402
from voicegate.errors import CheckpointError  # noqa: E402

GIB = 1 << 30
PROMPT = (
    "You are a friendly bank teller at Northwind Savings. Greet the caller, ask how you can "
    "help, and answer questions about accounts, cards and branch hours."
)
WARM_TICKS = 3


class NullSink:
    def on_tick(self, out: object) -> None:
        pass


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fill_window(model: TorchTickModel, n: int) -> None:
    """Make the first ``n`` slots look like calls past the attention window (timing only)."""
    state = model.state
    context = model.lm.config.context
    for i in range(n):
        pos = 2 * context + int(state.positions_host[i]) % context
        state.positions_host[i] = pos
    state.positions.copy_(torch.from_numpy(state.positions_host))


def time_ticks(
    engine: BatchedEngine, slots: list[SlotHandle], n_ticks: int, device: torch.device
) -> list[float]:
    frame = (np.random.default_rng(0).standard_normal(FRAME_SAMPLES) * 0.1).astype(np.float32)
    times = []
    for t in range(n_ticks + WARM_TICKS):
        for slot in slots:
            slot.push(frame)
        sync(device)
        started = time.perf_counter()
        engine.tick()  # ends with the device-to-host copy of every slot's output
        elapsed = (time.perf_counter() - started) * 1000
        if t >= WARM_TICKS:
            times.append(elapsed)
    return times


def phase_times(model: TorchTickModel, n: int, device: torch.device) -> dict[str, float]:
    """Median ms of each phase run alone (synchronised around each): where a tick goes."""
    active_host = np.ones(model.n_slots, dtype=bool)
    active = torch.ones(model.n_slots, dtype=torch.bool, device=device)
    pcm = torch.randn(model.n_slots, FRAME_SAMPLES, device=device) * 0.1
    lm, state, mimi = model.lm, model.state, model.mimi
    times: dict[str, list[float]] = {"encode_ms": [], "lm_ms": [], "decode_ms": []}
    codes = torch.zeros(model.n_slots, mimi.n_codebooks, dtype=torch.long, device=device)
    with torch.inference_mode():
        for _ in range(n):
            sync(device)
            t0 = time.perf_counter()
            user = mimi.encode_step(pcm, active)
            sync(device)
            t1 = time.perf_counter()
            kv_len = lm.kv_len_for(state, active_host)
            out = lm.step_tensors(state, user, active, kv_len)
            lm.note_step(state, active_host)
            sync(device)
            t2 = time.perf_counter()
            codes.copy_(torch.where(out.is_valid[:, None], out.agent_codes, 0))
            mimi.decode_step(codes, active)
            sync(device)
            t3 = time.perf_counter()
            times["encode_ms"].append((t1 - t0) * 1000)
            times["lm_ms"].append((t2 - t1) * 1000)
            times["decode_ms"].append((t3 - t2) * 1000)
    return {k: float(np.median(v)) for k, v in times.items()}


def sibling(base: TorchTickModel, batch: int, graphs: bool | None) -> TorchTickModel:
    """Another batch size over the same weights."""
    return TorchTickModel(
        base.name,
        base.lm,
        base.mimi_model,
        base.tokenizer,
        base.voices,
        batch,
        use_cuda_graph=graphs,
    )


def run_calls(model: TorchTickModel, n_ticks: int) -> tuple[list[int], np.ndarray]:
    """Two calls with fixed seeds and input; returns the first call's tokens and audio."""
    engine = BatchedEngine(model, mode=TickMode.MANUAL, seed=0)
    engine.start()
    engine.load_persona(PersonaPrompt("bank", PROMPT, "NATF0"))
    tokens: list[int] = []
    audio: list[np.ndarray] = []

    class Keep:
        def on_tick(self, out: TickOutput) -> None:
            tokens.append(out.text_token)
            audio.append(out.pcm.copy())

    first = engine.join("bank", Keep(), seed=1)
    second = engine.join("bank", NullSink(), seed=2)
    rng = np.random.default_rng(0)
    for _ in range(n_ticks):
        first.push((rng.standard_normal(FRAME_SAMPLES) * 0.1).astype(np.float32))
        second.push((rng.standard_normal(FRAME_SAMPLES) * 0.1).astype(np.float32))
        engine.tick()
    engine.close()
    return tokens, np.concatenate(audio)


def graph_check(base: TorchTickModel, n_ticks: int) -> dict[str, float]:
    """The same two calls ticked eagerly and from CUDA graphs: how often they agree."""
    eager_tokens, eager_audio = run_calls(sibling(base, 2, graphs=False), n_ticks)
    gc.collect()
    graph_tokens, graph_audio = run_calls(sibling(base, 2, graphs=True), n_ticks)
    gc.collect()
    torch.cuda.empty_cache()
    same = sum(a == b for a, b in zip(eager_tokens, graph_tokens, strict=True))
    first_diff = next(
        (i for i, (a, b) in enumerate(zip(eager_tokens, graph_tokens, strict=True)) if a != b),
        n_ticks,
    )
    return {
        "ticks": n_ticks,
        "text_tokens_equal": same,
        "ticks_before_first_difference": first_diff,
        "audio_bit_equal": float(np.array_equal(eager_audio, graph_audio)),
        "audio_max_abs_diff": float(np.abs(eager_audio - graph_audio).max()),
    }


def bench_batch(
    base: TorchTickModel, batch: int, n_ticks: int, device: torch.device, graphs: bool | None
) -> dict[str, float]:
    model = sibling(base, batch, graphs)
    row: dict[str, float] = {"batch": batch}
    engine = BatchedEngine(model, mode=TickMode.MANUAL, seed=0)
    started = time.perf_counter()
    engine.start()
    sync(device)
    row["warmup_ms"] = (time.perf_counter() - started) * 1000
    row["capture_s"] = model.capture_s
    if model.worst_tick_ms is not None:
        row["start_worst_tick_ms"] = model.worst_tick_ms[0]
    started = time.perf_counter()
    engine.load_persona(PersonaPrompt("bank", PROMPT, "NATF0"))
    sync(device)
    row["persona_ms"] = (time.perf_counter() - started) * 1000
    slots = [engine.join("bank", NullSink(), seed=i) for i in range(batch)]
    engine.tick()  # applies the joins
    # the cost of one join (prompt state into a slot), others already running
    slots[-1].leave()
    slot = engine.join("bank", NullSink(), seed=batch)
    pending = engine._pending[slot.index]  # noqa: SLF001 (bench: time the reset alone)
    assert pending is not None
    engine._pending[slot.index] = None  # noqa: SLF001
    sync(device)
    started = time.perf_counter()
    model.reset_slot(slot.index, pending.state, pending.sampling, pending.seed)
    sync(device)
    row["join_ms"] = (time.perf_counter() - started) * 1000
    slots[-1] = slot
    fresh = time_ticks(engine, slots, n_ticks, device)
    row["fresh_p50_ms"] = float(np.percentile(fresh, 50))
    row["fresh_p99_ms"] = float(np.percentile(fresh, 99))
    row.update(phase_times(model, max(5, n_ticks // 4), device))
    fill_window(model, batch)
    full = time_ticks(engine, slots, max(10, n_ticks // 2), device)
    row["full_p50_ms"] = float(np.percentile(full, 50))
    row["full_p99_ms"] = float(np.percentile(full, 99))
    if device.type == "cuda":
        row["max_alloc_gib"] = torch.cuda.max_memory_allocated(device) / GIB
        free, total = torch.cuda.mem_get_info(device)
        row["used_gib"] = (total - free) / GIB
    engine.close()
    del engine, slots, model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", choices=["7b", "tiny"], default="7b")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", default="1,8,max", help="comma list; 'max' = slots that fit")
    parser.add_argument("--ticks", type=int, default=50)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/voicegate-bench"))
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--eager", action="store_true", help="no CUDA graphs")
    parser.add_argument(
        "--graph-check", type=int, default=0, help="ticks of a graph-vs-eager comparison"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    device = torch.device(args.device)
    if args.shapes == "7b":
        lm_config, mimi_config = LMConfig.personaplex_7b(), MimiConfig.release()
    else:
        lm_config, mimi_config = tiny_lm_config(1000), MimiConfig.tiny()
    root = args.workdir / args.shapes
    header: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "shapes": args.shapes,
    }
    try:
        files = check_model_dir(root)
    except CheckpointError:
        started = time.perf_counter()
        files, times = make_release_dir(root, lm_config, mimi_config, device=device)
        header.update({k: round(v, 1) for k, v in times.items()})
        header["write_s"] = round(time.perf_counter() - started, 1)
    header["lm_file_gib"] = round(files.lm.stat().st_size / GIB, 2)
    batches = [b for b in args.batches.split(",") if b]
    numeric = [int(b) for b in batches if b != "max"]
    started = time.perf_counter()
    # one slot of state here; each batch size below gets its own state (and frees it)
    os.environ.setdefault(NO_CUDA_GRAPH_ENV, "1")  # the base model itself never ticks
    base = load_release_model(
        files, lm_config=lm_config, mimi_config=mimi_config, device=device, max_calls=1
    )
    del os.environ[NO_CUDA_GRAPH_ENV]
    graphs = False if args.eager else None
    sync(device)
    header["load_s"] = round(time.perf_counter() - started, 1)
    header["checkpoint_read_s"] = round(base.load_s, 1)
    budget = base.budget
    fit = budget.fit if budget is not None else max(numeric or [1])  # type: ignore[attr-defined]
    header["slots_fit"] = fit
    if budget is not None:
        header["budget"] = budget.describe()  # type: ignore[attr-defined]
        header["weights_gib"] = round(torch.cuda.memory_allocated(device) / GIB, 2)
    print(json.dumps(header, indent=1), flush=True)
    # "max": the slots that fit, less the one slot of state the loaded base model holds
    sizes = sorted({max(1, fit - 1) if b == "max" else int(b) for b in batches})
    rows = []
    for batch in sizes:
        if batch > fit:
            print(f"batch {batch}: skipped, only {fit} slots fit", flush=True)
            continue
        row = bench_batch(base, batch, args.ticks, device, graphs)
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.graph_check and device.type == "cuda":
        check = graph_check(base, args.graph_check)
        print("graph vs eager:", json.dumps(check), flush=True)
        header["graph_check"] = check
    if args.json is not None:
        args.json.write_text(json.dumps({"header": header, "rows": rows}, indent=1))
    cols = ["batch", "join_ms", "fresh_p50_ms", "fresh_p99_ms", "full_p50_ms", "full_p99_ms"]
    cols += ["encode_ms", "lm_ms", "decode_ms"]
    if device.type == "cuda":
        cols += ["max_alloc_gib", "used_gib"]
    mode = "eager" if args.eager or device.type != "cuda" else "CUDA graphs"
    print(
        f"\n{header['device']}, {args.shapes} shapes, torch {header['torch']}, {mode}, "
        f"{args.ticks} ticks; slots that fit: {header['slots_fit']}; load {header['load_s']} s"
    )
    print(" | ".join(f"{c:>13}" for c in cols))
    for row in rows:
        print(" | ".join(f"{row.get(c, float('nan')):>13.1f}" for c in cols))


if __name__ == "__main__":
    main()
