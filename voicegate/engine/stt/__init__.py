"""The caller's words: Kyutai's streaming STT as a second model of the batched tick.

API (torch work on the engine thread)::

    from voicegate.engine.stt import Stt, SttConfig, check_asr_dir

    files = check_asr_dir(asr_dir)                       # config.json, model.safetensors, tokenizer
    stt = Stt.from_checkpoint(files.model, files.config, "cuda", torch.bfloat16)
    stt = Stt.random(SttConfig.tiny(text_card=1000), "cpu", torch.float32)   # tests, demo
    state = stt.new_state(n_slots)
    stt.reset_slot(state, slot)                          # when a call joins
    out = stt.step(state, caller_codes, active)          # codes [slots, >= n_q] from Mimi
    out.text_tokens [slots], out.end_of_turn [slots]     # device tensors

Text ids 0 (EPAD: a word starts next frame) and 3 (PAD) are not text; a word's text trails its
audio by ``config.delay_frames`` frames. See ``runtime`` for the first-frame rule (moshi's).
"""

from __future__ import annotations

from voicegate.engine.stt.checkpoint import (
    load_stt_model,
    random_stt_model,
    stt_layout,
    write_random_stt,
)
from voicegate.engine.stt.config import FRAME_RATE_HZ, SttConfig
from voicegate.engine.stt.model import SttModel
from voicegate.engine.stt.release import (
    ASR_CONFIG_NAME,
    ASR_MODEL_NAME,
    AsrFiles,
    check_asr_dir,
    count_extra_heads,
    load_asr_config,
    load_asr_tokenizer,
)
from voicegate.engine.stt.runtime import NO_END_OF_TURN, Stt, SttState, SttStepOutput

__all__ = [
    "ASR_CONFIG_NAME",
    "ASR_MODEL_NAME",
    "AsrFiles",
    "FRAME_RATE_HZ",
    "NO_END_OF_TURN",
    "Stt",
    "SttConfig",
    "SttModel",
    "SttState",
    "SttStepOutput",
    "check_asr_dir",
    "count_extra_heads",
    "load_asr_config",
    "load_asr_tokenizer",
    "load_stt_model",
    "random_stt_model",
    "stt_layout",
    "write_random_stt",
]
