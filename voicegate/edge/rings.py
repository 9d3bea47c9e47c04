"""Shared-memory rings between the engine process and its edge worker processes.

One segment (``multiprocessing.shared_memory``) holds, for every engine slot, an input ring of
caller frames (1920 float32 samples at 24 kHz, written by the worker that holds the slot, read
by the engine's tick thread) and an output ring of the agent's ticks (audio, text token, text
piece, re-anchor report; written by the tick thread, read by the worker), plus a small header
the engine publishes after every tick (next tick time, health, its counters).

Each ring is single-producer single-consumer with two sequence counters in the segment: the
producer copies the frame, then bumps ``write``; the consumer copies it out, then bumps
``read``. Neither side takes a lock or makes a system call. A full ring refuses the new frame
(counted by the producer: the older frames are the ones the consumer will take next). Ordering
relies on stores becoming visible in program order (x86-64's TSO); the counters are written
after the data by plain numpy stores.

A slot's rings belong to one call at a time. The counters are never reset (each is written by
one side only, and a call that just left may still have a tick in flight on the engine
thread): ``hand_over`` bumps the slot's generation and says where the new call's frames start,
each consumer skips what came before that start (``skip_inputs_to``, ``skip_outputs_to``), and
every output record carries the generation of the call it was made for, so a late tick of the
previous call is dropped by the reader (``take_output`` returns the record's generation).

Owns: SlotRings, RingLayout, HEADER_* indices. Imports numpy and the engine contract only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from multiprocessing import resource_tracker, shared_memory

import numpy as np
import numpy.typing as npt

from voicegate.engine.base import FRAME_SAMPLES, ReanchorReport, TickOutput

__all__ = [
    "CTL_GENERATION",
    "CTL_IN_DROPPED",
    "CTL_OUT_DROPPED",
    "CTL_OVERRUNS",
    "CTL_UNDERRUNS",
    "HEADER_FIELDS",
    "IN_FRAMES",
    "NEXT_TICK_AT",
    "OUT_FRAMES",
    "TEXT_BYTES",
    "RingLayout",
    "SlotRings",
]

IN_FRAMES = 4  # caller frames queued per slot (320 ms); the tick thread drains them every tick
OUT_FRAMES = 8  # agent ticks per slot (640 ms); the worker drains them on every tick notice
TEXT_BYTES = 60  # a text piece's UTF-8 (the tokenizer's pieces are a few bytes)

# per-slot control words (int64); each is written by one side only
CTL_GENERATION = 0  # engine process: bumped when the slot is handed out
CTL_IN_WRITE = 1  # worker
CTL_IN_READ = 2  # engine
CTL_OUT_WRITE = 3  # engine
CTL_OUT_READ = 4  # worker
CTL_IN_DROPPED = 5  # worker: caller frames refused by a full ring
CTL_OUT_DROPPED = 6  # engine: ticks refused by a full ring (the worker did not keep up)
CTL_UNDERRUNS = 7  # engine: the slot's counters, published after each tick
CTL_OVERRUNS = 8
CTL_WORDS = 10

# output record (int64 words)
_M_FRAME = 0
_M_TOKEN = 1
_M_TEXT_LEN = 2
_M_HAS_REANCHOR = 3
_M_PROMPT_FRAMES = 4
_M_KEPT_FRAMES = 5
_M_CHUNKS = 6
_M_COMPUTE_US = 7
_M_POS_BEFORE = 8
_M_POS_AFTER = 9
_M_GENERATION = 10
META_WORDS = 11

# header (float64), written by the engine process
HEADER_FIELDS = (
    "next_tick_at",  # time.monotonic() of the next tick's input (NaN: no schedule)
    "health",  # 0 serving, 1 faulted or closed
    "max_slots",
    "active_slots",
    "ticks",
    "late_ticks",
    "skipped_ticks",
    "tick_errors",
    "sink_errors",
    "underruns",
    "overruns",
    "tick_ms_p50",
    "tick_ms_p99",
    "reanchors",
    "reanchor_ms",
    "published",  # how many times the engine published (a heartbeat)
    "owner_pid",  # the engine process (its resource tracker removes the segment)
)
HEADER_INDEX = {name: i for i, name in enumerate(HEADER_FIELDS)}
NEXT_TICK_AT = HEADER_INDEX["next_tick_at"]  # read per caller frame by workers: no dict lookup


@dataclass(frozen=True, slots=True)
class RingLayout:
    """The shapes of one segment; the same on both sides."""

    slots: int
    in_frames: int = IN_FRAMES
    out_frames: int = OUT_FRAMES

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise ValueError(f"ring layout: need at least one slot, got {self.slots}")
        for name in ("in_frames", "out_frames"):
            n = getattr(self, name)
            if n < 1 or n & (n - 1):
                raise ValueError(f"ring layout: {name} must be a power of two, got {n}")

    def _parts(self) -> list[tuple[str, tuple[int, ...], type[np.generic]]]:
        s = self.slots
        return [
            ("header", (len(HEADER_FIELDS),), np.float64),
            ("ctl", (s, CTL_WORDS), np.int64),
            ("meta", (s, self.out_frames, META_WORDS), np.int64),
            ("text", (s, self.out_frames, TEXT_BYTES), np.uint8),
            ("inputs", (s, self.in_frames, FRAME_SAMPLES), np.float32),
            ("outputs", (s, self.out_frames, FRAME_SAMPLES), np.float32),
        ]

    @property
    def nbytes(self) -> int:
        total = 0
        for _, shape, dtype in self._parts():
            total += int(np.prod(shape)) * np.dtype(dtype).itemsize
        return total


class SlotRings:
    """Views of one segment. ``create`` in the engine process, ``attach`` in a worker.

    Producer/consumer roles: ``push_input`` (worker) / ``pop_input`` (engine tick thread);
    ``put_output`` (engine tick thread) / ``take_output`` (worker). Each slot's two rings must
    each have one producer and one consumer thread at a time.
    """

    def __init__(self, shm: shared_memory.SharedMemory, layout: RingLayout, *, is_owner: bool):
        self._shm = shm
        self.layout = layout
        self._is_owner = is_owner
        offset = 0
        views: dict[str, npt.NDArray[np.generic]] = {}
        for name, shape, dtype in layout._parts():
            n = int(np.prod(shape)) * np.dtype(dtype).itemsize
            views[name] = np.ndarray(shape, dtype=dtype, buffer=shm.buf, offset=offset)
            offset += n
        self.header: npt.NDArray[np.float64] = views["header"]  # type: ignore[assignment]
        self.ctl: npt.NDArray[np.int64] = views["ctl"]  # type: ignore[assignment]
        self._meta: npt.NDArray[np.int64] = views["meta"]  # type: ignore[assignment]
        self._text: npt.NDArray[np.uint8] = views["text"]  # type: ignore[assignment]
        self._inputs: npt.NDArray[np.float32] = views["inputs"]  # type: ignore[assignment]
        self._outputs: npt.NDArray[np.float32] = views["outputs"]  # type: ignore[assignment]
        self._in_mask = layout.in_frames - 1
        self._out_mask = layout.out_frames - 1

    @classmethod
    def create(cls, layout: RingLayout) -> SlotRings:
        shm = shared_memory.SharedMemory(create=True, size=layout.nbytes)
        rings = cls(shm, layout, is_owner=True)
        rings.header.fill(0.0)
        rings.header[HEADER_INDEX["next_tick_at"]] = float("nan")
        rings.header[HEADER_INDEX["owner_pid"]] = os.getpid()
        rings.ctl.fill(0)
        return rings

    @classmethod
    def attach(cls, name: str, layout: RingLayout) -> SlotRings:
        shm = shared_memory.SharedMemory(name=name, create=False)
        if shm.size < layout.nbytes:
            shm.close()
            raise ValueError(
                f"shared ring segment {name}: {shm.size} bytes, the layout needs {layout.nbytes}"
            )
        rings = cls(shm, layout, is_owner=False)
        if int(rings.read("owner_pid")) != os.getpid():
            # the engine process owns the segment: this process's resource tracker must not
            # unlink it when the worker exits or is killed (Python < 3.13 has no track=False)
            resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
        return rings

    @property
    def name(self) -> str:
        return self._shm.name

    def close(self) -> None:
        """Unmap (and, in the engine process, remove) the segment."""
        # numpy views must go before the buffer can be released
        del self.header, self.ctl, self._meta, self._text, self._inputs, self._outputs
        self._shm.close()
        if self._is_owner:
            self._shm.unlink()

    # --- slot hand-over (engine process) -----------------------------------------------------

    def hand_over(self, slot: int) -> tuple[int, int, int]:
        """ENGINE PROCESS, when ``slot`` goes to a new call: bump its generation and zero its
        per-call counters; returns (generation, input start, output start). The previous
        call's producer has stopped (it left) or its last tick is stamped with its generation.
        """
        row = self.ctl[slot]
        row[CTL_GENERATION] += 1
        row[CTL_IN_DROPPED] = 0
        row[CTL_OUT_DROPPED] = 0
        row[CTL_UNDERRUNS] = 0
        row[CTL_OVERRUNS] = 0
        return int(row[CTL_GENERATION]), int(row[CTL_IN_WRITE]), int(row[CTL_OUT_WRITE])

    def skip_inputs_to(self, slot: int, start: int) -> None:
        """ENGINE (the input consumer): drop frames queued before ``start``."""
        if int(self.ctl[slot, CTL_IN_READ]) < start:
            self.ctl[slot, CTL_IN_READ] = start

    def skip_outputs_to(self, slot: int, start: int) -> None:
        """WORKER (the output consumer): drop ticks written before ``start``."""
        if int(self.ctl[slot, CTL_OUT_READ]) < start:
            self.ctl[slot, CTL_OUT_READ] = start

    def generation(self, slot: int) -> int:
        return int(self.ctl[slot, CTL_GENERATION])

    # --- caller frames: worker -> engine ------------------------------------------------------

    def push_input(self, slot: int, pcm: npt.NDArray[np.float32]) -> bool:
        """WORKER: queue a copy of one frame; False (counted) when the ring is full."""
        row = self.ctl[slot]
        w = int(row[CTL_IN_WRITE])
        if w - int(row[CTL_IN_READ]) >= self.layout.in_frames:
            row[CTL_IN_DROPPED] += 1
            return False
        np.copyto(self._inputs[slot, w & self._in_mask], pcm, casting="same_kind")
        row[CTL_IN_WRITE] = w + 1
        return True

    def queued_inputs(self, slot: int) -> int:
        row = self.ctl[slot]
        return int(row[CTL_IN_WRITE] - row[CTL_IN_READ])

    def pop_input(self, slot: int) -> npt.NDArray[np.float32] | None:
        """ENGINE: the oldest queued frame as a view (valid until ``release_input``), or None."""
        row = self.ctl[slot]
        r = int(row[CTL_IN_READ])
        if int(row[CTL_IN_WRITE]) <= r:
            return None
        view: npt.NDArray[np.float32] = self._inputs[slot, r & self._in_mask]
        return view

    def release_input(self, slot: int) -> None:
        """ENGINE: the frame ``pop_input`` returned has been copied; the worker may reuse it."""
        self.ctl[slot, CTL_IN_READ] += 1

    # --- agent ticks: engine -> worker --------------------------------------------------------

    def put_output(self, slot: int, out: TickOutput, generation: int) -> bool:
        """ENGINE: copy one tick's output of the call of ``generation``; False (counted) when
        the worker has not kept up."""
        row = self.ctl[slot]
        w = int(row[CTL_OUT_WRITE])
        if w - int(row[CTL_OUT_READ]) >= self.layout.out_frames:
            row[CTL_OUT_DROPPED] += 1
            return False
        i = w & self._out_mask
        np.copyto(self._outputs[slot, i], out.pcm, casting="same_kind")
        meta = self._meta[slot, i]
        meta[_M_GENERATION] = generation
        meta[_M_FRAME] = out.frame_index
        meta[_M_TOKEN] = out.text_token
        raw = out.text.encode("utf-8")[:TEXT_BYTES] if out.text else b""
        n = len(raw)
        meta[_M_TEXT_LEN] = n
        if n:
            self._text[slot, i, :n] = np.frombuffer(raw, dtype=np.uint8)
        r = out.reanchor
        if r is None:
            meta[_M_HAS_REANCHOR] = 0
        else:
            meta[_M_HAS_REANCHOR] = 1
            meta[_M_PROMPT_FRAMES] = r.prompt_frames
            meta[_M_KEPT_FRAMES] = r.kept_frames
            meta[_M_CHUNKS] = r.chunks
            meta[_M_COMPUTE_US] = round(r.compute_ms * 1000)
            meta[_M_POS_BEFORE] = r.position_before
            meta[_M_POS_AFTER] = r.position_after
        row[CTL_OUT_WRITE] = w + 1
        return True

    def queued_outputs(self, slot: int) -> int:
        row = self.ctl[slot]
        return int(row[CTL_OUT_WRITE] - row[CTL_OUT_READ])

    def take_output(self, slot: int, into: TickOutput) -> int:
        """WORKER: fill ``into`` with the oldest tick (``into.pcm`` is overwritten in place);
        returns the generation of the call it was made for, or -1 when none is queued."""
        row = self.ctl[slot]
        r = int(row[CTL_OUT_READ])
        if int(row[CTL_OUT_WRITE]) <= r:
            return -1
        i = r & self._out_mask
        np.copyto(into.pcm, self._outputs[slot, i])
        meta = self._meta[slot, i]
        into.frame_index = int(meta[_M_FRAME])
        into.text_token = int(meta[_M_TOKEN])
        n = int(meta[_M_TEXT_LEN])
        into.text = self._text[slot, i, :n].tobytes().decode("utf-8", "replace") if n else ""
        if meta[_M_HAS_REANCHOR]:
            into.reanchor = ReanchorReport(
                prompt_frames=int(meta[_M_PROMPT_FRAMES]),
                kept_frames=int(meta[_M_KEPT_FRAMES]),
                chunks=int(meta[_M_CHUNKS]),
                compute_ms=int(meta[_M_COMPUTE_US]) / 1000.0,
                position_before=int(meta[_M_POS_BEFORE]),
                position_after=int(meta[_M_POS_AFTER]),
            )
        else:
            into.reanchor = None
        generation = int(meta[_M_GENERATION])
        row[CTL_OUT_READ] = r + 1
        return generation

    # --- header (engine publishes, workers read) ----------------------------------------------

    def publish(self, **values: float) -> None:
        header = self.header
        for name, value in values.items():
            header[HEADER_INDEX[name]] = value
        header[HEADER_INDEX["published"]] += 1

    def read(self, name: str) -> float:
        return float(self.header[HEADER_INDEX[name]])
