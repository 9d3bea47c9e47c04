"""Parity of our Mimi with moshi 0.2.13 on random weights, float32, CPU, streamed frame by frame."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from voicegate.engine.mimi import MimiConfig, MimiModel, MimiStreamer, encode_clip

pytest.importorskip("moshi")
from moshi_ref import moshi_mimi  # noqa: E402

FRAME = 1920
# A 6-entry attention window makes the ring KV cache wrap after 3 frames, so a short
# stream covers what a real call only reaches after 10 s; two residual layers cover dilation.
WRAPPING = dataclasses.replace(MimiConfig.tiny(), transformer_context=6, n_residual_layers=2)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _run_both(
    config: MimiConfig, n_slots: int, n_frames: int, masks: list[torch.Tensor] | None = None
) -> tuple[list[tuple[torch.Tensor, ...]], list[torch.Tensor]]:
    model = MimiModel(config).init_random_(seed=7)
    ref = moshi_mimi(config, model.state_dict())
    ours = MimiStreamer(model, n_slots)
    gen = torch.Generator().manual_seed(3)
    results: list[tuple[torch.Tensor, ...]] = []
    used_masks = []
    with torch.no_grad(), ref.streaming(n_slots):
        for i in range(n_frames):
            active = masks[i] if masks is not None else torch.ones(n_slots, dtype=torch.bool)
            used_masks.append(active)
            ref.set_exec_mask(active)
            pcm = torch.randn(n_slots, FRAME, generator=gen) * 0.3
            codes_in = torch.randint(
                0, config.cardinality, (n_slots, config.n_q_served), generator=gen
            )
            ref_codes = ref.encode(pcm[:, None])[:, :, 0]
            ref_pcm = ref.decode(codes_in[:, :, None])[:, 0]
            results.append(
                (
                    ours.encode_step(pcm, None if masks is None else active),
                    ref_codes,
                    ours.decode_step(codes_in, None if masks is None else active),
                    ref_pcm,
                )
            )
    return results, used_masks


@pytest.mark.parametrize("config", [MimiConfig.tiny(), WRAPPING], ids=["tiny", "wrapping"])
def test_streamed_encode_decode_match_moshi(config: MimiConfig) -> None:
    n_frames = 10 if config is WRAPPING else 4
    results, _ = _run_both(config, n_slots=3, n_frames=n_frames)
    for codes, ref_codes, pcm, ref_pcm in results:
        assert codes.dtype == torch.long and codes.shape == (3, 8)
        assert torch.equal(codes, ref_codes)
        assert pcm.shape == (3, FRAME)
        assert _relative(pcm, ref_pcm) < 1e-4
    # the codes are not degenerate (a broken quantizer could match by always returning 0)
    all_codes = torch.stack([r[0] for r in results])
    assert len(set(all_codes.flatten().tolist())) > 50


def test_active_mask_matches_moshi_exec_mask() -> None:
    on = torch.ones(3, dtype=torch.bool)
    masks = [on, on, torch.tensor([True, False, True]), torch.tensor([False, False, True])]
    masks += [on] * 6
    results, used = _run_both(WRAPPING, n_slots=3, n_frames=10, masks=masks)
    for (codes, ref_codes, pcm, ref_pcm), active in zip(results, used, strict=True):
        assert torch.equal(codes[active], ref_codes[active])
        assert _relative(pcm[active], ref_pcm[active]) < 1e-4


def test_encode_clip_matches_moshi_voice_prompt_encoding() -> None:
    config = MimiConfig.tiny()
    model = MimiModel(config).init_random_(seed=11)
    ref = moshi_mimi(config, model.state_dict())
    clip = torch.randn(3 * FRAME + 700, generator=torch.Generator().manual_seed(5)) * 0.2
    padded = torch.cat([clip, torch.zeros(FRAME - 700)])
    with torch.no_grad(), ref.streaming(1):
        expected = torch.cat(
            [
                ref.encode(padded[i * FRAME : (i + 1) * FRAME].view(1, 1, FRAME))[0].T
                for i in range(4)
            ]
        )
    assert torch.equal(encode_clip(model, clip.numpy()), expected)
