"""The release folder (VOICEGATE_MODEL_DIR): which files must be there, checked before loading.

A PersonaPlex release folder holds ``model.safetensors`` (LM), the Mimi codec file, the
SentencePiece model and the preset voices (``voices.tgz`` or an extracted ``voices/`` folder
of ``.pt`` files). Nothing is ever downloaded: a missing file is an error that lists every
missing file at once.

Owns: ModelFiles, check_model_dir and the release file names. Imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from voicegate.errors import CheckpointError

__all__ = [
    "LM_FILE_NAME",
    "MIMI_FILE_NAME",
    "TOKENIZER_FILE_NAME",
    "VOICES_ARCHIVE_NAME",
    "VOICES_DIR_NAME",
    "ModelFiles",
    "check_model_dir",
]

LM_FILE_NAME = "model.safetensors"
MIMI_FILE_NAME = "tokenizer-e351c8d8-checkpoint125.safetensors"  # = mimi.MIMI_FILE_NAME
TOKENIZER_FILE_NAME = "tokenizer_spm_32k_3.model"
VOICES_ARCHIVE_NAME = "voices.tgz"
VOICES_DIR_NAME = "voices"


@dataclass(frozen=True, slots=True)
class ModelFiles:
    """Paths of a complete release folder."""

    root: Path
    lm: Path
    mimi: Path
    tokenizer: Path
    voices: Path  # a folder of .pt presets, or voices.tgz


def check_model_dir(model_dir: Path | None) -> ModelFiles:
    """Every file the personaplex backend needs, or a CheckpointError naming all missing."""
    if model_dir is None:
        raise CheckpointError(
            "engine personaplex needs VOICEGATE_MODEL_DIR: a folder with "
            f"{LM_FILE_NAME}, {MIMI_FILE_NAME}, {TOKENIZER_FILE_NAME} and "
            f"{VOICES_ARCHIVE_NAME} (or a {VOICES_DIR_NAME}/ folder of .pt presets)"
        )
    root = Path(model_dir)
    if not root.is_dir():
        raise CheckpointError(f"VOICEGATE_MODEL_DIR {root} is not a folder")
    missing = [
        name
        for name in (LM_FILE_NAME, MIMI_FILE_NAME, TOKENIZER_FILE_NAME)
        if not (root / name).is_file()
    ]
    voices_dir = root / VOICES_DIR_NAME
    voices_tgz = root / VOICES_ARCHIVE_NAME
    if voices_dir.is_dir() and any(voices_dir.rglob("*.pt")):
        voices = voices_dir
    elif voices_tgz.is_file():
        voices = voices_tgz
    else:
        voices = voices_tgz
        missing.append(f"{VOICES_ARCHIVE_NAME} (or a {VOICES_DIR_NAME}/ folder of .pt presets)")
    if missing:
        raise CheckpointError(
            f"model folder {root} is incomplete; missing: "
            + ", ".join(missing)
            + " (copy them from the PersonaPlex release; nothing is downloaded at run time)"
        )
    return ModelFiles(
        root=root,
        lm=root / LM_FILE_NAME,
        mimi=root / MIMI_FILE_NAME,
        tokenizer=root / TOKENIZER_FILE_NAME,
        voices=voices,
    )
