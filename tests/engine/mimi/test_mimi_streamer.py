"""Per-slot streaming: isolation, resets, the active mask, offline clips, shapes, bf16."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from voicegate.engine.mimi import MimiConfig, MimiModel, MimiStreamer, encode_clip

FRAME = 1920
# a short attention window so a few frames already wrap the KV ring
CONFIG = dataclasses.replace(MimiConfig.tiny(), transformer_context=6)
N_FRAMES = 8
RESET_AT = 4


@pytest.fixture(scope="module")
def model() -> MimiModel:
    return MimiModel(CONFIG).init_random_(seed=1)


def _inputs(n_slots: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    pcm = torch.randn(N_FRAMES, n_slots, FRAME, generator=gen) * 0.3
    codes = torch.randint(
        0, CONFIG.cardinality, (N_FRAMES, n_slots, CONFIG.n_q_served), generator=gen
    )
    return pcm, codes


def _run(
    streamer: MimiStreamer,
    pcm: torch.Tensor,
    codes: torch.Tensor,
    resets: dict[int, torch.Tensor] | None = None,
    masks: dict[int, torch.Tensor] | None = None,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    enc, dec = [], []
    for i in range(pcm.shape[0]):
        if resets and i in resets:
            streamer.reset_slots(resets[i])
        active = masks.get(i) if masks else None
        enc.append(streamer.encode_step(pcm[i], active))
        dec.append(streamer.decode_step(codes[i], active))
    return enc, dec


def test_reset_of_one_slot_leaves_the_other_bit_identical(model: MimiModel) -> None:
    pcm, codes = _inputs(2, seed=0)
    plain_enc, plain_dec = _run(MimiStreamer(model, 2), pcm, codes)
    reset = {RESET_AT: torch.tensor([False, True])}
    enc, dec = _run(MimiStreamer(model, 2), pcm, codes, resets=reset)
    for i in range(N_FRAMES):
        assert torch.equal(enc[i][0], plain_enc[i][0])
        assert torch.equal(dec[i][0], plain_dec[i][0])
    # and slot 1 really restarted: its outputs after the reset differ from the unreset run
    assert not torch.equal(dec[RESET_AT + 1][1], plain_dec[RESET_AT + 1][1])


def test_reset_slot_equals_a_fresh_stream(model: MimiModel) -> None:
    pcm, codes = _inputs(2, seed=1)
    enc, dec = _run(
        MimiStreamer(model, 2), pcm, codes, resets={RESET_AT: torch.tensor([False, True])}
    )
    # a fresh stream fed only what slot 1 got after its reset (slot 0 fed something else)
    other_pcm, other_codes = _inputs(2, seed=2)
    fresh_pcm = torch.stack([other_pcm[RESET_AT:, 0], pcm[RESET_AT:, 1]], dim=1)
    fresh_codes = torch.stack([other_codes[RESET_AT:, 0], codes[RESET_AT:, 1]], dim=1)
    fresh_enc, fresh_dec = _run(MimiStreamer(model, 2), fresh_pcm, fresh_codes)
    for j, i in enumerate(range(RESET_AT, N_FRAMES)):
        assert torch.equal(enc[i][1], fresh_enc[j][1])
        assert torch.equal(dec[i][1], fresh_dec[j][1])


def test_inactive_slot_does_not_advance(model: MimiModel) -> None:
    pcm, codes = _inputs(2, seed=3)
    paused = {2: torch.tensor([True, False]), 3: torch.tensor([True, False])}
    enc, dec = _run(MimiStreamer(model, 2), pcm, codes, masks=paused)
    plain_enc, plain_dec = _run(MimiStreamer(model, 2), pcm, codes)
    # slot 0 never noticed
    for i in range(N_FRAMES):
        assert torch.equal(enc[i][0], plain_enc[i][0])
        assert torch.equal(dec[i][0], plain_dec[i][0])
    # slot 1 behaves as if frames 2 and 3 had never been fed
    kept = [i for i in range(N_FRAMES) if i not in paused]
    skip_enc, skip_dec = _run(MimiStreamer(model, 2), pcm[kept], codes[kept])
    for j, i in enumerate(kept):
        assert torch.equal(enc[i][1], skip_enc[j][1])
        assert torch.equal(dec[i][1], skip_dec[j][1])


def test_encode_clip_pads_the_last_frame_and_equals_streaming(model: MimiModel) -> None:
    clip = np.random.default_rng(0).standard_normal(2 * FRAME + 5).astype(np.float32) * 0.2
    codes = encode_clip(model, clip)
    assert codes.shape == (3, CONFIG.n_q_served) and codes.dtype == torch.long
    padded = torch.zeros(3 * FRAME)
    padded[: clip.size] = torch.from_numpy(clip)
    streamer = MimiStreamer(model, 1)
    expected = torch.cat(
        [streamer.encode_step(padded[i * FRAME : (i + 1) * FRAME][None]) for i in range(3)]
    )
    assert torch.equal(codes, expected)
    # an exact multiple of the frame gets no extra frame
    assert encode_clip(model, clip[: 2 * FRAME]).shape == (2, CONFIG.n_q_served)
    with pytest.raises(ValueError, match="empty"):
        encode_clip(model, clip[:0])


def test_wrong_shapes_are_refused(model: MimiModel) -> None:
    streamer = MimiStreamer(model, 2)
    with pytest.raises(ValueError, match=r"expected pcm \[2, 1920\]"):
        streamer.encode_step(torch.zeros(2, 960))
    with pytest.raises(ValueError, match=r"expected codes \[2, 8\]"):
        streamer.decode_step(torch.zeros(2, 7, dtype=torch.long))
    with pytest.raises(ValueError, match="active mask"):
        streamer.encode_step(torch.zeros(2, FRAME), torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="n_slots"):
        MimiStreamer(model, 0)


def test_bfloat16_model_streams_finite_audio(model: MimiModel) -> None:
    bf16 = MimiModel(CONFIG)
    bf16.load_state_dict(model.state_dict())
    bf16.cast_(torch.bfloat16).refresh_codebooks()
    assert bf16.dtype == torch.bfloat16
    assert bf16.quantizer.rvq_first.input_proj.weight.dtype == torch.float32
    streamer = MimiStreamer(bf16, 2)
    pcm, codes = _inputs(2, seed=4)
    enc, dec = _run(streamer, pcm[:3], codes[:3])
    assert all(c.dtype == torch.long and int(c.max()) < CONFIG.cardinality for c in enc)
    assert all(d.dtype == torch.float32 and bool(torch.isfinite(d).all()) for d in dec)


def test_streamer_works_whatever_the_callers_grad_mode(model: MimiModel) -> None:
    pcm = torch.zeros(2, FRAME)
    with torch.inference_mode():
        built_inside = MimiStreamer(model, 2)
    built_outside = MimiStreamer(model, 2)
    for streamer in (built_inside, built_outside):
        codes = streamer.encode_step(pcm)
        streamer.reset_slots(torch.tensor([True, False]))
        with torch.inference_mode():
            streamer.decode_step(codes)
        assert streamer.decode_step(codes).shape == (2, FRAME)


def test_state_bytes_per_slot_of_the_release_shapes() -> None:
    release = MimiConfig.release()
    streamer = MimiStreamer(MimiModel(release, device="meta"), n_slots=3)
    kv_one_side = 8 * 2 * 8 * 250 * 64 * 4  # layers, k/v, heads, context, head dim, fp32
    per_slot = streamer.state_bytes_per_slot
    assert 2 * kv_one_side < per_slot < 2 * kv_one_side + 200_000  # conv buffers are small
