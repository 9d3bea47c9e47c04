"""Reading and writing STT checkpoints (``model.safetensors``) with the release's tensor names.

Every tensor's name and shape is checked before anything is loaded: a file that does not
match is one ``CheckpointError`` naming what is missing, unexpected or misshapen. Tensors go
one at a time straight to the target device and dtype (RMSNorm scales stay float32).

Owns: stt_layout, load_stt_model, random_stt_model, write_random_stt. Imports torch,
safetensors.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from voicegate.engine._layout import check_layout
from voicegate.engine.stt.config import SttConfig
from voicegate.engine.stt.model import SttModel
from voicegate.errors import CheckpointError

__all__ = [
    "load_stt_model",
    "random_stt_model",
    "stt_layout",
    "write_random_stt",
]


def stt_layout(config: SttConfig) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a checkpoint for ``config`` (built on the meta device)."""
    with torch.device("meta"):
        model = SttModel(config)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def _param_dtype(name: str, dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if name.endswith(".alpha") else dtype


def load_stt_model(
    path: Path, config: SttConfig, device: torch.device | str, dtype: torch.dtype
) -> SttModel:
    """Load ``path`` as ``config`` after checking every tensor's name and shape."""
    path = Path(path)
    try:
        handle = safe_open(str(path), framework="pt", device="cpu")
    except Exception as exc:  # safetensors raises its own error type or OSError
        raise CheckpointError(f"cannot read ASR checkpoint {path}: {exc}") from exc
    with handle as f:
        found = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
        check_layout("ASR", path, found, stt_layout(config))
        with torch.device("meta"):
            model = SttModel(config)
        state = {
            name: f.get_tensor(name).to(device=device, dtype=_param_dtype(name, dtype))
            for name in model.state_dict()
        }
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def _fill_random_(name: str, t: torch.Tensor, generator: torch.Generator) -> None:
    if name.endswith(".alpha"):
        t.fill_(1.0)
    else:  # variance 1 / fan_in
        bound = math.sqrt(3.0 / t.shape[-1])
        t.uniform_(-bound, bound, generator=generator)


def random_stt_model(
    config: SttConfig, device: torch.device | str, dtype: torch.dtype, seed: int = 0
) -> SttModel:
    """Random weights made directly on ``device`` (the tiny STT; benchmarks at real shapes)."""
    with torch.device("meta"):
        model = SttModel(config)
    generator = torch.Generator(device=device).manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, meta in model.state_dict().items():
        t = torch.empty(meta.shape, device=device, dtype=_param_dtype(name, dtype))
        _fill_random_(name, t, generator)
        state[name] = t
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def write_random_stt(
    path: Path, config: SttConfig, *, seed: int = 0, dtype: torch.dtype = torch.bfloat16
) -> None:
    """Random weights with the release's exact tensor names and shapes."""
    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for name, shape in stt_layout(config).items():
        t = torch.empty(shape, dtype=torch.float32)
        _fill_random_(name, t, generator)
        tensors[name] = t.to(dtype)
    save_file(tensors, str(path))
