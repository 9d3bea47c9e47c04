"""Counting a text prompt in model tokens: a ``TokenCounter`` is passed in by whoever wires the
personas (the release tokenizer's, ``voicegate.engine.tokenizer.release_token_counter``, when a
model folder is set), else the estimate here.

Owns: ``estimate_tokens``, ``is_estimate``, the 200-token guidance. Imports nothing of the engine.
"""

from __future__ import annotations

import math

from voicegate.contracts import TokenCounter

__all__ = ["PROMPT_TOKEN_GUIDANCE", "TokenCounter", "estimate_tokens", "is_estimate"]

PROMPT_TOKEN_GUIDANCE = 200  # PersonaPlex's prompts are guidance-limited to about 200 tokens
_WORDS_TO_TOKENS = 1.3


def estimate_tokens(text: str) -> int:
    """An estimate when no tokenizer is at hand: whitespace-separated words x 1.3, rounded up."""
    return math.ceil(len(text.split()) * _WORDS_TO_TOKENS)


def is_estimate(counter: TokenCounter) -> bool:
    """True when ``counter`` is the estimate (problems then say the count is estimated)."""
    return counter is estimate_tokens
