"""Re-anchoring at the LM level: the rebuilt context is a fresh prefill, neighbours are untouched."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest
import torch

from voicegate.engine.base import SamplingParams
from voicegate.engine.lm import LM, LMConfig, VoicePrompt
from voicegate.engine.lm.prompt import PromptState, build_prompt_frames, delayed_layout
from voicegate.engine.lm.reanchor import Reanchorer
from voicegate.engine.lm.state import LMState

CONTEXT = 64
MARGIN = 8
KEEP = 20
CHUNK = 7
VOICE = VoicePrompt.from_codes(torch.arange(24).view(3, 8) * 7)
TEXT = [11, 12]
SAMPLED = SamplingParams()


@pytest.fixture(scope="module")
def lm() -> LM:
    config = dataclasses.replace(LMConfig.tiny(), context=CONTEXT)
    return LM.random(config, "cpu", torch.float32, seed=5)


class Call:
    """Steps slots with random caller codes and keeps every frame of slot ``watch``."""

    def __init__(self, lm: LM, slots: int, watch: int = 0, seed: int = 1) -> None:
        self.lm = lm
        self.prompt: PromptState = lm.prefill(VOICE, TEXT)
        self.state: LMState = lm.new_state(slots)
        for s in range(slots):
            lm.load_slot(self.state, s, self.prompt, SAMPLED, seed=100 + s)
        self.watch = watch
        self.frames = [build_prompt_frames(lm.config, VOICE, TEXT)]  # [17, n] per chunk
        self.gen = torch.Generator().manual_seed(seed)
        self.outputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def step(self) -> torch.Tensor:
        n = self.state.n_slots
        codes = torch.randint(0, self.lm.config.audio_card, (n, 8), generator=self.gen)
        out = self.lm.step(self.state, codes, np.ones(n, bool), return_logits=True)
        assert out.text_logits is not None and bool(out.is_valid.all())
        self.outputs.append((out.text_tokens.clone(), out.agent_codes.clone(), out.text_logits))
        w = self.watch
        frame = torch.cat([out.text_tokens[w : w + 1], out.agent_codes[w], codes[w]])
        self.frames.append(frame[:, None])
        return out.text_logits[w]

    def grid(self) -> torch.Tensor:
        """Inputs of every position so far [17, P + 1], rebuilt from the frames alone."""
        return delayed_layout(self.lm.config, torch.cat(self.frames, dim=1))


def test_reanchored_state_equals_a_fresh_prefill_of_the_same_frames(
    lm: LM, rel_close: Callable[..., None]
) -> None:
    call = Call(lm, slots=2)
    anchor = Reanchorer(lm, call.state, keep_frames=KEEP, margin_frames=MARGIN, chunk_frames=CHUNK)
    n = call.prompt.length
    assert n == 3 + 12 + 2
    while not anchor.is_due(0):
        call.step()
    assert call.state.positions_host[0] == CONTEXT - MARGIN
    job = anchor.begin(0, call.prompt)
    assert job is not None and job.start == CONTEXT - MARGIN - KEEP
    steps_during = 0
    while not anchor.advance(job):  # the call keeps talking meanwhile
        call.step()
        steps_during += 1
    assert steps_during >= 2 and job.chunks >= 3
    before = int(call.state.positions_host[0])
    counter = int(call.state.counters[0])
    new_position = anchor.finish(job)
    assert new_position == n + before - job.start
    assert int(call.state.positions[0]) == new_position
    assert int(call.state.counters[0]) == counter  # sampling state untouched

    # independent reference: the prompt's inputs, then the kept positions' inputs, one pass
    grid = call.grid()
    inputs = torch.cat([grid[:, :n], grid[:, job.start : before]], dim=1)
    hidden, kv = lm.model.temporal_prefill(lm.model.embed_tokens(inputs[None]))
    rel_close(call.state.kv[:, :, 0, :, :new_position], kv)

    # the next step's logits: what the fresh prefill predicts after one more position
    logits = call.step()
    grid = call.grid()
    inputs = torch.cat([inputs, grid[:, before : before + 1]], dim=1)
    hidden, _ = lm.model.temporal_prefill(lm.model.embed_tokens(inputs[None]))
    rel_close(logits, lm.model.text_logits(hidden[0, -1]))


def test_a_neighbour_is_bit_identical_with_and_without_a_reanchor_beside_it(lm: LM) -> None:
    def run(with_reanchor: bool) -> Call:
        call = Call(lm, slots=3, seed=9)
        anchor = Reanchorer(
            lm, call.state, keep_frames=KEEP, margin_frames=MARGIN, chunk_frames=CHUNK
        )
        job = None
        reanchors = 0
        for _ in range(int(2.5 * CONTEXT)):
            call.step()
            if not with_reanchor:
                continue
            if job is None and anchor.is_due(1):
                job = anchor.begin(1, call.prompt)
            if job is not None and anchor.advance(job):
                anchor.finish(job)
                job = None
                reanchors += 1
        # the first at position 56 (step 39), then one each time the slot climbs back from
        # 17 + 20 + the catch-up to 56: 7 in 160 steps
        assert reanchors == (7 if with_reanchor else 0)
        return call

    a, b = run(True), run(False)
    for (ta, ca, la), (tb, cb, lb) in zip(a.outputs, b.outputs, strict=True):
        for s in (0, 2):
            assert ta[s] == tb[s] and torch.equal(ca[s], cb[s]) and torch.equal(la[s], lb[s])
    assert any(
        not torch.equal(la[1], lb[1])
        for (_, _, la), (_, _, lb) in zip(a.outputs, b.outputs, strict=True)
    )
    for name in ("counters", "seeds", "text_temperature", "audio_top_k"):
        assert torch.equal(getattr(a.state, name), getattr(b.state, name))
    assert int(a.state.positions_host[1]) < CONTEXT < int(b.state.positions_host[1])


def test_no_room_means_no_reanchor(lm: LM) -> None:
    call = Call(lm, slots=1)
    anchor = Reanchorer(lm, call.state, keep_frames=KEEP, margin_frames=MARGIN, chunk_frames=CHUNK)
    assert anchor.kept_frames(call.prompt.length, call.prompt.length) == 0
    assert anchor.begin(0, call.prompt) is None  # no conversation yet
    long_prompt = dataclasses.replace(call.prompt, length=CONTEXT - 2 * MARGIN)
    assert anchor.kept_frames(long_prompt.length, CONTEXT - MARGIN) == 0
    with pytest.raises(ValueError, match="margin"):
        Reanchorer(lm, call.state, keep_frames=KEEP, margin_frames=CONTEXT)
    with pytest.raises(ValueError, match="chunk of 9 frames"):
        Reanchorer(lm, call.state, keep_frames=KEEP, margin_frames=MARGIN, chunk_frames=MARGIN + 1)
    with pytest.raises(ValueError, match="keep_frames"):
        Reanchorer(lm, call.state, keep_frames=0)
