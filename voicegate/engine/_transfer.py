"""Small host values onto the device without waiting for the device's queue.

A copy from ordinary (pageable) host memory returns only once the device has reached it, so
behind a queued pass (a per-call prompt's text phases, about 10-30 ms of GPU work) it would
hold the engine thread that long. From pinned memory with ``non_blocking`` it is queued like a
kernel and the thread goes on launching the slot loads meanwhile. The pinned block comes from
torch's caching host allocator, which does not hand it out again before the copy is done.

Owns: to_device. Imports torch.
"""

from __future__ import annotations

import torch

__all__ = ["to_device"]


def to_device(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``values`` (a small host tensor) on ``device``: queued, not waited for, on CUDA."""
    if device.type != "cuda":
        return values.to(device)
    return values.pin_memory().to(device, non_blocking=True)
