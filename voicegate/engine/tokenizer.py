"""The model's text tokenizer (SentencePiece): prompt encoding and per-token text pieces.

Usage::

    tok = load_text_tokenizer(model_dir)   # None: the tiny backend's bundled model
    ids = tok.encode("<system> You are a bank teller. <system>")
    tok.decode_piece(ids[0])                # ' You' ('▁' becomes a space; PAD/EPAD give '')
    stream = tok.stream()                   # one per slot: the model's text as it comes
    stream.push(token)                      # '' until a byte-fallback character is complete

The release ships ``tokenizer_spm_32k_3.model`` (32000 pieces). The tiny backend's model is
``assets/tiny_spm.model``, made by ``scripts/make_tiny_tokenizer.py`` from text written for
this project. In both, ids 0 (EPAD) and 3 (PAD) are not text.

A character outside the vocabulary is spelled by byte-fallback pieces (``<0xC3>`` ``<0xA9>`` for
"é"): one UTF-8 byte per token. A lone byte has no text, so a ``TextStream`` keeps the bytes of
an unfinished character across tokens and returns it when its last byte arrives.

Owns: TextTokenizer, TextStream, load_text_tokenizer, release_token_counter. Imports
sentencepiece, voicegate.contracts and voicegate.errors only.
"""

from __future__ import annotations

import codecs
import logging
from pathlib import Path

import sentencepiece as spm

from voicegate.contracts import TokenCounter
from voicegate.errors import CheckpointError

__all__ = [
    "EPAD_ID",
    "PAD_ID",
    "RELEASE_TOKENIZER_NAME",
    "TINY_TOKENIZER_PATH",
    "TextStream",
    "TextTokenizer",
    "load_text_tokenizer",
    "release_token_counter",
]

log = logging.getLogger("voicegate.engine")

EPAD_ID = 0
PAD_ID = 3
RELEASE_TOKENIZER_NAME = "tokenizer_spm_32k_3.model"
TINY_TOKENIZER_PATH = Path(__file__).resolve().parent / "assets" / "tiny_spm.model"
_WORD_START = "\u2581"  # '▁'


class TextTokenizer:
    """SentencePiece with a precomputed piece table, so the tick path only indexes a list."""

    def __init__(self, processor: spm.SentencePieceProcessor, source: str) -> None:
        self._sp = processor
        self.source = source
        self.vocab_size: int = processor.get_piece_size()
        self._pieces: list[str] = [self._piece_text(i) for i in range(self.vocab_size)]
        # UTF-8 bytes of byte-fallback pieces (None for every other piece)
        self._bytes: list[bytes | None] = [self._piece_byte(i) for i in range(self.vocab_size)]

    def _piece_text(self, token: int) -> str:
        sp = self._sp
        if token in (EPAD_ID, PAD_ID) or sp.is_control(token) or sp.is_unknown(token):
            return ""
        if sp.is_byte(token):
            # a lone byte of a multi-byte character has no text of its own
            value = int(sp.id_to_piece(token)[3:5], 16)
            return chr(value) if value < 0x80 else ""
        return sp.id_to_piece(token).replace(_WORD_START, " ")

    def _piece_byte(self, token: int) -> bytes | None:
        if token in (EPAD_ID, PAD_ID) or not self._sp.is_byte(token):
            return None
        return bytes((int(self._sp.id_to_piece(token)[3:5], 16),))

    def encode(self, text: str) -> list[int]:
        return list(self._sp.encode(text))

    def decode(self, ids: list[int]) -> str:
        return str(self._sp.decode(ids))

    def decode_piece(self, token: int) -> str:
        """Text of one token ('' for PAD, EPAD, control and out-of-range ids)."""
        if 0 <= token < self.vocab_size:
            return self._pieces[token]
        return ""

    def count(self, text: str) -> int:
        return len(self._sp.encode(text))

    def stream(self) -> TextStream:
        """A streaming decoder for one token sequence (one per slot)."""
        return TextStream(self._pieces, self._bytes)


class TextStream:
    """Decodes one token sequence as it is generated, byte-fallback characters included.

    ``push(token)`` returns the text that token completes: a text piece as ``decode_piece``
    gives it, '' for a byte that starts or continues a character, the whole character on its
    last byte. Bytes that never form a valid character come out as U+FFFD when the next text
    piece arrives (as ``sp.decode`` does). PAD/EPAD between bytes keep the partial character.
    ``reset()`` forgets a partial character (a new call in the slot). Only a byte piece, or a
    piece after one, allocates: the tick path stays a list lookup.
    """

    __slots__ = ("_bytes", "_decoder", "_is_pending", "_pieces")

    def __init__(self, pieces: list[str], byte_values: list[bytes | None]) -> None:
        self._pieces = pieces
        self._bytes = byte_values
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._is_pending = False

    def reset(self) -> None:
        self._decoder.reset()
        self._is_pending = False

    def push(self, token: int) -> str:
        if not 0 <= token < len(self._pieces):
            return ""
        value = self._bytes[token]
        if value is None:
            text = self._pieces[token]
            if not self._is_pending or not text:
                return text
            # a text piece ends an unfinished character: what is pending is not UTF-8
            self._is_pending = False
            return self._decoder.decode(b"", final=True) + text
        out = self._decoder.decode(value)
        self._is_pending = bool(self._decoder.getstate()[0])
        return out


def load_text_tokenizer(model_dir: Path | None) -> TextTokenizer:
    """The release tokenizer from ``model_dir``, or the bundled tiny one when it is None."""
    path = TINY_TOKENIZER_PATH if model_dir is None else Path(model_dir) / RELEASE_TOKENIZER_NAME
    if not path.is_file():
        raise CheckpointError(
            f"text tokenizer: expected a SentencePiece model at {path}, none found"
        )
    processor = spm.SentencePieceProcessor()
    try:
        processor.Load(str(path))
    except (OSError, RuntimeError) as exc:
        raise CheckpointError(
            f"text tokenizer: {path} is not a SentencePiece model: {exc}"
        ) from exc
    return TextTokenizer(processor, str(path))


def release_token_counter(model_dir: Path | None) -> TokenCounter | None:
    """Counts a persona prompt with the release tokenizer when ``model_dir`` holds it; None
    otherwise (no folder, no tokenizer file, a broken one: logged), so that the caller falls
    back to an estimate.

    The tiny backend's bundled tokenizer is never used: its small vocabulary would overstate a
    prompt's length against the release's 32k pieces.
    """
    if model_dir is None:
        return None
    if not (Path(model_dir) / RELEASE_TOKENIZER_NAME).is_file():
        log.warning(
            "%s has no %s; counting prompt tokens by estimate", model_dir, RELEASE_TOKENIZER_NAME
        )
        return None
    try:
        tokenizer = load_text_tokenizer(Path(model_dir))
    except CheckpointError as exc:  # a broken model folder must not stop validation
        log.warning("model tokenizer unavailable (%s); counting prompt tokens by estimate", exc)
        return None
    return tokenizer.count
