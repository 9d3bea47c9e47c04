"""Checkpoint names/shapes (7B manifest on the meta device), loading and refusal."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from voicegate.engine.lm import (
    LM,
    LMConfig,
    LMModel,
    checkpoint_layout,
    load_lm_model,
    write_random_checkpoint,
)
from voicegate.errors import CheckpointError

# A copy of shared/reference/personaplex_lm_manifest.json (built from the public model code).
MANIFEST = Path(__file__).parents[2] / "data" / "lm" / "personaplex_lm_manifest.json"


def _manifest() -> dict[str, object]:
    return json.loads(MANIFEST.read_text())  # type: ignore[no-any-return]


def _slice_to_8_steps(tensors: dict[str, list[int]]) -> dict[str, tuple[int, ...]]:
    """personaplex.md's load-time slice: steps 0-7 of every per-step depformer weight."""
    out: dict[str, tuple[int, ...]] = {}
    for name, shape in tensors.items():
        m = re.match(
            r"(depformer_in|linears|depformer_emb|depformer\.layers\.\d+\.gating)\.(\d+)\.", name
        )
        if m:
            limit = 7 if m.group(1) == "depformer_emb" else 8
            if int(m.group(2)) >= limit:
                continue
        if name.endswith(
            ("self_attn.in_proj_weight", "self_attn.out_proj.weight")
        ) and name.startswith("depformer."):
            shape = [shape[0] // 2, *shape[1:]]
        out[name] = tuple(shape)
    return out


def test_7b_release_layout_equals_the_manifest() -> None:
    manifest = _manifest()
    tensors = {k: tuple(v) for k, v in manifest["tensors"].items()}  # type: ignore[attr-defined]
    layout = checkpoint_layout(LMConfig.personaplex_7b(), 16)
    assert layout == tensors
    assert sum(torch.Size(s).numel() for s in layout.values()) == manifest["num_params"]


def test_7b_model_on_meta_equals_the_sliced_manifest() -> None:
    manifest = _manifest()
    with torch.device("meta"):
        model = LMModel(LMConfig.personaplex_7b())
    names = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert names == _slice_to_8_steps(manifest["tensors"])  # type: ignore[arg-type]
    assert all(p.device.type == "meta" for p in model.parameters())


@pytest.mark.parametrize("steps", [16, 8])
def test_load_takes_the_first_8_steps(tmp_path: Path, steps: int) -> None:
    config = LMConfig.tiny()
    path = tmp_path / "model.safetensors"
    write_random_checkpoint(path, config, dep_steps=steps, seed=1, dtype=torch.float32)
    model = load_lm_model(path, config, "cpu", torch.float32)
    raw = load_file(str(path))
    for name, param in model.state_dict().items():
        assert torch.equal(param, raw[name][: param.shape[0]]), name
    assert model.dep_steps == 8


def test_load_converts_in_the_target_dtype(tmp_path: Path) -> None:
    config = LMConfig.tiny()
    path = tmp_path / "model.safetensors"
    write_random_checkpoint(path, config, seed=1)  # bf16 on disk, like the release
    with safe_open(str(path), framework="pt") as f:
        assert f.get_tensor("text_emb.weight").dtype == torch.bfloat16
    model = load_lm_model(path, config, "cpu", torch.bfloat16)
    for name, p in model.named_parameters():
        assert p.dtype == (torch.float32 if name.endswith(".alpha") else torch.bfloat16), name
    lm = LM(model)
    assert lm.new_state(2).kv.dtype == torch.bfloat16


def _rewrite(src: Path, dst: Path, edit: str) -> None:
    tensors = load_file(str(src))
    if edit == "missing":
        del tensors["transformer.layers.1.gating.linear_out.weight"]
    elif edit == "extra":
        tensors["transformer.layers.9.norm1.alpha"] = torch.ones(1, 1, 64)
    elif edit == "misshapen":
        tensors["text_linear.weight"] = torch.zeros(999, 64)
    save_file(tensors, str(dst))


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        ("missing", "1 missing: transformer.layers.1.gating.linear_out.weight"),
        ("extra", "1 unexpected: transformer.layers.9.norm1.alpha"),
        ("misshapen", "1 misshapen: text_linear.weight (expected [1000, 64], got [999, 64])"),
    ],
)
def test_bad_checkpoint_is_refused_naming_the_tensor(tmp_path: Path, edit: str, named: str) -> None:
    config = LMConfig.tiny()
    good, bad = tmp_path / "good.safetensors", tmp_path / "bad.safetensors"
    write_random_checkpoint(good, config, dtype=torch.float32)
    _rewrite(good, bad, edit)
    with pytest.raises(CheckpointError) as info:
        load_lm_model(bad, config, "cpu", torch.float32)
    assert named in str(info.value)
    assert str(bad) in str(info.value)


def test_wrong_config_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    write_random_checkpoint(path, LMConfig.tiny(text_card=500), dtype=torch.float32)
    with pytest.raises(CheckpointError, match="misshapen"):
        load_lm_model(path, LMConfig.tiny(text_card=1000), "cpu", torch.float32)


def test_unreadable_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_lm_model(path, LMConfig.tiny(), "cpu", torch.float32)
    with pytest.raises(CheckpointError, match="cannot read"):
        load_lm_model(tmp_path / "absent.safetensors", LMConfig.tiny(), "cpu", torch.float32)
