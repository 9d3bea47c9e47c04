"""Which calls are recorded, where, and the announcement each one hears first.

The setting comes from ``telephony/numbers.yaml`` (``recording:`` by called number or SIP user)
and the persona (``recording:``): a number's own entry wins, then the persona's section, then
the numbers file's ``default`` entry; none of them, or ``enabled: false``, records nothing.
Announcement clips are WAV files in the personas folder, read once per (file version, leg rate),
resampled to the leg's rate.

Usage (wired by ``app``)::

    policy = RecordingPolicy(folder, personas_dir, persona_of=store.get, numbers_of=numbers.recording)
    plan = policy(info, leg_rate_hz)      # RecordingPlan or None; raises when a clip is unreadable

Owns: RecordingPolicy, recording_path. Reads announcement clips (small files, cached).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from voicegate.audio import StreamingResampler, read_wav
from voicegate.calls.recording import RecordingPlan
from voicegate.contracts import CallInfo
from voicegate.errors import RecordingError
from voicegate.personas.schema import RecordingSpec

__all__ = ["RecordingPolicy", "recording_path"]

_CACHE_MAX = 32


def recording_path(folder: Path, call_id: str, started_s: float | None = None) -> Path:
    """``folder/YYYY-MM-DD/<call_id>.wav`` (UTC date of the call's start)."""
    day = time.strftime("%Y-%m-%d", time.gmtime(time.time() if started_s is None else started_s))
    # a call id matches CALL_ID_PATTERN (no '/'); with the suffix it is never '.' or '..'
    return folder / day / f"{call_id}.wav"


class RecordingPolicy:
    """``(CallInfo, leg rate) -> RecordingPlan | None`` for the CallManager."""

    def __init__(
        self,
        folder: Path,
        personas_dir: Path,
        *,
        persona_of: Callable[[str], Any],
        numbers_of: Callable[[str], tuple[RecordingSpec | None, RecordingSpec | None]],
    ) -> None:
        self.folder = folder
        self._personas_dir = personas_dir
        self._persona_of = persona_of
        self._numbers_of = numbers_of
        self._clips: dict[tuple[str, int, int, int], npt.NDArray[np.int16]] = {}
        self._lock = threading.Lock()

    def spec_for(self, info: CallInfo) -> RecordingSpec | None:
        """The recording section that applies to this call (None: not recorded)."""
        entry, default = self._numbers_of(info.to)
        if entry is not None:
            return entry
        try:
            persona = self._persona_of(info.persona)
        except Exception:
            persona = None
        spec = getattr(persona, "recording", None)
        if isinstance(spec, RecordingSpec):
            return spec
        return default

    def __call__(self, info: CallInfo, rate_hz: int) -> RecordingPlan | None:
        spec = self.spec_for(info)
        if spec is None or not spec.enabled:
            return None
        announcement = None
        if spec.announcement:
            announcement = self.clip(spec.announcement, rate_hz)
        return RecordingPlan(recording_path(self.folder, info.call_id), announcement)

    def clip(self, name: str, rate_hz: int) -> npt.NDArray[np.int16]:
        """The announcement ``name`` (relative to the personas folder) as int16 at ``rate_hz``."""
        base = self._personas_dir.resolve()
        path = (self._personas_dir / name).resolve()
        if not path.is_relative_to(base):
            raise RecordingError(f"announcement '{name}' is outside the personas folder")
        try:
            st = path.stat()
        except OSError as exc:
            raise RecordingError(
                f"announcement '{name}' in {self._personas_dir}: {exc.strerror or exc}"
            ) from exc
        key = (str(path), st.st_mtime_ns, st.st_size, rate_hz)
        with self._lock:
            cached = self._clips.get(key)
        if cached is not None:
            return cached
        pcm, clip_rate = read_wav(path)
        if clip_rate != rate_hz:
            rs = StreamingResampler(clip_rate, rate_hz)
            tail = np.zeros(clip_rate // 10, dtype=np.float32)  # flush the filter's delay
            out = np.concatenate([rs.process(pcm), rs.process(tail)])
            pcm = out[rs.delay_samples : rs.delay_samples + len(pcm) * rate_hz // clip_rate]
        clip = (np.clip(pcm, -1.0, 1.0) * 32767.0).round().astype(np.int16)
        with self._lock:
            if len(self._clips) >= _CACHE_MAX:
                self._clips.clear()
            self._clips[key] = clip
        return clip
