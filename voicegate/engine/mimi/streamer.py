"""Per-slot streaming state for Mimi and the frame-by-frame encode/decode steps.

``MimiStreamer`` preallocates, for a fixed number of slots, every buffer the codec carries
between frames (conv left contexts, transposed-conv overlaps, transformer KV rings and
positions) and steps all slots at once. Resets and the active mask work per slot.

Owns: codec streaming state. Imports torch (numpy for types only); never allocates state
per step.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import torch

from voicegate.engine.mimi.model import MimiModel

__all__ = ["MimiStreamer", "encode_clip"]


class _SideState:
    """One direction's buffers (encoder or decoder) for all slots."""

    def __init__(self, convs: list[torch.Tensor], kv: torch.Tensor, offset: torch.Tensor) -> None:
        self.convs = convs
        self.kv = kv
        self.offset = offset

    def reset(self, mask: torch.Tensor) -> None:
        for buf in self.convs:
            buf.masked_fill_(mask.view(-1, 1, 1), 0.0)
        # stale keys are masked by position anyway; zeroing keeps NaN/inf from lingering
        self.kv.masked_fill_(mask.view(1, 1, -1, 1, 1, 1), 0.0)
        self.offset.masked_fill_(mask, 0)


class MimiStreamer:
    """Streams Mimi for ``n_slots`` independent slots, one 1920-sample frame per step.

    Usage::

        mimi = MimiStreamer(model, n_slots=8)
        codes = mimi.encode_step(pcm)        # [8, 1920] float32 -> [8, 8] long
        pcm = mimi.decode_step(codes)        # [8, 8] long -> [8, 1920] float32
        mimi.reset_slots(mask)               # [8] bool: restart those slots only
    """

    def __init__(self, model: MimiModel, n_slots: int, encode_codebooks: int | None = None) -> None:
        if n_slots < 1:
            raise ValueError(f"n_slots must be >= 1, got {n_slots}")
        self.model = model
        self.config = model.config
        self.n_slots = n_slots
        self.frame_samples = self.config.frame_samples
        self.n_codebooks = self.config.n_q_served
        # codebooks an encode returns (a caller STT reads up to all 32; the LM the first 8:
        # residual VQ codes of a shorter encode are a prefix of a longer one's)
        self.encode_codebooks = encode_codebooks or self.n_codebooks
        if not self.n_codebooks <= self.encode_codebooks <= self.config.n_q:
            raise ValueError(
                f"encode_codebooks must be in {self.n_codebooks}..{self.config.n_q}, "
                f"got {self.encode_codebooks}"
            )
        device, dtype = model.device, model.dtype
        self.device = device

        enc_convs = [
            layer.new_state(n_slots, device, dtype) for layer in model.encoder.streaming_layers()
        ]
        self._down_previous = model.downsample.conv.new_state(n_slots, device, dtype)
        self._down_first = torch.ones(n_slots, device=device, dtype=torch.bool)
        enc_kv, enc_positions = model.encoder_transformer.new_state(n_slots, device, dtype)
        self._enc = _SideState([*enc_convs, self._down_previous], enc_kv, enc_positions)
        self._up_partial = model.upsample.convtr.new_state(n_slots, device, dtype)
        dec_convs = [
            layer.new_state(n_slots, device, dtype) for layer in model.decoder.streaming_layers()
        ]
        dec_kv, dec_positions = model.decoder_transformer.new_state(n_slots, device, dtype)
        self._dec = _SideState([self._up_partial, *dec_convs], dec_kv, dec_positions)
        self._enc_convs = enc_convs
        self._dec_convs = dec_convs

    @property
    def state_bytes_per_slot(self) -> int:
        """Device memory one slot's streaming state takes (both directions, all buffers)."""
        buffers = [*self._enc.convs, self._enc.kv, self._enc.offset, self._down_first]
        buffers += [*self._dec.convs, self._dec.kv, self._dec.offset]
        return sum(t.numel() * t.element_size() for t in buffers) // self.n_slots

    def _check_active(self, active: torch.Tensor | None) -> None:
        if active is not None and tuple(active.shape) != (self.n_slots,):
            raise ValueError(
                f"active mask must be [{self.n_slots}] bool, got {tuple(active.shape)}"
            )

    @torch.inference_mode()
    def encode_step(self, pcm: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:
        """Encode one frame per slot: ``pcm`` [B, 1920] float -> codes [B, encode_codebooks]."""
        if tuple(pcm.shape) != (self.n_slots, self.frame_samples):
            raise ValueError(
                f"expected pcm [{self.n_slots}, {self.frame_samples}], got {tuple(pcm.shape)}"
            )
        self._check_active(active)
        m = self.model
        x = pcm.to(device=self.device, dtype=m.dtype).view(self.n_slots, 1, self.frame_samples)
        x = m.encoder.stream(x, iter(self._enc_convs), active)
        x = m.encoder_transformer.stream(x, self._enc.kv, self._enc.offset, active)
        x = m.downsample.conv.stream(x, self._down_previous, active, first=self._down_first)
        if active is None:
            self._down_first.fill_(False)
        else:
            self._down_first.logical_and_(~active)
        return m.quantizer.encode(x, self.encode_codebooks)[:, :, 0]

    @torch.inference_mode()
    def decode_step(self, codes: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:
        """Decode one frame per slot: codes [B, n_q_served] long -> pcm [B, 1920] float32."""
        if tuple(codes.shape) != (self.n_slots, self.n_codebooks):
            raise ValueError(
                f"expected codes [{self.n_slots}, {self.n_codebooks}], got {tuple(codes.shape)}"
            )
        self._check_active(active)
        m = self.model
        latent = m.quantizer.decode(codes.to(self.device).view(self.n_slots, -1, 1))
        x = m.upsample.convtr.stream(latent.to(m.dtype), self._up_partial, active)
        x = m.decoder_transformer.stream(x, self._dec.kv, self._dec.offset, active)
        x = m.decoder.stream(x, iter(self._dec_convs), active)
        return x.view(self.n_slots, self.frame_samples).float()

    @torch.inference_mode()
    def reset_slots(self, mask: torch.Tensor) -> None:
        """Restart the slots where ``mask`` [B] is True (both directions); others are untouched."""
        self._check_active(mask)
        mask = mask.to(device=self.device, dtype=torch.bool)
        self._enc.reset(mask)
        self._dec.reset(mask)
        self._down_first.logical_or_(mask)


@torch.inference_mode()
def encode_clip(model: MimiModel, pcm: npt.NDArray[np.floating] | torch.Tensor) -> torch.Tensor:
    """Encode a whole 24 kHz mono clip frame by frame from a fresh state -> codes [N, n_q_served].

    The clip is cut in 1920-sample frames, the last one zero-padded (as the PersonaPlex
    reference does for WAV voice prompts); N = ceil(len / 1920). Returns on the model's device.
    """
    wave = torch.as_tensor(pcm, dtype=torch.float32).reshape(-1)
    frame = model.config.frame_samples
    n_frames = math.ceil(wave.numel() / frame)
    if n_frames == 0:
        raise ValueError("cannot encode an empty clip")
    padded = torch.zeros(n_frames * frame, dtype=torch.float32)
    padded[: wave.numel()] = wave
    padded = padded.to(model.device).view(n_frames, 1, frame)
    streamer = MimiStreamer(model, 1)
    codes = [streamer.encode_step(padded[i]) for i in range(n_frames)]
    return torch.cat(codes, dim=0)
