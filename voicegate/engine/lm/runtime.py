"""The batched LM runtime: prefill persona prompts, load/reset slots, step all slots at once.

A step takes each slot's user codes for the current frame, writes them into the slot's
delayed-token cache, runs one temporal position per slot, samples the text token and the 8
agent codebooks with the depformer, and returns each slot's frame-aligned output (text token
and 8 agent codes of the same frame), exactly as the reference ``LMGen.step`` orders it.
Slots are rows of preallocated tensors; inactive rows compute but change nothing.

The attention window: once a slot has been through ``context`` (3000) positions, each step
attends exactly 3000 keys, the current one and the 2999 before it (``filled`` is
``min(position + 1, context)``). That is how Kyutai's moshi 0.2.13 ring cache attends and how the
model was trained (a 3000-frame context). The public PersonaPlex generator forks an older
moshi whose ring cache, once full, attends only 2999 keys (it overwrites the oldest column
before reading: an off-by-one that moshi 0.2.13 fixed); its Mimi transformer likewise attends
249 of 250. We keep 3000 (and 250 in ``voicegate.engine.mimi``): it is what training saw, and
the difference only shows after 240 s, where the generator's output is untested anyway.

Owns: ``LM`` and ``StepOutput``. Imports torch, numpy and the lm package.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from voicegate.engine._transfer import to_device
from voicegate.engine.base import SamplingParams
from voicegate.engine.lm._fused import StepKernels, compile_enabled
from voicegate.engine.lm._ops import quantize_vectors
from voicegate.engine.lm.checkpoint import load_lm_model, random_lm_model
from voicegate.engine.lm.config import LMConfig
from voicegate.engine.lm.model import DecodeAttention, LMModel
from voicegate.engine.lm.prompt import (
    PromptState,
    VoicePrompt,
    build_prompt_frames,
    delayed_layout,
    text_phase_layout,
)
from voicegate.engine.lm.sampling import gumbel_noise, sample_top_k
from voicegate.engine.lm.state import LMState, kv_columns

__all__ = ["LM", "SlotLoad", "StepOutput"]

_TEXT_STREAM = 0  # RNG stream ids: text, then audio codebook k is 1 + k

# a call loaded into a slot: (slot, its prompt, its sampling (None: the defaults), its seed)
SlotLoad = tuple[int, PromptState, SamplingParams | None, int]


@dataclass(frozen=True, slots=True)
class StepOutput:
    """One step's result per slot (device tensors; rows with ``is_valid`` False carry no frame).

    ``text_tokens`` [B] and ``agent_codes`` [B, dep_q] belong to the same frame (decode the
    codes with Mimi). Logits are only kept when asked for (tests, quality checks).
    """

    text_tokens: torch.Tensor
    agent_codes: torch.Tensor
    is_valid: torch.Tensor
    text_logits: torch.Tensor | None = None  # [B, text_card] of this step's text sample
    audio_logits: torch.Tensor | None = None  # [B, dep_q, card]


class LM:
    """PersonaPlex LM serving many slots; see the package docstring for the call order."""

    def __init__(
        self, model: LMModel, *, kv_block: int = 64, attention: DecodeAttention | None = None
    ) -> None:
        self.model = model.eval()
        self.config: LMConfig = model.config
        self.kv_block = kv_block
        self.attention = attention  # None: masked SDPA (``model.masked_sdpa``)
        # the step's norms/RoPE/gating/sampling: compiled (fused) on CUDA unless
        # VOICEGATE_COMPILE=0 (``_fused``); the prompt prefill stays eager
        self.kernels = StepKernels.eager()
        self.set_compiled(compile_enabled(model.device))
        c = self.config
        self._delays = torch.tensor(c.delays, device=model.device, dtype=torch.long)
        initial = [c.text_initial_id] + [c.audio_initial_id] * c.n_q
        self._initial = torch.tensor(initial, device=model.device, dtype=torch.long)

    @classmethod
    def from_checkpoint(
        cls, path: Path, config: LMConfig, device: torch.device | str, dtype: torch.dtype
    ) -> LM:
        return cls(load_lm_model(path, config, device, dtype))

    @classmethod
    def random(
        cls, config: LMConfig, device: torch.device | str, dtype: torch.dtype, seed: int = 0
    ) -> LM:
        return cls(random_lm_model(config, device, dtype, seed))

    def set_compiled(self, on: bool) -> None:
        """Step with ``torch.compile``d kernels (compiled at the next step's first call: warm
        up before capturing a CUDA graph) or the eager ones."""
        if on != self.kernels.is_compiled:
            self.kernels = StepKernels.compiled() if on else StepKernels.eager()

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def new_state(self, n_slots: int, kv_dtype: torch.dtype | None = None) -> LMState:
        """Preallocate every per-slot buffer (the KV ring dominates: see ``kv_bytes_per_slot``).

        ``kv_dtype`` stores keys/values in another dtype than the model's (e.g. an 8-bit float
        for a custom ``attention`` kernel; the default attention then upcasts what it reads).
        """
        return LMState.allocate(self.config, n_slots, self.device, self.dtype, kv_dtype)

    # -- prompts and slots ----------------------------------------------------------------

    @torch.inference_mode()
    def prefill(self, voice: VoicePrompt, text_tokens: Sequence[int]) -> PromptState:
        """Run the 4 prompt phases as one causal pass; ``text_tokens`` already wrapped in tags."""
        c = self.config
        grid = delayed_layout(c, build_prompt_frames(c, voice, text_tokens))
        n = grid.shape[1] - 1
        given = 0 if voice.embeddings is None else int(voice.embeddings.shape[0])
        if given >= n or bool((grid[:, given:n] < 0).any()):
            raise ValueError("voice prompt does not determine every prompt position")
        x = self.model.embed_tokens(grid[None, :, :n].to(self.device))
        if voice.embeddings is not None:
            x[0, :given] = voice.embeddings.to(self.device, self.dtype)
        hidden, kv = self.model.temporal_prefill(x)
        return PromptState(
            kv=kv,
            hidden=hidden[0, -1],
            tokens=grid[:, n - 1 :].to(self.device),
            length=n,
            voice_frames=voice.n_frames,
        )

    @torch.inference_mode()
    def prefill_text_phases(
        self, prompts: Sequence[PromptState], texts: Sequence[Sequence[int]]
    ) -> list[PromptState]:
        """Per-call prompts in one batched pass: ``prompts[i]``'s voice phases (cached per
        persona, reused as they are) followed by the text phases of ``texts[i]`` (token ids,
        already wrapped in tags). Equals ``prefill`` of the same voice and text."""
        c = self.config
        grids, starts = self.text_phase_grids(prompts, texts)
        steps = max(g.shape[1] - 1 for g in grids)
        batch = len(grids)
        tokens = torch.full((batch, c.num_codebooks, steps), -1, dtype=torch.long)
        for i, grid in enumerate(grids):
            tokens[i, :, : grid.shape[1] - 1] = grid[:, :-1]
        columns = max(s + steps for s in starts)
        # zeros, not empty: a row's columns past its own positions are masked, but attention
        # still multiplies their values by a zero weight, and 0 * NaN garbage is NaN
        kv = torch.zeros(
            c.num_layers, 2, batch, c.num_heads, columns, c.head_dim,
            device=self.device, dtype=self.dtype,
        )  # fmt: skip
        for i, (prompt, start) in enumerate(zip(prompts, starts, strict=True)):
            kv[:, :, i, :, :start] = prompt.kv[:, :, :, :start]
        x = self.model.embed_tokens(tokens.to(self.device))
        hidden = self.model.temporal_extend_rows(x, kv, starts)
        out = []
        for i, (prompt, grid, start) in enumerate(zip(prompts, grids, starts, strict=True)):
            added = grid.shape[1] - 1
            n = start + added
            out.append(
                PromptState(
                    kv=kv[:, :, i, :, :n],
                    hidden=hidden[i, added - 1],
                    tokens=grid[:, added - 1 :].to(self.device),
                    length=n,
                    voice_frames=prompt.voice_frames,
                )
            )
        return out

    def text_phase_grids(
        self, prompts: Sequence[PromptState], texts: Sequence[Sequence[int]]
    ) -> tuple[list[torch.Tensor], list[int]]:
        """Each call's text phases in the delayed layout [17, steps + 1] (``text_phase_layout``)
        and the position they start at (after its persona's voice phases); checked to fit."""
        if len(prompts) != len(texts) or not prompts:
            raise ValueError(f"{len(prompts)} prompts for {len(texts)} texts")
        c = self.config
        grids, starts = [], []
        for prompt, ids in zip(prompts, texts, strict=True):
            start = prompt.voice_positions
            if start < 1 or start > prompt.length:
                raise ValueError("prompt state does not know its voice phases")
            grid = text_phase_layout(c, prompt.voice_frames, ids)
            if start + grid.shape[1] - 1 >= c.context:
                raise ValueError(
                    f"prompt of {start + grid.shape[1] - 1} frames does not fit the "
                    f"{c.context}-frame context"
                )
            grids.append(grid)
            starts.append(start)
        return grids, starts

    def set_sampling(
        self, state: LMState, slot: int, sampling: SamplingParams, seed: int | None = None
    ) -> None:
        """Per-slot sampling settings (and RNG seed); temperature <= 0 is greedy."""
        state.text_temperature[slot] = sampling.text_temperature
        state.text_top_k[slot] = sampling.text_top_k
        state.audio_temperature[slot] = sampling.audio_temperature
        state.audio_top_k[slot] = sampling.audio_top_k
        if seed is not None:
            state.seeds[slot] = seed
            state.counters[slot] = 0

    @torch.inference_mode()
    def reset_slot(
        self, state: LMState, slot: int, sampling: SamplingParams | None = None, seed: int = 0
    ) -> None:
        """Empty the slot (position 0, no prompt); touches no other row."""
        state.positions[slot] = 0
        state.positions_host[slot] = 0
        state.tokens[slot] = -2
        self.set_sampling(state, slot, sampling or SamplingParams(), seed)

    @torch.inference_mode()
    def load_slot(
        self,
        state: LMState,
        slot: int,
        prompt: PromptState,
        sampling: SamplingParams | None = None,
        seed: int = 0,
    ) -> None:
        """Put a fresh call with ``prompt`` in ``slot`` (between steps); touches no other row.

        Copies the prompt's keys/values and delayed tokens, then samples the slot's first text
        and semantic tokens from the prompt's last output with the slot's own settings/seed.
        """
        self.load_slots(state, [(slot, prompt, sampling, seed)])

    @torch.inference_mode()
    def load_slots(self, state: LMState, loads: Sequence[SlotLoad]) -> None:
        """``load_slot`` of several fresh calls at once: (slot, prompt, sampling, seed) each,
        distinct slots; touches no other row.

        On a GPU a load is bound by kernel launches, not bytes: the per-row settings, positions
        and delayed tokens are written with one indexed write per buffer, and the first tokens
        of every call are sampled in one batch (a row's draws depend on its own seed only), so
        the op count does not grow with the calls. Only the keys/values (a prompt's own length)
        are copied, and an 8-bit cache quantized, per call: quantizing every prompt at once
        would hold float32 copies of all of them (gigabytes at 7B shapes)."""
        if not loads:
            return
        slots = [slot for slot, *_ in loads]
        if len(set(slots)) != len(slots):
            raise ValueError(f"load_slots: slots {slots} repeat")
        c, device = self.config, self.device
        prompts = [prompt for _, prompt, _, _ in loads]
        lengths = [prompt.length for prompt in prompts]
        # the host's values go pinned (``to_device``): queued behind the pass that computed
        # the prompts, not waited for, so these launches overlap its GPU work
        settings = [sampling or SamplingParams() for _, _, sampling, _ in loads]
        temperature = to_device(
            torch.tensor(
                [[s.text_temperature for s in settings], [s.audio_temperature for s in settings]],
                dtype=torch.float32,
            ),
            device,
        )
        ints = torch.tensor(
            [
                slots,
                [s.text_top_k for s in settings],
                [s.audio_top_k for s in settings],
                [seed for *_, seed in loads],
                lengths,
            ],
            dtype=torch.long,
        )
        rows, text_top_k, audio_top_k, seeds, positions = to_device(ints, device)
        hidden = torch.stack([prompt.hidden for prompt in prompts]).view(len(loads), 1, -1)
        # the first draw of a loaded slot: counter 0 of its seed
        noise = gumbel_noise(seeds, torch.zeros_like(seeds), 2, c.top_k_cap)
        text = sample_top_k(
            self.model.text_logits(hidden)[:, 0],
            temperature[0],
            text_top_k,
            noise[:, _TEXT_STREAM],
            c.top_k_cap,
        )
        dep_kv = state.dep_kv[:, :, rows]  # a copy: the state's scratch is not written
        semantic = sample_top_k(
            self.model.depformer_step(0, hidden, text, dep_kv),
            temperature[1],
            audio_top_k,
            noise[:, _TEXT_STREAM + 1],
            c.top_k_cap,
        )
        state.tokens[rows] = self._first_tokens(prompts, positions, text, semantic)
        state.text_temperature[rows] = temperature[0]
        state.audio_temperature[rows] = temperature[1]
        state.text_top_k[rows] = text_top_k
        state.audio_top_k[rows] = audio_top_k
        state.seeds[rows] = seeds
        state.counters[rows] = 1
        state.positions[rows] = positions
        state.positions_host[slots] = lengths
        for slot, prompt in zip(slots, prompts, strict=True):
            self._write_kv(state, slot, prompt)

    @staticmethod
    def _write_kv(state: LMState, slot: int, prompt: PromptState) -> None:
        """The prompt's keys/values into the slot's first ``length`` columns (quantized for an
        8-bit cache)."""
        n = prompt.length
        if state.kv_scales is None:
            state.kv[:, :, slot, :, :n] = prompt.kv
        else:
            kq, scale = quantize_vectors(prompt.kv, state.kv.dtype)
            state.kv[:, :, slot, :, :n] = kq
            state.kv_scales[:, :, slot, :, :n] = scale

    def _first_tokens(
        self,
        prompts: Sequence[PromptState],
        positions: torch.Tensor,
        text: torch.Tensor,
        semantic: torch.Tensor,
    ) -> torch.Tensor:
        """The loaded rows' delayed-token rings [calls, 17, token_cache_size]: ungenerated
        (-2) but for each prompt's tokens of positions N-1 and N, and at N the first text and
        semantic tokens just sampled."""
        c = self.config
        ct = c.token_cache_size
        ring = torch.full(
            (len(prompts), c.num_codebooks, ct), -2, dtype=torch.long, device=self.device
        )
        at = torch.stack([positions - 1, positions], 1) % ct  # [calls, 2]
        given = torch.stack([prompt.tokens for prompt in prompts])  # [calls, 17, 2]
        ring.scatter_(2, at[:, None].expand(-1, c.num_codebooks, -1), given)
        first = torch.stack([text, semantic], 1)[..., None]  # [calls, 2, 1]
        ring[:, :2].scatter_(2, at[:, None, 1:].expand(-1, 2, -1), first)
        return ring

    # -- stepping -------------------------------------------------------------------------

    def kv_len_for(self, state: LMState, active: npt.NDArray[np.bool_]) -> int:
        """Key columns the next step must read: the most any active slot has filled, rounded up."""
        return kv_columns(state.positions_host, active, self.config.context, self.kv_block)

    def step(
        self,
        state: LMState,
        user_codes: torch.Tensor,
        active: npt.NDArray[np.bool_] | Sequence[bool],
        *,
        kv_len: int | None = None,
        return_logits: bool = False,
    ) -> StepOutput:
        """Advance every active slot by one frame: user codes [B, n_q - dep_q] -> StepOutput."""
        active_host = np.asarray(active, dtype=bool)
        if kv_len is None:
            kv_len = self.kv_len_for(state, active_host)
        active_dev = torch.from_numpy(active_host).to(self.device, non_blocking=True)
        out = self.step_tensors(state, user_codes, active_dev, kv_len, return_logits=return_logits)
        self.note_step(state, active_host)
        return out

    @staticmethod
    def note_step(state: LMState, active: npt.NDArray[np.bool_]) -> None:
        """Host bookkeeping of a step (kept out of ``step_tensors`` so that can be graphed)."""
        state.positions_host += active

    @torch.inference_mode()
    def step_tensors(
        self,
        state: LMState,
        user_codes: torch.Tensor,
        active: torch.Tensor,
        kv_len: int,
        *,
        return_logits: bool = False,
    ) -> StepOutput:
        """The device part of ``step``: only tensor ops, fixed shapes for a given ``kv_len``."""
        c, m, kern = self.config, self.model, self.kernels
        ct, n_gen = c.token_cache_size, 1 + c.dep_q
        pos, delays, act = state.positions, self._delays, active[:, None]
        tokens = state.tokens
        # The caller's codes of this frame go where their delays put them.
        user_rows = tokens[:, n_gen:]
        at = ((pos[:, None] + delays[None, n_gen:]) % ct)[..., None]
        kept = user_rows.gather(2, at)[..., 0]
        user_rows.scatter_(2, at, torch.where(act, user_codes.to(torch.long), kept)[..., None])
        # Input of this position; initial tokens before each row's delay has passed.
        at = (pos % ct)[:, None, None].expand(-1, c.num_codebooks, 1)
        inp = tokens.gather(2, at)[..., 0]
        inp = torch.where((pos[:, None] <= delays[None]) | ~act, self._initial[None], inp)
        x = m.embed_tokens(inp[:, :, None], has_absent=False)
        write = torch.where(active, pos % c.context, torch.full_like(pos, c.context))
        # what this position was stepped with: a re-anchor prefills it again
        state.history[torch.arange(inp.shape[0], device=pos.device), :, write] = inp
        # an inactive row's output is dropped: it reads one column, not a stale window
        filled = torch.where(active, torch.clamp(pos + 1, max=c.context), 1)
        key_mask = torch.arange(kv_len, device=pos.device)[None] < filled[:, None]
        hidden = m.temporal_step(
            x,
            pos,
            state.kv,
            write,
            filled,
            key_mask[:, None, None],
            self.attention,
            state.kv_scales,
            kern,
        )
        text_logits = m.text_logits(hidden)[:, 0]
        noise = kern.noise(state.seeds, state.counters, 1 + c.dep_q, c.top_k_cap)
        text = kern.sample(
            text_logits,
            state.text_temperature,
            state.text_top_k,
            noise[:, _TEXT_STREAM],
            c.top_k_cap,
        )
        prev, codes, audio_logits = text, [], []
        for step in range(c.dep_q):
            logits = m.depformer_step(step, hidden, prev, state.dep_kv, kern)
            prev = kern.sample(
                logits,
                state.audio_temperature,
                state.audio_top_k,
                noise[:, _TEXT_STREAM + 1 + step],
                c.top_k_cap,
            )
            codes.append(prev)
            if return_logits:
                audio_logits.append(logits)
        # Advance and store what was generated at the next position (delayed layout).
        new_pos = pos + active.long()
        state.positions.copy_(new_pos)
        state.counters.add_(active.long())
        gen_rows = tokens[:, :n_gen]
        at = (new_pos % ct)[:, None, None].expand(-1, n_gen, 1)
        generated = torch.stack([text, *codes], dim=1)
        kept = gen_rows.gather(2, at)[..., 0]
        gen_rows.scatter_(2, at, torch.where(act, generated, kept)[..., None])
        # Frame-aligned output: the frame whose last (most delayed) row was just generated.
        at = ((new_pos[:, None] - c.max_delay + delays[None, :n_gen]) % ct)[..., None]
        out = gen_rows.gather(2, at)[..., 0]
        return StepOutput(
            text_tokens=out[:, 0],
            agent_codes=out[:, 1:],
            is_valid=active & (new_pos > c.max_delay),
            text_logits=text_logits if return_logits else None,
            audio_logits=torch.stack(audio_logits, 1) if return_logits else None,
        )
