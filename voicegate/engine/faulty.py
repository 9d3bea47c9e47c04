"""FOR TESTS ONLY: a model wrapper that injects an engine fault (raise, NaN audio, a hung step).

``VOICEGATE_ENGINE_FAULT=raise|nan|hang`` wraps whatever backend ``VOICEGATE_ENGINE`` names, so
the real gateway can be started with a model that breaks: the fault clock starts at the first
tick with ``VOICEGATE_ENGINE_FAULT_CALLS`` calls in the engine, and every step from
``VOICEGATE_ENGINE_FAULT_AFTER_S`` later on faults (a broken model stays broken). Only the first
``VOICEGATE_ENGINE_FAULT_ENGINES`` engines a gateway builds fault, so a rebuilt engine serves
normally; ``VOICEGATE_ENGINE_FAULT_WARMUP_S`` makes every engine's warm-up that much longer, so a
test sees the gateway unready while the engine is rebuilt. Never set these in production.

Owns: FaultInjectingModel, FAULT_KINDS. Imports numpy only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from voicegate.engine.base import PersonaPrompt, SamplingParams
from voicegate.engine.stepper import TickModel

__all__ = ["FAULT_KINDS", "FaultInjectingModel"]

log = logging.getLogger("voicegate.engine")

FAULT_KINDS = ("raise", "nan", "hang", "")  # "": never faults (a rebuilt engine)
HANG_LIMIT_S = 600.0  # a hung step returns at the latest after this (or when the model closes)


class InjectedFault(RuntimeError):
    """The exception a ``raise`` fault throws from the model step."""


class FaultInjectingModel:
    """A ``TickModel`` that behaves like ``inner`` until its fault is due, then breaks."""

    def __init__(
        self,
        inner: TickModel,
        kind: str,
        *,
        after_s: float = 1.0,
        min_calls: int = 1,
        warmup_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"engine fault: expected raise, nan, hang or '', got {kind!r}")
        self._inner = inner
        self.kind = kind
        self._after_s = after_s
        self._min_calls = max(1, min_calls)
        self._warmup_s = warmup_s
        self._clock = clock
        self._armed_at: float | None = None
        self._release = threading.Event()
        self.faults = 0  # steps that faulted
        log.warning(
            "engine %s: TEST fault injection: %s %.1f s after %d calls are in, warm-up +%.1f s "
            "(never in production)",
            inner.name,
            kind or "no fault",
            after_s,
            self._min_calls,
            warmup_s,
        )

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def max_slots(self) -> int:
        return self._inner.max_slots

    @property
    def realtime_slots(self) -> int | None:
        limit = getattr(self._inner, "realtime_slots", None)
        return limit if isinstance(limit, int) else None

    def batch_rows(self, highest_active: int) -> int:
        return self._inner.batch_rows(highest_active)

    def warmup(self) -> None:
        self._inner.warmup()
        if self._warmup_s > 0:
            self._release.wait(self._warmup_s)

    def prepare_persona(self, prompt: PersonaPrompt) -> object:
        return self._inner.prepare_persona(prompt)

    def reset_slot(
        self, index: int, persona_state: object, sampling: SamplingParams, seed: int
    ) -> None:
        self._inner.reset_slot(index, persona_state, sampling, seed)

    def _is_due(self, active: npt.NDArray[np.bool_]) -> bool:
        if not self.kind:
            return False
        now = self._clock()
        if self._armed_at is None:
            if int(np.count_nonzero(active)) < self._min_calls:
                return False
            self._armed_at = now
        return now - self._armed_at >= self._after_s

    def step(
        self, pcm_in: npt.NDArray[np.float32], active: npt.NDArray[np.bool_], n_rows: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        if not self._is_due(active):
            return self._inner.step(pcm_in, active, n_rows)
        self.faults += 1
        if self.kind == "raise":
            raise InjectedFault("injected engine fault: the model step raised")
        if self.kind == "hang":
            self._release.wait(HANG_LIMIT_S)
            raise InjectedFault("injected engine fault: the hung step was released")
        pcm_out, tokens = self._inner.step(pcm_in, active, n_rows)
        pcm_out[:n_rows, ::7] = np.nan
        pcm_out[:n_rows, 1::11] = np.inf
        return pcm_out, tokens

    def text_piece(self, index: int, token: int) -> str:
        return self._inner.text_piece(index, token)

    def count_tokens(self, text: str) -> int:
        return self._inner.count_tokens(text)

    def close(self) -> None:
        self._release.set()  # a hung step returns (and delivers nothing: the engine faulted)
        self._inner.close()
