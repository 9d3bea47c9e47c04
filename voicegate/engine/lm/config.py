"""Typed model shapes for the PersonaPlex LM (temporal transformer + depformer).

Owns: ``LMConfig`` and its two presets. Imports nothing from torch or the rest of VoiceGate.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PERSONAPLEX_DELAYS", "LMConfig"]

# Rows: text, agent semantic + 7 acoustic, user semantic + 7 acoustic (frames of delay).
PERSONAPLEX_DELAYS: tuple[int, ...] = (0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1)


@dataclass(frozen=True, slots=True)
class LMConfig:
    """Shapes of the LM. ``dep_q`` steps are served; ``dep_q_release`` are in released files."""

    dim: int
    num_layers: int
    num_heads: int
    ffn_inner: int  # gated SiLU FFN: linear_in is [2 * ffn_inner, dim]
    context: int  # attention window in frames (and the KV ring size)
    text_card: int
    audio_card: int = 2048
    n_q: int = 16  # audio streams in the input (8 agent + 8 user)
    delays: tuple[int, ...] = PERSONAPLEX_DELAYS
    max_period: float = 10_000.0
    norm_eps: float = 1e-8  # rms_norm_f32
    dep_dim: int = 1024
    dep_num_layers: int = 6
    dep_num_heads: int = 16
    dep_ffn_inner: int = 2816
    dep_q: int = 8
    dep_q_release: int = 16
    text_padding_id: int = 3
    text_end_padding_id: int = 0
    top_k_cap: int = 256  # static candidate count for per-slot top-k sampling

    def __post_init__(self) -> None:
        if self.dim % self.num_heads or self.dep_dim % self.dep_num_heads:
            raise ValueError("dim must be a multiple of num_heads (temporal and depformer)")
        if len(self.delays) != self.n_q + 1:
            raise ValueError(f"expected {self.n_q + 1} delays, got {len(self.delays)}")
        if not 0 < self.dep_q <= self.dep_q_release or self.dep_q > self.n_q:
            raise ValueError(f"dep_q {self.dep_q} must be in 1..{self.dep_q_release}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def dep_head_dim(self) -> int:
        return self.dep_dim // self.dep_num_heads

    @property
    def num_codebooks(self) -> int:
        """Token rows per frame: 1 text + ``n_q`` audio."""
        return self.n_q + 1

    @property
    def max_delay(self) -> int:
        return max(self.delays)

    @property
    def text_initial_id(self) -> int:
        return self.text_card

    @property
    def audio_initial_id(self) -> int:
        return self.audio_card

    @property
    def token_cache_size(self) -> int:
        """Frames of delayed tokens kept per slot (as the reference generator keeps)."""
        return self.max_delay + 2

    @classmethod
    def personaplex_7b(cls) -> LMConfig:
        """The released PersonaPlex-7B shapes (8.37 B parameters with the 16-step depformer)."""
        return cls(
            dim=4096,
            num_layers=32,
            num_heads=32,
            ffn_inner=11264,
            context=3000,
            text_card=32000,
        )

    @classmethod
    def tiny(cls, text_card: int = 1000, audio_card: int = 2048) -> LMConfig:
        """Small shapes, fast on 2 CPU cores: tests, the demo and the ``tiny`` backend."""
        return cls(
            dim=64,
            num_layers=2,
            num_heads=4,
            ffn_inner=176,
            context=256,
            text_card=text_card,
            audio_card=audio_card,
            dep_dim=32,
            dep_num_layers=2,
            dep_num_heads=4,
            dep_ffn_inner=88,
            top_k_cap=64,
        )
