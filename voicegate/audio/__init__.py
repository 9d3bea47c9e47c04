"""Audio building blocks for the legs: G.711 codecs, streaming resamplers, sample conversions,
caller voice activity, the one WAV reader, and the bundled caller recordings.

Synchronous and pure (numpy in, numpy or bytes out); nothing here is ``async``; the only I/O is
reading the package's own files (the VAD model, the caller WAVs) and WAV files.
``voicegate.audio`` imports nothing from the rest of voicegate but ``voicegate.errors``.
"""

from __future__ import annotations

from voicegate.audio.g711 import alaw_decode, alaw_encode, mulaw_decode, mulaw_encode
from voicegate.audio.pcm import float_to_int16, int16_to_float32
from voicegate.audio.resample import StreamingResampler
from voicegate.audio.samples import caller_speech_ms, caller_wav_path, load_caller
from voicegate.audio.vad import VoiceActivityDetector, silero_model_path
from voicegate.audio.wav import WavInfo, inspect_wav, read_wav, read_wav_int16, write_wav

__all__ = [
    "StreamingResampler",
    "VoiceActivityDetector",
    "WavInfo",
    "alaw_decode",
    "alaw_encode",
    "caller_speech_ms",
    "caller_wav_path",
    "float_to_int16",
    "inspect_wav",
    "int16_to_float32",
    "load_caller",
    "mulaw_decode",
    "mulaw_encode",
    "read_wav",
    "read_wav_int16",
    "silero_model_path",
    "write_wav",
]
