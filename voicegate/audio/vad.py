"""Caller voice activity for barge-in: Silero VAD (ONNX, on onnxruntime) behind a cheap energy gate.

Owns: :class:`VoiceActivityDetector` (per call, synchronous, any chunk length in, start/stop with
pipecat-like hysteresis, onset/stop times in stream ms) and :func:`silero_model_path`. The model
file is the one the ``silero-vad`` package ships (``silero_vad/data/silero_vad.onnx``, MIT); it is
located without importing that package (whose ``__init__`` imports torch). One onnxruntime session
per process is shared by every detector; each detector keeps its own recurrent state.
Imports onnxruntime lazily (first detector), numpy, ``voicegate.audio.pcm``, ``voicegate.errors``;
no asyncio.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from voicegate.audio.pcm import float_to_int16
from voicegate.errors import AudioError

__all__ = ["VoiceActivityDetector", "silero_model_path"]

# Silero VAD v5/v6 input: 256 samples (32 ms) + 32 of context at 8 kHz, 512 + 64 at 16 kHz.
WINDOW_SAMPLES = {8000: 256, 16000: 512}
CONTEXT_SAMPLES = {8000: 32, 16000: 64}
STATE_SHAPE = (2, 1, 128)
# pipecat's VADParams defaults.
DEFAULT_CONFIDENCE = 0.7
DEFAULT_START_MS = 200
DEFAULT_STOP_MS = 200
# A window quieter than this (RMS, dBFS) is taken as silence without running the model. Speech
# on a phone line sits around -20 to -30 dBFS; the gate only skips line silence and faint hiss.
DEFAULT_GATE_DBFS = -50.0
_INV_INT16_SCALE = np.float32(1.0 / 32768.0)
_INT16 = np.dtype(np.int16)

_session_lock = threading.Lock()
_sessions: dict[Path, Any] = {}


def silero_model_path() -> Path:
    """Where ``silero_vad.onnx`` is: the ``silero-vad`` package's data folder.

    Raises AudioError if the package is not installed (it is a dependency of voicegate).
    """
    spec = importlib.util.find_spec("silero_vad")  # finds, does not import (no torch)
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            path = Path(folder) / "data" / "silero_vad.onnx"
            if path.is_file():
                return path
    raise AudioError(
        "voice activity: silero_vad.onnx not found; expected the 'silero-vad' package "
        "(pip install silero-vad) with silero_vad/data/silero_vad.onnx"
    )


def _shared_session(path: Path) -> Any:
    """One single-threaded onnxruntime session per model file per process (run() is thread-safe)."""
    with _session_lock:
        session = _sessions.get(path)
        if session is None:
            try:
                import onnxruntime as ort

                options = ort.SessionOptions()
                # Many calls share the process; one thread per run keeps a call's cost flat and
                # stops onnxruntime's pool from spinning on idle cores.
                options.intra_op_num_threads = 1
                options.inter_op_num_threads = 1
                options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
                options.log_severity_level = 3
                session = ort.InferenceSession(
                    str(path), sess_options=options, providers=["CPUExecutionProvider"]
                )
            except Exception as exc:  # onnxruntime raises its own untyped errors
                raise AudioError(f"voice activity: cannot load {path}: {exc}") from exc
            _sessions[path] = session
        return session


class VoiceActivityDetector:
    """Speech / no speech for one caller's stream at 8 or 16 kHz, with start/stop hysteresis.

    Feed int16 chunks of any length with :meth:`process`; it returns ``is_speech`` after the
    chunk. The model scores each 32 ms window; a run of windows at or above ``confidence``
    lasting ``start_ms`` starts speech, a run below it lasting ``stop_ms`` stops it. Times are
    stream ms (samples fed so far): ``speech_start_ms`` is the start of the first window of the
    run that started speech, ``speech_stop_ms`` the end of the last speech window before the run
    that stopped it; so decisions come ``start_ms``/``stop_ms`` after those times.

    Windows quieter than ``gate_dbfs`` skip the model (scored 0.0; ``windows_gated`` counts them).

    Example::

        vad = VoiceActivityDetector(rate_hz=8000)
        for frame in frames:              # int16, e.g. 160 samples per 20 ms
            was = vad.is_speech
            if vad.process(frame) and not was:
                onset_ms = vad.speech_start_ms
    """

    __slots__ = (
        "rate_hz",
        "confidence",
        "start_windows",
        "stop_windows",
        "window_samples",
        "window_ms",
        "is_speech",
        "speech_start_ms",
        "speech_stop_ms",
        "last_probability",
        "windows",
        "windows_gated",
        "_gate_mean_square",
        "_session",
        "_input",
        "_pending",
        "_pending_n",
        "_state",
        "_sr",
        "_context",
        "_run_windows",
        "_run_start_window",
    )

    def __init__(
        self,
        rate_hz: int = 8000,
        *,
        confidence: float = DEFAULT_CONFIDENCE,
        start_ms: int = DEFAULT_START_MS,
        stop_ms: int = DEFAULT_STOP_MS,
        gate_dbfs: float | None = DEFAULT_GATE_DBFS,
        model_path: Path | None = None,
    ) -> None:
        if rate_hz not in WINDOW_SAMPLES:
            raise AudioError(f"voice activity: expected a rate of 8000 or 16000 Hz, got {rate_hz}")
        if not 0.0 < confidence < 1.0:
            raise AudioError(f"voice activity: confidence must be in (0, 1), got {confidence}")
        self.rate_hz = rate_hz
        self.confidence = confidence
        self.window_samples = WINDOW_SAMPLES[rate_hz]
        self.window_ms = 1000.0 * self.window_samples / rate_hz
        # pipecat rounds the durations to whole windows (0.2 s -> 6 windows of 32 ms)
        self.start_windows = max(1, round(start_ms / self.window_ms))
        self.stop_windows = max(1, round(stop_ms / self.window_ms))
        self._gate_mean_square = -1.0 if gate_dbfs is None else 10.0 ** (gate_dbfs / 10.0)
        self._session = _shared_session(model_path or silero_model_path())
        self._context = CONTEXT_SAMPLES[rate_hz]
        self._input = np.zeros((1, self._context + self.window_samples), dtype=np.float32)
        self._pending = np.zeros(self.window_samples, dtype=np.int16)
        self._state = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._sr = np.array(rate_hz, dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        """Back to the state of a new stream (time 0, no speech, fresh model state)."""
        self._input[:] = 0.0
        self._pending_n = 0
        self._state[:] = 0.0
        self._run_windows = 0
        self._run_start_window = 0
        self.is_speech = False
        self.speech_start_ms = 0
        self.speech_stop_ms = 0
        self.last_probability = 0.0
        self.windows = 0
        self.windows_gated = 0

    def process(self, pcm: npt.NDArray[np.int16] | npt.NDArray[np.floating]) -> bool:
        """Feed int16 samples (any length); return whether the caller is speaking after them.

        Float samples in [-1, 1] are accepted too (converted to int16 first).
        """
        if pcm.dtype != _INT16:
            if pcm.dtype.kind != "f":
                raise AudioError(
                    f"voice activity: expected int16 or float samples, got {pcm.dtype}"
                )
            pcm = float_to_int16(pcm.astype(np.float32, copy=False))
        n = pcm.shape[0]
        used = 0
        window = self.window_samples
        while used < n:
            take = min(window - self._pending_n, n - used)
            self._pending[self._pending_n : self._pending_n + take] = pcm[used : used + take]
            self._pending_n += take
            used += take
            if self._pending_n == window:
                self._pending_n = 0
                self._window(self._score())
        return self.is_speech

    def _score(self) -> float:
        """Speech probability of the window in ``_pending`` (shifts the model's context along)."""
        buf = self._input[0]
        ctx = self._context
        buf[:ctx] = buf[-ctx:]  # the last samples of the previous window
        body = buf[ctx:]
        np.multiply(self._pending, _INV_INT16_SCALE, out=body)
        if float(np.dot(body, body)) < self._gate_mean_square * self.window_samples:
            self.windows_gated += 1
            return 0.0
        prob, state = self._session.run(
            None, {"input": self._input, "state": self._state, "sr": self._sr}
        )
        self._state = state
        return float(prob[0, 0])

    def _window(self, prob: float) -> None:
        index = self.windows
        self.windows += 1
        self.last_probability = prob
        is_voiced = prob >= self.confidence
        if is_voiced != self.is_speech:
            if self._run_windows == 0:
                self._run_start_window = index
            self._run_windows += 1
            needed = self.stop_windows if self.is_speech else self.start_windows
            if self._run_windows >= needed:
                self.is_speech = is_voiced
                t_ms = round(self._run_start_window * self.window_ms)
                if is_voiced:
                    self.speech_start_ms = t_ms
                else:
                    self.speech_stop_ms = t_ms
                self._run_windows = 0
        else:
            self._run_windows = 0
