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
