"""The batched STT: per-slot streaming state and one greedy step for every slot per tick.

A step reads each slot's caller codes of the current frame ([B, n_q], the Mimi encode the
engine already made) and returns each slot's text token of this frame, plus the end-of-turn
probability when the model has the heads. It reproduces moshi 0.2.13's ``LMGen.step`` for these
models (all delays 0, greedy as the releases' ``lm_gen_config``): at a slot's first position
after a reset every row is the initial token (the codes given there are never read, as
``LMGen`` does), afterwards the input is (the previous text token, this frame's codes). The
attention window is the model's ``context`` (750 / 375 frames): once full, each step attends
the current key and the ``context - 1`` before it, as moshi's ring cache does.

Call order (engine thread)::

    stt = Stt(model)
    state = stt.new_state(n_slots)
    stt.reset_slot(state, slot)                           # a call joins (touches no other row)
    out = stt.step(state, codes, active)                  # host wrapper, or for CUDA graphs:
    kv_len = stt.kv_len_for(state, active_host)
    out = stt.step_tensors(state, codes, active_dev, kv_len)   # device only, fixed shapes
    stt.note_step(state, active_host)

Owns: Stt, SttState, SttStepOutput. Imports torch, numpy and the stt package.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from voicegate.engine._transfer import to_device
from voicegate.engine.lm._fused import StepKernels
from voicegate.engine.lm._ops import is_scaled_kv_dtype
from voicegate.engine.lm.model import DecodeAttention
from voicegate.engine.lm.state import kv_columns, new_kv_ring
from voicegate.engine.stt.checkpoint import load_stt_model, random_stt_model
from voicegate.engine.stt.config import SttConfig
from voicegate.engine.stt.model import SttModel, compiled_embed_sum, embed_sum, stt_kernels

__all__ = ["Stt", "SttState", "SttStepOutput"]

# end-of-turn value of a slot whose model has no head (or whose row carries no frame)
NO_END_OF_TURN = -1.0


@dataclass(frozen=True, slots=True)
class SttStepOutput:
    """One step per slot (device tensors). ``end_of_turn`` [B] is the probability that a
    pause follows (class 0 of the configured head), ``NO_END_OF_TURN`` without heads."""

    text_tokens: torch.Tensor  # [B] int64
    end_of_turn: torch.Tensor  # [B] float32
    text_logits: torch.Tensor | None = None  # [B, text_card] when asked for
    head_probs: torch.Tensor | None = None  # [B, extra_heads, extra_head_dim] when asked for


@dataclass(eq=False, slots=True)
class SttState:
    """Preallocated per-slot buffers; ``kv`` [L, 2, slots, H, context + 1, D] (last column:
    scratch for inactive rows). ``text`` holds each slot's last text token (the next input).
    With an 8-bit ``kv``, ``kv_scales`` [L, 2, slots, H, context + 1] (bfloat16) holds one
    scale per stored vector (as ``LMState``)."""

    config: SttConfig
    n_slots: int
    kv: torch.Tensor
    positions: torch.Tensor  # [slots] int64, device
    positions_host: npt.NDArray[np.int64]
    text: torch.Tensor  # [slots] int64, device
    kv_scales: torch.Tensor | None = None

    @staticmethod
    def bytes_per_slot(config: SttConfig, dtype: torch.dtype) -> int:
        """Device bytes of one slot (``dtype``: the cache's; 8-bit ones add their scales)."""
        c = config
        item = torch.empty((), dtype=dtype).element_size()
        vectors = c.num_layers * 2 * c.num_heads * (c.context + 1)
        scales = 2 * vectors if is_scaled_kv_dtype(dtype) else 0
        return vectors * c.head_dim * item + scales + 16


class Stt:
    """An ``SttModel`` serving many slots (see the module docstring for the call order)."""

    def __init__(
        self, model: SttModel, *, kv_block: int = 64, attention: DecodeAttention | None = None
    ) -> None:
        self.model = model.eval()
        self.config: SttConfig = model.config
        self.kv_block = kv_block
        self.attention = attention  # None: masked SDPA (reads 8-bit caches too)
        # the step's norms/RoPE/gating: eager (the parity reference) until ``set_compiled``
        self.kernels: StepKernels = stt_kernels(False)
        self._embed: Callable[..., torch.Tensor] = embed_sum
        c = self.config
        self._audio_initial = torch.full(
            (1, c.n_q), c.audio_initial_id, device=model.device, dtype=torch.long
        )

    @classmethod
    def from_checkpoint(
        cls, path: Path, config: SttConfig, device: torch.device | str, dtype: torch.dtype
    ) -> Stt:
        return cls(load_stt_model(path, config, device, dtype))

    @classmethod
    def random(
        cls, config: SttConfig, device: torch.device | str, dtype: torch.dtype, seed: int = 0
    ) -> Stt:
        return cls(random_stt_model(config, device, dtype, seed))

    def set_compiled(self, on: bool) -> None:
        """Step with the STT's own ``torch.compile``d kernels (the LM's fused arithmetic, its
        own compiled graphs; compiled at the next step's first call: warm up before capturing
        a CUDA graph) or the eager ones."""
        if on != self.kernels.is_compiled:
            self.kernels = stt_kernels(on)
            self._embed = compiled_embed_sum() if on else embed_sum

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def new_state(self, n_slots: int, kv_dtype: torch.dtype | None = None) -> SttState:
        """Preallocate ``n_slots`` slots; ``kv_dtype`` an 8-bit float for a scaled cache (half
        the bytes of bf16: the STT's share of each call's memory follows the LM's choice)."""
        c, device = self.config, self.device
        kv, scales = new_kv_ring(
            c.num_layers, n_slots, c.num_heads, c.context, c.head_dim, device, self.dtype, kv_dtype
        )
        return SttState(
            config=c,
            n_slots=n_slots,
            kv_scales=scales,
            kv=kv,
            positions=torch.zeros(n_slots, device=device, dtype=torch.long),
            positions_host=np.zeros(n_slots, dtype=np.int64),
            text=torch.full((n_slots,), c.text_initial_id, device=device, dtype=torch.long),
        )

    def reset_slot(self, state: SttState, slot: int) -> None:
        """A fresh stream in ``slot`` (a call joined); no other row changes."""
        self.reset_slots(state, [slot])

    @torch.inference_mode()
    def reset_slots(self, state: SttState, slots: Sequence[int]) -> None:
        """``reset_slot`` of several rows at once: one indexed write per buffer (on a GPU
        each write is a kernel launch, whatever its size)."""
        if not slots:
            return
        rows = to_device(torch.tensor(list(slots), dtype=torch.long), state.positions.device)
        state.positions[rows] = 0
        state.positions_host[list(slots)] = 0
        state.text[rows] = self.config.text_initial_id

    def kv_len_for(self, state: SttState, active: npt.NDArray[np.bool_]) -> int:
        """Key columns the next step reads: the most any active slot has filled, rounded up."""
        return kv_columns(state.positions_host, active, self.config.context, self.kv_block)

    def step(
        self,
        state: SttState,
        codes: torch.Tensor,
        active: npt.NDArray[np.bool_] | Sequence[bool],
        *,
        return_logits: bool = False,
    ) -> SttStepOutput:
        """Advance every active slot by one frame: caller codes [B, >= n_q] -> SttStepOutput."""
        active_host = np.asarray(active, dtype=bool)
        kv_len = self.kv_len_for(state, active_host)
        active_dev = torch.from_numpy(active_host).to(self.device, non_blocking=True)
        out = self.step_tensors(state, codes, active_dev, kv_len, return_logits=return_logits)
        self.note_step(state, active_host)
        return out

    @staticmethod
    def note_step(state: SttState, active: npt.NDArray[np.bool_]) -> None:
        state.positions_host += active

    @torch.inference_mode()
    def step_tensors(
        self,
        state: SttState,
        codes: torch.Tensor,
        active: torch.Tensor,
        kv_len: int,
        *,
        return_logits: bool = False,
    ) -> SttStepOutput:
        """The device part of ``step``: tensor ops only, fixed shapes for a given ``kv_len``.

        ``codes`` may carry more codebooks than the model reads (the first ``n_q`` are used:
        residual VQ codes are a prefix of a longer encode's)."""
        c, m = self.config, self.model
        pos = state.positions
        is_init = (pos == 0) | ~active
        text_in = torch.where(is_init, c.text_initial_id, state.text)
        audio_in = torch.where(is_init[:, None], self._audio_initial, codes[:, : c.n_q].long())
        x = m.embed(text_in, audio_in, self._embed)
        write = torch.where(active, pos % c.context, c.context)
        filled = torch.where(active, torch.clamp(pos + 1, max=c.context), 1)
        key_mask = torch.arange(kv_len, device=pos.device)[None] < filled[:, None]
        hidden = m.step(
            x,
            pos,
            state.kv,
            write,
            filled,
            key_mask[:, None, None],
            kernels=self.kernels,
            attention=self.attention,
            kv_scales=state.kv_scales,
        )
        logits = m.text_logits(hidden)[:, 0]
        text = logits.float().argmax(-1)
        state.text.copy_(torch.where(active, text, state.text))
        state.positions.add_(active.long())
        heads = None
        if c.extra_heads and return_logits:
            heads = torch.cat([m.head_probs(hidden, h) for h in range(c.extra_heads)], 1)
            end_of_turn = heads[:, c.end_of_turn_head, 0]
        elif c.extra_heads:  # the tick reads one head: the others are not computed
            end_of_turn = m.head_probs(hidden, c.end_of_turn_head)[:, 0, 0]
        else:
            end_of_turn = torch.full_like(logits[:, 0], NO_END_OF_TURN, dtype=torch.float32)
        return SttStepOutput(
            text_tokens=text,
            end_of_turn=end_of_turn,
            text_logits=logits if return_logits else None,
            head_probs=heads if return_logits else None,
        )
