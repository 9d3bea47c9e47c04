"""Re-anchoring: a long call's context rebuilt as a call that has just started.

The model attends to its last ``context`` (3000) positions. A call's persona prompt (voice,
silence, ``<system>`` text, silence: N positions) sits at positions 0..N-1, so after
``context`` positions it would slide out of the window and the agent would lose its role and
voice. Before that, the slot is re-anchored: its keys/values become those of a fresh prefill of
the persona prompt (the cached ``PromptState``) followed by the last frames of the
conversation, every one of the 17 input rows exactly as the slot was stepped with it (the
delayed layout, from ``LMState.history``), at positions N, N+1, ... The model sees again what
it was trained on: a prompt, then a conversation.

The prefill runs in chunks between ticks into a workspace (one slot's KV ring), while the call
keeps stepping in its old window; the chunks catch up with the live position and, between two
ticks, the workspace is copied into the slot's ring and the slot's position moves from P to
N + (frames kept). Its delayed-token cache moves with it; sampling state (seed, counter,
settings) and the Mimi state are not touched, so the audio goes on without a seam. Neighbour
rows are not touched either.

Every chunk is one pass of exactly ``chunk_frames`` positions attending to the whole workspace
(masked), whatever is left to do: the last chunk of a job is padded (its padding's keys land
where the next job writes first, and are masked until then). Fixed shapes let the pass be one
CUDA graph, captured at warm-up (``capture``): on an H200 an eager chunk was launch-bound, about
12 ms whatever its size, with outliers to 60-80 ms from kernel launches and the allocator, while
the tick at 80 calls leaves about 27 ms of the 80 ms frame.

Usage (the tick model does this, one job at a time)::

    anchor = Reanchorer(lm, state, keep_frames=1500, chunk_frames=128)
    anchor.capture()                                # CUDA: once, before calls
    if anchor.is_due(state, slot):
        job = anchor.begin(slot, prompt)            # between ticks
    while not anchor.advance(job):                  # one chunk between each pair of ticks
        ...tick...
    anchor.finish(job)                              # caught up: swap, between ticks

Owns: ``Reanchorer``, ``ReanchorJob``. Imports torch and the lm package.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from voicegate.engine.graphs import TickGraphs
from voicegate.engine.lm._ops import quantize_vectors
from voicegate.engine.lm.prompt import PromptState
from voicegate.engine.lm.runtime import LM
from voicegate.engine.lm.state import LMState

__all__ = ["DEFAULT_CHUNK_FRAMES", "DEFAULT_MARGIN_FRAMES", "ReanchorJob", "Reanchorer"]

# Re-anchor this many positions before the prompt's first frame would leave the window: room
# for a job that waits behind others and for the chunks to catch up (20 s at 12.5 Hz).
DEFAULT_MARGIN_FRAMES = 250
# Positions prefilled per chunk (one chunk after each tick): a 1500-frame rebuild takes 12 ticks.
DEFAULT_CHUNK_FRAMES = 128


@dataclass(slots=True)
class ReanchorJob:
    """One slot's rebuild in progress (positions are the slot's, before the swap)."""

    slot: int
    prompt: PromptState
    start: int  # first position of the conversation kept
    done: int  # positions start..done-1 are prefilled in the workspace
    chunks: int = 0
    compute_s: float = 0.0  # time spent in ``advance`` and ``finish`` (and on its prompt)
    is_rebuilt: bool = False  # its prompt was prefilled when it began (a call's own prompt)

    @property
    def prompt_frames(self) -> int:
        return self.prompt.length

    def workspace_position(self, position: int) -> int:
        """Where a slot position ``>= start`` lands after the swap."""
        return self.prompt.length + position - self.start


class Reanchorer:
    """Rebuilds slots' contexts; holds one slot-sized KV workspace (one job at a time)."""

    def __init__(
        self,
        lm: LM,
        state: LMState,
        *,
        keep_frames: int,
        margin_frames: int = DEFAULT_MARGIN_FRAMES,
        chunk_frames: int = DEFAULT_CHUNK_FRAMES,
    ) -> None:
        c = lm.config
        if keep_frames < 1:
            raise ValueError(f"re-anchor: keep_frames must be >= 1, got {keep_frames}")
        if not 0 < margin_frames < c.context // 2:
            raise ValueError(
                f"re-anchor: margin of {margin_frames} frames must be in 1..{c.context // 2 - 1}"
            )
        # a job lands a margin below the trigger, so a padded chunk of at most a margin fits
        if not 0 < chunk_frames <= margin_frames:
            raise ValueError(
                f"re-anchor: chunk of {chunk_frames} frames must be in 1..{margin_frames} "
                "(the margin)"
            )
        self.lm = lm
        self.state = state
        self.keep_frames = keep_frames
        self.margin_frames = margin_frames
        self.chunk_frames = chunk_frames
        device = lm.device
        self.workspace = torch.zeros(
            c.num_layers, 2, c.num_heads, c.context, c.head_dim, device=device, dtype=lm.dtype
        )
        # a chunk's inputs: [slot, first workspace position, the chunk's history columns...],
        # written on the host and copied in one transfer before the pass
        is_cuda = device.type == "cuda"
        self._host = torch.zeros(chunk_frames + 2, dtype=torch.int64, pin_memory=is_cuda)
        self._host_np = self._host.numpy()
        self._steps_np = np.arange(chunk_frames, dtype=np.int64)
        self._index = torch.zeros(chunk_frames + 2, dtype=torch.int64, device=device)
        self._steps = torch.arange(chunk_frames, device=device)
        self._key_positions = torch.arange(c.context, device=device)
        self._graph: TickGraphs | None = None

    @torch.inference_mode()
    def capture(self) -> float:
        """Capture the chunk pass as a CUDA graph (before any job); returns the seconds taken."""
        if self.lm.device.type != "cuda":
            raise RuntimeError("re-anchor: CUDA graphs need a CUDA device")
        graph = TickGraphs(lambda _frames: self._chunk_pass(), [self.chunk_frames], self.lm.device)
        seconds = graph.capture()
        self._graph = graph
        return seconds

    def close(self) -> None:
        """Free the workspace and the captured pass (the graph's body refers back to self)."""
        self._graph = None
        self.workspace = self.workspace.new_empty(0)

    @torch.inference_mode()
    def time_chunk(self, repeats: int) -> float:
        """The slowest of ``repeats`` chunk passes in ms (before any job: they write only the
        workspace), what a tick with a re-anchor in progress adds to its frame."""
        self._host_np[:] = 0
        self._index.copy_(self._host)
        worst = 0.0
        for _ in range(repeats):
            if self.lm.device.type == "cuda":
                torch.cuda.synchronize(self.lm.device)
            started = time.perf_counter()
            if self._graph is not None:
                self._graph.run(self.chunk_frames)
            else:
                self._chunk_pass()
            if self.lm.device.type == "cuda":
                torch.cuda.synchronize(self.lm.device)
            worst = max(worst, (time.perf_counter() - started) * 1000.0)
        return worst

    def _chunk_pass(self) -> None:
        """One fixed-shape pass from ``_index`` (the graph's body on CUDA)."""
        index = self._index
        inputs = self.state.history.index_select(0, index[:1]).index_select(2, index[2:])
        x = self.lm.model.embed_tokens(inputs, has_absent=False)
        at = index[1] + self._steps
        self.lm.model.temporal_extend_at(x, self.workspace, at, self._key_positions)

    @property
    def trigger_position(self) -> int:
        """A slot at this position or beyond is due (its prompt leaves at ``context``)."""
        return self.lm.config.context - self.margin_frames

    def kept_frames(self, prompt_frames: int, position: int) -> int:
        """Conversation frames a re-anchor at ``position`` keeps (0: it cannot re-anchor).

        At most ``keep_frames``, at most what the call has had, and few enough that the slot
        lands a margin below the trigger, so re-anchors do not follow each other at once.
        """
        room = self.trigger_position - self.margin_frames - prompt_frames
        return max(0, min(self.keep_frames, position - prompt_frames, room))

    def is_due(self, slot: int) -> bool:
        return int(self.state.positions_host[slot]) >= self.trigger_position

    @torch.inference_mode()
    def begin(self, slot: int, prompt: PromptState) -> ReanchorJob | None:
        """Start rebuilding ``slot`` (between ticks); None if the prompt leaves no room."""
        started = time.perf_counter()
        position = int(self.state.positions_host[slot])
        keep = self.kept_frames(prompt.length, position)
        if keep < 1:
            return None
        n = prompt.length
        self.workspace[:, :, :, :n] = prompt.kv
        job = ReanchorJob(slot, prompt, start=position - keep, done=position - keep)
        job.compute_s += time.perf_counter() - started
        return job

    @torch.inference_mode()
    def advance(self, job: ReanchorJob, whole: bool = False) -> bool:
        """Prefill one chunk (every position left when ``whole``, in one eager pass); True once
        caught up with the slot's live position (then ``finish`` before the next tick)."""
        started = time.perf_counter()
        c, state = self.lm.config, self.state
        position = int(state.positions_host[job.slot])
        todo = position - job.done
        if todo > 0:
            first = job.workspace_position(job.done)
            if job.workspace_position(position) > c.context:
                raise RuntimeError(f"re-anchor of slot {job.slot}: the workspace is full")
            if whole or first + self.chunk_frames > c.context:
                columns = torch.arange(job.done, position, device=self.lm.device) % c.context
                inputs = state.history[job.slot][:, columns]
                x = self.lm.model.embed_tokens(inputs[None], has_absent=False)
                self.lm.model.temporal_extend(x, self.workspace, first)
            else:
                todo = min(todo, self.chunk_frames)
                host = self._host_np
                host[0], host[1] = job.slot, first
                np.remainder(self._steps_np + job.done, c.context, out=host[2:])
                self._index.copy_(self._host, non_blocking=True)
                if self._graph is not None:
                    self._graph.run(self.chunk_frames)
                else:
                    self._chunk_pass()
            job.done += todo
            job.chunks += 1
        if self.lm.device.type == "cuda":
            torch.cuda.current_stream(self.lm.device).synchronize()  # its cost, not the tick's
        job.compute_s += time.perf_counter() - started
        return job.done == position

    @torch.inference_mode()
    def finish(self, job: ReanchorJob) -> int:
        """Swap the rebuilt context in (between ticks, caught up); returns the new position."""
        started = time.perf_counter()
        c, state, slot = self.lm.config, self.state, job.slot
        position = int(state.positions_host[slot])
        if job.done != position:
            raise RuntimeError(f"re-anchor of slot {slot}: {position - job.done} frames behind")
        new_position = job.workspace_position(position)
        rebuilt = self.workspace[:, :, :, :new_position]
        if state.kv_scales is None:
            state.kv[:, :, slot, :, :new_position] = rebuilt
        else:
            kq, scale = quantize_vectors(rebuilt, state.kv.dtype)
            state.kv[:, :, slot, :, :new_position] = kq
            state.kv_scales[:, :, slot, :, :new_position] = scale
        # the conversation's inputs move with it (the next re-anchor reads them)
        old = torch.arange(job.start, position, device=self.lm.device) % c.context
        moved = state.history[slot][:, old].clone()
        state.history[slot, :, job.prompt.length : new_position] = moved
        # the delayed-token cache: what sat at position P + d now sits at new_position + d
        ct = c.token_cache_size
        tokens = state.tokens[slot].clone()
        for d in range(ct):
            state.tokens[slot, :, (new_position + d) % ct] = tokens[:, (position + d) % ct]
        state.positions[slot] = new_position
        state.positions_host[slot] = new_position
        job.compute_s += time.perf_counter() - started
        return new_position
