"""Times Mimi's per-tick encode + decode for a batch of slots and prints a table.

    python bench/mimi_bench.py --config tiny --device cpu --threads 1 --slots 1,4,8
    python bench/mimi_bench.py --config release --device cuda --slots 1,8,32,64 --graph --parity

Random weights (timing does not depend on them). ``--graph`` also times a CUDA-graph replay
of one tick (encode + decode) and checks it against eager; ``--parity`` (needs moshi
importable) streams the same frames through moshi's MimiModel in float32 and reports code
mismatches and the relative audio error. Not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from voicegate.engine.mimi import MimiConfig, MimiModel, MimiStreamer  # noqa: E402


def _timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median milliseconds of ``fn`` over ``repeats`` runs after 3 warm-ups."""
    for _ in range(3):
        fn()
    samples = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def _graph_tick(
    streamer: MimiStreamer, pcm: torch.Tensor, codes: torch.Tensor, active: torch.Tensor
) -> tuple[Callable[[], None], torch.Tensor, torch.Tensor]:
    """Capture one tick (encode then decode) as a CUDA graph; returns replay and its outputs."""
    side = torch.cuda.Stream()  # type: ignore[no-untyped-call]
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            streamer.encode_step(pcm, active)
            streamer.decode_step(codes, active)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out_codes = streamer.encode_step(pcm, active)
        out_pcm = streamer.decode_step(codes, active)
    return graph.replay, out_codes, out_pcm


def _graph_check(model: MimiModel, n_slots: int, device: torch.device) -> str:
    """Replay vs eager on identical fresh states over 5 ticks: max code and audio differences."""
    gen = torch.Generator().manual_seed(0)
    frames = [(torch.randn(n_slots, 1920, generator=gen) * 0.3).to(device) for _ in range(5)]
    codes_in = [torch.randint(0, 2048, (n_slots, 8), generator=gen).to(device) for _ in range(5)]
    active = torch.ones(n_slots, dtype=torch.bool, device=device)
    eager = MimiStreamer(model, n_slots)
    graphed = MimiStreamer(model, n_slots)
    pcm_buf, codes_buf = frames[0].clone(), codes_in[0].clone()
    replay, out_codes, out_pcm = _graph_tick(graphed, pcm_buf, codes_buf, active)
    graphed.reset_slots(active)  # the warm-up and capture advanced it
    code_diff, audio_diff = 0, 0.0
    for pcm, codes in zip(frames, codes_in, strict=True):
        expected_codes = eager.encode_step(pcm, active)
        expected_pcm = eager.decode_step(codes, active)
        pcm_buf.copy_(pcm)
        codes_buf.copy_(codes)
        replay()
        code_diff += int((out_codes != expected_codes).sum())
        audio_diff = max(audio_diff, float((out_pcm - expected_pcm).abs().max()))
    return (
        f"graph vs eager over 5 ticks: {code_diff} codes differ, max |audio diff| {audio_diff:.2e}"
    )


def _parity(model: MimiModel, config: MimiConfig, n_slots: int, n_frames: int) -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from moshi_ref import moshi_mimi  # the reference builder the parity tests use

    device = model.device
    state = {k: v.float().cpu() for k, v in model.state_dict().items()}
    ref = moshi_mimi(config, state).to(device)
    ours = MimiStreamer(model, n_slots)
    gen = torch.Generator().manual_seed(1)
    mismatched, total, worst = 0, 0, 0.0
    with torch.no_grad(), ref.streaming(n_slots):
        for _ in range(n_frames):
            pcm = (torch.randn(n_slots, 1920, generator=gen) * 0.3).to(device)
            codes = torch.randint(0, 2048, (n_slots, 8), generator=gen).to(device)
            ref_codes = ref.encode(pcm[:, None])[:, :, 0]
            ref_pcm = ref.decode(codes[:, :, None])[:, 0]
            mismatched += int((ours.encode_step(pcm) != ref_codes).sum())
            total += ref_codes.numel()
            out = ours.decode_step(codes)
            worst = max(worst, float((out - ref_pcm).norm() / ref_pcm.norm()))
    return (
        f"parity vs moshi over {n_frames} frames x {n_slots} slots: "
        f"{mismatched}/{total} codes differ, worst relative audio error {worst:.2e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=["tiny", "release"], default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--slots", default="1,4,8")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--graph", action="store_true", help="also time a CUDA-graph replay")
    parser.add_argument("--parity", action="store_true", help="compare with moshi (float32)")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        # parity and graph checks want plain float32 maths
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    config = MimiConfig.tiny() if args.config == "tiny" else MimiConfig.release()
    dtype = getattr(torch, args.dtype)
    model = MimiModel(config, device=device).init_random_(seed=0).cast_(dtype)
    model.refresh_codebooks()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"# Mimi {args.config}, {name}, {args.dtype}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, median of {args.repeats}"
    )
    print("| slots | encode ms | decode ms | tick ms (eager) | tick ms (graph) |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    notes = []
    for n_slots in (int(s) for s in args.slots.split(",")):
        streamer = MimiStreamer(model, n_slots)
        pcm = (torch.randn(n_slots, 1920) * 0.1).to(device)
        active = torch.ones(n_slots, dtype=torch.bool, device=device)
        codes = streamer.encode_step(pcm, active)
        enc = _timed(partial(streamer.encode_step, pcm, active), device, args.repeats)
        dec = _timed(partial(streamer.decode_step, codes, active), device, args.repeats)
        graph_ms = "-"
        if args.graph and device.type == "cuda":
            replay, _, _ = _graph_tick(MimiStreamer(model, n_slots), pcm, codes, active)
            graph_ms = f"{_timed(replay, device, args.repeats):.2f}"
        print(f"| {n_slots} | {enc:.2f} | {dec:.2f} | {enc + dec:.2f} | {graph_ms} |")
    if args.graph and device.type == "cuda":
        notes.append(_graph_check(model, 4, device))
    if args.parity:
        notes.append(_parity(model, config, 2, 140 if args.config == "release" else 12))
    if device.type == "cuda":
        notes.append(f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB")
    for note in notes:
        print(note)


if __name__ == "__main__":
    with torch.no_grad():
        main()
