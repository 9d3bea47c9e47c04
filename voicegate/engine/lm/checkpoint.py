"""Reading and writing LM checkpoints (``model.safetensors``) with the release's tensor names.

A released PersonaPlex file has a 16-step depformer; a Moshi-layout file has 8 steps. Both
load: the served steps (``config.dep_q``) are read and the rest is never materialised (the
stacked per-step attention weights are sliced row-wise at read time). Tensors are converted
one at a time straight to the target device and dtype, so a bf16 file becomes a bf16 model
on the GPU without a float32 copy (only the RMSNorm scales are kept in float32). Anything missing, extra or misshapen is refused with a
``CheckpointError`` that names it.

Owns: ``checkpoint_layout``, ``load_lm_model``, ``random_lm_model``, ``write_random_checkpoint``.
Imports torch and the shared weight helpers (``voicegate.engine._weights``).
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
from voicegate.engine.lm.config import LMConfig
from voicegate.engine.lm.model import LMModel

__all__ = ["checkpoint_layout", "load_lm_model", "random_lm_model", "write_random_checkpoint"]

_STACKED_PROBE = "depformer.layers.0.self_attn.in_proj_weight"


def checkpoint_layout(config: LMConfig, dep_steps: int | None = None) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a checkpoint with ``dep_steps`` depformer steps (meta build)."""
    return meta_layout(lambda: LMModel(config, dep_steps))


def _dep_steps(path: Path, found: dict[str, tuple[int, ...]], config: LMConfig) -> int:
    rows = found.get(_STACKED_PROBE, (0,))[0]
    steps, rest = divmod(rows, 3 * config.dep_dim)
    if rest or steps not in (config.dep_q, config.dep_q_release):
        steps = config.dep_q_release  # report against the release layout
    return steps


def load_lm_model(
    path: Path, config: LMConfig, device: torch.device | str, dtype: torch.dtype
) -> LMModel:
    """Load ``path`` (16-step release or 8-step layout) as a ``config.dep_q``-step model."""
    path = Path(path)
    with open_checkpoint("LM", path) as f:
        found = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
        check_layout("LM", path, found, checkpoint_layout(config, _dep_steps(path, found, config)))
        with torch.device("meta"):
            model = LMModel(config)
        state: dict[str, torch.Tensor] = {}
        for name, meta in model.state_dict().items():
            if tuple(meta.shape) == found[name]:
                tensor = f.get_tensor(name)
            else:  # per-step stack of a 16-step file: keep the first dep_q steps
                tensor = f.get_slice(name)[: meta.shape[0]]
            state[name] = tensor.to(device=device, dtype=param_dtype(name, dtype))
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def random_lm_model(
    config: LMConfig, device: torch.device | str, dtype: torch.dtype, seed: int = 0
) -> LMModel:
    """A model with random weights made directly on ``device`` (no file, no float32 copy)."""
    return random_weights(lambda: LMModel(config), device, dtype, seed)


def write_random_checkpoint(
    path: Path,
    config: LMConfig,
    *,
    dep_steps: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.bfloat16,
) -> None:
    """Write random weights with the exact names/shapes (default: the 16-step release layout)."""
    steps = config.dep_q_release if dep_steps is None else dep_steps
    write_random_weights(path, checkpoint_layout(config, steps), seed=seed, dtype=dtype)
