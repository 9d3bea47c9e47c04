"""Fixtures for the STT tests: a parity config (release names, tiny dims) and one torch thread."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from voicegate.engine.stt import SttConfig


@pytest.fixture(scope="session")
def parity_stt_config() -> SttConfig:
    """Tiny dims, the release's 32 codebooks and 4 heads, a context short enough to wrap."""
    return SttConfig.tiny(text_card=300, n_q=32, context=16)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
