"""CPU cost of the audio building blocks per 20 ms chunk (the table ``voicegate bench audio`` prints).

Owns: the measurement loop and the table. Run on purpose (``python bench/audio_bench.py`` or
``voicegate bench audio``); never part of the tests. Imports only ``voicegate.audio``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np

from voicegate.audio import (
    StreamingResampler,
    VoiceActivityDetector,
    alaw_decode,
    alaw_encode,
    float_to_int16,
    load_caller,
    mulaw_decode,
    mulaw_encode,
)

FRAME_MS = 20
RESAMPLER_PAIRS = [
    (8000, 24000),
    (24000, 8000),
    (16000, 24000),
    (24000, 16000),
    (48000, 24000),
    (24000, 48000),
]


def _measure(fn: Callable[[int], object], n_chunks: int, repeats: int) -> tuple[float, float]:
    """Median over ``repeats`` of (CPU us, wall us) per call of ``fn(i)``, i = chunk index."""
    cpu, wall = [], []
    fn(0)
    for _ in range(repeats):
        c0, w0 = time.process_time_ns(), time.perf_counter_ns()
        for i in range(n_chunks):
            fn(i)
        cpu.append((time.process_time_ns() - c0) / n_chunks / 1e3)
        wall.append((time.perf_counter_ns() - w0) / n_chunks / 1e3)
    return statistics.median(cpu), statistics.median(wall)


def _chunks(pcm: np.ndarray, size: int) -> list[np.ndarray]:
    n = len(pcm) // size * size
    return [np.ascontiguousarray(c) for c in pcm[:n].reshape(-1, size)]


def _feeder(
    process: Callable[[np.ndarray], object], frames: list[np.ndarray]
) -> Callable[[int], object]:
    m = len(frames)
    return lambda i: process(frames[i % m])


def run(n_chunks: int = 2000, repeats: int = 5) -> list[tuple[str, float, float]]:
    """Measure every row; returns (name, CPU us per 20 ms, wall us per 20 ms)."""
    rows: list[tuple[str, float, float]] = []
    caller_8k = load_caller(8000)
    frames_8k = _chunks(caller_8k, 160)
    k = len(frames_8k)
    mulaw_frames = [mulaw_encode(f) for f in frames_8k]
    alaw_frames = [alaw_encode(f) for f in frames_8k]
    rows.append(
        (
            "mu-law encode 160 samples",
            *_measure(lambda i: mulaw_encode(frames_8k[i % k]), n_chunks, repeats),
        )
    )
    rows.append(
        (
            "mu-law decode 160 bytes",
            *_measure(lambda i: mulaw_decode(mulaw_frames[i % k]), n_chunks, repeats),
        )
    )
    rows.append(
        (
            "A-law encode 160 samples",
            *_measure(lambda i: alaw_encode(frames_8k[i % k]), n_chunks, repeats),
        )
    )
    rows.append(
        (
            "A-law decode 160 bytes",
            *_measure(lambda i: alaw_decode(alaw_frames[i % k]), n_chunks, repeats),
        )
    )

    rng = np.random.default_rng(0)
    for in_hz, out_hz in RESAMPLER_PAIRS:
        size = in_hz * FRAME_MS // 1000
        frames = _chunks(float_to_int16(rng.standard_normal(size * 64) * 0.1), size)
        r = StreamingResampler(in_hz, out_hz)
        rows.append(
            (
                f"resample {in_hz // 1000}k -> {out_hz // 1000}k (int16 in, {r.delay_ms:g} ms delay)",
                *_measure(_feeder(r.process, frames), n_chunks, repeats),
            )
        )
    model_out = rng.standard_normal(480).astype(np.float32) * 0.1
    out16 = np.empty(480, dtype=np.int16)
    rows.append(
        (
            "float32 -> int16, 480 samples",
            *_measure(lambda i: float_to_int16(model_out, out16), n_chunks, repeats),
        )
    )

    # VAD: cost per 20 ms averaged over the stream (one model run per 32 ms window when not gated)
    silence = _chunks(np.zeros(160 * 400, dtype=np.int16), 160)
    noise = _chunks(float_to_int16(rng.standard_normal(160 * 400) * 10 ** (-40 / 20)), 160)
    cases = [
        ("caller WAV (speech + pauses), gate on", frames_8k, {}),
        ("caller WAV, gate off", frames_8k, {"gate_dbfs": None}),
        ("line silence (gated)", silence, {}),
        ("noise -40 dBFS (model runs)", noise, {}),
    ]
    vad_n = max(400, n_chunks // 4)
    for label, frames, kwargs in cases:
        vad = VoiceActivityDetector(8000, **kwargs)  # type: ignore[arg-type]
        rows.append(
            (
                f"VAD 8k: {label}",
                *_measure(_feeder(vad.process, frames), vad_n, repeats),
            )
        )
    return rows


def format_table(rows: list[tuple[str, float, float]]) -> str:
    """The rows as a fixed-width table, with % of one core at one chunk per 20 ms."""
    width = max(len(name) for name, _, _ in rows)
    lines = [
        f"{'per 20 ms chunk':<{width}} | CPU us | wall us | % core",
        f"{'-' * width}-+--------+---------+-------",
    ]
    for name, cpu_us, wall_us in rows:
        pct = 100.0 * cpu_us / (FRAME_MS * 1000)
        lines.append(f"{name:<{width}} | {cpu_us:6.1f} | {wall_us:7.1f} | {pct:5.3f}")
    return "\n".join(lines)


def main(n_chunks: int = 2000, repeats: int = 5) -> None:
    """Print the table, plus one Twilio call's audio path per 20 ms (decode, up, VAD, down, encode)."""
    rows = run(n_chunks, repeats)
    print(format_table(rows))
    by = {name: cpu for name, cpu, _ in rows}
    path = (
        by["mu-law decode 160 bytes"]
        + next(v for n, v in by.items() if n.startswith("resample 8k -> 24k"))
        + by["VAD 8k: caller WAV (speech + pauses), gate on"]
        + by["float32 -> int16, 480 samples"]
        + next(v for n, v in by.items() if n.startswith("resample 24k -> 8k"))
        + by["mu-law encode 160 samples"]
    )
    print(
        f"\nTwilio call audio path per 20 ms (decode, 8k->24k, VAD, 24k->8k, encode): "
        f"{path:.1f} us CPU = {100 * path / (FRAME_MS * 1000):.2f}% of a core per call"
    )
