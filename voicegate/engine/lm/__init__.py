"""The PersonaPlex LM (temporal transformer + depformer) serving every call as one slot.

API for the runtime (all torch work on the engine thread, never on the event loop)::

    from voicegate.engine.lm import LM, LMConfig, VoicePrompt, system_prompt_text

    lm = LM.from_checkpoint(model_dir / "model.safetensors", LMConfig.personaplex_7b(),
                            device="cuda", dtype=torch.bfloat16)   # 16- or 8-step file
    lm = LM.random(LMConfig.tiny(text_card=tokenizer_size), "cpu", torch.float32)  # tiny backend

    state = lm.new_state(n_slots)            # preallocated: KV ring [L,2,slots,H,ctx+1,D], ...
    # once per persona (load or reload), off the tick if you like; result is reusable:
    voice = VoicePrompt.load_preset(path_pt)                 # .pt preset voice
    voice = VoicePrompt.from_codes(mimi_codes)               # or WAV clip codes [N, 8]
    ids = sp.encode(system_prompt_text(persona.text_prompt)) # [] when the prompt is empty
    prompt = lm.prefill(voice, ids)                          # -> PromptState
    # between ticks, when a call joins / leaves (touches no other slot):
    lm.load_slot(state, slot, prompt, sampling_params, seed)
    lm.load_slots(state, [(slot, prompt, sampling_params, seed), ...])  # several at once
    lm.reset_slot(state, slot)                               # optional on leave: slot unused
    # every tick:
    out = lm.step(state, user_codes, active)  # user_codes [slots, 8] long (device),
                                              # active: numpy bool [slots] (host)
    out.text_tokens [slots], out.agent_codes [slots, 8], out.is_valid [slots]  (device)

``out`` is frame-aligned like the reference ``LMGen.step``: the text token and the agent codes
of the same frame, ready for Mimi decode. A slot loaded with a prompt is valid from its first
step; an empty (reset) slot's first step is not (acoustic codebooks lag one frame). Text ids
0 (EPAD) and 3 (PAD) are not text. Sampling is per slot (``SamplingParams``; temperature <= 0 is
greedy) with a per-slot seed: a slot's output never depends on the other rows.

CUDA graphs: ``step`` = ``kv_len_for`` (host) + ``step_tensors`` (device only, fixed shapes for a
given ``kv_len`` bucket, capturable with static ``user_codes``/``active`` buffers) +
``note_step`` (host). Attention reads only the first ``kv_len`` key columns (the most any active
slot has filled, rounded up to ``kv_block``). Seams for a custom decode kernel: ``lm.attention``
(a ``DecodeAttention``: gets each slot's filled length; default ``masked_sdpa``) and
``lm.new_state(n, kv_dtype=...)`` (cache stored in another dtype, e.g. 8-bit).

Long calls: ``Reanchorer`` rebuilds a slot's context (persona prompt + its last frames) before
the prompt leaves the attention window (``reanchor``).

Owns: the LM model, its loading, prompt prefill and per-slot stepping. Imports torch,
safetensors, numpy; nothing of telephony, Mimi or the tick loop.
"""

from __future__ import annotations

from voicegate.engine.lm.checkpoint import (
    checkpoint_layout,
    load_lm_model,
    random_lm_model,
    write_random_checkpoint,
)
from voicegate.engine.lm.config import LMConfig
from voicegate.engine.lm.model import DecodeAttention, LMModel, masked_sdpa
from voicegate.engine.lm.prompt import (
    SILENCE_CODES,
    SINE_CODES,
    PromptState,
    VoicePrompt,
    system_prompt_text,
)
from voicegate.engine.lm.reanchor import Reanchorer, ReanchorJob
from voicegate.engine.lm.runtime import LM, StepOutput
from voicegate.engine.lm.state import LMState

__all__ = [
    "DecodeAttention",
    "LM",
    "LMConfig",
    "LMModel",
    "LMState",
    "PromptState",
    "ReanchorJob",
    "Reanchorer",
    "SILENCE_CODES",
    "SINE_CODES",
    "StepOutput",
    "VoicePrompt",
    "checkpoint_layout",
    "load_lm_model",
    "masked_sdpa",
    "random_lm_model",
    "system_prompt_text",
    "write_random_checkpoint",
]
