"""Fixtures for the LM tests: small configs, random checkpoints and the moshi 0.2.13 oracle."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from voicegate.engine.lm import LMConfig, write_random_checkpoint


@pytest.fixture(scope="session")
def parity_config() -> LMConfig:
    """Tiny shapes with a short context, so a few dozen steps wrap the KV ring."""
    return dataclasses.replace(LMConfig.tiny(text_card=300), context=16)


@pytest.fixture(scope="session")
def release_checkpoint(tmp_path_factory: pytest.TempPathFactory, parity_config: LMConfig) -> Path:
    """A float32 random checkpoint in the 16-step release layout."""
    path = tmp_path_factory.mktemp("lm") / "model.safetensors"
    write_random_checkpoint(path, parity_config, seed=7, dtype=torch.float32)
    return path


@pytest.fixture(scope="session")
def moshi_lm() -> Callable[[LMConfig, int, Path], Any]:
    """Build moshi 0.2.13's LMModel with our shapes and load our checkpoint into it (strict)."""
    from moshi_ref import moshi_lm as build_moshi_lm  # the oracle is required, never skipped
    from safetensors.torch import load_file

    def build(config: LMConfig, dep_q: int, path: Path) -> Any:
        model = build_moshi_lm(config, dep_q)
        model.load_state_dict(load_file(str(path)), strict=True)
        return model.eval()

    return build


def _assert_rel_close(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-4) -> None:
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    err = (actual.double() - expected.double()).abs().max().item()
    scale = expected.double().abs().max().item()
    assert err <= rel * scale, f"max abs error {err:.3e} > {rel} x {scale:.3e}"


@pytest.fixture(scope="session")
def rel_close() -> Callable[..., None]:
    """``rel_close(actual, expected, rel=1e-4)``: max abs error <= rel x max |expected|."""
    return _assert_rel_close


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tiny matmuls: one thread is ~20x faster than two when the cores are shared (CI)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
