"""The caller STT inside the tick: one Mimi encode feeds both models, per-slot resets, the
outputs reach the sinks; without an ASR folder nothing changes."""

from __future__ import annotations

import dataclasses
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from voicegate.engine import FRAME_SAMPLES, BatchedEngine, TickMode, TickOutput
from voicegate.engine.factory import create_model
from voicegate.engine.lm import LM
from voicegate.engine.mimi import MimiConfig, MimiModel, MimiStreamer
from voicegate.engine.stt import NO_END_OF_TURN, Stt, SttState, load_asr_tokenizer
from voicegate.engine.synthetic import make_asr_dir, tiny_stt_config
from voicegate.engine.tokenizer import EPAD_ID, PAD_ID, load_text_tokenizer
from voicegate.engine.torch_model import TorchTickModel
from voicegate.engine.voices import VoiceBank
from voicegate.errors import CheckpointError

sys.path.insert(0, str(Path(__file__).parents[1]))
from engine_helpers import BANK, noise_frames  # noqa: E402

from voicegate.engine.backends import one_slot_state, tiny_lm_config  # noqa: E402


class CallerCollect:
    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.texts: list[str] = []
        self.eot: list[float] = []
        self.agent: list[int] = []
        self.delays: set[int] = set()

    def on_tick(self, out: TickOutput) -> None:
        self.tokens.append(out.caller_token)
        self.texts.append(out.caller_text)
        self.eot.append(out.caller_end_of_turn)
        self.agent.append(out.text_token)
        self.delays.add(out.caller_delay_frames)


def _model(
    stt: Stt | None,
    n_slots: int,
    mimi_q: int,
    root: Path,
    kv_dtype: torch.dtype | None = None,
) -> TorchTickModel:
    tokenizer = load_text_tokenizer(None)
    lm = LM.random(tiny_lm_config(tokenizer.vocab_size), "cpu", torch.float32, seed=1)
    mimi = MimiModel(dataclasses.replace(MimiConfig.tiny(), n_q=mimi_q)).init_random_(seed=2)
    stt_tok = None
    if stt is not None:
        files = make_asr_dir(root, stt.config)  # its tokenizer (the weights are not used)
        stt_tok = load_asr_tokenizer(files)
    voices = VoiceBank(mimi, None, fake_presets=True)
    return TorchTickModel(
        "tiny",
        lm,
        mimi,
        tokenizer,
        voices,
        n_slots,
        stt=stt,
        stt_tokenizer=stt_tok,
        kv_dtype=kv_dtype,
    )


def test_one_32_codebook_encode_feeds_the_lm_and_the_stt(tmp_path: Path) -> None:
    """The tick's STT tokens equal a standalone STT on a standalone 32-codebook encode of the
    same audio, and the agent's audio is bit-identical to the same tick without the STT."""
    config = dataclasses.replace(tiny_stt_config(n_q=32), context=16)
    stt = Stt.random(config, "cpu", torch.float32, seed=5)
    with_stt = _model(stt, 2, mimi_q=32, root=tmp_path / "asr")
    without = _model(None, 2, mimi_q=32, root=tmp_path)
    persona = without.prepare_persona(BANK)
    for m in (with_stt, without):
        for slot in range(2):
            m.reset_slot(slot, persona, BANK.sampling, seed=slot)
    ref_state = stt.new_state(2)
    for slot in range(2):
        stt.reset_slot(ref_state, slot)
    ref_mimi = MimiStreamer(with_stt.mimi_model, 2, encode_codebooks=32)
    frames = noise_frames(3, 40)
    active = np.ones(2, bool)
    for t in range(20):
        pcm = np.stack([frames[t], frames[20 + t]])
        out_a, tok_a = with_stt.step(pcm, active, 2)
        out_a, tok_a = out_a.copy(), tok_a.copy()
        out_b, tok_b = without.step(pcm, active, 2)
        np.testing.assert_array_equal(out_a, out_b)
        np.testing.assert_array_equal(tok_a, tok_b)
        codes = ref_mimi.encode_step(torch.from_numpy(pcm))
        assert codes.shape == (2, 32)
        ref = stt.step(ref_state, codes, active)
        outputs = with_stt.caller_outputs()
        assert outputs is not None
        np.testing.assert_array_equal(outputs[0], ref.text_tokens.numpy())
        np.testing.assert_allclose(outputs[1], ref.end_of_turn.numpy(), rtol=0, atol=1e-6)
    assert without.caller_outputs() is None


def test_the_engine_hands_caller_words_to_each_slot_and_resets_on_join(tmp_path: Path) -> None:
    files = make_asr_dir(tmp_path / "asr", seed=3)
    settings = types.SimpleNamespace(
        engine="tiny", max_calls=2, device="cpu", asr_model_dir=files.root
    )
    engine = BatchedEngine(create_model(settings), mode=TickMode.MANUAL, seed=7)  # type: ignore[arg-type]
    engine.start()
    engine.load_persona(BANK)
    frames = noise_frames(4, 60)
    first, late = CallerCollect(), CallerCollect()
    a = engine.join("bank", first)
    for t in range(30):
        a.push(frames[t])
        engine.tick()
    b = engine.join("bank", late)  # joins at tick 30: its STT starts from position 0
    for t in range(30, 60):
        a.push(frames[t])
        b.push(frames[t - 30])
        engine.tick()
    a.leave()
    b.leave()
    engine.close()
    # the late call saw the first call's first 30 frames: same STT stream, same words
    assert late.tokens == first.tokens[:30]
    assert late.texts == first.texts[:30]
    np.testing.assert_allclose(late.eot, first.eot[:30], rtol=0, atol=1e-6)
    assert all(0.0 <= p <= 1.0 for p in first.eot)
    assert first.delays == {files.config.delay_frames} == {7}
    tokenizer = load_asr_tokenizer(files)
    assert sum(bool(t) for t in first.texts) > 30  # random weights: mostly word pieces
    for token, text in zip(first.tokens, first.texts, strict=True):
        if token in (PAD_ID, EPAD_ID):
            assert text == ""
        elif text and "\ufffd" not in text:
            assert text == tokenizer.decode_piece(token)


