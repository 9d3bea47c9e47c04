"""Mimi's architecture as a typed, frozen config (release and tiny shapes).

Owns: the shapes of the codec. Imports nothing but the standard library.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["MimiConfig"]


@dataclass(frozen=True, slots=True)
class MimiConfig:
    """Every shape of a Mimi codec; ``release()`` is the real one, ``tiny()`` the test one.

    Both keep 24 kHz audio, 1920 samples (80 ms) per frame and 2048 entries per codebook, so
    everything around the codec (frame plumbing, the LM's token ids, the prompt's silence and
    sine codes) is identical between the two.
    """

    sample_rate_hz: int = 24_000
    frame_rate_hz: float = 12.5
    channels: int = 1
    # SEANet convolutional encoder/decoder
    n_filters: int = 64
    ratios: tuple[int, ...] = (8, 6, 5, 4)
    dimension: int = 512
    n_residual_layers: int = 1
    kernel_size: int = 7
    last_kernel_size: int = 3
    residual_kernel_size: int = 3
    dilation_base: int = 2
    compress: int = 2
    # one transformer on each side, d_model == dimension
    transformer_layers: int = 8
    transformer_heads: int = 8
    transformer_ffn: int = 2048
    transformer_context: int = 250
    layer_scale: float = 0.01
    rope_max_period: float = 10_000.0
    # split residual VQ: n_q_semantic codebooks in rvq_first, the rest in rvq_rest
    codebook_dim: int = 256
    codebook_size: int = 2048
    n_q: int = 32
    n_q_semantic: int = 1
    n_q_served: int = 8

    def __post_init__(self) -> None:
        frame = self.sample_rate_hz / self.frame_rate_hz
        if frame != int(frame):
            raise ValueError(f"frame size must be whole samples, got {frame}")
        if self.frame_samples % self.hop_samples != 0:
            raise ValueError(
                f"frame of {self.frame_samples} samples is not a multiple of the SEANet hop "
                f"{self.hop_samples}"
            )
        if self.dimension % self.transformer_heads != 0:
            raise ValueError(f"dimension {self.dimension} not divisible by the heads")
        if (self.dimension // self.transformer_heads) % 2 != 0:
            raise ValueError("RoPE needs an even head dimension")
        if not self.n_q_semantic < self.n_q_served <= self.n_q:
            raise ValueError(
                f"need n_q_semantic < n_q_served <= n_q, got {self.n_q_semantic}, "
                f"{self.n_q_served}, {self.n_q}"
            )

    @classmethod
    def release(cls) -> MimiConfig:
        """The real Mimi of PersonaPlex / Moshi (tokenizer-e351c8d8-checkpoint125)."""
        return cls()

    @classmethod
    def tiny(cls) -> MimiConfig:
        """Small random-weight codec for tests and the ``tiny`` backend (fast on 2 CPU cores)."""
        return cls(
            n_filters=4,
            dimension=32,
            transformer_layers=2,
            transformer_heads=2,
            transformer_ffn=64,
            codebook_dim=16,
            n_q=8,
        )

    @property
    def frame_samples(self) -> int:
        """Samples per codec frame (1920 at 24 kHz and 12.5 Hz)."""
        return int(self.sample_rate_hz / self.frame_rate_hz)

    @property
    def hop_samples(self) -> int:
        """Samples per SEANet latent step (960 for ratios 8,6,5,4)."""
        return math.prod(self.ratios)

    @property
    def latent_steps_per_frame(self) -> int:
        """SEANet latent steps per codec frame: the stride of the down/upsampling conv (2)."""
        return self.frame_samples // self.hop_samples

    @property
    def head_dim(self) -> int:
        return self.dimension // self.transformer_heads

    @property
    def cardinality(self) -> int:
        """Entries per codebook; valid codes are ``0 .. cardinality - 1``."""
        return self.codebook_size
