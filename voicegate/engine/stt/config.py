"""Typed shapes of Kyutai's streaming STT models (delayed-streams, text-only decoder).

``SttConfig`` describes one model: a Moshi temporal transformer with no depformer (``dep_q``
0) that reads 1 text row and ``n_q`` caller Mimi codebooks per 80 ms frame and writes one text
token, plus, for ``stt-1b-en_fr``, ``extra_heads`` linear end-of-turn heads. Presets give the
two releases (``kyutai/stt-1b-en_fr``, ``kyutai/stt-2.6b-en``) and a tiny test model;
``from_release_json`` reads a release's ``config.json`` and refuses what this engine cannot
run, naming the key. Sources: shared/reference/kyutai-stt.md (Kyutai's DSM configs and the
moshi 0.2.13 loaders).

Owns: SttConfig, the release presets and config.json parsing. Imports the standard library
and the error types only (no torch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voicegate.errors import CheckpointError

__all__ = ["FRAME_RATE_HZ", "SttConfig"]

FRAME_RATE_HZ = 12.5
_EXTRA_HEAD_DIM = 6  # pause-horizon classes of each end-of-turn head (class 0: a pause follows)
# end-of-turn head read by Kyutai's Unmute: a 2 s pause horizon (heads are 0.5, 1, 2, 3 s)
_END_OF_TURN_HEAD = 2


@dataclass(frozen=True, slots=True)
class SttConfig:
    """Shapes and stream constants of one STT model (see the module docstring)."""

    name: str
    dim: int
    num_layers: int
    num_heads: int
    ffn_inner: int  # gated SiLU: linear_in [2 * ffn_inner, dim], linear_out [dim, ffn_inner]
    context: int  # attention window in frames (KV ring size)
    text_card: int  # text logits; the embedding has text_card + 1 rows (last: initial token)
    audio_card: int = 2048
    n_q: int = 32  # caller codebooks read per frame
    max_period: float = 100_000.0
    norm_eps: float = 1e-8
    extra_heads: int = 0  # end-of-turn heads (4 in stt-1b-en_fr's VAD release)
    extra_head_dim: int = _EXTRA_HEAD_DIM
    end_of_turn_head: int = _END_OF_TURN_HEAD
    text_padding_id: int = 3  # PAD: no new text this frame
    text_end_padding_id: int = 0  # EPAD: a word starts on the next frame
    audio_delay_s: float = 0.5  # text trails the audio by this much (trained, not in delays)
    silence_prefix_s: float = 0.0  # silence Kyutai's runners put before the audio
    tokenizer_name: str = ""  # SentencePiece file of the release ('' for the tiny model)

    def __post_init__(self) -> None:
        if self.dim % self.num_heads or (self.dim // self.num_heads) % 2:
            raise ValueError(f"{self.name}: dim {self.dim} / {self.num_heads} heads must be even")
        if self.n_q < 1 or self.context < 1 or self.text_card < 4:
            raise ValueError(f"{self.name}: n_q, context and text_card must be positive")
        if self.extra_heads and not 0 <= self.end_of_turn_head < self.extra_heads:
            raise ValueError(f"{self.name}: end_of_turn_head outside the {self.extra_heads} heads")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def num_codebooks(self) -> int:
        """Rows per frame: 1 text + ``n_q`` audio (all with delay 0)."""
        return self.n_q + 1

    @property
    def text_initial_id(self) -> int:
        return self.text_card

    @property
    def audio_initial_id(self) -> int:
        return self.audio_card

    @property
    def delay_frames(self) -> int:
        """Frames by which a word's text trails its audio, rounded up (7 for 0.5 s, 32 for 2.5 s).

        Kyutai's servers use 6 and 32; rounding up never finalises a word before its text came.
        """
        return math.ceil(self.audio_delay_s * FRAME_RATE_HZ - 1e-9)

    @property
    def has_end_of_turn(self) -> bool:
        return self.extra_heads > 0

    @classmethod
    def stt_1b_en_fr(cls, extra_heads: int = 4) -> SttConfig:
        """kyutai/stt-1b-en_fr (0.5 s delay; the ``-candle`` release has 4 end-of-turn heads)."""
        return cls(
            name="stt-1b-en_fr",
            dim=2048,
            num_layers=16,
            num_heads=16,
            ffn_inner=5632,
            context=750,
            text_card=8000,
            extra_heads=extra_heads,
            audio_delay_s=0.5,
            silence_prefix_s=0.0,
            tokenizer_name="tokenizer_en_fr_audio_8000.model",
        )

    @classmethod
    def stt_2p6b_en(cls) -> SttConfig:
        """kyutai/stt-2.6b-en (2.5 s delay, no end-of-turn head)."""
        return cls(
            name="stt-2.6b-en",
            dim=2048,
            num_layers=48,
            num_heads=32,
            ffn_inner=5632,
            context=375,
            text_card=4000,
            audio_delay_s=2.5,
            silence_prefix_s=1.0,
            tokenizer_name="tokenizer_en_audio_4000.model",
        )

    @classmethod
    def tiny(cls, text_card: int, n_q: int = 8, context: int = 64) -> SttConfig:
        """Small shapes for tests and the demo (random weights, the release's tensor names)."""
        return cls(
            name="stt-tiny",
            dim=64,
            num_layers=2,
            num_heads=4,
            ffn_inner=176,
            context=context,
            text_card=text_card,
            n_q=n_q,
            extra_heads=4,
            audio_delay_s=0.5,
        )

    def to_release_json(self) -> dict[str, Any]:
        """The ``config.json`` a release with these shapes has (synthetic folders, tests)."""
        feedforward = (3 * self.ffn_inner + 1) // 2
        return {
            "card": self.audio_card,
            "n_q": self.n_q,
            "dep_q": 0,
            "delays": [0] * (self.n_q + 1),
            "dim": self.dim,
            "text_card": self.text_card,
            "existing_text_padding_id": self.text_padding_id,
            "num_heads": self.num_heads,
            "num_layers": self.num_layers,
            "hidden_scale": feedforward / self.dim,
            "causal": True,
            "layer_scale": None,
            "context": self.context,
            "max_period": self.max_period,
            "gating": "silu",
            "norm": "rms_norm_f32",
            "positional_embedding": "rope",
            "conditioners": {},
            "cross_attention": False,
            "extra_heads_num_heads": self.extra_heads,
            "extra_heads_dim": self.extra_head_dim,
            "lm_gen_config": {"temp": 0.0, "temp_text": 0.0, "top_k": 250, "top_k_text": 50},
            "stt_config": {
                "audio_delay_seconds": self.audio_delay_s,
                "audio_silence_prefix_seconds": self.silence_prefix_s,
            },
            "model_type": "stt",
            "name": self.name,
            "tokenizer_name": self.tokenizer_name,
        }

    @classmethod
    def from_release_json(cls, raw: dict[str, Any], source: str) -> SttConfig:
        """An ``SttConfig`` from a release's ``config.json``; CheckpointError naming the key
        whose value this engine cannot run (it runs text-only, all-delay-0 STT models)."""

        def get(key: str, default: Any = None) -> Any:
            return raw.get(key, default)

        def need(ok: bool, key: str, expected: str) -> None:
            if not ok:
                raise CheckpointError(
                    f"ASR config {source}: {key} = {get(key)!r}, expected {expected}"
                )

        for key in ("dim", "num_heads", "num_layers", "n_q", "text_card", "context"):
            need(isinstance(get(key), int) and get(key) > 0, key, "a positive integer")
        n_q = int(get("n_q"))
        need(get("dep_q", 0) == 0, "dep_q", "0 (a text-only STT model, no depformer)")
        delays = get("delays", [0] * (n_q + 1))
        need(
            isinstance(delays, list) and len(delays) == n_q + 1 and not any(delays),
            "delays",
            f"{n_q + 1} zeros",
        )
        need(get("card", 2048) == 2048, "card", "2048 (Mimi)")
        need(get("norm", "rms_norm_f32") == "rms_norm_f32", "norm", "rms_norm_f32")
        need(get("gating", "silu") == "silu", "gating", "silu")
        need(get("positional_embedding", "rope") == "rope", "positional_embedding", "rope")
        need(get("layer_scale") is None, "layer_scale", "null")
        need(get("kv_repeat", 1) == 1, "kv_repeat", "1")
        need(get("causal", True) is True, "causal", "true")
        need(not get("conditioners"), "conditioners", "none")
        need(not get("cross_attention", False), "cross_attention", "false")
        need(get("existing_text_padding_id", 3) == 3, "existing_text_padding_id", "3")
        need(get("text_card_out") in (None, get("text_card")), "text_card_out", "text_card")
        need(get("bias_proj", False) is False, "bias_proj", "false")
        hidden_scale = get("hidden_scale", 4.125)
        need(isinstance(hidden_scale, (int, float)), "hidden_scale", "a number")
        dim = int(get("dim"))
        feedforward = int(hidden_scale * dim)
        # moshi's gated FFN: 21/8 of dim when dim_feedforward is exactly 4 * dim, else 2/3 of it
        inner = (21 * dim) // 8 if feedforward == 4 * dim else (2 * feedforward) // 3
        stt = get("stt_config", {}) or {}
        tokenizer_name = str(get("tokenizer_name", ""))
        try:
            return cls(
                # releases carry no name: the folder's (kyutai/stt-1b-en_fr -> stt-1b-en_fr)
                name=str(get("name", Path(source).parent.name or source)),
                dim=dim,
                num_layers=int(get("num_layers")),
                num_heads=int(get("num_heads")),
                ffn_inner=inner,
                context=int(get("context")),
                text_card=int(get("text_card")),
                n_q=n_q,
                max_period=float(get("max_period", 10_000.0)),
                extra_heads=int(get("extra_heads_num_heads", 0)),
                extra_head_dim=int(get("extra_heads_dim", _EXTRA_HEAD_DIM)),
                audio_delay_s=float(stt.get("audio_delay_seconds", 0.5)),
                silence_prefix_s=float(stt.get("audio_silence_prefix_seconds", 0.0)),
                tokenizer_name=tokenizer_name,
            )
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"ASR config {source}: {exc}") from exc
