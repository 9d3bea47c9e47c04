"""Counting a text prompt in model tokens: the engine's SentencePiece tokenizer, or an estimate.

Owns: ``estimate_tokens`` and ``default_token_counter``. Imports the engine tokenizer lazily
(it may be absent, or the model folder may not be configured).
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
    """The engine's tokenizer for ``model_dir`` (the release's SentencePiece model) or the estimate."""
    try:
        from voicegate.engine import tokenizer as engine_tokenizer  # type: ignore[attr-defined]
    except ImportError:
        return estimate_tokens
    factory = getattr(engine_tokenizer, "prompt_token_counter", None)
    if factory is None:
        return estimate_tokens
    try:
        counter: TokenCounter | None = factory(model_dir)
    except Exception as exc:  # a missing or broken model folder must not stop validation
        log.warning("model tokenizer unavailable (%s); counting prompt tokens by estimate", exc)
        return estimate_tokens
    return counter or estimate_tokens
