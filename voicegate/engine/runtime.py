"""The batched tick loop: fixed slots, one thread, one model step per tick for every call.

Usage::

    engine = BatchedEngine(model, mode=TickMode.SERVING)
    engine.start()                                   # warm-up, then the tick thread
    engine.load_persona(PersonaPrompt("bank", "You are ...", "NATF0"))
    slot = engine.join("bank", sink)                 # any thread; NoFreeSlot when full
    slot.push(frame_1920)                            # any thread, once per 80 ms
    # sink.on_tick(out) is called ON THE ENGINE THREAD once per tick: copy out.pcm, don't block
    # (a Call copies it into a preallocated ring that its event loop reads when the leg next
    # feeds or pulls audio: no hop onto the loop per tick).
    slot.leave()
    engine.close()

Serving mode ticks every 80 ms on the monotonic clock; a tick that ends after the next one was
due counts as late, and after falling more than two ticks behind the missed ticks are skipped
(counted) rather than run back to back. Offline mode ticks as soon as every active slot has a
frame queued (``voicegate call``, tests): no underruns, no clock. Manual mode runs no thread:
the owner calls ``tick()`` (tests, benchmarks).

Joins and leaves take effect between ticks: a join marks the slot and the engine thread copies
the persona's prompt state into the row (``TickModel.reset_slot``; the joins of one tick
together with ``reset_slots`` when the model has it) before the next step.

A join with the call's own text prompt (``join(..., text_prompt=...)``: the persona's prompt with
this call's variables) on a model with ``prepare_calls`` waits, not stepped, until that prompt
is computed: on the persona's cached voice phases, only the text phases, the oldest waiting
calls in one batched pass, on the engine thread after a tick's outputs are delivered. The pass
takes as many calls as its predicted cost lets finish before the next tick is due, with a
margin (``CALL_PROMPT_MARGIN_S``). The prediction: on a model that timed its passes' fixed
shapes at warm-up (``call_prompt_cost_s``, CUDA), that table's time plus what the recent passes
took beyond it (copies, the loads into the slots), fitted as a fixed part plus a part per call
(all fixed while passes of one number of calls were seen: the loads are done together); so a
pass of 2 to 4 calls is tried as soon as the table says it fits. Otherwise (no table, or a
pass no shape holds) a fixed part plus a part per padded text token (``call_prompt_size`` on
the model when its passes have fixed shapes, else calls x the longest text), fitted to the
recent passes' measured times (each measured from the pass's start to its calls loaded, the
device synchronized). The calls of a pass are loaded into their slots together (``reset_slots``
on the model when it has it: about one call's kernel launches for all); on a GPU the loads are
launched while the pass still runs on the device, and one synchronize ends both (a pass whose
calls all left meanwhile: the model's ``synchronize``). A call that finds no room for even itself waits at most
``MAX_CALL_PROMPT_WAIT_S``, then runs alone (``EngineStats.call_prompt_forced``: the only pass
that may make a tick late). With no call stepping, or in offline and manual modes, every
waiting call at once. ``EngineStats.join_ms_p50``/``p99``: join to the prompt state in the slot.

After each tick's outputs are delivered, a model with ``between_ticks(active)`` does its bounded
housekeeping there (the torch model re-anchors long calls, one chunk per tick); what it reports
is counted (``EngineStats.reanchors``) and handed to the slot's sink with its next output
(``TickOutput.reanchor``).

Faults (``health``): a tick that raises, hands back NaN/inf audio, or runs past
``tick_timeout_s`` (serving mode: a watch thread sees it) is a fault. The first one latches:
ticking stops, no output of that tick reaches a sink, ``health()`` names it and ``on_fault``
runs once (on the engine or watch thread: hop to your loop). A faulted engine is replaced, not
repaired (``supervisor``).

Owns: BatchedEngine, TickMode. Must not import pydantic, voicegate.config or torch (the model
behind ``TickModel`` does the torch work).
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from voicegate.engine.base import (
    FRAME_MS,
    FRAME_SAMPLES,
    EngineStats,
    PersonaPrompt,
    ReanchorReport,
    SamplingParams,
    SlotSink,
)
from voicegate.engine.health import (
    TICK_TIMEOUT_S,
    EngineFault,
    FaultKind,
    FaultWatch,
    non_finite_rows,
)
from voicegate.engine.slots import SlotHandle, SlotState
from voicegate.engine.stepper import TickModel
from voicegate.errors import EngineError, InvalidStateError, NoFreeSlot, UnknownPersona

__all__ = ["BatchedEngine", "TickMode"]

log = logging.getLogger("voicegate.engine")

TICK_S = FRAME_MS / 1000.0
SERVING_QUEUE_FRAMES = 4  # 320 ms of caller audio at most; older frames are dropped (overrun)
# a queue that keeps a frame waiting at every tick for 1 s is standing latency: drop one frame
SERVING_TRIM_AFTER_TICKS = 12
OFFLINE_QUEUE_FRAMES = 64
TICK_HISTORY = 512  # tick durations kept for p50/p99
MAX_BEHIND_TICKS = 2
MAX_CALL_PROMPT_BATCH = 8  # per-call prompts computed in one pass between two ticks
# a waiting per-call prompt is computed even without room before the next tick after this long
MAX_CALL_PROMPT_WAIT_S = 0.5
# a pass is started only if its predicted end is this much before the next tick is due: the
# prediction's error (a pass is measured to the millisecond, not the next one's kernels) and
# the loads into the slots after it
CALL_PROMPT_MARGIN_S = 0.1 * TICK_S
CALL_PROMPT_SAMPLES = 16  # recent passes the cost is fitted to


class TickMode(enum.Enum):
    SERVING = "serving"  # 12.5 Hz on the monotonic clock
    OFFLINE = "offline"  # as fast as every active slot has input
    MANUAL = "manual"  # no thread: the owner calls tick() (tests, benchmarks)


@dataclass(frozen=True, slots=True)
class _PersonaEntry:
    prompt: PersonaPrompt
    state: object


@dataclass(slots=True)
class _PendingReset:
    state: object  # what ``reset_slot`` loads (the call's own prompt once computed)
    sampling: SamplingParams
    seed: int
    requested_s: float  # perf_counter at join (join time, for the stats)
    requested_at: float  # the engine's clock at join (how long it may still wait)
    is_waiting: bool = False  # the call's own prompt is not computed yet
    text: str = ""  # the call's own text prompt (while waiting)
    tokens: int = 0  # its length in model tokens (the pass's cost grows with the longest)
    persona_state: object = None  # its persona's state (voice phases; the fallback)
    generation: int = 0


def _is_waiting(pending: _PendingReset | None) -> bool:
    return pending is not None and pending.is_waiting


def _cache_key(prompt: PersonaPrompt) -> tuple[str, str, str]:
    """Prompt states depend on the voice and the text only (sampling is per slot)."""
    return (prompt.voice, str(prompt.voice_path or ""), prompt.text_prompt)


class BatchedEngine:
    """An ``Engine`` over any ``TickModel`` (echo, tiny, personaplex)."""

    def __init__(
        self,
        model: TickModel,
        *,
        mode: TickMode = TickMode.SERVING,
        max_calls: int = 0,
        input_queue_frames: int | None = None,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
        tick_timeout_s: float = TICK_TIMEOUT_S,
        on_fault: Callable[[EngineFault], None] | None = None,
    ) -> None:
        self._model = model
        # hangs are real time, whatever clock paces the ticks
        self._watch = FaultWatch(model.name, timeout_s=tick_timeout_s, on_fault=on_fault)
        self._mode = mode
        self._clock = clock
        # serving mode waits with this (default: the stop event's wait); tests pass a fake
        # that advances a fake clock
        self._sleep = sleep
        self._max_slots = model.max_slots if max_calls <= 0 else min(model.max_slots, max_calls)
        if self._max_slots < 1:
            raise EngineError(f"engine {model.name}: no slot fits (max_slots={model.max_slots})")
        if input_queue_frames is None:
            input_queue_frames = (
                SERVING_QUEUE_FRAMES if mode is TickMode.SERVING else OFFLINE_QUEUE_FRAMES
            )
        trim = SERVING_TRIM_AFTER_TICKS if mode is TickMode.SERVING else 0
        self._slots = [SlotState(i, input_queue_frames, trim) for i in range(self._max_slots)]
        self._pending: list[_PendingReset | None] = [None] * self._max_slots
        self._inputs = np.zeros((model.max_slots, FRAME_SAMPLES), dtype=np.float32)
        self._active = np.zeros(model.max_slots, dtype=bool)
        self._lock = threading.Lock()  # slots' active/generation/sink, personas
        self._wake = threading.Condition()  # offline mode: input, join, leave, close
        self._persona_lock = threading.Lock()  # one prompt computation at a time
        self._personas: dict[str, _PersonaEntry] = {}
        self._prompt_cache: dict[tuple[str, str, str], object] = {}
        self._base_seed = int.from_bytes(os.urandom(4), "little") if seed is None else seed
        self._joins = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._is_started = False
        self._next_due: float | None = None  # serving mode: when the next tick pops its inputs
        self._failure: BaseException | None = None
        self._stats = EngineStats(max_slots=self._max_slots)
        self._tick_ms = np.zeros(TICK_HISTORY, dtype=np.float64)
        self._tick_ms_n = 0
        self._slot_underruns_retired = 0
        self._slot_overruns_retired = 0
        # joins: join() to the prompt state in the slot, ms (for p50/p99)
        self._join_ms = np.zeros(TICK_HISTORY, dtype=np.float64)
        self._join_ms_n = 0
        # optional on a TickModel: per-call prompts (voice phases of the persona + own text)
        self._prepare_calls: Callable[[list[tuple[object, str]]], list[object]] | None = getattr(
            model, "prepare_calls", None
        )
        # recent passes of per-call prompts: (calls x longest text in tokens, seconds on the
        # clock the ticks are due on); the next pass's cost is fitted to them
        self._pass_cost = np.zeros((CALL_PROMPT_SAMPLES, 2), dtype=np.float64)
        # optional on a TickModel: a pass's size in padded text positions (its fixed shapes),
        # the unit of the fitted cost; by default calls x the longest text
        self._pass_size: Callable[[int, int], int] = getattr(
            model, "call_prompt_size", _calls_times_longest
        )
        self._pass_cost_n = 0
        # optional on a TickModel: wait for its device's queued work (a pass that loaded no
        # call; a load waits by itself)
        self._synchronize: Callable[[], None] | None = getattr(model, "synchronize", None)
        # optional on a TickModel: the seconds of a pass's bare fixed shapes, measured at
        # warm-up (None: not measured, or no shape holds it); the pacing then fits only what a
        # pass costs beyond them (copies, the loads into the slots), per call, to these
        # samples of (calls, seconds beyond the table)
        self._pass_table: Callable[[int, int], float | None] | None = getattr(
            model, "call_prompt_cost_s", None
        )
        self._pass_extra = np.zeros((CALL_PROMPT_SAMPLES, 2), dtype=np.float64)
        self._pass_extra_n = 0
        # optional on a TickModel: several joining calls' loads at once
        self._reset_slots: (
            Callable[[list[tuple[int, object, SamplingParams, int]]], None] | None
        ) = getattr(model, "reset_slots", None)
        self._n_waiting = 0  # joins whose own prompt is not computed yet (under ``_lock``)
        # optional on a TickModel: bounded work after each tick (re-anchoring long calls)
        self._between_ticks: Callable[[np.ndarray], list[tuple[int, ReanchorReport]]] | None = (
            getattr(model, "between_ticks", None)
        )
        # optional on a TickModel: the caller STT's per-row outputs of the last step
        self._caller_outputs: Callable[[], tuple[np.ndarray, np.ndarray] | None] | None = getattr(
            model, "caller_outputs", None
        )
        self._caller_piece: Callable[[int, int], str] | None = getattr(model, "caller_piece", None)
        self._caller_delay_frames = int(getattr(model, "caller_delay_frames", 0))
        if mode is TickMode.OFFLINE:
            for state in self._slots:
                state.notify = self._notify
        # optional, on the tick thread around every tick (edge workers' shared-memory rings:
        # ``voicegate.edge.host``): queue remote callers' frames before the step, publish
        # the outputs after it
        self.before_tick: Callable[[], None] | None = None
        self.after_tick: Callable[[], None] | None = None

    # --- Engine protocol -------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._model.name

    @property
    def mode(self) -> TickMode:
        return self._mode

    @property
    def max_slots(self) -> int:
        return self._max_slots

    @property
    def active_slots(self) -> int:
        return sum(1 for s in self._slots if s.active)

    @property
    def model(self) -> TickModel:
        return self._model

    @property
    def fault(self) -> EngineFault | None:
        """The fault that stopped this engine, or None."""
        return self._watch.fault

    @property
    def on_fault(self) -> Callable[[EngineFault], None] | None:
        return self._watch.on_fault

    @on_fault.setter
    def on_fault(self, callback: Callable[[EngineFault], None] | None) -> None:
        """Called once, on the engine or watch thread, with the first fault (see ``health``)."""
        self._watch.on_fault = callback

    def next_tick_at(self) -> float | None:
        """When the next tick takes its input frames, on the engine's clock (``time.monotonic``
        unless one was injected); None in offline and manual modes and when not running.

        A frame pushed before this time is taken by that tick. Ticks are due every 80 ms on a
        fixed schedule: a late tick or skipped ticks do not move the phase.
        """
        return self._next_due

    def start(self) -> None:
        if self._is_started:
            raise InvalidStateError(f"engine {self.name}: already started")
        self._model.warmup()
        self._admit_measured()
        self._is_started = True
        if self._mode is TickMode.MANUAL:
            return
        self._thread = threading.Thread(
            target=self._run, name=f"voicegate-engine-{self.name}", daemon=True
        )
        self._thread.start()
        if self._mode is TickMode.SERVING:
            self._watch.start()
        log.info(
            "engine %s started: %d slots, %s mode", self.name, self._max_slots, self._mode.value
        )

    def _admit_measured(self) -> None:
        """Admit no more calls than the model measured to stay real time (``realtime_slots``,
        set by a CUDA model's warm-up; absent elsewhere)."""
        limit = getattr(self._model, "realtime_slots", None)
        if not isinstance(limit, int) or limit >= self._max_slots:
            return
        keep = max(1, limit)
        log.warning(
            "engine %s: admitting %d of %d slots: the measured worst tick is too slow beyond%s",
            self.name,
            keep,
            self._max_slots,
            "" if limit else " (even one call is too slow)",
        )
        with self._lock:
            self._max_slots = keep
            del self._slots[keep:]
            del self._pending[keep:]
            self._stats.max_slots = keep

    def close(self, timeout_s: float | None = None) -> None:
        """Stop ticking and free every slot and the model.

        ``timeout_s`` bounds the wait for the tick thread: a thread hung in a model step is left
        behind (a daemon; it delivers nothing when it returns) instead of blocking forever.
        """
        self._stop.set()
        self._notify()
        self._watch.close()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)
            if thread.is_alive():
                log.warning(
                    "engine %s: the tick thread is still in a model step after %.1f s: left behind",
                    self.name,
                    timeout_s or 0.0,
                )
        self._next_due = None
        with self._lock:
            for state in self._slots:
                self._retire(state)
        self._model.close()

    def load_persona(self, prompt: PersonaPrompt) -> None:
        cache_key = _cache_key(prompt)
        with self._persona_lock:
            state = self._prompt_cache.get(cache_key)
            if state is None:
                started = time.perf_counter()
                state = self._model.prepare_persona(prompt)
                self._prompt_cache[cache_key] = state
                log.info(
                    "persona %s: prompt state computed in %.0f ms",
                    prompt.key,
                    (time.perf_counter() - started) * 1000,
                )
            with self._lock:
                self._personas[prompt.key] = _PersonaEntry(prompt, state)
            self._drop_unused_prompts()

    def unload_persona(self, key: str) -> None:
        """Forget a persona (its file was removed); calls in progress keep their slot state."""
        with self._persona_lock:
            with self._lock:
                self._personas.pop(key, None)
            self._drop_unused_prompts()

    def _drop_unused_prompts(self) -> None:
        with self._lock:
            in_use = {_cache_key(e.prompt) for e in self._personas.values()}
        for key in list(self._prompt_cache):
            if key not in in_use:
                del self._prompt_cache[key]

    def has_persona(self, key: str) -> bool:
        return key in self._personas

    def count_tokens(self, text: str) -> int:
        return self._model.count_tokens(text)

    def join(
        self,
        persona_key: str,
        sink: SlotSink,
        *,
        seed: int | None = None,
        text_prompt: str | None = None,
    ) -> SlotHandle:
        """Take a free slot (see ``Engine.join``). ``text_prompt``: the call's own text prompt
        (the persona's with this call's variables); its text phases are computed between ticks
        on the persona's cached voice phases, and the slot starts stepping once they are in."""
        if not self._is_started or self._stop.is_set():
            raise InvalidStateError(f"engine {self.name}: cannot join a call when not running")
        # the caller's thread tokenizes (the engine thread only sizes its passes with it)
        tokens = 0 if text_prompt is None else self._model.count_tokens(text_prompt)
        with self._lock:
            entry = self._personas.get(persona_key)
            if entry is None:
                raise UnknownPersona(f"engine {self.name}: persona {persona_key!r} is not loaded")
            state = next((s for s in self._slots if not s.active), None)
            if state is None:
                raise NoFreeSlot(f"engine {self.name}: all {self._max_slots} slots are taken")
            self._joins += 1
            if seed is None:
                seed = (self._base_seed * 1_000_003 + self._joins) & 0x7FFF_FFFF
            state.clear_ring()
            state.generation += 1
            state.persona_key = persona_key
            state.sink = sink
            state.stats = type(state.stats)()
            state.frames = 0
            state.reanchor = None
            state.active = True
            pending = _PendingReset(
                entry.state, entry.prompt.sampling, seed, time.perf_counter(), self._clock()
            )
            own = (
                text_prompt is not None and text_prompt.strip() != entry.prompt.text_prompt.strip()
            )
            if own and self._prepare_calls is not None:
                assert text_prompt is not None
                pending.is_waiting, pending.text, pending.tokens = True, text_prompt, tokens
                pending.persona_state = entry.state
                self._n_waiting += 1
                pending.generation = state.generation
                self._stats.call_prompts += 1
            self._pending[state.index] = pending
            handle = SlotHandle(
                state, state.generation, self._leave, next_tick_at=self.next_tick_at
            )
        self._notify()
        return handle

    def stats(self) -> EngineStats:
        s = self._stats
        n = min(self._tick_ms_n, TICK_HISTORY)
        p50 = p99 = 0.0
        if n:
            window = self._tick_ms[:n]
            p50 = float(np.percentile(window, 50))
            p99 = float(np.percentile(window, 99))
        n = min(self._join_ms_n, TICK_HISTORY)
        join_p50 = join_p99 = 0.0
        if n:
            joins = self._join_ms[:n]
            join_p50 = float(np.percentile(joins, 50))
            join_p99 = float(np.percentile(joins, 99))
        underruns = self._slot_underruns_retired
        overruns = self._slot_overruns_retired
        active = 0
        for state in self._slots:
            if state.active:
                active += 1
                underruns += state.stats.underruns
                overruns += state.stats.overruns
        return EngineStats(
            ticks=s.ticks,
            late_ticks=s.late_ticks,
            skipped_ticks=s.skipped_ticks,
            tick_errors=s.tick_errors,
            sink_errors=s.sink_errors,
            underruns=underruns,
            overruns=overruns,
            active_slots=active,
            max_slots=self._max_slots,
            tick_ms_p50=p50,
            tick_ms_p99=p99,
            reanchors=s.reanchors,
            reanchor_ms=s.reanchor_ms,
            call_prompts=s.call_prompts,
            call_prompt_errors=s.call_prompt_errors,
            call_prompt_ms=s.call_prompt_ms,
            call_prompt_passes=s.call_prompt_passes,
            call_prompt_done=s.call_prompt_done,
            call_prompt_forced=s.call_prompt_forced,
            join_ms_p50=join_p50,
            join_ms_p99=join_p99,
        )

    # --- slots ------------------------------------------------------------------------------

    def _leave(self, state: SlotState, generation: int) -> None:
        with self._lock:
            if state.generation != generation or not state.active:
                return
            self._retire(state)
            state.generation += 1  # stale handles become inert
        self._notify()

    def _retire(self, state: SlotState) -> None:
        if not state.active:
            return
        self._slot_underruns_retired += state.stats.underruns
        self._slot_overruns_retired += state.stats.overruns
        state.active = False
        state.sink = None
        pending = self._pending[state.index]
        if pending is not None and pending.is_waiting:
            self._n_waiting -= 1
        self._pending[state.index] = None

    def _notify(self) -> None:
        with self._wake:
            self._wake.notify_all()

    # --- the tick ---------------------------------------------------------------------------

    def tick(self) -> bool:
        """Run one tick now; returns True when the model stepped.

        The engine thread calls this; in manual mode the owner does, from one thread only.
        """
        if self._watch.fault is not None:
            return False
        if self.before_tick is not None:
            self._run_hook(self.before_tick)
        try:
            return self._step()
        finally:
            if self.after_tick is not None:
                self._run_hook(self.after_tick)

    def _run_hook(self, hook: Callable[[], None]) -> None:
        try:
            hook()
        except Exception:
            self._stats.sink_errors += 1
            if self._stats.sink_errors == 1 or self._stats.sink_errors % 1000 == 0:
                log.exception("engine %s: a tick hook raised", self.name)

    def _step(self) -> bool:
        model = self._model
        inputs = self._inputs
        if self._n_waiting and (
            self._mode is not TickMode.SERVING or not self._has_stepping_slot()
        ):
            self._prepare_waiting(is_paced=False)  # no tick to make late (offline, manual, idle)
        waiting: set[int] = set()
        with self._lock:
            loads = []
            for i, pending in enumerate(self._pending):
                if pending is not None and pending.is_waiting:
                    waiting.add(i)  # its own prompt is not computed yet: not stepped
                elif pending is not None:
                    loads.append((i, pending))
            self._load_all(loads)
            active = [
                (s, s.generation, s.sink)
                for s in self._slots
                if s.active and s.index not in waiting
            ]
        if not active:
            return False
        highest = 0
        is_active = self._active
        is_active.fill(False)
        for state, _, _ in active:
            state.pop_into(inputs[state.index])
            is_active[state.index] = True
            highest = max(highest, state.index)
        n_rows = model.batch_rows(highest)
        for i in range(min(n_rows, self._max_slots)):
            if not is_active[i]:
                inputs[i].fill(0.0)
        started = time.perf_counter()
        try:
            pcm_out, tokens = model.step(inputs, is_active, n_rows)
        except Exception as exc:
            self._stats.tick_errors += 1
            log.exception("engine %s: model step failed", self.name)
            self._watch.report(FaultKind.RAISE, f"model step raised {type(exc).__name__}: {exc}")
            return False
        if self._watch.fault is not None:
            return False  # a hang was reported while the step ran: its output is void
        bad = non_finite_rows(pcm_out, n_rows, is_active)
        if bad:
            self._watch.report(FaultKind.NAN, f"non-finite agent audio in {bad}")
            return False
        self._tick_ms[self._tick_ms_n % TICK_HISTORY] = (time.perf_counter() - started) * 1000.0
        self._tick_ms_n += 1
        self._stats.ticks += 1
        caller = self._caller_outputs() if self._caller_outputs is not None else None
        for state, generation, sink in active:
            if sink is None or state.generation != generation:
                continue  # left during the step
            index = state.index
            token = int(tokens[index])
            out = state.output
            out.frame_index = state.frames
            out.pcm = pcm_out[index]
            out.text_token = token
            out.text = model.text_piece(index, token)
            out.reanchor = state.reanchor
            state.reanchor = None
            if caller is not None and self._caller_piece is not None:
                caller_token = int(caller[0][index])
                out.caller_token = caller_token
                out.caller_text = self._caller_piece(index, caller_token)
                out.caller_end_of_turn = float(caller[1][index])
                out.caller_delay_frames = self._caller_delay_frames
            state.frames += 1
            state.stats.frames += 1
            try:
                sink.on_tick(out)
            except Exception:
                self._stats.sink_errors += 1
                if self._stats.sink_errors == 1 or self._stats.sink_errors % 1000 == 0:
                    log.exception("engine %s: sink of slot %d raised", self.name, index)
        if self._between_ticks is not None:
            self._run_between_ticks(is_active)
        if self._n_waiting:
            self._prepare_waiting()
        return True

    # --- per-call prompts -------------------------------------------------------------------

    def _has_stepping_slot(self) -> bool:
        pending = self._pending
        return any(s.active and not _is_waiting(pending[s.index]) for s in self._slots)

    def _load(self, i: int, pending: _PendingReset) -> None:
        """Put the joining call's prompt state into row ``i`` (engine thread, ``_lock`` held)."""
        self._pending[i] = None
        try:
            self._model.reset_slot(i, pending.state, pending.sampling, pending.seed)
        except Exception:
            # the call cannot start: free its slot (its handle goes inactive)
            self._stats.tick_errors += 1
            log.exception("engine %s: joining slot %d failed", self.name, i)
            state = self._slots[i]
            self._retire(state)
            state.generation += 1
            return
        self._note_join(pending)

    def _load_all(self, loads: list[tuple[int, _PendingReset]]) -> None:
        """``_load`` of several joining calls, in one ``reset_slots`` when the model has it (a
        load is bound by kernel launches: several together cost about one). If that raises,
        they are loaded one by one, so only a call whose own load fails is refused."""
        if len(loads) < 2 or self._reset_slots is None:
            for i, pending in loads:
                self._load(i, pending)
            return
        try:
            self._reset_slots([(i, p.state, p.sampling, p.seed) for i, p in loads])
        except Exception:
            log.exception(
                "engine %s: loading slots %s together failed: one by one",
                self.name,
                [i for i, _ in loads],
            )
            for i, pending in loads:
                self._load(i, pending)
            return
        for i, pending in loads:
            self._pending[i] = None
            self._note_join(pending)

    def _note_join(self, pending: _PendingReset) -> None:
        self._join_ms[self._join_ms_n % TICK_HISTORY] = (
            time.perf_counter() - pending.requested_s
        ) * 1000.0
        self._join_ms_n += 1

    def _prepare_waiting(self, *, is_paced: bool = True) -> None:
        """Compute waiting calls' own prompts (engine thread, between ticks) in one batched
        pass of the oldest, at most ``MAX_CALL_PROMPT_BATCH``. Paced (serving mode with calls
        stepping): only as many as are predicted to finish ``CALL_PROMPT_MARGIN_S`` before the
        next tick is due; none fitting, the oldest alone once it has waited
        ``MAX_CALL_PROMPT_WAIT_S``. A failure starts the call on its persona's own prompt
        (logged): a call never fails to start because of its variables."""
        prepare = self._prepare_calls
        assert prepare is not None
        with self._lock:
            todo = [(i, p) for i, p in enumerate(self._pending) if p is not None and p.is_waiting]
        if not todo:
            return
        todo.sort(key=lambda item: item[1].requested_at)
        del todo[MAX_CALL_PROMPT_BATCH:]
        if is_paced and self._mode is TickMode.SERVING and self._next_due is not None:
            now = self._clock()
            n = self._calls_that_fit(todo, self._next_due - now - CALL_PROMPT_MARGIN_S)
            if n == 0:
                if now - todo[0][1].requested_at < MAX_CALL_PROMPT_WAIT_S:
                    return
                n = 1
                self._stats.call_prompt_forced += 1
            del todo[n:]
        longest = max(max(p.tokens for _, p in todo), 1)
        started, started_at = time.perf_counter(), self._clock()
        try:
            states = prepare([(p.persona_state, p.text) for _, p in todo])
        except Exception:
            log.exception(
                "engine %s: per-call prompts of slots %s failed: they start with their "
                "persona's prompt",
                self.name,
                [i for i, _ in todo],
            )
            states = [p.persona_state for _, p in todo]
        # a request the model could not honour comes back as its persona's own state
        self._stats.call_prompt_errors += sum(
            1 for (_, p), state in zip(todo, states, strict=True) if state is p.persona_state
        )
        with self._lock:
            loads = []
            for (i, p), prompt_state in zip(todo, states, strict=True):
                if self._pending[i] is p and self._slots[i].generation == p.generation:
                    p.state, p.is_waiting = prompt_state, False
                    self._n_waiting -= 1
                    self._stats.call_prompt_done += 1
                    loads.append((i, p))
            self._load_all(loads)  # here, between ticks: the next tick only steps them
            if not loads and self._synchronize is not None:
                self._synchronize()  # every call left: the pass's device work, not the tick's
            if self._mode is TickMode.SERVING:  # offline: every frame counts
                for i, _ in loads:
                    self._slots[i].keep_newest(1)  # what it queued while waiting is late
        # on the clock the ticks are due on; the loads into the slots count as the pass's
        self._note_pass(len(todo), longest, self._clock() - started_at)
        self._stats.call_prompt_passes += 1
        self._stats.call_prompt_ms += (time.perf_counter() - started) * 1000.0

    def _note_pass(self, calls: int, longest: int, seconds: float) -> None:
        """Keep a pass's cost for the pacing: against its padded size, and (a model with
        ``call_prompt_cost_s``) what it took beyond its shapes' measured time, against its
        calls."""
        row = self._pass_cost[self._pass_cost_n % CALL_PROMPT_SAMPLES]
        row[0], row[1] = self._pass_size(calls, longest), seconds
        self._pass_cost_n += 1
        bare = self._pass_table(calls, longest) if self._pass_table is not None else None
        if bare is not None:
            row = self._pass_extra[self._pass_extra_n % CALL_PROMPT_SAMPLES]
            row[0], row[1] = calls, seconds - bare
            self._pass_extra_n += 1

    def _calls_that_fit(self, todo: list[tuple[int, _PendingReset]], room_s: float) -> int:
        """How many of the oldest waiting calls one pass can compute within ``room_s``."""
        n = min(self._pass_cost_n, CALL_PROMPT_SAMPLES)
        if n == 0:
            # nothing measured yet: one call, with half a tick of room or, by the model's table,
            # room for its pass and half as much again (what it costs beyond the table, its
            # load into the slot among it, is not known yet)
            need = TICK_S / 2
            if self._pass_table is not None:
                bare = self._pass_table(1, max(todo[0][1].tokens, 1))
                need = need if bare is None else min(need, 1.5 * bare)
            return 1 if room_s >= need else 0
        line = _fit_cost(self._pass_cost[:n])
        n_extra = min(self._pass_extra_n, CALL_PROMPT_SAMPLES)
        extra = _fit_extra(self._pass_extra[:n_extra]) if n_extra else None
        longest = fits = 0
        for _, pending in todo:
            longest = max(longest, pending.tokens, 1)
            if self._predict_s(fits + 1, longest, line, extra) > room_s:
                break
            fits += 1
        return fits

    def _predict_s(
        self,
        calls: int,
        longest: int,
        line: tuple[float, float],
        extra: tuple[float, float] | None,
    ) -> float:
        """A pass's predicted seconds: its shapes' measured time plus the fitted extra per
        call (``extra``) when the model has a table for it, else the line fitted to the passes'
        padded sizes. The table tells what passes of more calls cost before any was run: the
        line, having seen only passes of one, would take half of their time as growth per
        call (and a pass of several, much cheaper per call, would never be tried)."""
        if extra is not None and self._pass_table is not None:
            bare = self._pass_table(calls, longest)
            if bare is not None:
                return bare + extra[0] + extra[1] * calls
        return line[0] + line[1] * self._pass_size(calls, longest)

    def _run_between_ticks(self, is_active: np.ndarray) -> None:
        assert self._between_ticks is not None
        try:
            done = self._between_ticks(is_active)
        except Exception:
            self._stats.tick_errors += 1
            log.exception("engine %s: work between ticks failed", self.name)
            return
        for index, report in done:
            self._stats.reanchors += 1
            self._stats.reanchor_ms += report.compute_ms
            with self._lock:
                state = self._slots[index]
                if state.active:
                    state.reanchor = report
            log.info(
                "engine %s: slot %d re-anchored: prompt %d + last %d frames in %d chunks, "
                "%.1f ms (position %d -> %d)",
                self.name,
                index,
                report.prompt_frames,
                report.kept_frames,
                report.chunks,
                report.compute_ms,
                report.position_before,
                report.position_after,
            )

    def health(self) -> str | None:
        """None while the engine can serve, else why not (for /readyz)."""
        fault = self._watch.fault
        if fault is not None:
            return fault.describe()
        if self._failure is not None:
            return f"engine {self.name}: tick thread died: {self._failure!r}"
        if not self._is_started:
            return f"engine {self.name}: not started"
        if self._stop.is_set():
            return f"engine {self.name}: closed"
        return None

    def _run(self) -> None:
        try:
            if self._mode is TickMode.SERVING:
                self._run_serving()
            else:
                self._run_offline()
        except BaseException as exc:  # the thread must say why it died
            self._failure = exc
            self._next_due = None
            log.exception("engine %s: tick thread died", self.name)
            self._watch.report(FaultKind.RAISE, f"tick thread died: {exc!r}")
            raise

    def _guarded_tick(self) -> None:
        watch = self._watch
        watch.tick_started()
        try:
            self.tick()
        except Exception as exc:  # the thread carries on; the fault stops the ticks
            self._stats.tick_errors += 1
            log.exception("engine %s: tick failed", self.name)
            watch.report(FaultKind.RAISE, f"tick raised {type(exc).__name__}: {exc}")
        finally:
            watch.tick_ended()

    def _run_serving(self) -> None:
        clock = self._clock
        due = clock() + TICK_S
        self._next_due = due
        while not self._stop.is_set() and self._watch.fault is None:
            delay = due - clock()
            if delay > 0:
                if self._sleep is None:
                    self._stop.wait(delay)
                else:
                    self._sleep(delay)
                if self._stop.is_set():
                    break
            # from here on a pushed frame waits for the following tick
            self._next_due = due + TICK_S
            self._guarded_tick()
            due += TICK_S
            now = clock()
            if now > due:
                self._stats.late_ticks += 1
                behind = int((now - due) / TICK_S)
                if behind >= MAX_BEHIND_TICKS:
                    self._stats.skipped_ticks += behind
                    due += behind * TICK_S
            self._next_due = due
        self._next_due = None

    def _offline_ready(self) -> bool:
        has_active = False
        for state in self._slots:
            if state.active:
                has_active = True
                if state.queued() == 0:
                    return False
        return has_active

    def _run_offline(self) -> None:
        while True:
            with self._wake:
                while not self._stop.is_set() and not self._offline_ready():
                    self._wake.wait()
            if self._stop.is_set() or self._watch.fault is not None:
                return
            self._guarded_tick()


