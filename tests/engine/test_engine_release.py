"""The personaplex backend's loading path on a tiny-shaped release folder, and its errors."""

from __future__ import annotations

import dataclasses
import tarfile
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_helpers import Collect, noise_frames

from voicegate.engine import BatchedEngine, PersonaPrompt, TickMode, create_engine
from voicegate.engine import mimi as mimi_pkg
from voicegate.engine.backends import load_release_model, tiny_lm_config
from voicegate.engine.mimi import MimiConfig
from voicegate.engine.modeldir import MIMI_FILE_NAME, check_model_dir
from voicegate.engine.synthetic import make_release_dir, write_random_lm
from voicegate.engine.tokenizer import load_text_tokenizer
from voicegate.errors import CheckpointError, PersonaError


def test_missing_files_are_all_listed(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as info:
        check_model_dir(tmp_path)
    message = str(info.value)
    for name in ("model.safetensors", MIMI_FILE_NAME, "tokenizer_spm_32k_3.model", "voices.tgz"):
        assert name in message
    (tmp_path / "model.safetensors").write_bytes(b"x")
    with pytest.raises(CheckpointError) as info:
        check_model_dir(tmp_path)
    assert "model.safetensors" not in str(info.value).split("missing:")[1]
    assert MIMI_FILE_NAME == mimi_pkg.MIMI_FILE_NAME


def test_personaplex_without_model_dir_says_what_to_set() -> None:
    settings = types.SimpleNamespace(engine="personaplex", model_dir=None, max_calls=0)
    with pytest.raises(CheckpointError, match="VOICEGATE_MODEL_DIR"):
        create_engine(settings)


@pytest.fixture(scope="module")
def release_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("release")
    make_release_dir(root, tiny_lm_config(1000), MimiConfig.tiny(), seed=3)
    return root


def run_release(root: Path, voice: str) -> Collect:
    files = check_model_dir(root)
    model = load_release_model(
        files,
        lm_config=tiny_lm_config(1000),
        mimi_config=MimiConfig.tiny(),
        device=torch.device("cpu"),
        max_calls=2,
    )
    engine = BatchedEngine(model, mode=TickMode.MANUAL, seed=1)
    engine.start()
    engine.load_persona(PersonaPrompt("p", "You are a bank teller.", voice))
    sink = Collect()
    slot = engine.join("p", sink, seed=5)
    for frame in noise_frames(9, 4):
        slot.push(frame)
        engine.tick()
    engine.close()
    return sink


def test_release_folder_loads_and_serves_with_a_preset(release_dir: Path) -> None:
    assert load_text_tokenizer(release_dir).vocab_size == 1000
    sink = run_release(release_dir, "NATF0")
    assert sink.indices == [0, 1, 2, 3]
    assert all(np.isfinite(p).all() for p in sink.pcm)


def test_voices_tgz_serves_the_same_as_the_folder(release_dir: Path, tmp_path: Path) -> None:
    packed = tmp_path / "packed"
    packed.mkdir()
    for item in release_dir.iterdir():
        if item.is_file():
            (packed / item.name).symlink_to(item)
    with tarfile.open(packed / "voices.tgz", "w:gz") as tar:
        tar.add(release_dir / "voices", arcname="voices")
    assert check_model_dir(packed).voices.name == "voices.tgz"
    folder = run_release(release_dir, "NATM1")
    archive = run_release(packed, "NATM1")
    np.testing.assert_array_equal(folder.audio(), archive.audio())
    with pytest.raises(PersonaError, match="no preset voice 'VARF9'"):
        run_release(packed, "VARF9")


def test_a_misshapen_lm_file_is_refused(release_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in release_dir.iterdir():
        (broken / item.name).symlink_to(item)
    (broken / "model.safetensors").unlink()
    # an LM of another size under the right name
    smaller = dataclasses.replace(tiny_lm_config(1000), dim=32, num_heads=2)
    write_random_lm(broken / "model.safetensors", smaller)
    with pytest.raises(CheckpointError, match="misshapen"):
        run_release(broken, "NATF0")
