"""Checkpoint names and shapes against the manifest; refusal of files that do not fit."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import voicegate.engine.mimi as mimi
from voicegate.engine.mimi import (
    MimiConfig,
    MimiModel,
    MimiStreamer,
    expected_tensors,
    load_mimi,
    write_random_mimi,
)
from voicegate.errors import CheckpointError

# a copy of shared/reference/mimi_manifest.json (built upstream from the public definitions)
MANIFEST = Path(__file__).resolve().parents[2] / "data" / "mimi" / "mimi_manifest.json"


def test_exports_are_the_sorted_public_names() -> None:
    assert mimi.__all__ == sorted(mimi.__all__)
    assert all(hasattr(mimi, name) for name in mimi.__all__)


def test_release_config_on_meta_equals_the_manifest() -> None:
    manifest = json.loads(MANIFEST.read_text())
    expected = {name: tuple(shape) for name, shape in manifest["tensors"].items()}
    model = MimiModel(MimiConfig.release(), device="meta")
    ours = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    assert ours == expected
    assert sum(math.prod(s) for s in ours.values()) == manifest["num_params"] == 96_151_393


def test_release_config_shapes() -> None:
    c = MimiConfig.release()
    assert (c.frame_samples, c.hop_samples, c.latent_steps_per_frame) == (1920, 960, 2)
    assert (c.n_q, c.n_q_semantic, c.n_q_served, c.cardinality) == (32, 1, 8, 2048)
    tiny = MimiConfig.tiny()
    assert (tiny.frame_samples, tiny.n_q_served, tiny.cardinality) == (1920, 8, 2048)


@pytest.fixture()
def tiny_file(tmp_path: Path) -> Path:
    path = tmp_path / "mimi.safetensors"
    write_random_mimi(path, MimiConfig.tiny(), seed=3)
    return path


def test_random_file_round_trips(tiny_file: Path) -> None:
    state = load_file(str(tiny_file))
    assert {k: tuple(v.shape) for k, v in state.items()} == expected_tensors(MimiConfig.tiny())
    model = load_mimi(tiny_file, MimiConfig.tiny())
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[name]), name
    reference = MimiModel(MimiConfig.tiny()).init_random_(seed=3)
    pcm = torch.randn(2, 1920, generator=torch.Generator().manual_seed(0))
    assert torch.equal(
        MimiStreamer(model, 2).encode_step(pcm), MimiStreamer(reference, 2).encode_step(pcm)
    )


def test_load_in_bfloat16_keeps_quantizer_float32(tiny_file: Path) -> None:
    model = load_mimi(tiny_file, MimiConfig.tiny(), dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16
    state = model.state_dict()
    assert state["decoder_transformer.transformer.layers.0.linear1.weight"].dtype == torch.bfloat16
    assert state["quantizer.rvq_rest.output_proj.weight"].dtype == torch.float32
    assert not any(p.requires_grad for p in model.parameters())


def _rewrite(src: Path, dst: Path, edit: dict[str, torch.Tensor | None]) -> Path:
    state = load_file(str(src))
    for name, tensor in edit.items():
        if tensor is None:
            del state[name]
        else:
            state[name] = tensor
    save_file(state, str(dst))
    return dst


def test_missing_extra_and_misshapen_tensors_are_named(tiny_file: Path, tmp_path: Path) -> None:
    bad = _rewrite(
        tiny_file,
        tmp_path / "bad.safetensors",
        {
            "encoder.model.0.conv.conv.bias": None,
            "decoder_transformer.transformer.layers.1.norm2.weight": None,
            "quantizer.rvq_rest.vq.layers.7._codebook.embedding_sum": torch.zeros(2048, 16),
            "upsample.convtr.convtr.convtr.weight": torch.zeros(32, 1, 5),
        },
    )
    with pytest.raises(CheckpointError) as info:
        load_mimi(bad, MimiConfig.tiny())
    message = str(info.value)
    assert (
        "2 missing: decoder_transformer.transformer.layers.1.norm2.weight, encoder.model.0.conv.conv.bias"
        in message
    )
    assert "1 unexpected: quantizer.rvq_rest.vq.layers.7._codebook.embedding_sum" in message
    assert (
        "1 misshapen: upsample.convtr.convtr.convtr.weight (expected [32, 1, 4], got [32, 1, 5])"
        in message
    )


def test_release_config_refuses_a_tiny_file(tiny_file: Path) -> None:
    with pytest.raises(CheckpointError, match="misshapen"):
        load_mimi(tiny_file)


def test_absent_and_corrupt_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_mimi(tmp_path / "nope.safetensors", MimiConfig.tiny())
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a header")
    with pytest.raises(CheckpointError, match="cannot read") as info:
        load_mimi(junk, MimiConfig.tiny())
    assert info.value.__cause__ is not None
