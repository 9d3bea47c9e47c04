"""VadBatcher: batched scoring on a worker thread gives the decisions of inline scoring.

Detectors attached to one batcher queue their windows; the batcher's thread scores them in one
model run per period and the detectors apply results in stream order when next fed. The
transitions and their (stream-ms) times must be those of a detector scoring inline; results
only come later in wall time.
"""

from __future__ import annotations

import time

import numpy as np
import numpy.typing as npt
import pytest

from voicegate.audio import VoiceActivityDetector, float_to_int16, load_caller
from voicegate.audio.vad import VadBatcher
from voicegate.errors import AudioError

FRAME_8K = 160


def _drain(vad: VoiceActivityDetector, timeout_s: float = 10.0) -> None:
    """Wait until the batcher has scored every queued window; apply them (an empty feed)."""
    deadline = time.monotonic() + timeout_s
    while vad.pending_windows:
        vad.process(np.zeros(0, dtype=np.int16))
        if time.monotonic() > deadline:
            raise AssertionError(f"{vad.pending_windows} windows never scored")
        time.sleep(0.002)


class _Recording(VoiceActivityDetector):
    """Notes every transition as it is applied (several may be applied in one feed)."""

    __slots__ = ("changes",)

    def _window(self, prob: float) -> None:
        was = self.is_speech
        super()._window(prob)
        if self.is_speech != was:
            t = self.speech_start_ms if self.is_speech else self.speech_stop_ms
            self.changes.append((self.is_speech, t))


def _recording(batcher: VadBatcher | None) -> _Recording:
    vad = _Recording(8000, batcher=batcher)
    vad.changes = []
    return vad


def _transitions(
    vads: list[_Recording], signals: list[npt.NDArray[np.int16]]
) -> list[list[tuple[bool, int]]]:
    """Feed all detectors frame by frame (interleaved, like calls on one loop)."""
    n = max(len(s) for s in signals)
    for i in range(0, n, FRAME_8K):
        for vad, pcm in zip(vads, signals, strict=True):
            if i < len(pcm):
                vad.process(pcm[i : i + FRAME_8K])
    for vad in vads:
        _drain(vad)
    return [vad.changes for vad in vads]


@pytest.fixture
def batcher() -> VadBatcher:
    b = VadBatcher(8000, period_s=0.005)
    yield b  # type: ignore[misc]
    b.close()


def test_batched_detectors_make_the_inline_decisions(batcher: VadBatcher) -> None:
    caller = load_caller(8000)
    rng = np.random.default_rng(1)
    noisy = float_to_int16(caller / 32768.0 + rng.standard_normal(len(caller)) * 0.01)
    quiet = np.zeros(len(caller) // 2, dtype=np.int16)
    signals = [caller, noisy, caller[4000:], quiet, noisy[::-1].copy()]
    inline = _transitions([_recording(None) for _ in signals], signals)
    batched = _transitions([_recording(batcher) for _ in signals], signals)
    assert inline[0] and inline[1]  # the recording has speech: the comparison means something
    assert batched == inline
    assert batcher.windows_scored > 0
    assert batcher.runs < batcher.windows_scored  # windows of several calls shared a run


def test_batched_probabilities_equal_inline_ones(batcher: VadBatcher) -> None:
    caller = load_caller(8000)[: 8000 * 3]
    inline = VoiceActivityDetector(8000, gate_dbfs=None)
    batched = batcher.detector(gate_dbfs=None)
    other = batcher.detector(gate_dbfs=None)  # shares runs with `batched`, must not disturb it
    probs_inline, probs_batched = [], []
    for i in range(0, len(caller), 256):
        window = caller[i : i + 256]
        if len(window) < 256:
            break
        inline.process(window)
        probs_inline.append(inline.last_probability)
        batched.process(window)
        other.process(window[::-1].copy())
        _drain(batched)
        _drain(other)
        probs_batched.append(batched.last_probability)
    assert max(probs_inline) > 0.9
    np.testing.assert_allclose(probs_batched, probs_inline, atol=1e-4)


def test_gated_windows_keep_stream_order(batcher: VadBatcher) -> None:
    """Quiet windows (gated: known at once) queued behind unscored speech windows wait for them:
    speech must start and then stop, at the times an inline detector reports."""
    caller = load_caller(8000)
    speech_at = 5568 * 8  # a sentence starts here (the recording's script)
    pcm = np.concatenate(
        (caller[speech_at : speech_at + 256 * 10], np.zeros(256 * 10, dtype=np.int16))
    )
    inline = VoiceActivityDetector(8000)
    inline.process(pcm)
    vad = batcher.detector()
    vad.process(pcm)  # one call: every window is queued before any result can be applied
    _drain(vad)
    assert vad.windows == inline.windows == 20
    assert vad.windows_gated == inline.windows_gated >= 6
    assert not vad.is_speech and not inline.is_speech
    assert (vad.speech_start_ms, vad.speech_stop_ms) == (
        inline.speech_start_ms,
        inline.speech_stop_ms,
    )
    assert vad.speech_stop_ms > vad.speech_start_ms  # it did start, then stop


def test_a_failing_model_run_leaves_no_stream_waiting(batcher: VadBatcher) -> None:
    vad = batcher.detector()
    vad._state = np.zeros((3, 3), dtype=np.float32)  # a state the model cannot take
    vad.process(load_caller(8000)[5568 * 8 : 5568 * 8 + 256 * 3])
    _drain(vad)  # the failed run's windows count as not speech; nothing stays queued
    assert batcher.errors == 1
    assert vad.windows == 3 and not vad.is_speech
    assert vad._state.shape == (2, 1, 128)  # fresh state: the next windows are scored
    vad.process(load_caller(8000)[5568 * 8 : 5568 * 8 + 256 * 10])
    _drain(vad)
    assert batcher.errors == 1 and vad.is_speech


def test_close_stops_the_thread_and_bad_settings_are_refused() -> None:
    b = VadBatcher(8000)
    b.close()
    assert not b._thread.is_alive()
    with pytest.raises(AudioError, match="rate"):
        VadBatcher(44100)
    with pytest.raises(AudioError, match="period"):
        VadBatcher(8000, period_s=0.0)
