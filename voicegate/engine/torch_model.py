"""The torch ``TickModel``: Mimi encode -> LM step -> Mimi decode for every slot per tick.

Shared by the ``tiny`` and ``personaplex`` backends (they differ in shapes and loading only).
Per tick there is one host-to-device copy (the batch's caller frames and active flags, from a
pinned buffer on CUDA) and one device-to-host copy (agent audio and text token packed in one [S, 1921] float32
buffer: token ids < 2**24 are exact in float32). Rows of slots without a call are masked: their
LM, Mimi encoder and decoder states do not move.

On CUDA the device part of the tick is replayed from CUDA graphs captured at warm-up (see
``graphs``; ``VOICEGATE_NO_CUDA_GRAPH=1`` for eager ticks).

Per-call prompts (``prepare_calls``): the text phases of calls whose text prompt is their own,
prefilled in one batched pass after the persona's cached voice phases, a fixed-shape pass
(``lm.textpass``) replayed from a CUDA graph captured at warm-up when graphs are on; a slot
keeps only the persona's state and its text's ids, from which a re-anchor rebuilds the call's
own prompt (``LM.prefill_text_phases``, eager). Warm-up times every shape of that pass
(``call_prompt_cost_s``: the engine paces its passes by it), and the calls of a pass are loaded
into their slots together (``reset_slots``: one batched LM load, one Mimi reset, one
synchronize). The pass is not waited for: the loads' launches (their host values pinned,
``_transfer``) overlap it on the device; on the H200 this took a 200-token join at 80 live calls
from p99 589 to 88 ms (bench/RESULTS.md).

Caller STT (``stt`` given): the encode gives as many codebooks as the STT reads (the LM takes
the first 8), and the STT steps every active slot after the LM with its own graphs
(``voicegate.engine.stt.tick``); its text token and end-of-turn probability travel in two more
columns of the output buffer ([S, 1923]) and are read with ``caller_outputs()``.

Long calls (``reanchor_frames`` > 0): ``between_ticks`` re-anchors one slot at a time before
its persona prompt leaves the attention window (``voicegate.engine.lm.reanchor``), prefilling at
most ``reanchor_chunk_frames`` positions after each tick so that no tick is late because of it.
A call with its own prompt has that prompt prefilled again when its re-anchor begins (a pass
the size of a join's), in a window after a tick of its own: no window does that and a chunk.

Owns: TorchTickModel. Imports torch, numpy, the lm and mimi packages, the tokenizer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from voicegate.engine._transfer import to_device
from voicegate.engine.base import (
    FRAME_MS,
    FRAME_SAMPLES,
    PersonaPrompt,
    ReanchorReport,
    SamplingParams,
)
from voicegate.engine.capacity import realtime_slots
from voicegate.engine.graphs import TickGraphs, graphs_enabled, kv_buckets
from voicegate.engine.lm import LM, PromptState, Reanchorer, ReanchorJob, system_prompt_text
from voicegate.engine.lm.prompt import SILENCE_FRAMES
from voicegate.engine.lm.reanchor import DEFAULT_CHUNK_FRAMES, DEFAULT_MARGIN_FRAMES
from voicegate.engine.lm.runtime import SlotLoad
from voicegate.engine.lm.textpass import TextPhasePass
from voicegate.engine.mimi import MimiModel, MimiStreamer
from voicegate.engine.stt import Stt
from voicegate.engine.stt.tick import CallerStt
from voicegate.engine.tokenizer import PAD_ID, TextTokenizer
from voicegate.engine.voices import VoiceBank
from voicegate.errors import PersonaError

__all__ = ["TorchTickModel"]

log = logging.getLogger("voicegate.engine")

WARMUP_STEPS = 3
ADMISSION_TICKS = 8  # worst-case ticks timed at warm-up, per measurement
TEXT_PASS_REPEATS = 3  # runs of each per-call prompt pass shape timed at warm-up (the slowest)
# positions prefilled after a tick while a re-anchor runs (one captured pass; bench/
# reanchor_bench.py measures its time)
REANCHOR_CHUNK_FRAMES = DEFAULT_CHUNK_FRAMES


@dataclass(frozen=True, slots=True)
class _CallPrompt:
    """A call's own prompt: its state (None once loaded), the persona's, its text's ids."""

    state: PromptState | None
    persona: PromptState
    text_ids: list[int]

    def compact(self) -> _CallPrompt:
        return _CallPrompt(None, self.persona, self.text_ids)


