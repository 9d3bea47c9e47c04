"""The engine's public contract: what a Call sees of the model runtime.

The engine serves every call of the process as one slot of a batch. It ticks every 80 ms in
its own thread (never on the event loop); on each tick it takes one 1920-sample 24 kHz frame
from every active slot and hands each slot's sink 1920 samples of agent audio and a text piece.

Usage::

    engine.start()                                  # warm-up; blocks until ready
    engine.load_persona(PersonaPrompt(...))         # once per persona (load or reload)
    slot = engine.join("bank_teller", sink)         # between ticks; raises NoFreeSlot
    slot.push(pcm_24k_float32_1920)                 # from any thread, once per 80 ms
    ...                                             # sink.on_tick(out) runs on the engine thread
    slot.leave()

Owns: the Engine protocol and the data that crosses it (``PersonaPrompt`` and
``SamplingParams`` are the personas' side of it, defined in ``voicegate.contracts``).
Imports nothing of telephony.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from voicegate.contracts import PersonaPrompt, SamplingParams

__all__ = [
    "FRAME_MS",
    "FRAME_SAMPLES",
    "MODEL_RATE_HZ",
    "Engine",
    "PersonaPrompt",
    "ReanchorReport",
    "SamplingParams",
    "Slot",
    "SlotSink",
    "EngineStats",
    "SlotStats",
    "TickOutput",
    "TickScheduled",
]

MODEL_RATE_HZ = 24_000
FRAME_SAMPLES = 1920
FRAME_MS = 80


@dataclass(frozen=True, slots=True)
class ReanchorReport:
    """A long call's context was rebuilt before its persona left the model's window.

    The persona's prompt (``prompt_frames``) followed by the call's last ``kept_frames``
    frames were prefilled again, in ``chunks`` between ticks (``compute_ms`` of engine time in
    all); the slot's model position went from ``position_before`` to ``position_after``. The
    caller hears no seam: audio and sampling carry on.
    """

    prompt_frames: int
    kept_frames: int
    chunks: int
    compute_ms: float
    position_before: int
    position_after: int


@dataclass(slots=True)
class TickOutput:
    """One tick's result for one slot. ``pcm`` is only valid during the callback: copy it."""

    frame_index: int  # live frames since the call joined, 0-based
    pcm: npt.NDArray[np.float32]  # 1920 samples, 24 kHz, [-1, 1]
    text_token: int
    text: str  # detokenised piece ('' for PAD/EPAD); a leading space marks a word start
    # set on the first output after the slot was re-anchored (long calls), else None
    reanchor: ReanchorReport | None = None
    # the caller's words (an ASR model is configured): this frame's STT text token (-1: no
    # STT), its text piece ('' for PAD/EPAD; a leading space starts a word) and the probability
    # that the caller's turn ends here (-1.0: no STT or no end-of-turn head). The text of a
    # frame trails the caller's audio by ``caller_delay_frames`` frames (the model's delay).
    caller_token: int = -1
    caller_text: str = ""
    caller_end_of_turn: float = -1.0
    caller_delay_frames: int = 0


@dataclass(slots=True)
class SlotStats:
    """Counters for one slot (plain ints, read from the metrics path)."""

    frames: int = 0
    underruns: int = 0  # a tick found no caller frame: silence was used
    overruns: int = 0  # caller frames arrived faster than ticks: the oldest was dropped


@dataclass(slots=True)
class EngineStats:
    """A snapshot of the engine's counters (for /metrics and benchmarks)."""

    ticks: int = 0
    late_ticks: int = 0  # serving mode: a tick ended after the next tick was due
    skipped_ticks: int = 0  # serving mode: ticks dropped to catch up after falling far behind
    tick_errors: int = 0  # a model step raised; the tick's output was silence
    sink_errors: int = 0  # a sink's on_tick raised (the engine carries on)
    underruns: int = 0  # summed over slots since start
    overruns: int = 0
    active_slots: int = 0
    max_slots: int = 0
    tick_ms_p50: float = 0.0  # over the last ticks that did model work
    tick_ms_p99: float = 0.0
    reanchors: int = 0  # long calls' contexts rebuilt (persona + last frames) since start
    reanchor_ms: float = 0.0  # engine time those rebuilds took, summed
    # per-call context: joins with their own text prompt (text phases computed per call)
    call_prompts: int = 0
    call_prompt_errors: int = 0  # failed: those calls started on the persona's own prompt
    call_prompt_ms: float = 0.0  # engine time spent on them, summed
    call_prompt_passes: int = 0  # batched passes that computed them
    call_prompt_done: int = 0  # calls whose own prompt was computed (not left while waiting)
    call_prompt_forced: int = 0  # passes of one call run without room (waited the longest)
    join_ms_p50: float = 0.0  # join() to the prompt state in the slot, over the last joins
    join_ms_p99: float = 0.0


class SlotSink(Protocol):
    """Receives a slot's output. Runs on the engine thread: must not block; copy ``out.pcm``."""

    def on_tick(self, out: TickOutput) -> None: ...


class Slot(Protocol):
    """A call's place in the batch."""

    @property
    def index(self) -> int: ...

    @property
    def persona_key(self) -> str: ...

    @property
    def stats(self) -> SlotStats: ...

    @property
    def is_active(self) -> bool:
        """False once the call left (or its join failed)."""
        ...

    def push(self, pcm: npt.NDArray[np.float32]) -> None:
        """Queue one 1920-sample 24 kHz caller frame; thread-safe; copies the data."""
        ...

    def leave(self) -> None:
        """Free the slot; idempotent; thread-safe. At most one sink call already in flight
        on the engine thread may still complete after this returns; none starts later."""
        ...


class TickScheduled(Protocol):
    """Optional on a ``Slot`` (and an engine): the serving engine's tick schedule.

    ``next_tick_at()`` is the ``time.monotonic()`` time at which the next tick takes its input
    frames (a frame pushed before then is in that tick), or None when there is no schedule
    (offline or manual ticks, a stopped engine). A Call uses it to complete its caller frames
    just before a tick; a slot without it is treated as returning None.
    """

    def next_tick_at(self) -> float | None: ...


class Engine(Protocol):
    """A batched model runtime: ``personaplex``, ``tiny`` or ``echo``."""

    @property
    def name(self) -> str: ...

    @property
    def max_slots(self) -> int: ...

    @property
    def active_slots(self) -> int: ...

    def start(self) -> None:
        """Build, warm up and start the tick thread; returns when ready to join calls."""
        ...

    def close(self) -> None:
        """Stop the tick thread and free every slot."""
        ...

    def load_persona(self, prompt: PersonaPrompt) -> None:
        """Compute (or recompute) the persona's prompt state; blocking, call off the event loop."""
        ...

    def unload_persona(self, key: str) -> None:
        """Forget a persona; calls already using it keep their state until they leave."""
        ...

    def has_persona(self, key: str) -> bool: ...

    def count_tokens(self, text: str) -> int:
        """Number of model text tokens the persona prompt ``text`` takes."""
        ...

    def join(self, persona_key: str, sink: SlotSink, *, text_prompt: str | None = None) -> Slot:
        """Take a free slot with the persona's prompt state; raises NoFreeSlot / UnknownPersona.

        Thread-safe and cheap: the state copy happens on the engine thread before the next tick.
        ``text_prompt`` (optional): this call's own text prompt (the persona's with the call's
        variables filled in); an engine that caches voice phases computes only its text phases.
        """
        ...

    def stats(self) -> EngineStats:
        """A snapshot of the counters; thread-safe."""
        ...

    def health(self) -> str | None:
        """None while the engine can serve; else the reason (a readiness check)."""
        ...
