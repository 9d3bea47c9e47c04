"""The caller STT's part of the engine tick: its state, its CUDA graphs, its output columns.

``TorchTickModel`` owns one ``CallerStt`` when an ASR model is configured. The tick's main
device body encodes the caller frames with Mimi once, with as many codebooks as the STT reads,
and leaves the codes in ``codes`` (a static buffer); ``run`` then steps the STT for every active
slot from those codes and writes each row's text token and end-of-turn probability into two
float32 columns of the tick's output buffer, so the one device-to-host copy of the tick
carries them. On CUDA the STT step is replayed from its own graphs, one per attention-length
bucket of its own window (``graphs``), captured at warm-up.

Owns: CallerStt. Imports torch, numpy, the stt runtime, graphs and the tokenizer.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch

from voicegate.engine.graphs import TickGraphs, kv_buckets
from voicegate.engine.stt.runtime import NO_END_OF_TURN, Stt
from voicegate.engine.tokenizer import PAD_ID, TextTokenizer

__all__ = ["CallerStt"]


class CallerStt:
    """The STT of every slot's caller audio (engine thread only; see the module docstring)."""

    def __init__(
        self,
        stt: Stt,
        tokenizer: TextTokenizer,
        n_slots: int,
        *,
        codes: torch.Tensor,
        flags: torch.Tensor,
        out_tokens: torch.Tensor,
        out_end_of_turn: torch.Tensor,
        use_cuda_graph: bool,
        kv_dtype: torch.dtype | None = None,
    ) -> None:
        c = stt.config
        if tokenizer.vocab_size != c.text_card:
            raise ValueError(
                f"ASR tokenizer {tokenizer.source}: {tokenizer.vocab_size} pieces, "
                f"the model expects {c.text_card}"
            )
        if codes.shape[1] < c.n_q:
            raise ValueError(f"ASR reads {c.n_q} codebooks; the encode gives {codes.shape[1]}")
        self.stt = stt
        self.config = c
        self.tokenizer = tokenizer
        self.state = stt.new_state(n_slots, kv_dtype)
        self.codes = codes  # [slots, >= n_q] long: written by the tick's encode
        self._flags = flags  # [slots] float32: 1.0 for active rows
        self._out_tokens = out_tokens  # [slots] float32 column of the tick's output buffer
        self._out_end_of_turn = out_end_of_turn
        self._streams = [tokenizer.stream() for _ in range(n_slots)]
        self.tokens = np.full(n_slots, PAD_ID, dtype=np.int64)
        self.end_of_turn = np.full(n_slots, NO_END_OF_TURN, dtype=np.float32)
        self._pad = torch.tensor(float(PAD_ID), device=stt.device)
        self._graphs: TickGraphs | None = None
        if use_cuda_graph:
            buckets = kv_buckets(c.context, stt.kv_block)
            self._graphs = TickGraphs(self._device_step, buckets, stt.device)

    @property
    def has_end_of_turn(self) -> bool:
        return self.config.has_end_of_turn

    def reset_slot(self, index: int) -> None:
        self.reset_slots([index])

    def reset_slots(self, indices: list[int]) -> None:
        """Fresh streams in rows ``indices`` (calls joined), in one write per buffer."""
        self.stt.reset_slots(self.state, indices)
        for index in indices:
            self._streams[index].reset()

    def reset_all(self) -> None:
        self.reset_slots(list(range(self.state.n_slots)))

    def set_positions(self, position: int) -> None:
        """Every row at ``position`` (warm-up timing of full windows; reset afterwards)."""
        self.state.positions.fill_(position)
        self.state.positions_host[:] = position

    def capture(self) -> float:
        """Capture the graphs (CUDA); the caller keeps every row inactive. Returns seconds."""
        return 0.0 if self._graphs is None else self._graphs.capture()

    def detach_graphs(self) -> TickGraphs | None:
        graphs, self._graphs = self._graphs, None
        return graphs

    def attach_graphs(self, graphs: TickGraphs | None) -> None:
        self._graphs = graphs

    @torch.inference_mode()
    def _device_step(self, kv_len: int) -> None:
        """Graph body: static codes/flags in, two static output columns out."""
        active = self._flags > 0.5
        out = self.stt.step_tensors(self.state, self.codes, active, kv_len)
        self._out_tokens.copy_(torch.where(active, out.text_tokens.float(), self._pad))
        self._out_end_of_turn.copy_(torch.where(active, out.end_of_turn, NO_END_OF_TURN))

    def run(self, active: npt.NDArray[np.bool_]) -> None:
        """Enqueue this tick's STT step (after the encode, before the output copy)."""
        kv_len = self.stt.kv_len_for(self.state, active)
        if self._graphs is not None:
            self._graphs.run(kv_len)
        else:
            self._device_step(kv_len)
        self.stt.note_step(self.state, active)

    def read(self, tokens: npt.NDArray[np.float32], end_of_turn: npt.NDArray[np.float32]) -> None:
        """Take this tick's columns from the host copy of the output buffer."""
        np.copyto(self.tokens, tokens, casting="unsafe")
        np.copyto(self.end_of_turn, end_of_turn)

    def text_piece(self, index: int, token: int) -> str:
        return self._streams[index].push(token)
