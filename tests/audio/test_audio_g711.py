"""G.711 codecs: bit-exact with audioop over every int16 value and every code, and with the tables."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from voicegate.audio import _g711_tables as tables
from voicegate.audio import alaw_decode, alaw_encode, mulaw_decode, mulaw_encode
from voicegate.audio._audioop import audioop as _maybe_audioop
from voicegate.errors import CodecError

ALL_INT16 = np.arange(65536, dtype=np.uint16).view(np.int16)
ALL_CODES = bytes(range(256))
audioop: Any = _maybe_audioop  # None only without audioop-lts on >= 3.13 (then skipped)

pytestmark = pytest.mark.skipif(audioop is None, reason="audioop / audioop-lts not installed")


def test_audioop_import_is_silenced_in_one_module() -> None:
    # -W error is on for the suite: re-importing the shim must not raise the DeprecationWarning.
    import importlib

    import voicegate.audio._audioop as shim

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        importlib.reload(shim)
    assert shim.audioop is not None


def test_mulaw_encode_every_int16_matches_audioop() -> None:
    expected = audioop.lin2ulaw(ALL_INT16.tobytes(), 2)
    assert mulaw_encode(ALL_INT16) == expected
    assert tables.MULAW_ENCODE_TABLE.tobytes() == expected


def test_alaw_encode_every_int16_matches_audioop() -> None:
    expected = audioop.lin2alaw(ALL_INT16.tobytes(), 2)
    assert alaw_encode(ALL_INT16) == expected
    assert tables.ALAW_ENCODE_TABLE.tobytes() == expected


def test_mulaw_decode_every_code_matches_audioop() -> None:
    expected = np.frombuffer(audioop.ulaw2lin(ALL_CODES, 2), dtype=np.int16)
    np.testing.assert_array_equal(mulaw_decode(ALL_CODES), expected)
    np.testing.assert_array_equal(tables.MULAW_DECODE_TABLE, expected)
    np.testing.assert_array_equal(
        tables.table_decode(ALL_CODES, tables.MULAW_DECODE_TABLE), expected
    )


def test_alaw_decode_every_code_matches_audioop() -> None:
    expected = np.frombuffer(audioop.alaw2lin(ALL_CODES, 2), dtype=np.int16)
    np.testing.assert_array_equal(alaw_decode(ALL_CODES), expected)
    np.testing.assert_array_equal(tables.ALAW_DECODE_TABLE, expected)


def test_decode_then_encode_is_identity_on_codes() -> None:
    # G.711 has two zero codes per law whose decode is the same value; all others round-trip.
    mu = mulaw_encode(mulaw_decode(ALL_CODES))
    a = alaw_encode(alaw_decode(ALL_CODES))
    assert sum(x != y for x, y in zip(mu, ALL_CODES, strict=True)) == 1  # 0x7F -> 0xFF (both 0)
    assert a == ALL_CODES


def test_known_values() -> None:
    assert mulaw_encode(np.array([0, -1, 32767, -32768], dtype=np.int16)) == b"\xff\x7e\x80\x00"
    assert alaw_encode(np.array([0, -1, 32767, -32768], dtype=np.int16)) == b"\xd5\x55\xaa\x2a"
    assert mulaw_decode(b"\x00\x80").tolist() == [-32124, 32124]
    assert alaw_decode(b"\x2a\xaa").tolist() == [-32256, 32256]


def test_encode_accepts_bytes_float_and_strided_int16() -> None:
    pcm = np.array([0, 1000, -1000, 32767, -32768, 5], dtype=np.int16)
    expected = mulaw_encode(pcm)
    assert mulaw_encode(pcm.tobytes()) == expected
    assert mulaw_encode(np.repeat(pcm, 2)[::2]) == expected  # non-contiguous view
    as_float = pcm.astype(np.float32) / 32768.0
    assert mulaw_encode(as_float) == expected
    assert alaw_encode(as_float) == alaw_encode(pcm)
    # floats outside [-1, 1] clip instead of wrapping
    assert mulaw_encode(np.array([4.0, -4.0], dtype=np.float32)) == mulaw_encode(
        np.array([32767, -32768], dtype=np.int16)
    )


def test_encode_rejects_odd_bytes_and_other_dtypes() -> None:
    with pytest.raises(CodecError, match="3 bytes"):
        mulaw_encode(b"\x00\x01\x02")
    with pytest.raises(CodecError, match="int32"):
        alaw_encode(np.zeros(4, dtype=np.int32))
    assert issubclass(CodecError, ValueError)


@given(hnp.arrays(np.int16, st.integers(0, 400)))
def test_fuzz_encode_matches_audioop_and_tables(pcm: np.ndarray) -> None:
    raw = pcm.tobytes()
    assert mulaw_encode(pcm) == audioop.lin2ulaw(raw, 2)
    assert alaw_encode(pcm) == audioop.lin2alaw(raw, 2)
    assert tables.table_encode(pcm, tables.MULAW_ENCODE_TABLE) == audioop.lin2ulaw(raw, 2)
    assert tables.table_encode(pcm, tables.ALAW_ENCODE_TABLE) == audioop.lin2alaw(raw, 2)


@given(st.binary(max_size=400))
def test_fuzz_decode_matches_audioop_and_tables(data: bytes) -> None:
    mu = mulaw_decode(data)
    assert mu.dtype == np.int16 and mu.shape == (len(data),)
    assert mu.tobytes() == audioop.ulaw2lin(data, 2)
    assert alaw_decode(data).tobytes() == audioop.alaw2lin(data, 2)
    assert tables.table_decode(data, tables.ALAW_DECODE_TABLE).tobytes() == audioop.alaw2lin(
        data, 2
    )
