"""Random-weights release folders with the real file names, tensor names and shapes.

The real weights are gated and never fetched here; tests (tiny shapes) and the GPU smoke run
(7B shapes) load these folders through the same code as a real release: ``check_model_dir``,
``LM.from_checkpoint`` (16-step release layout, sliced to 8 at load), ``load_mimi``, the
SentencePiece loader and the ``.pt`` voice presets.

Owns: make_release_dir and its parts. Imports torch, safetensors, sentencepiece (and protobuf,
through sentencepiece's model proto, to pad the tokenizer to the LM's text vocabulary).
"""

from __future__ import annotations

import json
import math
import struct
import time
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import save_file

from voicegate.engine.lm import LMConfig, checkpoint_layout
from voicegate.engine.mimi import MimiConfig, write_random_mimi
from voicegate.engine.modeldir import (
    LM_FILE_NAME,
    MIMI_FILE_NAME,
    TOKENIZER_FILE_NAME,
    VOICES_DIR_NAME,
    ModelFiles,
    check_model_dir,
)
from voicegate.engine.stt import AsrFiles, SttConfig, check_asr_dir, write_random_stt
from voicegate.engine.stt.release import ASR_CONFIG_NAME, ASR_MODEL_NAME
from voicegate.engine.tokenizer import TINY_TOKENIZER_PATH

__all__ = [
    "SYNTHETIC_VOICES",
    "make_asr_dir",
    "make_release_dir",
    "tiny_stt_config",
    "write_random_lm",
    "write_synthetic_tokenizer",
    "write_voice_preset",
]

SYNTHETIC_VOICES = ("NATF0", "NATM1")
PRESET_FRAMES = 20


def write_synthetic_tokenizer(path: Path, vocab_size: int) -> None:
    """The bundled tiny SentencePiece model padded with unused pieces to ``vocab_size``.

    The pieces are appended in protobuf's wire format (``ModelProto.pieces`` is field 1; a
    repeated field's entries may follow the other fields), not through sentencepiece's
    generated ``sentencepiece_model_pb2``: that module refuses a protobuf runtime older than the
    one it was generated with, and pipecat (an extra) pins protobuf below it.
    """
    import sentencepiece

    raw = TINY_TOKENIZER_PATH.read_bytes()
    tiny = sentencepiece.SentencePieceProcessor(model_proto=raw)
    have = tiny.get_piece_size()
    if vocab_size < have:
        raise ValueError(f"vocab_size {vocab_size} is below the tiny model's {have} pieces")
    lowest = min(tiny.get_score(i) for i in range(have)) - 1.0
    out = bytearray(raw)
    for i in range(vocab_size - have):
        text = f"\u2581filler{i}".encode()
        # SentencePiece {1: piece (bytes), 2: score (float32), 3: type = NORMAL (1)}
        entry = b"\x0a" + _varint(len(text)) + text
        entry += b"\x15" + struct.pack("<f", lowest - i * 1e-3) + b"\x18\x01"
        out += b"\x0a" + _varint(len(entry)) + entry
    path.write_bytes(bytes(out))


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def write_random_lm(
    path: Path,
    config: LMConfig,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.bfloat16,
) -> int:
    """Random LM weights in the 16-step release layout, generated on ``device`` (fast on a GPU);
    returns the parameter count."""
    generator = torch.Generator(device=device).manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    count = 0
    for name, shape in checkpoint_layout(config, config.dep_q_release).items():
        t = torch.empty(shape, device=device, dtype=torch.float32)
        if name.endswith(".alpha"):
            t.fill_(1.0)
        else:
            bound = math.sqrt(3.0 / shape[-1])
            t.uniform_(-bound, bound, generator=generator)
        tensors[name] = t.to(dtype).cpu()
        count += t.numel()
        del t
    save_file(tensors, str(path))
    return count


def write_voice_preset(path: Path, dim: int, *, seed: int, card: int = 2048) -> None:
    """A ``.pt`` preset shaped like the release's: embeddings [N, 1, 1, dim], cache [1, 17, 4]."""
    g = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(PRESET_FRAMES, 1, 1, dim, generator=g) * 0.02
    cache = torch.randint(0, card, (1, 17, 4), generator=g)
    torch.save({"embeddings": embeddings, "cache": cache}, path)


def make_release_dir(
    root: Path,
    lm_config: LMConfig,
    mimi_config: MimiConfig,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    lm_dtype: torch.dtype = torch.bfloat16,
) -> tuple[ModelFiles, dict[str, float]]:
    """Write a complete release folder; returns its files and seconds spent per part."""
    root.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    started = time.perf_counter()
    write_random_lm(root / LM_FILE_NAME, lm_config, seed=seed, device=device, dtype=lm_dtype)
    times["lm_write_s"] = time.perf_counter() - started
    started = time.perf_counter()
    write_random_mimi(root / MIMI_FILE_NAME, mimi_config, seed=seed)
    times["mimi_write_s"] = time.perf_counter() - started
    write_synthetic_tokenizer(root / TOKENIZER_FILE_NAME, lm_config.text_card)
    voices = root / VOICES_DIR_NAME
    voices.mkdir(exist_ok=True)
    for i, name in enumerate(SYNTHETIC_VOICES):
        write_voice_preset(voices / f"{name}.pt", lm_config.dim, seed=seed + i)
    return check_model_dir(root), times


TINY_ASR_TOKENIZER_NAME = "tokenizer_tiny_asr.model"


def tiny_stt_config(text_card: int = 1000, n_q: int = 8) -> SttConfig:
    """The tiny STT: tiny dims, the tiny Mimi's 8 codebooks, 4 end-of-turn heads, a 64-frame
    window (wraps in 5 s of a test call), the 1B's 0.5 s delay."""
    return replace(
        SttConfig.tiny(text_card=text_card, n_q=n_q), tokenizer_name=TINY_ASR_TOKENIZER_NAME
    )


def make_asr_dir(
    root: Path,
    config: SttConfig | None = None,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> AsrFiles:
    """An ASR release folder (config.json, model.safetensors, tokenizer) with random weights:
    the tiny STT by default, loaded through the same checks as a Kyutai release."""
    config = config or tiny_stt_config()
    if not config.tokenizer_name:
        config = replace(config, tokenizer_name=TINY_ASR_TOKENIZER_NAME)
    root.mkdir(parents=True, exist_ok=True)
    (root / ASR_CONFIG_NAME).write_text(json.dumps(config.to_release_json(), indent=1) + "\n")
    write_random_stt(root / ASR_MODEL_NAME, config, seed=seed, dtype=dtype)
    write_synthetic_tokenizer(root / config.tokenizer_name, config.text_card)
    return check_asr_dir(root)
