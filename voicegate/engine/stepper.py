"""The seam between the tick loop and a backend: what a model must do for one batched tick.

The tick loop (``runtime``) owns slots, input rings, timing and sinks; a ``TickModel`` owns
weights, per-slot streaming state and persona prompt states. Every method is called on the
engine thread only, except ``prepare_persona`` / ``count_tokens`` (any thread;
``prepare_persona`` may run torch on the caller's thread, never on the event loop).

Owns: the TickModel protocol. Imports numpy only (no torch, no pydantic, no voicegate.config).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

from voicegate.engine.base import PersonaPrompt, SamplingParams

__all__ = ["TickModel"]


class TickModel(Protocol):
    """A batched model stepped once per tick over rows ``0 .. n_rows-1`` (row = slot index)."""

    @property
    def name(self) -> str: ...

    @property
    def max_slots(self) -> int:
        """Rows of the preallocated batch (slots that fit memory, or the configured cap)."""
        ...

    def batch_rows(self, highest_active: int) -> int:
        """Rows to compute when slot ``highest_active`` is the highest in use (a bucket >= it+1).

        Rows past the highest active slot may be skipped; a backend that wants bit-stable rows
        regardless of who else is active returns a fixed number (``max_slots``).
        """
        ...

    def warmup(self) -> None:
        """Run a few ticks on dummy input so the first real tick is not slow."""
        ...

    def prepare_persona(self, prompt: PersonaPrompt) -> object:
        """Compute the persona's prompt state (opaque); cached by the caller per persona key."""
        ...

    # Optional (looked up with getattr by the runtime): ``prepare_calls(requests)`` with
    # requests [(persona state, the call's own text prompt)] -> a state per request for
    # ``reset_slot`` (engine thread, between ticks). A model without it ignores per-call text.
    # With it, optionally ``call_prompt_size(calls, tokens)`` -> the text positions a pass of
    # that many calls of at most ``tokens`` tokens computes, padding included (the unit the
    # engine fits the passes' cost to; default calls x tokens), and ``call_prompt_cost_s(calls,
    # tokens)`` -> the measured seconds of such a pass's bare fixed shapes, or None (not
    # measured, or no shape holds it): the engine then fits only the cost beyond them.
    # ``reset_slots(items)`` with items [(index, state, sampling, seed)] (distinct rows): the
    # ``reset_slot`` of each, done together (the engine loads a pass's calls, and a tick's
    # joins, with it when the model has it), and ``synchronize()``: wait for the device's
    # queued work (after a pass whose calls all left before their load).

    def reset_slot(
        self, index: int, persona_state: object, sampling: SamplingParams, seed: int
    ) -> None:
        """Put a fresh call in row ``index``: persona state, sampling settings, RNG seed.

        Must touch no other row: the rows of calls in progress stay bit-identical.
        """
        ...

    def step(
        self,
        pcm_in: npt.NDArray[np.float32],
        active: npt.NDArray[np.bool_],
        n_rows: int,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """One tick: ``pcm_in[:n_rows]`` (1920 samples per row) -> (pcm_out, text_tokens).

        ``active`` [max_slots] says which rows hold a call: only those advance their state
        (the others' rows are ignored and left exactly as they were). The arrays returned
        may be reused by the next step; the runtime reads them before then.
        """
        ...

    def text_piece(self, index: int, token: int) -> str:
        """Text that row ``index``'s next token completes ('' for PAD/EPAD and other non-text
        ids, and for a byte of a character not finished yet): the slot's streaming decode,
        reset by ``reset_slot``."""
        ...

    def count_tokens(self, text: str) -> int: ...

    def close(self) -> None: ...
