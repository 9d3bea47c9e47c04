"""StreamingResampler: measured pass band, constant delay, alias/image rejection, chunk invariance.

Levels are measured on the last whole second of a 1.5 s tone (integer-Hz tones, so each tone
sits on an exact DFT bin), after the filter has settled. Figures measured when written: pass band
within 0.08 dB up to 83% of the lower Nyquist frequency; aliases and images at least 62.7 dB
down; delay 2.75 ms (8 kHz legs), 1.375 ms (16 kHz), 1 ms (48 kHz).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicegate.audio import StreamingResampler, float_to_int16, int16_to_float32
from voicegate.errors import AudioError

PAIRS = [
    (8000, 24000),
    (24000, 8000),
    (16000, 24000),
    (24000, 16000),
    (48000, 24000),
    (24000, 48000),
]
DOWN = [p for p in PAIRS if p[1] < p[0]]
AMPLITUDE = 0.5
MAX_DELAY_MS = 3.0
MIN_REJECTION_DB = 60.0
MAX_PASSBAND_DEVIATION_DB = 0.1
FLOAT32_ROUNDING = 1e-6


def _tone(freq_hz: float, rate_hz: int, seconds: float = 1.5) -> npt.NDArray[np.float32]:
    n = np.arange(int(rate_hz * seconds))
    return (AMPLITUDE * np.sin(2 * np.pi * freq_hz * n / rate_hz)).astype(np.float32)


def _last_second(y: npt.NDArray[np.float32], rate_hz: int) -> npt.NDArray[np.float64]:
    return y[-rate_hz:].astype(np.float64)


def _tone_level_db(y: npt.NDArray[np.float32], freq_hz: float, rate_hz: int) -> float:
    """Level of one exact-bin tone in the last second of ``y``, relative to AMPLITUDE."""
    seg = _last_second(y, rate_hz)
    n = np.arange(rate_hz)
    mag = np.abs(np.exp(-2j * np.pi * freq_hz * n / rate_hz) @ seg) * 2 / rate_hz
    return float(20 * np.log10(mag / AMPLITUDE + 1e-30))


def _residual_db(y: npt.NDArray[np.float32], rate_hz: int, keep_hz: list[float]) -> float:
    """RMS of the last second after removing best-fit tones at ``keep_hz``, relative to the input tone."""
    seg = _last_second(y, rate_hz)
    n = np.arange(rate_hz)
    if keep_hz:
        basis = np.stack(
            [f(2 * np.pi * hz * n / rate_hz) for hz in keep_hz for f in (np.sin, np.cos)], axis=1
        )
        coef, *_ = np.linalg.lstsq(basis, seg, rcond=None)
        seg = seg - basis @ coef
    rms = np.sqrt(np.mean(seg**2))
    return float(20 * np.log10(rms / (AMPLITUDE / np.sqrt(2)) + 1e-30))


@pytest.mark.parametrize(("in_hz", "out_hz"), PAIRS)
def test_delay_is_constant_and_at_most_3ms(in_hz: int, out_hz: int) -> None:
    r = StreamingResampler(in_hz, out_hz)
    assert 0 < r.delay_ms <= MAX_DELAY_MS
    assert r.delay_samples == pytest.approx(r.delay_ms * out_hz / 1000)
    # An impulse at any input position that maps onto an output sample peaks delay_samples later,
    # whatever the chunking.
    step = r.down
    for k in (0, step, 7 * step, 101 * step):
        x = np.zeros(in_hz // 20, dtype=np.float32)
        x[k] = 1.0
        expected_peak = k * out_hz // in_hz + r.delay_samples
        for chunk in (1, 7, in_hz // 50, len(x)):
            r.reset()
            y = np.concatenate([r.process(x[i : i + chunk]) for i in range(0, len(x), chunk)])
            assert int(np.argmax(y)) == expected_peak, (k, chunk)


@pytest.mark.parametrize(("in_hz", "out_hz"), PAIRS)
def test_passband_tones_pass_at_0db_within_0_1db_with_the_stated_delay(
    in_hz: int, out_hz: int
) -> None:
    low_nyquist_hz = min(in_hz, out_hz) // 2
    for freq_hz in [100, 300, 1000, 2000, int(0.83 * low_nyquist_hz)]:
        y = StreamingResampler(in_hz, out_hz).process(_tone(freq_hz, in_hz))
        assert abs(_tone_level_db(y, freq_hz, out_hz)) <= MAX_PASSBAND_DEVIATION_DB, freq_hz
        # phase: the output is the input tone delayed by exactly delay_samples (linear phase)
        r = StreamingResampler(in_hz, out_hz)
        n = np.arange(len(y))
        ideal = AMPLITUDE * np.sin(2 * np.pi * freq_hz * (n - r.delay_samples) / out_hz)
        err = _last_second((y - ideal).astype(np.float32), out_hz)
        assert np.sqrt(np.mean(err**2)) < 0.02 * AMPLITUDE, freq_hz


def test_telephone_band_edge_3400hz_loses_under_1db() -> None:
    for in_hz, out_hz in [(8000, 24000), (24000, 8000)]:
        y = StreamingResampler(in_hz, out_hz).process(_tone(3400, in_hz))
        assert _tone_level_db(y, 3400, out_hz) > -1.0


@pytest.mark.parametrize(("in_hz", "out_hz"), DOWN)
def test_downsampling_rejects_tones_above_output_nyquist_by_60db(in_hz: int, out_hz: int) -> None:
    # measured worst case from the Nyquist frequency up: -63.4 / -63.1 / -62.7 dB
    nyquist_hz = out_hz // 2
    freqs = [nyquist_hz, nyquist_hz + 50, nyquist_hz + 300, int(1.5 * nyquist_hz), in_hz // 2 - 100]
    for freq_hz in freqs:
        y = StreamingResampler(in_hz, out_hz).process(_tone(freq_hz, in_hz))
        assert _residual_db(y, out_hz, []) <= -MIN_REJECTION_DB, freq_hz


def test_24k_to_8k_6khz_tone_is_gone_and_1khz_stays() -> None:
    x = _tone(6000, 24000) + _tone(1000, 24000)
    y = StreamingResampler(24000, 8000).process(x)
    assert abs(_tone_level_db(y, 1000, 8000)) < MAX_PASSBAND_DEVIATION_DB
    assert _tone_level_db(y, 2000, 8000) < -MIN_REJECTION_DB  # where 6 kHz would fold to
    assert _residual_db(y, 8000, [1000]) < -MIN_REJECTION_DB


def test_8k_to_24k_1khz_tone_has_no_images_at_7_9_15_17khz() -> None:
    y = StreamingResampler(8000, 24000).process(_tone(1000, 8000))
    assert abs(_tone_level_db(y, 1000, 24000)) < MAX_PASSBAND_DEVIATION_DB
    for image_hz in (7000, 9000, 15000, 17000):
        assert _tone_level_db(y, image_hz, 24000) < -MIN_REJECTION_DB, image_hz
    assert _residual_db(y, 24000, [1000]) < -MIN_REJECTION_DB  # everything else: measured -87 dB


@pytest.mark.parametrize(("in_hz", "out_hz"), [p for p in PAIRS if p[1] > p[0]])
def test_upsampling_images_of_passband_tones_are_60db_down(in_hz: int, out_hz: int) -> None:
    # measured worst case -72 dB (the top of the pass band, whose image is nearest)
    low_nyquist_hz = in_hz // 2
    for freq_hz in [300, 1000, int(0.5 * low_nyquist_hz), int(0.84 * low_nyquist_hz)]:
        y = StreamingResampler(in_hz, out_hz).process(_tone(freq_hz, in_hz))
        assert _residual_db(y, out_hz, [freq_hz]) < -MIN_REJECTION_DB, freq_hz


@pytest.mark.parametrize(("in_hz", "out_hz"), PAIRS)
def test_20ms_chunks_give_20ms_out(in_hz: int, out_hz: int) -> None:
    r = StreamingResampler(in_hz, out_hz)
    chunk = np.zeros(in_hz // 50, dtype=np.int16)
    for _ in range(5):
        y = r.process(chunk)
        assert y.dtype == np.float32 and y.shape == (out_hz // 50,)


@settings(max_examples=60, deadline=None)
@given(
    pair=st.sampled_from(PAIRS),
    cuts=st.lists(st.integers(0, 1200), max_size=12),
    seed=st.integers(0, 2**31 - 1),
)
def test_chunked_output_equals_one_shot(pair: tuple[int, int], cuts: list[int], seed: int) -> None:
    in_hz, out_hz = pair
    x = (np.random.default_rng(seed).standard_normal(1200) * 4000).astype(np.int16)
    whole = StreamingResampler(in_hz, out_hz).process(x)
    r = StreamingResampler(in_hz, out_hz)
    bounds = [0, *sorted(cuts), len(x)]
    pieces = [r.process(x[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
    # Equal up to float32 rounding: BLAS may sum a window in another order at another alignment.
    np.testing.assert_allclose(np.concatenate(pieces), whole, rtol=0, atol=FLOAT32_ROUNDING)
    # output so far only ever depends on whole blocks of input: floor(n / down) * up samples
    assert len(whole) == (len(x) // r.down) * r.up


def test_int16_and_float32_inputs_agree_and_reset_forgets_state() -> None:
    x = (np.random.default_rng(1).standard_normal(480) * 3000).astype(np.int16)
    a = StreamingResampler(24000, 8000)
    y_int = a.process(x)
    a.reset()
    y_float = a.process(int16_to_float32(x))
    np.testing.assert_array_equal(y_int, y_float)
    a.reset()
    np.testing.assert_array_equal(a.process(x), y_int)


def test_large_chunk_grows_buffer() -> None:
    x = _tone(440, 8000, seconds=3.0)
    r = StreamingResampler(8000, 24000)
    y = np.concatenate([r.process(x[:80]), r.process(x[80:])])
    whole = StreamingResampler(8000, 24000).process(x)
    np.testing.assert_allclose(y, whole, rtol=0, atol=FLOAT32_ROUNDING)


def test_same_rate_is_a_delay_free_conversion() -> None:
    r = StreamingResampler(24000, 24000)
    x = np.array([0, 16384, -32768], dtype=np.int16)
    np.testing.assert_array_equal(r.process(x), np.array([0.0, 0.5, -1.0], dtype=np.float32))
    assert r.delay_ms == 0.0


def test_unsupported_ratio_and_bad_rates_raise() -> None:
    with pytest.raises(AudioError, match="44100"):
        StreamingResampler(44100, 24000)
    with pytest.raises(AudioError, match="positive"):
        StreamingResampler(0, 24000)


def test_float_to_int16_rounds_and_clips() -> None:
    x = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 2.0, -2.0, 1.2e-5], dtype=np.float32)
    assert float_to_int16(x).tolist() == [0, 16384, -16384, 32767, -32768, 32767, -32768, 0]
    out = np.empty(8, dtype=np.int16)
    assert float_to_int16(x, out=out) is out
    pcm = np.arange(-32768, 32768, 7, dtype=np.int16)
    np.testing.assert_array_equal(float_to_int16(int16_to_float32(pcm)), pcm)


def test_empty_and_tiny_chunks() -> None:
    r = StreamingResampler(24000, 8000)
    assert r.process(np.zeros(0, dtype=np.int16)).shape == (0,)
    # output m is the filtered input sample 3m: it is out as soon as that sample is in
    assert r.process(np.zeros(2, dtype=np.int16)).shape == (1,)
    assert r.process(np.zeros(1, dtype=np.int16)).shape == (0,)
    assert r.process(np.zeros(1, dtype=np.int16)).shape == (1,)


def test_resamplers_of_one_ratio_share_one_read_only_filter_and_keep_their_own_state() -> None:
    a, b = StreamingResampler(8000, 24000), StreamingResampler(8000, 24000)
    assert a._coeffs is b._coeffs and not a._coeffs.flags.writeable
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(1600) / 8000)).astype(np.float32)
    fresh = StreamingResampler(8000, 24000).process(tone[:160]).copy()
    a.process(tone)  # a's history must not leak into b
    assert np.array_equal(b.process(tone[:160]), fresh)
