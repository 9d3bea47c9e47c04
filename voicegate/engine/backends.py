"""Building the torch backends: ``tiny`` (random weights, small shapes) and ``personaplex``.

Settings are read by attribute (``device``, ``max_calls``, ``model_dir``, ``kv_cache_dtype``),
so a benchmark can pass a ``SimpleNamespace`` where pydantic is not installed.

Owns: build_tiny_model, build_personaplex_model, resolve_device. Imports torch.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import torch

from voicegate.engine.attention_decode import decode_attention_for
from voicegate.engine.capacity import SlotBudget, measure_state_bytes, slots_that_fit
from voicegate.engine.lm import LM, LMConfig
from voicegate.engine.lm.textpass import text_pass_bytes
from voicegate.engine.mimi import MimiConfig, MimiModel, MimiStreamer, load_mimi
from voicegate.engine.modeldir import ModelFiles, check_model_dir
from voicegate.engine.stt import Stt, check_asr_dir, load_asr_tokenizer
from voicegate.engine.tokenizer import TextTokenizer, load_text_tokenizer
from voicegate.engine.torch_model import TorchTickModel
from voicegate.engine.voices import VoiceBank
from voicegate.errors import CheckpointError, ConfigError

__all__ = [
    "TINY_CONTEXT",
    "TINY_DEFAULT_SLOTS",
    "TINY_SEED",
    "build_personaplex_model",
    "build_tiny_model",
    "load_release_model",
    "one_slot_state",
    "resolve_device",
    "slot_budget",
    "tiny_lm_config",
]

log = logging.getLogger("voicegate.engine")

TINY_SEED = 1234
TINY_DEFAULT_SLOTS = 4
TINY_CONTEXT = 1024  # long enough for a persona prompt of a few hundred tiny tokens
CPU_DEFAULT_SLOTS = 1
# Conversation kept by a re-anchor (120 s). A call re-anchors every 3000 - prompt - K - 250
# frames and prefills K + catch-up positions each time: K = 1500 with a 300-frame prompt is one
# re-anchor per 75 s and 1.6 prefilled positions per live frame (a prefill position costs the
# compute of a decode step but not its memory traffic: the tick is memory-bound), while keeping
# the last 2 minutes verbatim; bench/reanchor_bench.py measures it on the GPU.
DEFAULT_REANCHOR_FRAMES = 1500


def resolve_device(name: str, *, prefer_cuda: bool) -> torch.device:
    """``auto`` is CUDA when present and preferred, else CPU; ``cpu``/``cuda[:N]`` as given."""
    if name == "auto":
        return torch.device("cuda" if prefer_cuda and torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(
            f"VOICEGATE_DEVICE: expected auto, cpu or cuda[:N], got {name!r}"
        ) from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"VOICEGATE_DEVICE={name}: CUDA is not available on this machine")
    return device


def tiny_lm_config(text_card: int) -> LMConfig:
    return dataclasses.replace(LMConfig.tiny(text_card=text_card), context=TINY_CONTEXT)


def reanchor_frames(settings: Any) -> int:
    """Frames a re-anchor keeps (``VOICEGATE_REANCHOR_FRAMES``); 0 when re-anchoring is off."""
    if not bool(getattr(settings, "reanchor", True)):
        return 0
    frames = int(getattr(settings, "reanchor_frames", DEFAULT_REANCHOR_FRAMES))
    if frames < 1:
        raise ConfigError(f"VOICEGATE_REANCHOR_FRAMES: expected >= 1, got {frames}")
    return frames


def load_caller_stt(
    settings: Any, device: torch.device, dtype: torch.dtype
) -> tuple[Stt, TextTokenizer] | None:
    """The caller STT from ``VOICEGATE_ASR_MODEL_DIR`` (checked, loaded), or None if unset."""
    asr_dir = getattr(settings, "asr_model_dir", None)
    if asr_dir is None or str(asr_dir) == "":
        return None
    files = check_asr_dir(Path(asr_dir))
    tokenizer = load_asr_tokenizer(files)
    started = time.perf_counter()
    stt = Stt.from_checkpoint(files.model, files.config, device, dtype)
    log.info(
        "caller ASR %s (%d layers, %d-frame window, %d codebooks, delay %d frames%s) loaded "
        "from %s in %.1f s",
        files.config.name,
        files.config.num_layers,
        files.config.context,
        files.config.n_q,
        files.config.delay_frames,
        ", end-of-turn heads" if files.config.has_end_of_turn else "",
        files.root,
        time.perf_counter() - started,
    )
    return stt, tokenizer


def build_tiny_model(settings: Any) -> TorchTickModel:
    """Random weights with a fixed seed, small shapes, the bundled tokenizer; CPU by default."""
    device = resolve_device(str(getattr(settings, "device", "auto")), prefer_cuda=False)
    if device.type == "cpu":
        # tiny ops gain nothing from intra-op threads, and spinning OpenMP workers make ticks
        # 10-50x slower on a busy 2-core machine (measured); process-wide, on purpose
        torch.set_num_threads(1)
    tokenizer = load_text_tokenizer(None)
    lm = LM.random(tiny_lm_config(tokenizer.vocab_size), device, torch.float32, seed=TINY_SEED)
    mimi = MimiModel(MimiConfig.tiny()).init_random_(seed=TINY_SEED).to(device)
    slots = int(getattr(settings, "max_calls", 0) or 0) or TINY_DEFAULT_SLOTS
    voices = VoiceBank(mimi, None, fake_presets=True)
    caller = load_caller_stt(settings, device, torch.float32)
    log.info("engine tiny: %d slots on %s", slots, device)
    return TorchTickModel(
        "tiny",
        lm,
        mimi,
        tokenizer,
        voices,
        slots,
        reanchor_frames=reanchor_frames(settings),
        stt=caller[0] if caller else None,
        stt_tokenizer=caller[1] if caller else None,
    )


def build_personaplex_model(settings: Any) -> TorchTickModel:
    """Load the release from VOICEGATE_MODEL_DIR (nothing downloaded) and size the batch."""
    model_dir = getattr(settings, "model_dir", None)
    files = check_model_dir(Path(model_dir) if model_dir is not None else None)
    kv_cache = str(getattr(settings, "kv_cache_dtype", "bf16"))
    if kv_cache not in ("bf16", "fp8"):
        raise ConfigError(f"VOICEGATE_KV_CACHE_DTYPE: expected bf16 or fp8, got {kv_cache!r}")
    device = resolve_device(str(getattr(settings, "device", "auto")), prefer_cuda=True)
    return load_release_model(
        files,
        lm_config=LMConfig.personaplex_7b(),
        mimi_config=MimiConfig.release(),
        device=device,
        max_calls=int(getattr(settings, "max_calls", 0) or 0),
        kv_cache=kv_cache,
        reanchor_frames=reanchor_frames(settings),
        caller_stt=load_caller_stt(
            settings, device, torch.bfloat16 if device.type == "cuda" else torch.float32
        ),
    )


def one_slot_state(
    lm: LM, mimi: MimiModel, stt: Stt | None, kv_dtype: torch.dtype | None
) -> tuple[object, ...]:
    """What one slot keeps on the device, as ``TorchTickModel`` allocates it: the LM's state,
    the Mimi streams (encoding as many codebooks as the STT reads) and the STT's state."""
    codebooks = stt.config.n_q if stt is not None else None
    return (
        lm.new_state(1, kv_dtype=kv_dtype),
        MimiStreamer(mimi, 1, codebooks),
        stt.new_state(1, kv_dtype) if stt is not None else None,
    )