def test_without_an_asr_folder_there_are_no_caller_words() -> None:
    settings = types.SimpleNamespace(engine="tiny", max_calls=1, device="cpu")
    engine = BatchedEngine(create_model(settings), mode=TickMode.MANUAL, seed=7)  # type: ignore[arg-type]
    engine.start()
    engine.load_persona(BANK)
    sink = CallerCollect()
    slot = engine.join("bank", sink)
    for frame in noise_frames(5, 3):
        slot.push(frame)
        engine.tick()
    engine.close()
    assert sink.tokens == [-1] * 3 and sink.eot == [NO_END_OF_TURN] * 3
    assert sink.texts == [""] * 3


def test_a_bad_asr_folder_is_one_clear_error(tmp_path: Path) -> None:
    files = make_asr_dir(tmp_path / "asr")
    (files.root / "model.safetensors").unlink()
    settings = types.SimpleNamespace(
        engine="tiny", max_calls=1, device="cpu", asr_model_dir=files.root
    )
    with pytest.raises(CheckpointError, match="missing: model.safetensors"):
        create_model(settings)
    too_many = make_asr_dir(tmp_path / "asr32", tiny_stt_config(n_q=32))
    settings.asr_model_dir = too_many.root
    with pytest.raises(ValueError, match="reads 32 codebooks, Mimi has 8"):
        create_model(settings)
    assert FRAME_SAMPLES == 1920


def test_with_the_8bit_lm_cache_the_stt_cache_is_8bit_too(tmp_path: Path) -> None:
    stt = Stt.random(tiny_stt_config(), "cpu", torch.float32, seed=5)
    model = _model(stt, 2, mimi_q=8, root=tmp_path / "asr", kv_dtype=torch.float8_e4m3fn)
    assert model.stt is not None
    assert model.stt.state.kv.dtype == torch.float8_e4m3fn
    assert model.stt.state.kv_scales is not None
    persona = model.prepare_persona(BANK)
    model.reset_slot(0, persona, BANK.sampling, seed=0)
    active = np.array([True, False])
    for frame in noise_frames(8, 5):
        model.step(np.stack([frame, frame]), active, 2)
    outputs = model.caller_outputs()
    assert outputs is not None
    assert 0 <= int(outputs[0][0]) < 1000 and 0.0 <= float(outputs[1][0]) <= 1.0
    assert int(outputs[0][1]) == PAD_ID and float(outputs[1][1]) == NO_END_OF_TURN


def _state_bytes(state: object) -> int:
    """Bytes of the tensors a slot-state object holds (its dataclass fields)."""
    if state is None:
        return 0
    if isinstance(state, MimiStreamer):
        return state.state_bytes_per_slot * state.n_slots
    fields = (getattr(state, f.name) for f in dataclasses.fields(state))  # type: ignore[arg-type]
    return sum(t.numel() * t.element_size() for t in fields if isinstance(t, torch.Tensor))


@pytest.mark.parametrize("kv_dtype", [None, torch.float8_e4m3fn])
def test_the_slot_estimate_counts_what_a_slot_with_the_stt_keeps(
    tmp_path: Path, kv_dtype: torch.dtype | None
) -> None:
    """The gateway's start-up estimate (``slot_budget`` measures ``one_slot_state``) counts
    per slot exactly what ``TorchTickModel`` allocates per slot: the LM's state, Mimi's
    streams encoding the STT's 32 codebooks, the STT's cache in the LM's cache dtype."""
    stt = Stt.random(dataclasses.replace(tiny_stt_config(n_q=32), context=16), "cpu", torch.float32)
    model = _model(stt, 3, mimi_q=32, root=tmp_path / "asr", kv_dtype=kv_dtype)
    assert model.stt is not None
    one = one_slot_state(model.lm, model.mimi_model, stt, kv_dtype)
    lm_state, stream, stt_state = one
    assert isinstance(stream, MimiStreamer) and stream.encode_codebooks == 32
    assert isinstance(stt_state, SttState)
    assert stt_state.kv.dtype == (kv_dtype or torch.float32)
    assert _state_bytes(stt_state) == SttState.bytes_per_slot(stt.config, stt_state.kv.dtype)
    per_slot = sum(_state_bytes(s) for s in one)
    model_bytes = sum(_state_bytes(s) for s in (model.state, model.mimi, model.stt.state))
    assert per_slot * 3 == model_bytes
    assert _state_bytes(stt_state) > 0 and per_slot > _state_bytes(lm_state)
