"""The ``echo`` backend: each caller frame comes back one tick later, text always PAD.

The line test an operator dials to check a trunk or a Twilio number without a GPU, and the
zero-cost model against which the legs' own CPU and delay are benchmarked. Same slots, joins,
leaves, underruns and overruns as the real engine (it runs under the same ``BatchedEngine``).

Owns: EchoModel. Imports numpy only.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from voicegate.engine.base import FRAME_SAMPLES, PersonaPrompt, SamplingParams

__all__ = ["ECHO_DEFAULT_SLOTS", "EchoModel"]

ECHO_DEFAULT_SLOTS = 256
PAD_TOKEN = 3


class EchoModel:
    """A ``TickModel`` whose output row is the row's previous input."""

    def __init__(self, max_slots: int = ECHO_DEFAULT_SLOTS) -> None:
        if max_slots < 1:
            raise ValueError(f"echo: max_slots must be >= 1, got {max_slots}")
        self._max_slots = max_slots
        self._previous = np.zeros((max_slots, FRAME_SAMPLES), dtype=np.float32)
        self._out = np.zeros((max_slots, FRAME_SAMPLES), dtype=np.float32)
        self._tokens = np.full(max_slots, PAD_TOKEN, dtype=np.int64)

    @property
    def name(self) -> str:
        return "echo"

    @property
    def max_slots(self) -> int:
        return self._max_slots

    def batch_rows(self, highest_active: int) -> int:
        return highest_active + 1

    def warmup(self) -> None:
        pass

    def prepare_persona(self, prompt: PersonaPrompt) -> object:
        return None

    def reset_slot(
        self, index: int, persona_state: object, sampling: SamplingParams, seed: int
    ) -> None:
        self._previous[index].fill(0.0)

    def step(
        self, pcm_in: npt.NDArray[np.float32], active: npt.NDArray[np.bool_], n_rows: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        np.copyto(self._out[:n_rows], self._previous[:n_rows])
        np.copyto(self._previous[:n_rows], pcm_in[:n_rows])
        return self._out, self._tokens

    def text_piece(self, index: int, token: int) -> str:
        return ""

    def count_tokens(self, text: str) -> int:
        # no tokenizer: a word-ish estimate so persona limits still mean something
        return len(text.split())

    def close(self) -> None:
        pass
