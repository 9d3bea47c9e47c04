"""Per-call prompts' text phases as fixed-shape passes, replayed from CUDA graphs.

``LM.prefill_text_phases`` sizes its pass to its calls (eager): on an H200 that pass was bound
by kernel launches, 10-27 ms whatever its size, while a tick at 80 calls leaves about 27 ms
of the 80 ms frame. Here a pass has one of a few fixed shapes, ``rows`` x ``steps`` (buckets:
the smallest that holds the calls and their longest text phase), over a preallocated
workspace of ``columns`` key positions per row; the rest of a row and unused rows are padding
(masked: no real query reads what padding writes). Each shape is captured once as a CUDA
graph (``capture``, at warm-up, before any call) and replayed with new inputs, copied in one
transfer from a pinned host buffer, as the re-anchor chunk is (``reanchor``). On the CPU, or
without graphs, the same fixed-shape function runs eagerly (the tests exercise it).

A pass's calls: each row gets its persona's voice-phase keys/values copied into the workspace,
then the graph runs, then each call's keys/values and hidden state are copied out into its own
``PromptState`` (the workspace is reused by the next pass). Calls that do not fit a shape (a
text phase longer than the largest ``steps``, or past ``columns``) are left to
``LM.prefill_text_phases``; more calls than ``rows`` take several passes.

Usage (the tick model does this)::

    text = TextPhasePass(lm, rows=(1, 2, 3, 4), steps=(64, 128, 256, 384), columns=768)
    text.capture()                                  # CUDA: once, before calls
    states = text.prefill([persona] * 3, [ids_a, ids_b, ids_c])   # between ticks

Owns: ``TextPhasePass``. Imports torch and the lm package.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence

import torch

from voicegate.engine._transfer import to_device
from voicegate.engine.graphs import TickGraphs
from voicegate.engine.lm.config import LMConfig
from voicegate.engine.lm.prompt import PromptState
from voicegate.engine.lm.runtime import LM

__all__ = ["DEFAULT_COLUMNS", "DEFAULT_ROWS", "DEFAULT_STEPS", "TextPhasePass", "text_pass_bytes"]

DEFAULT_ROWS = (1, 2, 3, 4)  # calls per pass
# text-phase positions per row (a text of n tokens has n + 6): a 200-token prompt fits 256;
# (longer texts take ``LM.prefill_text_phases``)
DEFAULT_STEPS = (64, 128, 256, 384)
DEFAULT_COLUMNS = 768  # workspace key positions per row: voice phases + the largest steps


def text_pass_bytes(
    config: LMConfig,
    dtype: torch.dtype,
    rows: Sequence[int] = DEFAULT_ROWS,
    steps: Sequence[int] = DEFAULT_STEPS,
    columns: int = DEFAULT_COLUMNS,
) -> int:
    """Device memory of a ``TextPhasePass``: its workspace and hidden states, and an estimate
    of the largest pass's activations (its graphs' memory pool): what a slot budget sets
    aside for it."""
    c = config
    columns = min(columns, c.context)
    b, t = max(rows), max(s for s in steps if s < columns)
    item = torch.empty((), dtype=dtype).element_size()
    workspace = c.num_layers * 2 * b * c.num_heads * columns * c.head_dim * item
    hidden = b * t * c.dim * item
    # per position: q/k/v, the gated FFN's input and halves, residuals, float32 norms, and
    # one head's row of masked attention scores at a time per head (float32)
    per_position = (3 * c.dim + 3 * c.ffn_inner + 4 * c.dim) * item
    per_position += 2 * c.dim * 4 + c.num_heads * columns * 4
    return workspace + hidden + b * t * per_position


class TextPhasePass:
    """Fixed-shape text-phase passes over one workspace (one pass at a time)."""

    def __init__(
        self,
        lm: LM,
        *,
        rows: Sequence[int] = DEFAULT_ROWS,
        steps: Sequence[int] = DEFAULT_STEPS,
        columns: int = DEFAULT_COLUMNS,
    ) -> None:
        c = lm.config
        columns = min(columns, c.context)
        self.rows = sorted(set(rows))
        self.steps = sorted(s for s in set(steps) if s < columns)
        if not self.rows or self.rows[0] < 1:
            raise ValueError(f"text pass: rows must be >= 1, got {list(rows)}")
        if not self.steps or self.steps[0] < 1:
            raise ValueError(f"text pass: steps {list(steps)} do not fit {columns} columns")
        self.lm = lm
        self.columns = columns
        b, t = self.rows[-1], self.steps[-1]
        device = lm.device
        self.workspace = torch.zeros(
            c.num_layers, 2, b, c.num_heads, columns, c.head_dim, device=device, dtype=lm.dtype
        )
        # a pass's inputs: every row's delayed tokens [B, 17, T], then every row's start
        is_cuda = device.type == "cuda"
        n_tokens = b * c.num_codebooks * t
        self._host = torch.zeros(n_tokens + b, dtype=torch.int64, pin_memory=is_cuda)
        self._host_np = self._host.numpy()
        self._host_tokens = self._host_np[:n_tokens].reshape(b, c.num_codebooks, t)
        self._host_starts = self._host_np[n_tokens:]
        self._index = torch.zeros(n_tokens + b, dtype=torch.int64, device=device)
        self._tokens = self._index[:n_tokens].view(b, c.num_codebooks, t)
        self._starts = self._index[n_tokens:]
        self._steps = torch.arange(t, device=device)
        self._key_positions = torch.arange(columns, device=device)
        self._hidden = torch.zeros(b, t, c.dim, device=device, dtype=lm.dtype)
        self._graphs: dict[int, TickGraphs] = {}
        # recorded after a pass's inputs left the pinned host buffer (CUDA)
        self._copied: torch.cuda.Event | None = (
            torch.cuda.Event() if is_cuda else None  # type: ignore[no-untyped-call]
        )
        self.pass_ms: dict[tuple[int, int], float] = {}  # measured by ``time_passes``
        self.eager_passes = 0  # passes that fit no shape (``LM.prefill_text_phases``)

    @property
    def is_captured(self) -> bool:
        return bool(self._graphs)

    def shape_for(self, calls: int, steps: int) -> tuple[int, int] | None:
        """The pass shape (rows, steps) for ``calls`` rows whose longest text phase has
        ``steps`` positions; None if none holds them (more calls than rows, or too long)."""
        rows = next((r for r in self.rows if r >= calls), None)
        length = next((s for s in self.steps if s >= steps), None)
        return None if rows is None or length is None else (rows, length)

    @torch.inference_mode()
    def capture(self) -> float:
        """Capture every shape as a CUDA graph (before any call); returns the seconds taken."""
        if self.lm.device.type != "cuda":
            raise RuntimeError("text pass: CUDA graphs need a CUDA device")
        started = time.perf_counter()
        self._host_np[:] = 0  # rows at position 0 with token 0: junk in the workspace only
        self._index.copy_(self._host)
        pool = torch.cuda.graph_pool_handle()  # one pool: the passes never run at once
        for rows in self.rows:
            graph = TickGraphs(functools.partial(self._pass, rows), self.steps, self.lm.device)
            graph.capture(pool)
            self._graphs[rows] = graph
        return time.perf_counter() - started

    @torch.inference_mode()
    def time_passes(self, repeats: int) -> dict[tuple[int, int], float]:
        """The slowest of ``repeats`` runs of every shape in ms (before any call: they write
        only the workspace); kept in ``pass_ms``."""
        self._host_np[:] = 0
        self._index.copy_(self._host)
        is_cuda = self.lm.device.type == "cuda"
        for rows in self.rows:
            for steps in self.steps:
                worst = 0.0
                for _ in range(repeats):
                    if is_cuda:
                        torch.cuda.synchronize(self.lm.device)
                    started = time.perf_counter()
                    self._run(rows, steps)
                    if is_cuda:
                        torch.cuda.synchronize(self.lm.device)
                    worst = max(worst, (time.perf_counter() - started) * 1000.0)
                self.pass_ms[(rows, steps)] = worst
        return dict(self.pass_ms)

    def close(self) -> None:
        """Free the workspace and the captured passes (their bodies refer back to self)."""
        self._graphs = {}
        self.workspace = self.workspace.new_empty(0)

    def _run(self, rows: int, steps: int) -> None:
        graph = self._graphs.get(rows)
        if graph is not None:
            graph.run(steps)
        else:
            self._pass(rows, steps)

    def _pass(self, rows: int, steps: int) -> None:
        """One fixed-shape pass from ``_index`` (a graph's body on CUDA)."""
        model = self.lm.model
        x = model.embed_tokens(self._tokens[:rows, :, :steps])
        at = self._starts[:rows, None] + self._steps[None, :steps]
        hidden = model.temporal_extend_rows_at(
            x, self.workspace[:, :, :rows], at, self._key_positions
        )
        self._hidden[:rows, :steps] = hidden

    @torch.inference_mode()
    def prefill(
        self, prompts: Sequence[PromptState], texts: Sequence[Sequence[int]]
    ) -> list[PromptState]:
        """Per-call prompts, ``rows[-1]`` calls per pass: equals ``LM.prefill_text_phases``
        (which computes the calls of a pass that fits no shape: ``eager_passes``)."""
        lm = self.lm
        grids, starts = lm.text_phase_grids(prompts, texts)
        out: list[PromptState] = []
        most = self.rows[-1]
        for first in range(0, len(grids), most):
            part = slice(first, first + most)
            added = max(g.shape[1] - 1 for g in grids[part])
            shape = self.shape_for(len(grids[part]), added)
            if shape is None or max(starts[part]) + shape[1] > self.columns:
                self.eager_passes += 1
                out.extend(lm.prefill_text_phases(prompts[part], texts[part]))
            else:
                out.extend(self._prefill_pass(shape, prompts[part], grids[part], starts[part]))
        return out

    def _prefill_pass(
        self,
        shape: tuple[int, int],
        prompts: Sequence[PromptState],
        grids: list[torch.Tensor],
        starts: list[int],
    ) -> list[PromptState]:
        rows, steps = shape
        added = [g.shape[1] - 1 for g in grids]
        if self._copied is not None:  # the last pass's copy out of the host buffer is done
            self._copied.synchronize()
        tokens, host_starts = self._host_tokens, self._host_starts
        tokens[:rows, :, :steps] = -1
        host_starts[:rows] = 0
        for i, (grid, start) in enumerate(zip(grids, starts, strict=True)):
            tokens[i, :, : added[i]] = grid[:, :-1].numpy()
            host_starts[i] = start
        self._index.copy_(self._host, non_blocking=True)
        if self._copied is not None:
            self._copied.record()
        for i, (prompt, start) in enumerate(zip(prompts, starts, strict=True)):
            self.workspace[:, :, i, :, :start] = prompt.kv[:, :, :, :start]
        self._run(rows, steps)
        out = []
        device = self.lm.device
        for i, (prompt, grid, start) in enumerate(zip(prompts, grids, starts, strict=True)):
            n = start + added[i]
            out.append(
                PromptState(
                    kv=self.workspace[:, :, i, :, :n].clone(),
                    hidden=self._hidden[i, added[i] - 1].clone(),
                    tokens=to_device(grid[:, added[i] - 1 :].contiguous(), device),
                    length=n,
                    voice_frames=prompt.voice_frames,
                )
            )
        # not synchronized: the caller loads the calls meanwhile (their launches overlap this
        # pass on the device) and waits for both; the next pass waits on ``_copied`` before
        # it writes the host buffer again
        return out
