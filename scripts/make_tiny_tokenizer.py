"""Train the tiny backend's SentencePiece model from scripts/tiny_tokenizer_corpus.txt.

    python scripts/make_tiny_tokenizer.py   # writes voicegate/engine/assets/tiny_spm.model

The corpus is text written for this project. Ids follow PersonaPlex's convention: 0 and 3 are
not text (unk=0 plays EPAD, pad=3 is PAD), 1 and 2 are bos/eos, pieces start at 4.
Deterministic: the same corpus and sentencepiece version give the same file.
"""

from __future__ import annotations

import io
from pathlib import Path

import sentencepiece as spm

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "scripts" / "tiny_tokenizer_corpus.txt"
OUT = ROOT / "voicegate" / "engine" / "assets" / "tiny_spm.model"
VOCAB_SIZE = 1000


def main() -> None:
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS.read_text(encoding="utf-8").splitlines()),
        model_writer=model,
        vocab_size=VOCAB_SIZE,
        hard_vocab_limit=False,
        model_type="unigram",
        character_coverage=1.0,
        normalization_rule_name="identity",  # keeps the file small (no NFKC table)
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=3,
        byte_fallback=True,
        num_threads=1,
        minloglevel=2,
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_bytes(model.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    print(f"wrote {OUT} ({len(model.getvalue())} bytes, vocab {sp.get_piece_size()})")


if __name__ == "__main__":
    main()
