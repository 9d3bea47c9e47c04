"""The text tokenizer: round trip, special ids, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from voicegate.engine.tokenizer import EPAD_ID, PAD_ID, load_text_tokenizer
from voicegate.errors import CheckpointError


def test_round_trip_and_pieces() -> None:
    tok = load_text_tokenizer(None)
    assert 300 <= tok.vocab_size <= 1000
    text = "<system> You are a friendly bank teller. Our branch opens at nine. <system>"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert "".join(tok.decode_piece(i) for i in ids) == " " + text
    assert all(i not in (EPAD_ID, PAD_ID) for i in ids)


def test_non_text_ids_are_empty() -> None:
    tok = load_text_tokenizer(None)
    assert tok.decode_piece(PAD_ID) == ""
    assert tok.decode_piece(EPAD_ID) == ""
    assert tok.decode_piece(tok.vocab_size + 5) == ""
    assert tok.decode_piece(-1) == ""


def test_unseen_characters_fall_back_to_bytes() -> None:
    tok = load_text_tokenizer(None)
    assert tok.decode(tok.encode("Zürich 5€")) == "Zürich 5€"
    assert tok.count("hello there") == len(tok.encode("hello there"))


def test_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="tokenizer_spm_32k_3.model"):
        load_text_tokenizer(tmp_path)
    (tmp_path / "tokenizer_spm_32k_3.model").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="not a SentencePiece model"):
        load_text_tokenizer(tmp_path)


WORDS = ["José", "Zoë", "Ångström", "Москва", "東京", "naïve café", "Łódź 🙂"]


@pytest.mark.parametrize("word", WORDS)
def test_stream_decodes_byte_fallback_across_tokens(word: str) -> None:
    tok = load_text_tokenizer(None)
    ids = tok.encode(word)
    assert any(tok.decode_piece(i) == "" for i in ids)  # spelled by byte pieces
    stream = tok.stream()
    pieces = [stream.push(i) for i in ids]
    assert "".join(pieces) == " " + word
    assert "\ufffd" not in "".join(pieces)
    # the per-token table alone loses the letters (what the transcript had before)
    assert "".join(tok.decode_piece(i) for i in ids) != " " + word


def test_stream_keeps_a_character_across_pad_and_reset_forgets_it() -> None:
    tok = load_text_tokenizer(None)
    ids = tok.encode("Zoë")
    first_byte = next(k for k, i in enumerate(ids) if tok.decode_piece(i) == "")
    stream = tok.stream()
    out = [stream.push(i) for i in ids[: first_byte + 1]]
    out += [stream.push(PAD_ID), stream.push(EPAD_ID)]
    out += [stream.push(i) for i in ids[first_byte + 1 :]]
    assert "".join(out) == " Zoë"
    # an unfinished character, then a new call: nothing of it leaks into the next text
    stream.push(ids[first_byte])
    stream.reset()
    assert "".join(stream.push(i) for i in tok.encode("hello")) == " hello"


def test_stream_replaces_invalid_bytes_as_sentencepiece_does() -> None:
    tok = load_text_tokenizer(None)
    lone = tok.encode("é")  # two byte pieces (after the word start)
    byte_ids = [i for i in lone if tok.decode_piece(i) == ""]
    assert len(byte_ids) == 2
    ids = [byte_ids[0], *tok.encode("hello")]  # a lead byte without its continuation
    stream = tok.stream()
    text = "".join(stream.push(i) for i in ids)
    assert text == "\ufffd hello"
    assert tok.decode(ids).replace(" ", "") == text.replace(" ", "")
    assert stream.push(-1) == "" and stream.push(tok.vocab_size) == ""


def test_engine_slots_decode_their_own_bytes() -> None:
    from tests.engine.engine_helpers import tiny_engine

    engine = tiny_engine(slots=2)
    try:
        model = engine.model
        tok = load_text_tokenizer(None)
        ids_a, ids_b = tok.encode("José"), tok.encode("東京")
        got: dict[int, list[str]] = {0: [], 1: []}
        for k in range(max(len(ids_a), len(ids_b))):  # interleaved, as ticks deliver them
            if k < len(ids_a):
                got[0].append(model.text_piece(0, ids_a[k]))
            if k < len(ids_b):
                got[1].append(model.text_piece(1, ids_b[k]))
        assert "".join(got[0]) == " José"
        assert "".join(got[1]) == " 東京"
    finally:
        engine.close()