def slot_budget(
    lm: LM,
    mimi: MimiModel,
    stt: Stt | None,
    kv_dtype: torch.dtype | None,
    max_calls: int = 0,
    *,
    reanchor_frames: int = 0,
) -> SlotBudget:
    """How many slots fit the CUDA device's free memory now (weights already loaded): one
    slot's state measured (``one_slot_state``), its activations, the reserve (more with the
    STT: ``capacity.slots_that_fit``), the re-anchor workspace and the per-call prompts'
    text pass (``lm.textpass``)."""
    device = lm.device
    per_slot = measure_state_bytes(lambda: one_slot_state(lm, mimi, stt, kv_dtype), device)
    free, total = torch.cuda.mem_get_info(device)
    if reanchor_frames:  # the re-anchor workspace: one slot's KV ring in the model's dtype
        c = lm.config
        item = torch.empty((), dtype=lm.dtype).element_size()
        free -= c.num_layers * 2 * c.num_heads * c.context * c.head_dim * item
    free -= text_pass_bytes(lm.config, lm.dtype)  # per-call prompts' fixed-shape passes
    return slots_that_fit(free, total, per_slot, max_calls, second_model=stt is not None)


def load_release_model(
    files: ModelFiles,
    *,
    lm_config: LMConfig,
    mimi_config: MimiConfig,
    device: torch.device,
    max_calls: int = 0,
    name: str = "personaplex",
    kv_cache: str = "bf16",
    reanchor_frames: int = 0,
    caller_stt: tuple[Stt, TextTokenizer] | None = None,
) -> TorchTickModel:
    """Load a release folder with the given shapes (7B in production; tests pass tiny ones).

    ``kv_cache="fp8"``: an e4m3 KV cache with per-vector scales (half the bytes per slot),
    read by the Triton decode kernel (CUDA only)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    attention = decode_attention_for(device, fp8=kv_cache == "fp8")
    kv_dtype = None
    if kv_cache == "fp8":
        if attention is None:
            raise ConfigError("VOICEGATE_KV_CACHE_DTYPE=fp8 needs CUDA and triton")
        kv_dtype = torch.float8_e4m3fn
    tokenizer = load_text_tokenizer(files.root)
    if tokenizer.vocab_size != lm_config.text_card:
        raise CheckpointError(
            f"{files.tokenizer}: {tokenizer.vocab_size} pieces, the LM expects {lm_config.text_card}"
        )
    started = time.perf_counter()
    lm = LM.from_checkpoint(files.lm, lm_config, device, dtype)
    lm.attention = attention
    mimi = load_mimi(files.mimi, mimi_config, device=device, dtype=torch.float32)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    load_s = time.perf_counter() - started
    budget = None
    if device.type == "cuda":
        budget = slot_budget(
            lm,
            mimi,
            caller_stt[0] if caller_stt else None,
            kv_dtype,
            max_calls,
            reanchor_frames=reanchor_frames,
        )
        log.info("engine %s: loaded in %.1f s on %s; %s", name, load_s, device, budget.describe())
        slots = budget.slots
        if slots < 1:
            raise CheckpointError(f"engine {name}: no slot fits on {device}: {budget.describe()}")
    else:
        slots = max_calls or CPU_DEFAULT_SLOTS
        log.info("engine %s: loaded in %.1f s on CPU; %d slots", name, load_s, slots)
    voices = VoiceBank(mimi, files.voices, fake_presets=False)
    model = TorchTickModel(
        name,
        lm,
        mimi,
        tokenizer,
        voices,
        slots,
        kv_dtype=kv_dtype,
        reanchor_frames=reanchor_frames,
        stt=caller_stt[0] if caller_stt else None,
        stt_tokenizer=caller_stt[1] if caller_stt else None,
    )
    model.budget = budget
    model.load_s = load_s
    return model
