"""Long calls through the whole tick (tiny model, small window): re-anchors at the expected
frames, no seam in the output, neighbours untouched, and the switch that turns it off."""

from __future__ import annotations

import dataclasses
import types

import numpy as np
import pytest
import torch

from tests.engine.engine_helpers import BANK, SUPPORT, Collect, noise_frames
from voicegate.engine import BatchedEngine, TickMode
from voicegate.engine.backends import TINY_SEED, build_tiny_model, reanchor_frames
from voicegate.engine.lm import LM, LMConfig
from voicegate.engine.mimi import MimiConfig, MimiModel
from voicegate.engine.tokenizer import load_text_tokenizer
from voicegate.engine.torch_model import TorchTickModel
from voicegate.engine.voices import VoiceBank
from voicegate.errors import ConfigError

CONTEXT = 160
MARGIN = 16
KEEP = 40
CHUNK = 16
FRAMES = int(2.5 * CONTEXT)
JOIN_AT = 60


def tiny_model(keep: int, slots: int = 2) -> TorchTickModel:
    torch.set_num_threads(1)
    tokenizer = load_text_tokenizer(None)
    config = dataclasses.replace(LMConfig.tiny(text_card=tokenizer.vocab_size), context=CONTEXT)
    lm = LM.random(config, "cpu", torch.float32, seed=TINY_SEED)
    mimi = MimiModel(MimiConfig.tiny()).init_random_(seed=TINY_SEED)
    voices = VoiceBank(mimi, None, fake_presets=True)
    return TorchTickModel(
        "tiny",
        lm,
        mimi,
        tokenizer,
        voices,
        slots,
        reanchor_frames=keep,
        reanchor_chunk_frames=CHUNK,
        reanchor_margin_frames=MARGIN,
    )


class Recorder(Collect):
    def __init__(self) -> None:
        super().__init__()
        self.reports: list[tuple[int, int, int, int]] = []

    def on_tick(self, out):  # type: ignore[no-untyped-def]
        super().on_tick(out)
        if out.reanchor is not None:
            r = out.reanchor
            self.reports.append((out.frame_index, r.position_before, r.position_after, r.chunks))
            assert r.kept_frames == r.position_after - r.prompt_frames
            assert r.compute_ms > 0.0


def expected_reanchors(n: int, frames: int) -> list[tuple[int, int, int, int]]:
    """The schedule the rules give: due at context - margin, keep min(KEEP, ...), CHUNK
    positions prefilled after each tick while the call goes on, the report on the next output."""
    pos, job, pending, out = n, None, None, []
    for frame in range(frames):
        if pending is not None:
            out.append((frame, *pending))
            pending = None
        pos += 1
        if job is None and pos >= CONTEXT - MARGIN:
            keep = min(KEEP, pos - n, CONTEXT - 2 * MARGIN - n)
            job = [pos - keep, pos - keep, 0]  # start, done, chunks
        if job is not None:
            job[1] += min(pos - job[1], CHUNK)
            job[2] += 1
            if job[1] == pos:
                new = n + pos - job[0]
                pending = (pos, new, job[2])
                pos, job = new, None
    return out


def run_call(model: TorchTickModel, frames: int) -> tuple[BatchedEngine, Recorder]:
    engine = BatchedEngine(model, mode=TickMode.MANUAL, seed=7)
    engine.start()
    engine.load_persona(BANK)
    sink = Recorder()
    slot = engine.join(BANK.key, sink, seed=3)
    for frame in noise_frames(1, frames):
        slot.push(frame)
        assert engine.tick()
    return engine, sink


def test_a_call_of_two_and_a_half_windows_reanchors_at_the_expected_frames() -> None:
    model = tiny_model(KEEP)
    n = model.prepare_persona(BANK).length  # type: ignore[attr-defined]
    assert 30 < n < CONTEXT - 2 * MARGIN - KEEP
    engine, sink = run_call(model, FRAMES)
    try:
        want = expected_reanchors(n, FRAMES)
        assert len(want) >= 4
        assert sink.reports == want
        assert engine.stats().reanchors == len(want)
        assert engine.stats().reanchor_ms > 0.0
        # the call never lost its prompt: every position stayed inside the window
        assert max(before for _, before, _, _ in want) < CONTEXT
        assert int(model.state.positions_host[0]) < CONTEXT
        # no seam: one output per tick, in order, audio every frame
        assert sink.indices == list(range(FRAMES))
        audio = sink.audio()
        assert np.isfinite(audio).all() and len(audio) == FRAMES * 1920
        for frame, _, _, _ in want:
            assert np.abs(sink.pcm[frame]).max() > 0.0
    finally:
        engine.close()


def test_off_is_todays_behaviour() -> None:
    model = tiny_model(0)
    n = model.prepare_persona(BANK).length  # type: ignore[attr-defined]
    engine, sink = run_call(model, FRAMES)
    try:
        assert sink.reports == [] and engine.stats().reanchors == 0
        assert int(model.state.positions_host[0]) == n + FRAMES  # the prompt slid out
    finally:
        engine.close()


def test_a_neighbour_is_bit_identical_beside_a_reanchor() -> None:
    frames = 2 * CONTEXT

    def run(keep: int) -> tuple[Recorder, Recorder]:
        engine = BatchedEngine(tiny_model(keep), mode=TickMode.MANUAL, seed=7)
        engine.start()
        engine.load_persona(BANK)
        engine.load_persona(SUPPORT)
        first, neighbour = Recorder(), Recorder()
        a = engine.join(BANK.key, first, seed=3)
        b = None
        caller = noise_frames(1, frames)
        other = noise_frames(2, frames)
        try:
            for k in range(frames):
                if k == JOIN_AT:
                    b = engine.join(SUPPORT.key, neighbour, seed=4)
                a.push(caller[k])
                if b is not None:
                    b.push(other[k - JOIN_AT])
                assert engine.tick()
        finally:
            engine.close()
        return first, neighbour

    (first_on, next_on), (first_off, next_off) = run(KEEP), run(0)
    assert len(first_on.reports) >= 2 and first_off.reports == []
    # compare until the neighbour's own first re-anchor (the run without has none); its
    # frame k is the first call's frame k + JOIN_AT
    end = next_on.reports[0][0] if next_on.reports else len(next_on.pcm)
    assert end + JOIN_AT > first_on.reports[1][0]  # two re-anchors happened beside it
    assert next_on.tokens[:end] == next_off.tokens[:end]
    for k in range(end):
        assert np.array_equal(next_on.pcm[k], next_off.pcm[k]), k


def test_settings_switch() -> None:
    on = types.SimpleNamespace(reanchor=True, reanchor_frames=1500)
    assert reanchor_frames(on) == 1500
    assert reanchor_frames(types.SimpleNamespace(reanchor=False, reanchor_frames=1500)) == 0
    assert reanchor_frames(types.SimpleNamespace()) == 1500
    with pytest.raises(ConfigError, match="REANCHOR_FRAMES"):
        reanchor_frames(types.SimpleNamespace(reanchor=True, reanchor_frames=0))
    model = build_tiny_model(types.SimpleNamespace(device="cpu", max_calls=1, reanchor=False))
    assert not model.reanchors_enabled
    model = build_tiny_model(types.SimpleNamespace(device="cpu", max_calls=1))
    assert model.reanchors_enabled
