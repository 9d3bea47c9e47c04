"""The ASR release folder (``VOICEGATE_ASR_MODEL_DIR``): checked, then loaded; never fetched.

A folder is what Kyutai publishes for ``kyutai/stt-1b-en_fr`` (or its ``-candle`` release with
the end-of-turn heads) and ``kyutai/stt-2.6b-en``: ``config.json``, ``model.safetensors`` and
the SentencePiece file that ``config.json`` names (``tokenizer_name``). The Mimi file the
release also ships is the same file as PersonaPlex's: the engine's Mimi encodes once for both.
A missing file, a config this engine cannot run or a misshapen tensor is one
``CheckpointError`` that names it.

Owns: AsrFiles, check_asr_dir, load_asr_config, count_extra_heads. Imports no torch at import
time (safetensors reads the file's tensor names when the config does not give the heads).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

from voicegate.engine.stt.config import SttConfig
from voicegate.engine.tokenizer import TextTokenizer
from voicegate.errors import CheckpointError

__all__ = [
    "ASR_CONFIG_NAME",
    "ASR_MODEL_NAME",
    "AsrFiles",
    "check_asr_dir",
    "count_extra_heads",
    "load_asr_config",
    "load_asr_tokenizer",
]

ASR_CONFIG_NAME = "config.json"
ASR_MODEL_NAME = "model.safetensors"
_EXTRA_HEAD = re.compile(r"extra_heads\.(\d+)\.weight")


def count_extra_heads(names: set[str]) -> int:
    """End-of-turn heads a file holds: one more than the highest ``extra_heads.{i}`` index."""
    found = [int(m.group(1)) for n in names if (m := _EXTRA_HEAD.fullmatch(n))]
    return max(found) + 1 if found else 0


@dataclass(frozen=True, slots=True)
class AsrFiles:
    """Paths of a complete ASR folder and the config read from it."""

    root: Path
    config: SttConfig
    model: Path
    tokenizer: Path


def load_asr_config(path: Path) -> SttConfig:
    """``config.json`` as an SttConfig (CheckpointError if unreadable or not runnable)."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"ASR config {path}: cannot read it as JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise CheckpointError(f"ASR config {path}: expected a JSON object")
    model_type = raw.get("model_type", "stt")
    if model_type != "stt":
        raise CheckpointError(f"ASR config {path}: model_type = {model_type!r}, expected 'stt'")
    return SttConfig.from_release_json(raw, str(path))


def check_asr_dir(asr_dir: Path) -> AsrFiles:
    """Every file the ASR needs, or a CheckpointError naming all that are missing."""
    root = Path(asr_dir)
    if not root.is_dir():
        raise CheckpointError(f"VOICEGATE_ASR_MODEL_DIR {root} is not a folder")
    config_path = root / ASR_CONFIG_NAME
    if not config_path.is_file():
        raise CheckpointError(
            f"ASR folder {root} is incomplete; missing: {ASR_CONFIG_NAME} (copy the whole "
            "kyutai/stt-* release; nothing is downloaded at run time)"
        )
    config = load_asr_config(config_path)
    if not config.tokenizer_name:
        raise CheckpointError(f"ASR config {config_path}: no tokenizer_name")
    missing = [n for n in (ASR_MODEL_NAME, config.tokenizer_name) if not (root / n).is_file()]
    if missing:
        raise CheckpointError(
            f"ASR folder {root} is incomplete; missing: {', '.join(missing)} (copy the whole "
            "kyutai/stt-* release; nothing is downloaded at run time)"
        )
    model = root / ASR_MODEL_NAME
    if config.extra_heads == 0:  # the config may not say: the file's end-of-turn heads count
        from safetensors import safe_open

        try:
            with safe_open(str(model), framework="pt", device="cpu") as f:
                heads = count_extra_heads(set(f.keys()))
        except Exception as exc:  # safetensors raises its own error type or OSError
            raise CheckpointError(f"cannot read ASR checkpoint {model}: {exc}") from exc
        if heads:
            config = replace(config, extra_heads=heads)
    return AsrFiles(root=root, config=config, model=model, tokenizer=root / config.tokenizer_name)


def load_asr_tokenizer(files: AsrFiles) -> TextTokenizer:
    """The release's SentencePiece model, checked against the model's text vocabulary."""
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor()
    try:
        processor.Load(str(files.tokenizer))
    except (OSError, RuntimeError) as exc:
        raise CheckpointError(
            f"ASR tokenizer {files.tokenizer} is not a SentencePiece model: {exc}"
        ) from exc
    tokenizer = TextTokenizer(processor, str(files.tokenizer))
    if tokenizer.vocab_size != files.config.text_card:
        raise CheckpointError(
            f"ASR tokenizer {files.tokenizer}: {tokenizer.vocab_size} pieces, the model "
            f"expects {files.config.text_card}"
        )
    return tokenizer
