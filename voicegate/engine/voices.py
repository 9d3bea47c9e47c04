"""Voices for the persona prompt: release presets (``.pt``), WAV clips, and tiny fakes.

A preset is read from the release's ``voices/`` folder or straight out of ``voices.tgz``
(no extraction). A WAV clip is read, resampled to 24 kHz, loudness-normalised, cut in
1920-sample frames (the last zero-padded) and Mimi-encoded. The tiny backend has no presets:
each preset name becomes a short generated clip (a tone whose pitch follows the name), Mimi-
encoded like a WAV voice, so it is deterministic and exercises the clip path.

Owns: VoiceBank, clip_codes, fake_voice_clip. Imports torch, numpy and the lm/mimi packages.
"""

from __future__ import annotations

import io
import tarfile
import threading
import zlib
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from voicegate.audio.wav import read_wav
from voicegate.engine.base import MODEL_RATE_HZ, PersonaPrompt
from voicegate.engine.clips import normalize_loudness, resample_clip
from voicegate.engine.lm import VoicePrompt
from voicegate.engine.mimi import MimiModel, encode_clip
from voicegate.errors import AudioError, CheckpointError, PersonaError

__all__ = ["VoiceBank", "clip_codes", "fake_voice_clip"]

FAKE_VOICE_S = 0.8


def fake_voice_clip(name: str, seconds: float = FAKE_VOICE_S) -> npt.NDArray[np.float32]:
    """A deterministic voice-like clip for ``name``: a tone with harmonics and a slow vibrato."""
    h = zlib.crc32(name.encode("utf-8"))
    f0 = 90.0 + (h % 160)  # 90..250 Hz, roughly the range of speaking voices
    t = np.arange(int(seconds * MODEL_RATE_HZ)) / MODEL_RATE_HZ
    phase = 2 * np.pi * f0 * t + 0.3 * np.sin(2 * np.pi * 5.0 * t)
    wave = np.zeros_like(t)
    for k in (1, 2, 3, 4):
        wave += (0.5 / k) * np.sin(k * phase)
    clip: npt.NDArray[np.float32] = (0.3 * wave).astype(np.float32)
    return clip


def clip_codes(mimi: MimiModel, pcm_24k: npt.NDArray[np.float32]) -> torch.Tensor:
    """Mimi codes [N, 8] of a 24 kHz clip, as the reference prepares a WAV voice prompt."""
    return encode_clip(mimi, normalize_loudness(pcm_24k)).cpu()


class VoiceBank:
    """Resolves a persona's voice to a ``VoicePrompt`` (presets, clips, or tiny fakes)."""

    def __init__(self, mimi: MimiModel, presets: Path | None, *, fake_presets: bool) -> None:
        self._mimi = mimi
        self._presets = presets
        self._fake = fake_presets
        self._lock = threading.Lock()  # Mimi encoding of clips is not reentrant per model

    def preset_names(self) -> list[str]:
        if self._presets is None:
            return []
        if self._presets.is_dir():
            return sorted(p.stem for p in self._presets.rglob("*.pt"))
        with tarfile.open(self._presets) as tar:
            return sorted(Path(m.name).stem for m in tar.getmembers() if m.name.endswith(".pt"))

    def resolve(self, prompt: PersonaPrompt) -> VoicePrompt:
        clip = prompt.voice_path
        if clip is None and prompt.voice.lower().endswith(".wav"):
            clip = Path(prompt.voice)
        if clip is not None:
            return self._from_wav(Path(clip), prompt.key)
        if self._fake:
            with self._lock:
                return VoicePrompt.from_codes(clip_codes(self._mimi, fake_voice_clip(prompt.voice)))
        return self._preset(prompt.voice, prompt.key)

    def _from_wav(self, path: Path, key: str) -> VoicePrompt:
        try:
            pcm, rate = read_wav(path)
        except (OSError, AudioError) as exc:
            raise PersonaError(f"persona {key}: cannot read voice clip {path}: {exc}") from exc
        if len(pcm) == 0:
            raise PersonaError(f"persona {key}: voice clip {path} is empty")
        pcm = resample_clip(pcm, rate, MODEL_RATE_HZ)
        with self._lock:
            return VoicePrompt.from_codes(clip_codes(self._mimi, pcm))

    def _preset(self, name: str, key: str) -> VoicePrompt:
        source = self._presets
        if source is None:
            raise PersonaError(f"persona {key}: voice {name!r} is a preset but no voices exist")
        if source.is_dir():
            matches = sorted(source.rglob(f"{name}.pt"))
            if not matches:
                raise PersonaError(
                    f"persona {key}: no preset voice {name!r} in {source} "
                    f"(have: {', '.join(self.preset_names())})"
                )
            return VoicePrompt.load_preset(matches[0])
        with tarfile.open(source) as tar:
            member = next((m for m in tar.getmembers() if Path(m.name).name == f"{name}.pt"), None)
            if member is None:
                raise PersonaError(
                    f"persona {key}: no preset voice {name!r} in {source} "
                    f"(have: {', '.join(self.preset_names())})"
                )
            handle = tar.extractfile(member)
            if handle is None:
                raise CheckpointError(f"{source}: {member.name} is not a file")
            data = torch.load(io.BytesIO(handle.read()), map_location="cpu", weights_only=True)
        try:
            return VoicePrompt.from_preset(data["embeddings"], data["cache"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"voice preset {name} in {source}: expected a dict with embeddings and cache"
            ) from exc