def _calls_times_longest(calls: int, longest: int) -> int:
    """A pass's size when the model pads every call to the longest text only."""
    return calls * longest


def _fit_extra(samples: np.ndarray) -> tuple[float, float]:
    """What passes cost beyond their shapes' measured time as ``fixed + per_call * calls``,
    fitted to ``samples`` [n, 2] of (calls, seconds) as ``_fit_cost`` does, except that with
    one number of calls seen (or no growth) all of it is taken as fixed: it is mostly per
    pass (the synchronize, the loads into the slots, done together: ``reset_slots``). Half of
    it per call, as for a whole pass, would predict a pass of 2 past the room that passes of
    one leave, and it would never be tried; a few ms too little is the margin's, and a pass
    of more calls then shows the growth."""
    return _fit_cost(samples, flat_fixed=1.0)


def _fit_cost(samples: np.ndarray, flat_fixed: float = 0.5) -> tuple[float, float]:
    """Seconds of a pass as ``fixed + per_token * tokens`` (tokens: calls x the longest
    text), fitted to ``samples`` [n, 2] of (tokens, seconds) and raised to cover every sample
    but (from 4 samples on) the one furthest above the line: a prediction errs long rather
    than short, and one outlier (a first use of some kernel) does not starve the joins after
    it. Both parts are at least 0. ``flat_fixed``: see ``_fit_line``."""
    x, y = samples[:, 0], samples[:, 1]
    fixed, per_token = _fit_line(x, y, flat_fixed)
    if len(x) >= 4:
        keep = np.ones(len(x), dtype=bool)
        keep[int(np.argmax(y - fixed - per_token * x))] = False
        fixed, per_token = _fit_line(x[keep], y[keep], flat_fixed)
    return fixed, per_token


def _fit_line(x: np.ndarray, y: np.ndarray, flat_fixed: float = 0.5) -> tuple[float, float]:
    """Least squares, then the fixed part raised to lie over every point; with one size
    seen (or no growth), the share ``flat_fixed`` of its time is taken as fixed (the rest
    grows with the size)."""
    per_token = 0.0
    if float(np.ptp(x)) > 0.0:
        per_token = max(float(np.polyfit(x, y, 1)[0]), 0.0)
    if per_token > 0.0:
        fixed = 0.0
    else:
        fixed = float(np.median(y)) * flat_fixed
        per_token = float(np.median(y / np.maximum(x, 1.0))) * (1.0 - flat_fixed)
    return max(fixed + float(np.max(y - fixed - per_token * x)), 0.0), per_token
