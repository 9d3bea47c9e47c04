"""Caller voice activity for barge-in: Silero VAD (ONNX, on onnxruntime) behind a cheap energy gate.

Owns: :class:`VoiceActivityDetector` (per call, any chunk length in, start/stop with pipecat-like
hysteresis, onset/stop times in stream ms), :class:`VadBatcher` (one worker thread that scores the
windows of every detector attached to it in one batched model run) and :func:`silero_model_path`. The model
file is the one the ``silero-vad`` package ships (``silero_vad/data/silero_vad.onnx``, MIT); it is
located without importing that package (whose ``__init__`` imports torch). One onnxruntime session
per process is shared by every detector; each detector keeps its own recurrent state.

Batching (measured, ``voicegate bench audio``-style loop on a 2-core x86 machine): one Silero run
costs about 125 us for one window and about 35 us per window in a batch of 32-160, and
onnxruntime releases the GIL while it runs. A gateway with dozens of calls therefore attaches
every detector to one :class:`VadBatcher`: the event loop only frames the samples, runs the
energy gate and queues windows; the batcher's thread scores all queued windows every
``period_s`` (one window per detector per run, so a detector's recurrent state stays in order),
and each detector applies its results, in stream order, the next time it is fed. Decisions
therefore come up to one period plus one frame later than inline scoring; their times (stream ms
from window indices) are the same.
Imports onnxruntime lazily (first detector), numpy, ``voicegate.audio.pcm``, ``voicegate.errors``,
``threading``; no asyncio.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from voicegate.audio.pcm import float_to_int16
from voicegate.errors import AudioError

__all__ = [
    "BatchedVadFactory",
    "VadBatcher",
    "VoiceActivityDetector",
    "preload",
    "silero_model_path",
]

log = logging.getLogger("voicegate.audio.vad")

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
DEFAULT_BATCH_PERIOD_S = 0.016  # half a window: a queued window waits at most this long

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


def preload(model_path: Path | None = None) -> None:
    """Import onnxruntime and load the model now (blocking: run it off the event loop at
    startup). Left to the first call, both happened on the loop while it carried other calls:
    a stall of every call on it (found with VOICEGATE_STALL_TRACE_MS)."""
    _shared_session(model_path or silero_model_path())


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
        "_batcher",
        "_results",
        "_to_score",
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
        batcher: VadBatcher | None = None,
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
        self._batcher = batcher
        # batched mode: windows in stream order as [input or None, probability or None]; the
        # batcher fills in probabilities (its thread), process() applies them in order (caller)
        self._results: deque[list[Any]] = deque()
        self._to_score: deque[list[Any]] = deque()
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
        self._results.clear()
        self._to_score.clear()

    @property
    def pending_windows(self) -> int:
        """Windows queued for the batcher whose results are not applied yet (0 inline)."""
        return len(self._results)

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
                if self._batcher is None:
                    self._window(self._score())
                else:
                    self._queue_window()
        if self._results:
            self._apply_results()
        return self.is_speech

    def _queue_window(self) -> None:
        """Batched mode: gate the window here, queue it for the batcher's thread otherwise."""
        body = self._shift_in()
        if float(np.dot(body, body)) < self._gate_mean_square * self.window_samples:
            self.windows_gated += 1
            self._results.append([None, 0.0])
            return
        entry = [self._input.copy(), None]
        self._results.append(entry)
        self._to_score.append(entry)
        batcher = self._batcher
        assert batcher is not None
        batcher.submit(self)

    def _apply_results(self) -> None:
        results = self._results
        while results:
            prob = results[0][1]
            if prob is None:
                return  # not scored yet: later windows wait for it (stream order)
            results.popleft()
            self._window(prob)

    def _shift_in(self) -> npt.NDArray[np.float32]:
        """Move the model's context along and put ``_pending`` (scaled) in the window."""
        buf = self._input[0]
        ctx = self._context
        buf[:ctx] = buf[-ctx:]  # the last samples of the previous window
        body: npt.NDArray[np.float32] = buf[ctx:]
        np.multiply(self._pending, _INV_INT16_SCALE, out=body)
        return body

    def _score(self) -> float:
        """Speech probability of the window in ``_pending`` (shifts the model's context along)."""
        body = self._shift_in()
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


