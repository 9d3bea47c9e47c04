"""Counting a text prompt in model tokens: the engine's SentencePiece tokenizer, or an estimate.

Owns: ``estimate_tokens`` and ``default_token_counter``. Imports the engine tokenizer lazily
(only when a model folder is configured).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

__all__ = ["PROMPT_TOKEN_GUIDANCE", "TokenCounter", "default_token_counter", "estimate_tokens"]

log = logging.getLogger("voicegate.personas")

PROMPT_TOKEN_GUIDANCE = 200  # PersonaPlex's prompts are guidance-limited to about 200 tokens
_WORDS_TO_TOKENS = 1.3

TokenCounter = Callable[[str], int]


def estimate_tokens(text: str) -> int:
    """An estimate when no tokenizer is at hand: whitespace-separated words x 1.3, rounded up."""
    return math.ceil(len(text.split()) * _WORDS_TO_TOKENS)


def is_estimate(counter: TokenCounter) -> bool:
    return counter is estimate_tokens


def default_token_counter(model_dir: Path | None = None) -> TokenCounter:
    """The release's SentencePiece count when ``model_dir`` holds it, else ``estimate_tokens``.

    The tiny backend's bundled tokenizer is not used: its small vocabulary would overstate a
    prompt's length against the release's 32k pieces.
    """
    if model_dir is None:
        return estimate_tokens
    from voicegate.engine.tokenizer import RELEASE_TOKENIZER_NAME, load_text_tokenizer
    from voicegate.errors import CheckpointError

    if not (Path(model_dir) / RELEASE_TOKENIZER_NAME).is_file():
        log.warning(
            "%s has no %s; counting prompt tokens by estimate", model_dir, RELEASE_TOKENIZER_NAME
        )
        return estimate_tokens
    try:
        tokenizer = load_text_tokenizer(Path(model_dir))
    except CheckpointError as exc:  # a broken model folder must not stop validation
        log.warning("model tokenizer unavailable (%s); counting prompt tokens by estimate", exc)
        return estimate_tokens
    return tokenizer.count
