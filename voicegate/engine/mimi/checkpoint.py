"""Reading and writing Mimi safetensors files with the upstream tensor names.

``load_mimi`` checks every name and shape before reading any data, refuses a file with
missing, extra or misshapen tensors (``CheckpointError`` naming them), and loads straight
into the target device and dtype (the quantizer stays float32).

Owns: the checkpoint format. Imports torch, safetensors and voicegate.errors.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from voicegate.engine._layout import check_layout
from voicegate.engine.mimi.config import MimiConfig
from voicegate.engine.mimi.model import MimiModel
from voicegate.errors import CheckpointError

__all__ = ["MIMI_FILE_NAME", "expected_tensors", "load_mimi", "write_random_mimi"]

MIMI_FILE_NAME = "tokenizer-e351c8d8-checkpoint125.safetensors"


def expected_tensors(config: MimiConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor name of a Mimi checkpoint for ``config``, with its shape."""
    model = MimiModel(config, device="meta")
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def load_mimi(
    path: str | Path,
    config: MimiConfig | None = None,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> MimiModel:
    """Load a Mimi safetensors file into a ``MimiModel`` on ``device`` in ``dtype``.

    Raises ``CheckpointError`` if the file is absent, unreadable or does not match ``config``
    (default: the release shapes) exactly.
    """
    config = config if config is not None else MimiConfig.release()
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Mimi checkpoint not found: {path} (expected {MIMI_FILE_NAME})")
    expected = expected_tensors(config)
    device = torch.device(device)
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            found = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
            check_layout("Mimi", path, found, expected)
            state = {}
            for name in expected:
                tensor = f.get_tensor(name)
                target = torch.float32 if name.startswith("quantizer.") else dtype
                state[name] = tensor.to(dtype=target)
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"cannot read Mimi checkpoint {path}: {exc}") from exc
    model = MimiModel(config, device="meta")
    model.load_state_dict(state, strict=True, assign=True)
    model.refresh_codebooks()
    model.requires_grad_(False)
    return model.eval()


def write_random_mimi(path: str | Path, config: MimiConfig, *, seed: int = 0) -> None:
    """Write a float32 random-weights Mimi file with the exact upstream names for ``config``."""
    model = MimiModel(config, device="cpu").init_random_(seed)
    state = {name: t.detach().contiguous() for name, t in model.state_dict().items()}
    save_file(state, str(path))
