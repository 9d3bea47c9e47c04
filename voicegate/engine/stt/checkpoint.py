"""Reading and writing STT checkpoints (``model.safetensors``) with the release's tensor names.

Every tensor's name and shape is checked before anything is loaded: a file that does not
match is one ``CheckpointError`` naming what is missing, unexpected or misshapen. Tensors go
one at a time straight to the target device and dtype (RMSNorm scales stay float32).

Owns: stt_layout, load_stt_model, random_stt_model, write_random_stt. Imports torch and the
shared weight helpers (``voicegate.engine._weights``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from voicegate.engine._layout import check_layout
from voicegate.engine._weights import (
    meta_layout,
    open_checkpoint,
    param_dtype,
    random_weights,
    write_random_weights,
)
from voicegate.engine.stt.config import SttConfig
from voicegate.engine.stt.model import SttModel

__all__ = [
    "load_stt_model",
    "random_stt_model",
    "stt_layout",
    "write_random_stt",
]


def stt_layout(config: SttConfig) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a checkpoint for ``config`` (built on the meta device)."""
    return meta_layout(lambda: SttModel(config))


def load_stt_model(
    path: Path, config: SttConfig, device: torch.device | str, dtype: torch.dtype
) -> SttModel:
    """Load ``path`` as ``config`` after checking every tensor's name and shape."""
    path = Path(path)
    with open_checkpoint("ASR", path) as f:
        found = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
        check_layout("ASR", path, found, stt_layout(config))
        with torch.device("meta"):
            model = SttModel(config)
        state = {
            name: f.get_tensor(name).to(device=device, dtype=param_dtype(name, dtype))
            for name in model.state_dict()
        }
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def random_stt_model(
    config: SttConfig, device: torch.device | str, dtype: torch.dtype, seed: int = 0
) -> SttModel:
    """Random weights made directly on ``device`` (the tiny STT; benchmarks at real shapes)."""
    return random_weights(lambda: SttModel(config), device, dtype, seed)


def write_random_stt(
    path: Path, config: SttConfig, *, seed: int = 0, dtype: torch.dtype = torch.bfloat16
) -> None:
    """Random weights with the release's exact tensor names and shapes."""
    write_random_weights(path, stt_layout(config), seed=seed, dtype=dtype)
