"""Audio benchmark: CPU microseconds per 20 ms chunk for the codecs, resamplers and the VAD.

    python bench/audio_bench.py [--chunks 2000] [--repeats 5]     # same as: voicegate bench audio

Prints a table (median of the repeats; CPU = process time, so onnxruntime's work is counted).
Run on purpose; never part of the tests.
"""

from __future__ import annotations

import argparse

from voicegate.audio._bench import main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=2000, help="chunks per repeat")
    parser.add_argument("--repeats", type=int, default=5, help="repeats (the median is shown)")
    args = parser.parse_args()
    main(args.chunks, args.repeats)
