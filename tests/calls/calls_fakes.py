"""A scripted Engine (engine/base.py contract) for Call tests: ticks only when told.

``ScriptedEngine(script)``: on each ``tick()`` every active slot gets ``script(call_index,
frame_index, caller_frame) -> (pcm_24k_float32, text)``. Ticks run on the test's thread, which
stands in for the engine thread.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from voicegate.engine.base import FRAME_SAMPLES, EngineStats, SlotSink, SlotStats, TickOutput
from voicegate.errors import NoFreeSlot, UnknownPersona

Script = Callable[[int, int, npt.NDArray[np.float32]], tuple[npt.NDArray[np.float32], str]]


def speech(amp: float = 0.3, hz: float = 300.0) -> npt.NDArray[np.float32]:
    """One tick (80 ms, 24 kHz) of a loud tone standing in for agent speech."""
    t = np.arange(FRAME_SAMPLES) / 24_000
    return (np.sin(2 * np.pi * hz * t) * amp).astype(np.float32)


SILENCE = np.zeros(FRAME_SAMPLES, dtype=np.float32)


class FakeSlot:
    def __init__(self, engine: ScriptedEngine, index: int, call_index: int, sink: SlotSink) -> None:
        self._engine = engine
        self._index = index
        self.call_index = call_index
        self.sink = sink
        self.inputs: deque[npt.NDArray[np.float32]] = deque(maxlen=4)
        self.frames = 0
        self.is_active = True
        self._stats = SlotStats()

    @property
    def index(self) -> int:
        return self._index

    @property
    def persona_key(self) -> str:
        return "p"

    @property
    def stats(self) -> SlotStats:
        return self._stats

    def push(self, pcm: npt.NDArray[np.float32]) -> None:
        assert pcm.shape == (FRAME_SAMPLES,)
        self.inputs.append(pcm.copy())

    def leave(self) -> None:
        self.is_active = False


class ScriptedEngine:
    """Engine double: fixed slots, scripted outputs, manual ticks."""

    def __init__(self, script: Script, max_slots: int = 4) -> None:
        self._script = script
        self._max_slots = max_slots
        self.slots: list[FakeSlot] = []
        self.personas = {"p"}
        self.ticks = 0

    @property
    def name(self) -> str:
        return "scripted"

    @property
    def max_slots(self) -> int:
        return self._max_slots

    @property
    def active_slots(self) -> int:
        return sum(1 for s in self.slots if s.is_active)

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def load_persona(self, prompt: object) -> None:
        pass

    def has_persona(self, key: str) -> bool:
        return key in self.personas

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def join(self, persona_key: str, sink: SlotSink) -> FakeSlot:
        if persona_key not in self.personas:
            raise UnknownPersona(persona_key)
        if self.active_slots >= self._max_slots:
            raise NoFreeSlot("full")
        slot = FakeSlot(self, self.active_slots, len(self.slots), sink)
        self.slots.append(slot)
        return slot

    def stats(self) -> EngineStats:
        return EngineStats(
            ticks=self.ticks, active_slots=self.active_slots, max_slots=self._max_slots
        )

    def tick(self) -> None:
        self.ticks += 1
        for slot in self.slots:
            if not slot.is_active:
                continue
            frame = slot.inputs.popleft() if slot.inputs else SILENCE
            pcm, text = self._script(slot.call_index, slot.frames, frame)
            slot.sink.on_tick(TickOutput(frame_index=slot.frames, pcm=pcm, text_token=0, text=text))
            slot.frames += 1
