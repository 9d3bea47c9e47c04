"""Streaming polyphase resampler between the legs' rates and the model's 24 kHz.

Owns: :class:`StreamingResampler`, a stateful rational (L/M) polyphase FIR with a linear-phase
Kaiser-windowed sinc low-pass. Its filter state carries across chunks of any length, so the output
of a stream fed in 20 ms chunks equals the output of the whole stream fed at once, and the delay is
constant (``delay_ms``: 2.75 ms for 8 kHz, 1.375 ms for 16 kHz, 1 ms for 48 kHz legs). The stop band
starts at the lower rate's Nyquist frequency, so nothing above it survives by more than -60 dB
(aliases when downsampling, images when upsampling). Synchronous and pure; imports only numpy and
``voicegate.errors``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import numpy.typing as npt

from voicegate.errors import AudioError

__all__ = ["StreamingResampler"]

KAISER_BETA = 6.0
# Cutoff (-6 dB point) as a fraction of the lower rate's Nyquist frequency. With the delays below
# this keeps >= 63 dB of rejection from that Nyquist frequency up, and the pass band within 0.1 dB
# up to about 83% of it (3.32 kHz for an 8 kHz leg).
CUTOFF_FRACTION = 0.9125
# Filter half-length at an 8 kHz low rate; it scales with 1/low rate (the transition band is a
# fixed fraction of the low Nyquist frequency). The half-length is rounded up to a multiple of 6
# so the delay is a whole number of output samples for every supported ratio.
DELAY_MS_AT_8K = 2.75
MAX_RATIO_TERM = 6  # L and M (after reducing in/out) up to 6: 8/16/24/48 kHz in any pairing
_MIN_CHUNK_CAPACITY_SAMPLES = 4096
_INV_INT16_SCALE = np.float32(1.0 / 32768.0)


def _kaiser_lowpass(num_taps: int, cutoff_hz: float, rate_hz: float) -> npt.NDArray[np.float64]:
    """Linear-phase windowed-sinc low-pass with unit DC gain (``num_taps`` odd)."""
    n = np.arange(num_taps) - (num_taps - 1) / 2
    x = 2.0 * cutoff_hz / rate_hz
    h = x * np.sinc(x * n) * np.kaiser(num_taps, KAISER_BETA)
    return h / h.sum()  # type: ignore[no-any-return]


@functools.lru_cache(maxsize=16)
def _design(
    in_rate_hz: int, out_rate_hz: int, up: int, down: int
) -> tuple[int, int, int, int, npt.NDArray[np.float32]]:
    """The filter of one ratio: (taps, half taps, span, taps per phase, block coefficients).
    Made once per ratio and shared (about 0.5 ms each, which every call paid twice on the event
    loop when it started)."""
    mid_rate_hz = in_rate_hz * up
    low_rate_hz = min(in_rate_hz, out_rate_hz)
    step = 6  # multiple of every M <= 3 and of 2*3, so D / M is whole for the legs' ratios
    step = step * down // math.gcd(step, down)
    half = DELAY_MS_AT_8K * 1e-3 * mid_rate_hz * 8000 / low_rate_hz
    half_taps = step * math.ceil(round(half, 6) / step)
    num_taps = 2 * half_taps + 1
    h = _kaiser_lowpass(num_taps, CUTOFF_FRACTION * low_rate_hz / 2, mid_rate_hz) * up

    # Polyphase split: phase p holds h[p + up*j], j = 0..K-1 (zero-padded to K*up taps).
    taps_per_phase = -(-num_taps // up)
    padded = np.zeros(taps_per_phase * up)
    padded[:num_taps] = h
    phases = padded.reshape(taps_per_phase, up).T  # phases[p, j] = h[p + up*j]

    # Output j = up*r + q of block r is sum_j phases[p_q, j] * x[down*r + c_q - j]; one window of
    # span K + c_max input samples per block serves all `up` outputs of the block.
    offsets = [(down * q) // up for q in range(up)]
    span = taps_per_phase + offsets[-1]
    coeffs = np.zeros((span, up))
    for q in range(up):
        p_q = (down * q) % up
        for s in range(span):
            j = offsets[q] + taps_per_phase - 1 - s
            if 0 <= j < taps_per_phase:
                coeffs[s, q] = phases[p_q, j]

    out = coeffs.astype(np.float32)
    out.flags.writeable = False
    return num_taps, half_taps, span, taps_per_phase, out


class StreamingResampler:
    """Resample one mono stream from ``in_rate_hz`` to ``out_rate_hz``, keeping state across chunks.

    One instance per call and per direction. Feed chunks of any length with :meth:`process`
    (int16 or float32 in [-1, 1]); each call returns the float32 output samples that the input so
    far completes. The output lags the input by exactly ``delay_samples`` output samples
    (``delay_ms``). Chunks whose length is a multiple of the input-rate side of the ratio
    (every 20 ms chunk of the supported rates) produce exactly ``len * out_rate / in_rate`` samples.

    Example::

        up = StreamingResampler(8000, 24000)
        model_frame = up.process(mulaw_decode(payload))   # 160 -> 480 float32 samples
    """

    __slots__ = (
        "in_rate_hz",
        "out_rate_hz",
        "up",
        "down",
        "delay_samples",
        "delay_ms",
        "num_taps",
        "_coeffs",
        "_span",
        "_history",
        "_buf",
        "_valid",
        "_views",
    )

    def __init__(self, in_rate_hz: int, out_rate_hz: int) -> None:
        if in_rate_hz <= 0 or out_rate_hz <= 0:
            raise AudioError(
                f"resampler: rates must be positive, got {in_rate_hz} -> {out_rate_hz}"
            )
        g = math.gcd(in_rate_hz, out_rate_hz)
        up, down = out_rate_hz // g, in_rate_hz // g
        if up > MAX_RATIO_TERM or down > MAX_RATIO_TERM:
            raise AudioError(
                f"resampler: unsupported ratio {in_rate_hz} -> {out_rate_hz} Hz "
                f"(up {up}, down {down}; each must be <= {MAX_RATIO_TERM})"
            )
        self.in_rate_hz = in_rate_hz
        self.out_rate_hz = out_rate_hz
        self.up = up
        self.down = down
        self._views: dict[int, npt.NDArray[np.float32]] = {}
        if up == down:  # same rate: a format conversion with no filter and no delay
            self.delay_samples = 0
            self.delay_ms = 0.0
            self.num_taps = 1
            self._coeffs = np.ones((1, 1), dtype=np.float32)
            self._span = 1
            self._history = 0
            self._buf = np.zeros(_MIN_CHUNK_CAPACITY_SAMPLES, dtype=np.float32)
            self._valid = 0
            return

        design = _design(in_rate_hz, out_rate_hz, up, down)
        num_taps, half_taps, span, taps_per_phase, coeffs = design
        self.num_taps = num_taps
        self.delay_samples = half_taps // down
        self.delay_ms = 1000.0 * half_taps / (in_rate_hz * up)
        self._coeffs = coeffs  # shared by every resampler of this ratio: read only
        self._span = span
        self._history = taps_per_phase - 1
        self._buf = np.zeros(span + down + _MIN_CHUNK_CAPACITY_SAMPLES, dtype=np.float32)
        self._valid = self._history

    def reset(self) -> None:
        """Forget all filter state, as if newly made."""
        self._buf[:] = 0.0
        self._valid = self._history

    def process(
        self, samples: npt.NDArray[np.int16] | npt.NDArray[np.floating]
    ) -> npt.NDArray[np.float32]:
        """Feed one chunk (int16, or float in [-1, 1]); return the float32 output it completes."""
        n = samples.shape[0]
        start = self._valid
        end = start + n
        if end > self._buf.shape[0]:
            self._grow(end)
        dest = self._buf[start:end]
        if samples.dtype.kind == "i":
            np.multiply(samples, _INV_INT16_SCALE, out=dest)
        else:
            dest[...] = samples
        if self.up == self.down:
            self._valid = 0
            return dest.copy()

        blocks = (end - self._span) // self.down + 1 if end >= self._span else 0
        out = np.empty(blocks * self.up, dtype=np.float32)
        if blocks:
            view = self._views.get(blocks)
            if view is None:
                view = self._window_view(blocks)
            np.dot(view, self._coeffs, out=out.reshape(blocks, self.up))
            consumed = blocks * self.down
            rest = end - consumed
            self._buf[:rest] = self._buf[consumed:end]
            self._valid = rest
        else:
            self._valid = end
        return out

    def _window_view(self, blocks: int) -> npt.NDArray[np.float32]:
        """A read-only (blocks, span) sliding-window view onto the buffer, cached per block count."""
        item = self._buf.itemsize
        view: npt.NDArray[np.float32] = np.lib.stride_tricks.as_strided(
            self._buf, shape=(blocks, self._span), strides=(self.down * item, item), writeable=False
        )
        if len(self._views) < 8:  # a stream uses one or two chunk sizes; don't grow without bound
            self._views[blocks] = view
        return view

    def _grow(self, needed: int) -> None:
        new = np.zeros(max(needed, 2 * self._buf.shape[0]), dtype=np.float32)
        new[: self._valid] = self._buf[: self._valid]
        self._buf = new
        self._views.clear()
