"""Mimi, the 24 kHz <-> 12.5 Hz neural audio codec, with streaming state held per slot.

API for the tick loop (all tensors on the model's device; one frame = 1920 samples = 80 ms)::

    from voicegate.engine.mimi import MimiConfig, MimiStreamer, encode_clip, load_mimi

    model = load_mimi(model_dir / MIMI_FILE_NAME, MimiConfig.release(),
                      device="cuda", dtype=torch.float32)   # CheckpointError if it doesn't fit
    # tiny backend / tests:  model = MimiModel(MimiConfig.tiny()); model.init_random_(seed=0)
    mimi = MimiStreamer(model, n_slots=B)       # preallocates every per-slot buffer once

    # each tick, for all B slots at once:
    user_codes = mimi.encode_step(pcm_in, active)    # pcm_in [B, 1920] float32 -> [B, 8] long
    pcm_out = mimi.decode_step(agent_codes, active)  # agent_codes [B, 8] long -> [B, 1920] float32

    # between ticks, when calls join or leave:
    mimi.reset_slots(mask)                      # mask [B] bool: those slots restart from zero
    mimi.state_bytes_per_slot                   # ~16.5 MB per slot for the release in fp32

    # offline, once per persona with a WAV voice (24 kHz mono float32, any length):
    codes = encode_clip(model, pcm)             # [N, 8] long, N = ceil(len / 1920)

Rules the runtime can rely on:

* ``active`` ([B] bool, optional, default all) says which slots advance: an inactive slot's
  state (conv buffers, KV cache, position) is left exactly as it was, and its output row for
  that step is meaningless. Encode and decode keep separate states and separate masks.
* A slot's outputs depend only on that slot's inputs since its last reset: other slots'
  inputs, resets or activity never change them (tested bit for bit).
* ``reset_slots`` makes a slot equal to a fresh stream, which is what the PersonaPlex
  reference does after the prompt phases (``mimi.reset_streaming()``) before live audio.
* ``encode_step`` / ``decode_step`` allocate no state; the shapes are fixed for a given B, so
  both are CUDA-graph capturable (the wrapper belongs to the runtime; checked on an H100
  with the release shapes: replay equals eager). They never call ``.item()``.
* Every method runs under ``torch.inference_mode`` itself, so a streamer built inside or
  outside inference mode works from either; its outputs are inference tensors.
* The quantizer (codebooks and their projections) always computes in float32; the rest runs
  in the model's dtype (float32 recommended for Mimi; bfloat16 works).

Checkpoints: ``load_mimi`` reads the upstream safetensors file
(``tokenizer-e351c8d8-checkpoint125.safetensors``) with its exact tensor names;
``expected_tensors(config)`` lists them; ``write_random_mimi(path, config, seed)`` writes a
random-weights file with the same names (tests: tiny; the GPU smoke run: release).

Owns: the codec model, its streaming state and its checkpoint format. Imports torch,
safetensors and voicegate.errors only; nothing of calls, legs or the tick loop.
"""

from __future__ import annotations

from voicegate.engine.mimi.checkpoint import (
    MIMI_FILE_NAME,
    expected_tensors,
    load_mimi,
    write_random_mimi,
)
from voicegate.engine.mimi.config import MimiConfig
from voicegate.engine.mimi.model import MimiModel
from voicegate.engine.mimi.streamer import MimiStreamer, encode_clip

__all__ = [
    "MIMI_FILE_NAME",
    "MimiConfig",
    "MimiModel",
    "MimiStreamer",
    "encode_clip",
    "expected_tensors",
    "load_mimi",
    "write_random_mimi",
]
