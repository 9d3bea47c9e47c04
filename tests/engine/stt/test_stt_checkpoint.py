"""STT manifests (built by moshi 0.2.13 from the releases' config.json), our layout against
them, the release folder check and the loader's refusals."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from voicegate.engine.stt import (
    Stt,
    SttConfig,
    check_asr_dir,
    load_asr_config,
    load_stt_model,
    stt_layout,
    write_random_stt,
)
from voicegate.errors import CheckpointError

DATA = Path(__file__).parents[2] / "data" / "stt"
RELEASES = {
    "stt-2.6b-en": SttConfig.stt_2p6b_en(),
    "stt-1b-en_fr-candle": SttConfig.stt_1b_en_fr(extra_heads=4),
}


def _manifest(name: str) -> dict[str, tuple[int, ...]]:
    raw = json.loads((DATA / f"{name}_manifest.json").read_text())
    return {k: tuple(v) for k, v in raw["tensors"].items()}


@pytest.mark.parametrize("name", sorted(RELEASES))
def test_release_config_json_gives_the_preset(name: str) -> None:
    config = load_asr_config(DATA / f"{name}.config.json")
    preset = RELEASES[name]
    assert dataclasses.replace(config, name=preset.name) == preset


@pytest.mark.parametrize("name", sorted(RELEASES))
def test_our_layout_equals_the_moshi_manifest(name: str) -> None:
    manifest = _manifest(name)
    assert stt_layout(RELEASES[name]) == manifest
    counts = {"stt-2.6b-en": (323, 2_617_118_720), "stt-1b-en_fr-candle": (135, 989_253_632)}
    assert (len(manifest), sum(math.prod(s) for s in manifest.values())) == counts[name]


@pytest.mark.parametrize("name", sorted(RELEASES))
def test_the_stored_manifest_is_what_moshi_builds(name: str) -> None:
    """The data files are not hand-written: moshi's LMModel on meta gives them again."""
    import sys

    sys.path.insert(0, str(Path(__file__).parents[3] / "scripts"))
    try:
        from stt_manifest import moshi_manifest
    finally:
        sys.path.pop(0)
    built = moshi_manifest(json.loads((DATA / f"{name}.config.json").read_text()))
    assert {k: tuple(v) for k, v in built["tensors"].items()} == _manifest(name)


def test_the_1b_without_heads_is_the_candle_layout_minus_the_heads() -> None:
    plain = stt_layout(SttConfig.stt_1b_en_fr(extra_heads=0))
    candle = _manifest("stt-1b-en_fr-candle")
    assert plain == {k: v for k, v in candle.items() if not k.startswith("extra_heads.")}


def test_config_json_refuses_what_the_engine_cannot_run(tmp_path: Path) -> None:
    raw = json.loads((DATA / "stt-2.6b-en.config.json").read_text())
    for key, value, said in [
        ("dep_q", 8, "dep_q = 8, expected 0"),
        ("delays", [0] * 32 + [1], "delays"),
        ("norm", "layer_norm", "norm = 'layer_norm'"),
        ("num_heads", 0, "num_heads = 0"),
        ("model_type", "moshi", "model_type = 'moshi'"),
    ]:
        path = tmp_path / f"{key}.json"
        path.write_text(json.dumps({**raw, key: value}))
        with pytest.raises(CheckpointError, match=said):
            load_asr_config(path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot read it as JSON"):
        load_asr_config(tmp_path / "bad.json")


def _folder(root: Path, config_name: str, config: SttConfig, *, heads_in_config: bool) -> Path:
    root.mkdir()
    raw = json.loads((DATA / f"{config_name}.config.json").read_text())
    raw.update(
        dim=config.dim,
        num_layers=config.num_layers,
        num_heads=config.num_heads,
        hidden_scale=((3 * config.ffn_inner + 1) // 2) / config.dim,
        context=config.context,
        text_card=config.text_card,
        n_q=config.n_q,
        delays=[0] * (config.n_q + 1),
    )
    if not heads_in_config:
        raw.pop("extra_heads_num_heads", None)
        raw.pop("extra_heads_dim", None)
    (root / "config.json").write_text(json.dumps(raw))
    write_random_stt(root / "model.safetensors", config, seed=1, dtype=torch.float32)
    (root / str(raw["tokenizer_name"])).write_bytes(b"spm")
    return root


def test_folder_with_heads_from_the_file(tmp_path: Path) -> None:
    """The PyTorch 1B config does not declare heads; the candle file has them: counted."""
    tiny = dataclasses.replace(SttConfig.tiny(text_card=300, n_q=32), context=750)
    root = _folder(tmp_path / "asr", "stt-1b-en_fr-candle", tiny, heads_in_config=False)
    files = check_asr_dir(root)
    assert files.config.extra_heads == 4 and files.config.context == 750
    assert files.config.name == "asr"  # a release's config.json has no name: the folder's
    assert files.tokenizer.name == "tokenizer_en_fr_audio_8000.model"
    stt = Stt.from_checkpoint(files.model, files.config, "cpu", torch.float32)
    assert stt.config.has_end_of_turn


def test_folder_missing_files_are_all_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="is not a folder"):
        check_asr_dir(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="missing: config.json"):
        check_asr_dir(tmp_path / "empty")
    root = tmp_path / "partial"
    root.mkdir()
    shutil.copy(DATA / "stt-2.6b-en.config.json", root / "config.json")
    with pytest.raises(
        CheckpointError, match="missing: model.safetensors, tokenizer_en_audio_4000.model"
    ):
        check_asr_dir(root)


def test_loader_names_the_missing_and_misshapen_tensors(tmp_path: Path) -> None:
    config = SttConfig.tiny(text_card=300, n_q=32)
    path = tmp_path / "model.safetensors"
    write_random_stt(path, config, dtype=torch.float32)
    tensors = load_file(str(path))
    del tensors["transformer.layers.1.gating.linear_out.weight"]
    tensors["text_linear.weight"] = torch.zeros(299, config.dim)
    tensors["depformer_in.0.weight"] = torch.zeros(2, 2)
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError) as err:
        load_stt_model(path, config, "cpu", torch.float32)
    text = str(err.value)
    assert "1 missing: transformer.layers.1.gating.linear_out.weight" in text
    assert "1 unexpected: depformer_in.0.weight" in text
    assert "text_linear.weight (expected [300, 64], got [299, 64])" in text
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read ASR checkpoint"):
        load_stt_model(tmp_path / "junk.safetensors", config, "cpu", torch.float32)


def test_a_loaded_checkpoint_equals_the_file(tmp_path: Path) -> None:
    config = SttConfig.tiny(text_card=300)
    path = tmp_path / "model.safetensors"
    write_random_stt(path, config, seed=9, dtype=torch.bfloat16)
    model = load_stt_model(path, config, "cpu", torch.bfloat16)
    for name, tensor in load_file(str(path)).items():
        loaded = model.state_dict()[name]
        assert loaded.dtype == (torch.float32 if name.endswith(".alpha") else torch.bfloat16)
        assert torch.equal(loaded.float(), tensor.float())