class TorchTickModel:
    """A ``TickModel`` over an ``LM``, a ``MimiModel`` and a tokenizer, for ``n_slots`` rows."""

    def __init__(
        self,
        name: str,
        lm: LM,
        mimi: MimiModel,
        tokenizer: TextTokenizer,
        voices: VoiceBank,
        n_slots: int,
        *,
        use_cuda_graph: bool | None = None,
        kv_dtype: torch.dtype | None = None,
        reanchor_frames: int = 0,
        reanchor_chunk_frames: int = REANCHOR_CHUNK_FRAMES,
        reanchor_margin_frames: int | None = None,
        stt: Stt | None = None,
        stt_tokenizer: TextTokenizer | None = None,
    ) -> None:
        if n_slots < 1:
            raise ValueError(f"{name}: need at least one slot, got {n_slots}")
        self._name = name
        self.lm = lm
        self.mimi_model = mimi
        self.tokenizer = tokenizer
        self.voices = voices
        self.n_slots = n_slots
        self.device = lm.device
        self.state = lm.new_state(n_slots, kv_dtype=kv_dtype)  # 8-bit: lm.attention must read it
        n_user = lm.config.n_q - lm.config.dep_q
        encode_codebooks = max(n_user, stt.config.n_q) if stt is not None else None
        if stt is not None and stt.config.n_q > mimi.config.n_q:
            raise ValueError(
                f"{name}: the ASR model reads {stt.config.n_q} codebooks, Mimi has {mimi.config.n_q}"
            )
        self.mimi = MimiStreamer(mimi, n_slots, encode_codebooks)
        self._n_user = n_user
        is_cuda = self.device.type == "cuda"
        # one host-to-device copy per tick: every row's frame, then every row's active flag
        in_size = n_slots * FRAME_SAMPLES + n_slots
        self._in_host = torch.zeros(in_size, dtype=torch.float32, pin_memory=is_cuda)
        self._in_host_np = self._in_host.numpy()
        self._in_dev = torch.zeros(in_size, dtype=torch.float32, device=self.device)
        self._pcm_dev = self._in_dev[: n_slots * FRAME_SAMPLES].view(n_slots, FRAME_SAMPLES)
        self._flags_dev = self._in_dev[n_slots * FRAME_SAMPLES :]
        width = FRAME_SAMPLES + 1 + (2 if stt is not None else 0)  # + STT token, end of turn
        self._out_dev = torch.zeros((n_slots, width), dtype=torch.float32, device=self.device)
        self._out_host = torch.zeros((n_slots, width), dtype=torch.float32, pin_memory=is_cuda)
        self._out_host_np = self._out_host.numpy()
        self._tokens = np.full(n_slots, PAD_ID, dtype=np.int64)
        # per slot: byte-fallback characters are decoded across tokens
        self._text_streams = [tokenizer.stream() for _ in range(n_slots)]
        # long calls: the persona state of each slot, and one re-anchor in progress at most
        self._prompts: list[PromptState | _CallPrompt | None] = [None] * n_slots
        self._cannot_reanchor = np.zeros(n_slots, dtype=bool)
        self._reanchor: Reanchorer | None = None
        self._job: ReanchorJob | None = None
        if reanchor_chunk_frames < 1:
            raise ValueError(f"{name}: reanchor_chunk_frames must be >= 1")
        self._reanchor_chunk = reanchor_chunk_frames
        if reanchor_frames > 0:
            margin = reanchor_margin_frames or min(DEFAULT_MARGIN_FRAMES, lm.config.context // 8)
            self._reanchor = Reanchorer(
                lm,
                self.state,
                keep_frames=reanchor_frames,
                margin_frames=margin,
                chunk_frames=reanchor_chunk_frames,
            )
        self._reset_mask = torch.zeros(n_slots, dtype=torch.bool, device=self.device)
        self._pad = torch.tensor(float(PAD_ID), device=self.device)
        self._prefill_lock = threading.Lock()
        self._is_cuda = is_cuda
        self._is_text_pass_warm = False  # CUDA: a per-call prompt pass has run once
        # per-call prompts' text phases: fixed-shape passes (CUDA graphs captured at warm-up)
        self.text_pass = TextPhasePass(lm)
        self.budget: object | None = None  # the SlotBudget that sized n_slots, when measured
        self.load_s = 0.0  # seconds spent reading the checkpoints, when loaded from files
        if use_cuda_graph is None:
            use_cuda_graph = graphs_enabled(self.device)
        self.stt: CallerStt | None = None
        if stt is not None:
            if stt_tokenizer is None:
                raise ValueError(f"{name}: an ASR model needs its tokenizer")
            codes = torch.zeros(
                (n_slots, self.mimi.encode_codebooks), dtype=torch.long, device=self.device
            )
            self.stt = CallerStt(
                stt,
                stt_tokenizer,
                n_slots,
                codes=codes,
                flags=self._flags_dev,
                out_tokens=self._out_dev[:, FRAME_SAMPLES + 1],
                out_end_of_turn=self._out_dev[:, FRAME_SAMPLES + 2],
                use_cuda_graph=use_cuda_graph,
                kv_dtype=kv_dtype,  # an 8-bit LM cache: the STT's is 8-bit too
            )
            if kv_dtype is not None and stt.attention is None:
                stt.attention = lm.attention  # the LM's kernel for that cache (CUDA)
            # the LM's fused (compiled) step arithmetic, in the STT's own compiled graphs
            stt.set_compiled(lm.kernels.is_compiled)
        self._graphs: TickGraphs | None = None
        if use_cuda_graph:
            buckets = kv_buckets(lm.config.context, lm.kv_block)
            self._graphs = TickGraphs(self._device_tick, buckets, self.device)
        self.capture_s = 0.0
        # set by warm-up on CUDA (measured): calls whose worst tick stays within the frame
        self.realtime_slots: int | None = None
        self.worst_tick_ms: tuple[float, float] | None = None  # (p50, max), CUDA graphs only

    # --- TickModel ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def max_slots(self) -> int:
        return self.n_slots

    def batch_rows(self, highest_active: int) -> int:
        # one fixed batch: every row's numerics stay the same whoever else is in the batch
        return self.n_slots

    @property
    def uses_cuda_graphs(self) -> bool:
        return self._graphs is not None

    def warmup(self) -> None:
        """Eager idle ticks, then (CUDA) graph capture: before any call joins."""
        idle = np.zeros(self.n_slots, dtype=bool)  # nothing advances: states stay clean
        frames = np.zeros((self.n_slots, FRAME_SAMPLES), dtype=np.float32)
        graphs, self._graphs = self._graphs, None
        stt_graphs = self.stt.detach_graphs() if self.stt is not None else None
        try:
            for _ in range(WARMUP_STEPS):
                self.step(frames, idle, self.n_slots)  # eager; leaves every flag at 0
            if graphs is not None:
                with torch.inference_mode():
                    self.capture_s = graphs.capture()
                    if stt_graphs is not None:
                        self.capture_s += stt_graphs.capture()
                if self._reanchor is not None:
                    self.capture_s += self._reanchor.capture()
                self.capture_s += self.text_pass.capture()
                self._is_text_pass_warm = True
        finally:
            self._graphs = graphs
            if self.stt is not None:
                self.stt.attach_graphs(stt_graphs)
        if graphs is not None:
            for _ in range(WARMUP_STEPS):
                self.step(frames, idle, self.n_slots)  # replays
            try:
                self._measure_admission(frames)
            except Exception:  # a measurement must not stop the engine from serving
                log.exception("engine %s: could not time the worst-case tick", self._name)
            self._time_text_passes()

    def _time_text_passes(self) -> None:
        """Time every fixed shape of the per-call prompt pass (before any call: they write only
        its workspace), for ``call_prompt_cost_s``: the engine's pacing then knows what passes
        of several calls cost before it has run one."""
        if not self.text_pass.is_captured:
            return
        try:
            with self._prefill_lock:
                passes = self.text_pass.time_passes(TEXT_PASS_REPEATS)
        except Exception:  # a measurement must not stop the engine from serving
            self.text_pass.pass_ms.clear()
            log.exception("engine %s: could not time the per-call prompt passes", self._name)
            return
        log.info(
            "engine %s: per-call prompt passes (calls x text positions): %s",
            self._name,
            ", ".join(f"{r}x{t} {ms:.1f} ms" for (r, t), ms in sorted(passes.items())),
        )

    def _measure_admission(self, frames: npt.NDArray[np.float32]) -> None:
        """Time the worst tick (every window full) with 1 row and with all rows active, then
        set ``realtime_slots``: the calls whose worst tick stays within the frame. Runs before
        any call joins and resets every row afterwards (what the timed steps wrote is never
        read again). Idle rows cost less than active ones (they attend to one column), so the
        rows are really active here."""
        state, lm, n = self.state, self.lm, self.n_slots
        full = 2 * lm.config.context

        def worst(rows: int) -> list[float]:
            active = np.zeros(n, dtype=bool)
            active[:rows] = True
            times = []
            for _ in range(ADMISSION_TICKS):
                state.positions_host[:] = full
                state.positions.fill_(full)
                if self.stt is not None:
                    self.stt.set_positions(2 * self.stt.config.context)
                started = time.perf_counter()
                self.step(frames, active, n)
                times.append((time.perf_counter() - started) * 1000.0)
            return times

        state.tokens.fill_(0)  # rows never loaded hold 'ungenerated' ids: give them real ones
        one = worst(1)
        every = worst(n) if n > 1 else one
        if self._reanchor is not None:  # a re-anchor's chunk follows the tick in its frame
            chunk_ms = self._reanchor.time_chunk(ADMISSION_TICKS)
            one = [t + chunk_ms for t in one]
            every = [t + chunk_ms for t in every]
        with torch.inference_mode():
            for i in range(n):
                lm.reset_slot(state, i)
            self.mimi.reset_slots(torch.ones(n, dtype=torch.bool, device=self.device))
            if self.stt is not None:
                self.stt.reset_all()
        self.worst_tick_ms = (float(np.median(every)), max(every))
        self.realtime_slots = realtime_slots(n, max(one), max(every), float(FRAME_MS))
        log.info(
            "engine %s: %d slots fit; worst-case tick (every window full) p50 %.1f ms, "
            "max %.1f ms with %d calls (%.1f ms with 1): admitting %d calls (tick <= %d ms)",
            self._name,
            n,
            self.worst_tick_ms[0],
            self.worst_tick_ms[1],
            n,
            max(one),
            self.realtime_slots,
            FRAME_MS,
        )

    def prepare_persona(self, prompt: PersonaPrompt) -> object:
        voice = self.voices.resolve(prompt)
        ids = self.tokenizer.encode(system_prompt_text(prompt.text_prompt))
        frames = voice.n_frames + 12 + len(ids)
        context = self.lm.config.context
        if frames >= context:
            raise PersonaError(
                f"persona {prompt.key}: prompt of {frames} frames (voice {voice.n_frames}, "
                f"text {len(ids)} tokens) does not fit the {context}-frame context"
            )
        with self._prefill_lock, torch.inference_mode():
            state = self.lm.prefill(voice, ids)
            if self._is_cuda and not self._is_text_pass_warm:
                # the first per-call pass loads its kernels (lazily, on first use): here, not
                # between two ticks where the engine's pacing has no measurement of it yet
                self.text_pass.prefill([state], [ids])
                torch.cuda.current_stream(self.device).synchronize()
                self._is_text_pass_warm = True
            return state

    def prepare_calls(self, requests: Sequence[tuple[object, str]]) -> list[object]:
        """Per-call prompt states, in one batched pass: each request is (the persona's state
        from ``prepare_persona``, the call's own text prompt). The voice phases are the
        persona's, reused; only the text phases are computed. A text too long for the window
        gets its persona's state back (logged). Engine thread, between ticks."""
        out: list[object] = []
        batch: list[tuple[int, PromptState, list[int]]] = []
        context = self.lm.config.context
        for state, text in requests:
            if not isinstance(state, PromptState):
                raise TypeError(f"{self._name}: expected a PromptState, got {type(state)}")
            ids = self.tokenizer.encode(system_prompt_text(text))
            frames = state.voice_positions + len(ids) + SILENCE_FRAMES
            if frames >= context:
                log.warning(
                    "engine %s: a per-call prompt of %d frames does not fit the %d-frame "
                    "window: the call starts on its persona's prompt",
                    self._name,
                    frames,
                    context,
                )
                out.append(state)
                continue
            out.append(None)
            batch.append((len(out) - 1, state, ids))
        if batch:
            with self._prefill_lock, torch.inference_mode():
                states = self.text_pass.prefill([p for _, p, _ in batch], [i for *_, i in batch])
            # not synchronized here: the engine loads the calls next, and those launches
            # overlap the pass on the device; ``reset_slots`` (or ``synchronize``, when every
            # call left meanwhile) waits for both, so the tick after does not pay for them
            for (at, persona, ids), state in zip(batch, states, strict=True):
                out[at] = _CallPrompt(state, persona, ids)
        return out

    def synchronize(self) -> None:
        """Wait for the device's queued work (a per-call pass whose calls all left before
        their load): between ticks, so that the next tick does not pay for it."""
        if self._is_cuda:
            torch.cuda.current_stream(self.device).synchronize()

    def call_prompt_cost_s(self, calls: int, tokens: int) -> float | None:
        """Seconds of the bare fixed-shape passes ``prepare_calls`` runs for ``calls`` prompts
        of at most ``tokens`` tokens, as timed at warm-up (CUDA graphs: ``TextPhasePass.
        time_passes``); None when not timed or a pass fits no shape (the engine's pacing then
        falls back to its fitted line)."""
        text, steps, total_ms = self.text_pass, tokens + SILENCE_FRAMES, 0.0
        if not text.pass_ms:
            return None
        while calls > 0:
            n = min(calls, text.rows[-1])
            shape = text.shape_for(n, steps)
            ms = None if shape is None else text.pass_ms.get(shape)
            if ms is None:
                return None
            total_ms += ms
            calls -= n
        return total_ms / 1000.0

    def call_prompt_size(self, calls: int, tokens: int) -> int:
        """Text positions ``prepare_calls`` computes for ``calls`` prompts of at most ``tokens``
        tokens, padding included (its passes' fixed shapes): the unit of the engine's pacing."""
        text, steps, size = self.text_pass, tokens + SILENCE_FRAMES, 0
        while calls > 0:
            n = min(calls, text.rows[-1])
            shape = text.shape_for(n, steps)
            size += n * steps if shape is None else shape[0] * shape[1]
            calls -= n
        return size

    def reset_slot(
        self, index: int, persona_state: object, sampling: SamplingParams, seed: int
    ) -> None:
        self.reset_slots([(index, persona_state, sampling, seed)])

    def reset_slots(self, items: Sequence[tuple[int, object, SamplingParams, int]]) -> None:
        """``reset_slot`` of several joining calls at once (distinct rows): one batched LM
        load (``LM.load_slots``), one Mimi reset of all their rows, the STT's rows together and
        one device synchronize: on a GPU a load is bound by kernel launches, and this costs
        about as many as one call's. Touches no other row. Engine thread, between ticks."""
        if not items:
            return
        loads: list[SlotLoad] = []
        kept_all: list[PromptState | _CallPrompt] = []
        for index, persona_state, sampling, seed in items:
            kept, prompt = self._kept_and_prompt(persona_state)
            loads.append((index, prompt, sampling, seed))
            kept_all.append(kept)
        indices = [index for index, *_ in items]
        with torch.inference_mode():
            # host values go pinned (``to_device``): these launches queue behind the pass
            # that computed the prompts instead of waiting for it
            mask = np.zeros(self.n_slots, dtype=bool)
            mask[indices] = True
            self._reset_mask.copy_(to_device(torch.from_numpy(mask), self.device))
            if self.stt is not None:
                self.stt.reset_slots(indices)
            self.mimi.reset_slots(self._reset_mask)
            self.lm.load_slots(self.state, loads)
        for index, kept in zip(indices, kept_all, strict=True):
            self._prompts[index] = kept
            self._cannot_reanchor[index] = False
            if self._job is not None and self._job.slot == index:
                self._job = None  # the call it was for has left
            self._text_streams[index].reset()
        if self._is_cuda and any(isinstance(kept, _CallPrompt) for kept in kept_all):
            # loaded between ticks (after its pass): its cost is that window's, not the tick's
            torch.cuda.current_stream(self.device).synchronize()

    def _kept_and_prompt(
        self, persona_state: object
    ) -> tuple[PromptState | _CallPrompt, PromptState]:
        """What a slot keeps of a joining call's state (a call's own prompt: what rebuilds it
        when re-anchoring, not its KV) and the prompt to load."""
        if isinstance(persona_state, _CallPrompt):
            assert persona_state.state is not None
            return persona_state.compact(), persona_state.state
        if isinstance(persona_state, PromptState):
            return persona_state, persona_state
        raise TypeError(f"{self._name}: expected a PromptState, got {type(persona_state)}")

    @torch.inference_mode()
    def step(
        self, pcm_in: npt.NDArray[np.float32], active: npt.NDArray[np.bool_], n_rows: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        n = self.n_slots
        frames = self._in_host_np[: n * FRAME_SAMPLES].reshape(n, FRAME_SAMPLES)
        np.copyto(frames, pcm_in[:n])
        active_host = active[:n]
        np.copyto(self._in_host_np[n * FRAME_SAMPLES :], active_host, casting="unsafe")
        self._in_dev.copy_(self._in_host, non_blocking=self._is_cuda)
        lm = self.lm
        kv_len = lm.kv_len_for(self.state, active_host)
        if self._graphs is not None:
            self._graphs.run(kv_len)
        else:
            self._device_tick(kv_len)
        lm.note_step(self.state, active_host)
        if self.stt is not None:
            self.stt.run(active_host)
        self._out_host.copy_(self._out_dev, non_blocking=self._is_cuda)
        if self._is_cuda:
            torch.cuda.current_stream(self.device).synchronize()
        out = self._out_host_np
        np.copyto(self._tokens, out[:, FRAME_SAMPLES], casting="unsafe")
        if self.stt is not None:
            self.stt.read(out[:, FRAME_SAMPLES + 1], out[:, FRAME_SAMPLES + 2])
        return self._out_host_np[:, :FRAME_SAMPLES], self._tokens

    @torch.inference_mode()
    def _device_tick(self, kv_len: int) -> None:
        """The device part of a tick: static buffers in, static buffers out (graph body)."""
        active_dev = self._flags_dev > 0.5
        codes = self.mimi.encode_step(self._pcm_dev, active_dev)
        if self.stt is not None:
            self.stt.codes.copy_(codes)
        user_codes = codes[:, : self._n_user]
        out = self.lm.step_tensors(self.state, user_codes, active_dev, kv_len)
        valid = out.is_valid
        # rows without a frame carry placeholder ids (initial/unknown): give Mimi a real code
        codes = torch.where(valid[:, None], out.agent_codes, 0)
        pcm = self.mimi.decode_step(codes, active_dev & valid)
        self._out_dev[:, :FRAME_SAMPLES] = torch.where(valid[:, None], pcm.clamp(-1.0, 1.0), 0.0)
        self._out_dev[:, FRAME_SAMPLES] = torch.where(valid, out.text_tokens.float(), self._pad)

    @property
    def reanchors_enabled(self) -> bool:
        return self._reanchor is not None

    def between_ticks(self, active: npt.NDArray[np.bool_]) -> list[tuple[int, ReanchorReport]]:
        """Advance the re-anchor in progress by one chunk (or start one for a slot that is
        due); returns the slot re-anchored now, if any, with its report. Engine thread only."""
        anchor = self._reanchor
        if anchor is None:
            return []
        job = self._job
        if job is not None and not active[job.slot]:
            job = self._job = None
        position = -1
        if job is None:
            job = self._job = self._next_job(anchor, active)
            if job is None:
                return []
            position = int(self.state.positions_host[job.slot])
            if job.is_rebuilt and position < self.lm.config.context - 1:
                # the call's own prompt was prefilled in this window (a pass like a chunk):
                # the first chunk waits for the next one, so no window does both
                return []
        if position < 0:
            position = int(self.state.positions_host[job.slot])
        # the prompt's first frame leaves at the step at position `context`: never let it
        # (a late tick is better than a call that loses its persona)
        whole = position >= self.lm.config.context - 1
        if not anchor.advance(job, whole):
            return []
        after = anchor.finish(job)
        self._job = None
        report = ReanchorReport(
            prompt_frames=job.prompt_frames,
            kept_frames=position - job.start,
            chunks=job.chunks,
            compute_ms=job.compute_s * 1000.0,
            position_before=position,
            position_after=after,
        )
        return [(job.slot, report)]

    def _next_job(self, anchor: Reanchorer, active: npt.NDArray[np.bool_]) -> ReanchorJob | None:
        """The due slot closest to losing its prompt, if any."""
        positions = self.state.positions_host
        best = -1
        for i in range(self.n_slots):
            if active[i] and not self._cannot_reanchor[i] and self._prompts[i] is not None:
                if anchor.is_due(i) and (best < 0 or positions[i] > positions[best]):
                    best = i
        if best < 0:
            return None
        kept = self._prompts[best]
        assert kept is not None
        rebuild_s = 0.0
        if isinstance(kept, _CallPrompt):
            # the call's own prompt, rebuilt from the persona's voice phases and its text (a
            # pass the size of a join's: the window that does it runs no chunk)
            started = time.perf_counter()
            with self._prefill_lock, torch.inference_mode():
                (prompt,) = self.lm.prefill_text_phases([kept.persona], [kept.text_ids])
            if self._is_cuda:
                torch.cuda.current_stream(self.device).synchronize()  # its cost, not the tick's
            rebuild_s = time.perf_counter() - started
        else:
            prompt = kept
        job = anchor.begin(best, prompt)
        if job is not None and rebuild_s:
            job.is_rebuilt = True
            job.compute_s += rebuild_s
        if job is None:
            self._cannot_reanchor[best] = True
            log.warning(
                "engine %s: slot %d cannot be re-anchored: its prompt of %d frames leaves no "
                "room in the %d-frame window",
                self._name,
                best,
                prompt.length,
                self.lm.config.context,
            )
        return job

    def text_piece(self, index: int, token: int) -> str:
        return self._text_streams[index].push(token)

    @property
    def caller_delay_frames(self) -> int:
        """Frames by which the caller STT's text trails the caller's audio (0: no STT)."""
        return 0 if self.stt is None else self.stt.config.delay_frames

    def caller_outputs(
        self,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]] | None:
        """This tick's caller STT text tokens and end-of-turn probabilities per row (-1: the
        model has no head), or None without an STT. Valid until the next step."""
        if self.stt is None:
            return None
        return self.stt.tokens, self.stt.end_of_turn

    def caller_piece(self, index: int, token: int) -> str:
        """Text that row ``index``'s caller token completes (the slot's streaming decode)."""
        return "" if self.stt is None else self.stt.text_piece(index, token)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(system_prompt_text(text)))

    def close(self) -> None:
        """Free this model's slot state and graphs (the weights may be shared: kept)."""
        self._graphs = None
        self.stt = None
        self.text_pass.close()
        if self._reanchor is not None:
            self._reanchor.close()
            self._reanchor = None
            self._job = None
        for name in ("state", "mimi", "_in_dev", "_out_dev"):
            if hasattr(self, name):
                delattr(self, name)