class VadBatcher:
    """Scores the queued windows of many detectors in one model run per period, on its own thread.

    Attach detectors with ``VoiceActivityDetector(..., batcher=b)``; they call :meth:`submit`
    when they queue a window. All detectors of one batcher must share its rate. ``close()``
    stops the thread (windows still queued then are left unscored). Thread-safety: the caller
    side only appends to the detector's deques and reads finished entries; the thread only pops
    ``_to_score``, writes the model state and fills in probabilities.

    Example::

        batcher = VadBatcher(8000)
        vads = [VoiceActivityDetector(8000, batcher=batcher) for _ in range(40)]
        ...                                # feed them as usual; results arrive a period later
        batcher.close()
    """

    def __init__(
        self,
        rate_hz: int = 8000,
        *,
        period_s: float = DEFAULT_BATCH_PERIOD_S,
        model_path: Path | None = None,
    ) -> None:
        if rate_hz not in WINDOW_SAMPLES:
            raise AudioError(f"voice activity: expected a rate of 8000 or 16000 Hz, got {rate_hz}")
        if not 0.0 < period_s <= 0.5:
            raise AudioError(f"voice activity: batch period must be in (0, 0.5] s, got {period_s}")
        self.rate_hz = rate_hz
        self.period_s = period_s
        self._session = _shared_session(model_path or silero_model_path())
        self._sr = np.array(rate_hz, dtype=np.int64)
        self._submitted: deque[VoiceActivityDetector] = deque()
        self._wake = threading.Event()
        self._is_closed = False
        self.runs = 0  # model runs (diagnostics)
        self.windows_scored = 0
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name=f"vad-batch-{rate_hz}", daemon=True)
        self._thread.start()

    def detector(self, **kwargs: Any) -> VoiceActivityDetector:
        """A detector at this batcher's rate attached to it."""
        return VoiceActivityDetector(self.rate_hz, batcher=self, **kwargs)

    def submit(self, detector: VoiceActivityDetector) -> None:
        """A detector queued a window (any thread; cheap, never blocks on the model)."""
        self._submitted.append(detector)
        if not self._wake.is_set():
            self._wake.set()

    def close(self) -> None:
        self._is_closed = True
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        last = 0.0
        while True:
            self._wake.wait()
            if self._is_closed:
                return
            wait = last + self.period_s - time.monotonic()
            if wait > 0:
                time.sleep(wait)  # gather a period's windows into one run
            self._wake.clear()
            last = time.monotonic()
            self._score_all()

    def _score_all(self) -> None:
        submitted = self._submitted
        ready: dict[int, VoiceActivityDetector] = {}
        while submitted:
            detector = submitted.popleft()
            ready[id(detector)] = detector
        # a detector submits once per window; an earlier run may have taken them all already
        dets = [d for d in ready.values() if d._to_score]
        while dets:
            entries = [d._to_score.popleft() for d in dets]
            n = len(dets)
            try:
                inputs = np.concatenate([e[0] for e in entries], axis=0)
                states = np.concatenate([d._state for d in dets], axis=1)
                prob, state = self._session.run(
                    None, {"input": inputs, "state": states, "sr": self._sr}
                )
            except Exception:
                self.errors += 1
                if self.errors <= 5 or self.errors % 1000 == 0:
                    log.exception("voice activity: batched scoring failed (%d)", self.errors)
                for d, entry in zip(dets, entries, strict=True):
                    # taken as not speech, so that no stream waits forever; the model state
                    # starts afresh (as at a call's start) in case it was what failed
                    d._state = np.zeros(STATE_SHAPE, dtype=np.float32)
                    entry[0] = None
                    entry[1] = 0.0
                dets = [d for d in dets if d._to_score]
                continue
            for i in range(n):
                dets[i]._state = state[:, i : i + 1, :].copy()
                entries[i][0] = None
                entries[i][1] = float(prob[i, 0])  # published last: the caller may read it now
            self.runs += 1
            self.windows_scored += n
            dets = [d for d in dets if d._to_score]  # a second window of the same detector


class BatchedVadFactory:
    """``factory(rate_hz)`` -> a detector attached to this factory's batcher for that rate.

    The gateway's VAD factory: one :class:`VadBatcher` (one thread) per rate, made on first use;
    :meth:`close` stops them all.
    """

    def __init__(self, period_s: float = DEFAULT_BATCH_PERIOD_S) -> None:
        self.period_s = period_s
        self._batchers: dict[int, VadBatcher] = {}
        self._lock = threading.Lock()

    def __call__(self, rate_hz: int) -> VoiceActivityDetector:
        with self._lock:
            batcher = self._batchers.get(rate_hz)
            if batcher is None:
                batcher = VadBatcher(rate_hz, period_s=self.period_s)
                self._batchers[rate_hz] = batcher
        return batcher.detector()

    @property
    def batchers(self) -> list[VadBatcher]:
        return list(self._batchers.values())

    def close(self) -> None:
        with self._lock:
            batchers, self._batchers = list(self._batchers.values()), {}
        for batcher in batchers:
            batcher.close()
