"""Weight handling shared by every safetensors model file (the LM and the caller STT).

A model is built on the meta device to learn its tensor names and shapes; a file is opened
with one clear ``CheckpointError`` when it cannot be read; random weights (variance 1 / fan_in,
RMSNorm scales at 1) are made directly on the target device, tensor by tensor in state-dict
order, so a seed gives the same weights whichever model file asks. RMSNorm scales
(``*.alpha``) stay float32 (the norms compute in float32; a few KB in all).

Owns: ``meta_layout``, ``param_dtype``, ``open_checkpoint``, ``random_weights``,
``write_random_weights``. Imports torch and safetensors; no model file.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from voicegate.errors import CheckpointError

__all__ = [
    "meta_layout",
    "open_checkpoint",
    "param_dtype",
    "random_weights",
    "write_random_weights",
]

M = TypeVar("M", bound=nn.Module)


def meta_layout(make: Callable[[], nn.Module]) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of the model ``make`` builds (built on the meta device)."""
    with torch.device("meta"):
        model = make()
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def param_dtype(name: str, dtype: torch.dtype) -> torch.dtype:
    """RMSNorm scales stay float32 (the norms compute in float32; a few KB in all)."""
    return torch.float32 if name.endswith(".alpha") else dtype


def open_checkpoint(what: str, path: Path) -> Any:
    """``safe_open`` of ``path`` on the CPU; an unreadable file is one ``CheckpointError``."""
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except Exception as exc:  # safetensors raises its own error type or OSError
        raise CheckpointError(f"cannot read {what} checkpoint {path}: {exc}") from exc


def _fill_random_(name: str, t: torch.Tensor, generator: torch.Generator) -> None:
    if name.endswith(".alpha"):
        t.fill_(1.0)
    else:  # variance 1 / fan_in, as the reference initialises (uniform is faster than normal)
        bound = math.sqrt(3.0 / t.shape[-1])
        t.uniform_(-bound, bound, generator=generator)


def random_weights(
    make: Callable[[], M], device: torch.device | str, dtype: torch.dtype, seed: int
) -> M:
    """The model ``make`` builds, with random weights made directly on ``device``."""
    with torch.device("meta"):
        model = make()
    generator = torch.Generator(device=device).manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, meta in model.state_dict().items():
        t = torch.empty(meta.shape, device=device, dtype=param_dtype(name, dtype))
        _fill_random_(name, t, generator)
        state[name] = t
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def write_random_weights(
    path: Path, layout: dict[str, tuple[int, ...]], *, seed: int, dtype: torch.dtype
) -> None:
    """Write random weights (made in float32 on the CPU) with ``layout``'s names and shapes."""
    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for name, shape in layout.items():
        t = torch.empty(shape, dtype=torch.float32)
        _fill_random_(name, t, generator)
        tensors[name] = t.to(dtype)
    save_file(tensors, str(path))
