"""Call recording format: stereo WAV (what the gateway writes) against Ogg/Opus, per minute of
call audio. Both channels are the bundled caller speech (the right one 0.7 s later, as an agent
answering), at the Twilio/SIP leg rate (8 kHz) and the WebRTC rate (48 kHz).

Printed per format and rate: bytes per call-minute, CPU ms per call-minute (process time, this
machine, one core) and how that compares to the gateway's budget of 1% of a core per call for
the whole edge (600 ms of CPU per call-minute). WAV's cost is the recorder's own work: the
CallRecorder placing every 20 ms block and the writer thread appending each second with its
header patched (to a temporary folder). Opus is PyAV's libopus encoder in an Ogg container at
the given bitrate, 20 ms frames (``--bitrate``, default 24 kb/s stereo).

    python bench/recording_bench.py --minutes 1
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

from voicegate.audio import StreamingResampler, load_caller
from voicegate.calls.recording import CallRecorder, RecordingWriter

BUDGET_MS_PER_MIN = 600.0  # 1% of a core


def stereo(rate_hz: int, minutes: float) -> npt.NDArray[np.int16]:
    speech = load_caller(8000)
    n = int(rate_hz * 60 * minutes)
    if rate_hz != 8000:
        speech = (StreamingResampler(8000, rate_hz).process(speech) * 32767).astype(np.int16)
    mono = np.resize(speech, n + rate_hz)
    shift = int(0.7 * rate_hz)
    return np.stack([mono[:n], mono[shift : shift + n]], axis=1)


def wav_cost(pcm: npt.NDArray[np.int16], rate_hz: int) -> tuple[int, float]:
    block = rate_hz // 50
    with tempfile.TemporaryDirectory() as tmp:
        writer = RecordingWriter()
        writer.start()
        path = Path(tmp) / "call.wav"
        caller = np.ascontiguousarray(pcm[:, 0])
        agent = np.ascontiguousarray(pcm[:, 1])
        t0 = time.process_time()
        rec = CallRecorder(writer, path, rate_hz)
        for at in range(0, len(pcm) - block + 1, block):
            rec.caller(caller[at : at + block], at)
            rec.agent(agent[at : at + block], at)
        done: list[object] = []
        rec.finish(len(pcm), done.append)
        writer.close()  # the writer thread's work is in the process time too
        cpu = time.process_time() - t0
        return path.stat().st_size, cpu


def opus_cost(pcm: npt.NDArray[np.int16], rate_hz: int, bitrate: int) -> tuple[int, float]:
    import av

    out = io.BytesIO()
    t0 = time.process_time()
    container = av.open(out, mode="w", format="ogg")
    opus_rate = rate_hz if rate_hz in (8000, 12000, 16000, 24000, 48000) else 48000
    stream = container.add_stream("libopus", rate=opus_rate, layout="stereo")
    stream.bit_rate = bitrate
    block = rate_hz // 50
    for at in range(0, len(pcm) - block + 1, block):
        frame = av.AudioFrame.from_ndarray(
            pcm[at : at + block].reshape(1, -1), format="s16", layout="stereo"
        )
        frame.sample_rate = rate_hz
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)
    container.close()
    cpu = time.process_time() - t0
    return len(out.getvalue()), cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=1.0)
    ap.add_argument("--bitrate", type=int, default=24_000)
    args = ap.parse_args()
    print(f"{args.minutes:g} call-minute(s), stereo; per call-minute:")
    print(f"{'format':<22}{'rate':>7}{'kB/min':>10}{'CPU ms/min':>12}{'% of edge budget':>18}")
    for rate in (8000, 48000):
        pcm = stereo(rate, args.minutes)
        rows = [("WAV PCM16", *wav_cost(pcm, rate))]
        try:
            rows.append(
                (f"Ogg/Opus {args.bitrate // 1000} kb/s", *opus_cost(pcm, rate, args.bitrate))
            )
        except Exception as exc:  # no libopus in this PyAV
            print(f"  (Ogg/Opus unavailable: {exc})")
        for name, size, cpu in rows:
            per_min_kb = size / 1000 / args.minutes
            cpu_ms = cpu * 1000 / args.minutes
            pct = 100 * cpu_ms / BUDGET_MS_PER_MIN
            print(f"{name:<22}{rate:>7}{per_min_kb:>10.0f}{cpu_ms:>12.1f}{pct:>17.1f}%")


if __name__ == "__main__":
    main()
