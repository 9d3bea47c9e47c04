"""The hybrid persona prompt: its four teacher-forced phases, laid out as delayed tokens.

Phases (one frame each, as the public PersonaPlex generator steps them): the voice (text PAD,
agent = the voice's codes, user = a 440 Hz sine frame), 6 frames of silence, the text prompt
(one frame per token of ``"<system> " + prompt.strip() + " <system>"``), 6 frames of silence.
Every token is known in advance, so ``LM.prefill`` runs them as one parallel causal pass.

Position ``p`` of the delayed layout holds, in row ``k``, the token of frame ``p - delay[k]``,
or the initial token while ``p <= delay[k]`` (so frame 0 is never an input, exactly as in the
reference generators). A prompt of N frames fills positions 0..N-1 completely; position N
already knows its delayed rows (frame N-1) and waits for the live step for the others.

Owns: the phase constants, ``VoicePrompt``, ``PromptState``, the layout helpers. Imports torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from voicegate.engine.lm.config import LMConfig
from voicegate.errors import CheckpointError

__all__ = [
    "SILENCE_CODES",
    "SILENCE_FRAMES",
    "SINE_CODES",
    "PromptState",
    "VoicePrompt",
    "build_prompt_frames",
    "delayed_layout",
    "system_prompt_text",
    "text_phase_layout",
]

SILENCE_CODES: tuple[int, ...] = (948, 243, 1178, 546, 1736, 1030, 1978, 2008)
SINE_CODES: tuple[int, ...] = (430, 1268, 381, 1611, 1095, 1495, 56, 472)
SILENCE_FRAMES = 6  # 0.5 s at 12.5 Hz, before and after the text prompt
UNKNOWN = -2  # a token not known yet (the reference's "ungenerated" id)


def system_prompt_text(prompt: str) -> str:
    """The text to tokenize (plain ``sp.encode``) for the text phase; '' for an empty prompt.

    As the public generator does, a prompt already wrapped in ``<system>`` tags is kept as is.
    """
    prompt = prompt.strip()
    if not prompt or (prompt.startswith("<system>") and prompt.endswith("<system>")):
        return prompt
    return f"<system> {prompt} <system>"


@dataclass(frozen=True, eq=False, slots=True)
class VoicePrompt:
    """The voice phase: agent codes [N, 8] of a WAV clip, or a ``.pt`` preset's embeddings.

    A preset holds the input embeddings of the first N-1 positions [N-1, dim] and the
    generator's token cache after the voice phase, from which the agent codes of the last two
    voice frames are read (the only tokens of later positions that depend on the voice).
    """

    agent_codes: torch.Tensor  # [N, 8] long; -1 where unknown (preset, overridden positions)
    embeddings: torch.Tensor | None = None  # [N-1, dim] for positions 0..N-2

    @property
    def n_frames(self) -> int:
        return int(self.agent_codes.shape[0])

    @classmethod
    def from_codes(cls, agent_codes: torch.Tensor) -> VoicePrompt:
        """Voice from a clip's Mimi codes [N, 8] (or [1, 8, N] as Mimi returns them)."""
        codes = agent_codes
        if codes.dim() == 3:
            codes = codes[0].T
        if codes.dim() != 2 or codes.shape[0] < 1:
            raise ValueError(f"expected agent codes [N, 8], got {tuple(agent_codes.shape)}")
        return cls(agent_codes=codes.to(torch.long))

    @classmethod
    def from_preset(cls, embeddings: torch.Tensor, cache: torch.Tensor) -> VoicePrompt:
        """Voice from a preset: ``embeddings`` [M, 1, 1, dim] or [M, dim], ``cache`` [1, 17, W]."""
        emb = embeddings.reshape(embeddings.shape[0], -1)
        cache = cache.reshape(-1, cache.shape[-1]).to(torch.long)
        if cache.shape[0] < 9 or emb.shape[0] < 1:
            raise ValueError(
                f"bad preset: embeddings {tuple(embeddings.shape)}, cache {tuple(cache.shape)}"
            )
        n = emb.shape[0] + 1  # the generator ran one voice frame without an output
        width = cache.shape[-1]
        codes = torch.full((n, cache.shape[0] // 2), -1, dtype=torch.long)
        last, after = (n - 1) % width, n % width
        codes[n - 1, 0] = cache[1, last]  # semantic of the last frame (delay 0)
        codes[n - 1, 1:] = cache[2:9, after]  # acoustic of the last frame (delay 1)
        if n >= 2:
            codes[n - 2, 1:] = cache[2:9, last]
        return cls(agent_codes=codes, embeddings=emb)

    @classmethod
    def load_preset(cls, path: Path) -> VoicePrompt:
        """Read a release ``.pt`` voice (a dict with ``embeddings`` and ``cache``)."""
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
            return cls.from_preset(data["embeddings"], data["cache"])
        except (OSError, KeyError, TypeError, RuntimeError, ValueError) as exc:
            raise CheckpointError(
                f"voice preset {path}: expected a dict with embeddings and cache ({exc})"
            ) from exc


@dataclass(frozen=True, eq=False, slots=True)
class PromptState:
    """A prefilled persona prompt: what ``LM.load_slot`` copies into a slot.

    Depends only on (voice, text prompt); compute once per persona. ``kv`` [L, 2, H, N, D]
    holds positions 0..N-1, ``hidden`` [dim] the normed output at position N-1 (the slot
    samples its first text and semantic tokens from it when it is loaded), ``tokens`` the
    delayed tokens of positions N-1 and N [17, 2] (UNKNOWN where the live step decides).
    """

    kv: torch.Tensor
    hidden: torch.Tensor
    tokens: torch.Tensor
    length: int
    # frames of the voice phase: positions 0..voice_frames + SILENCE_FRAMES - 1 (the voice
    # phases) do not depend on the text, so a per-call text extends them (``text_phase_layout``)
    voice_frames: int = -1

    @property
    def voice_positions(self) -> int:
        """Leading positions that depend on the voice only (0 when unknown)."""
        return self.voice_frames + SILENCE_FRAMES if self.voice_frames >= 0 else 0


def build_prompt_frames(
    config: LMConfig, voice: VoicePrompt, text_tokens: Sequence[int]
) -> torch.Tensor:
    """The prompt's frames [17, N] (undelayed): text, agent 8, user 8 per frame."""
    n_agent = config.dep_q
    if voice.agent_codes.shape[1] != n_agent:
        raise ValueError(
            f"voice codes have {voice.agent_codes.shape[1]} codebooks, expected {n_agent}"
        )
    for name, codes in (("silence", SILENCE_CODES), ("sine", SINE_CODES)):
        if max(codes) >= config.audio_card:
            raise ValueError(f"{name} codes need audio_card > {max(codes)}")
    n_text = len(text_tokens)
    n = voice.n_frames + 2 * SILENCE_FRAMES + n_text
    frames = torch.empty(config.num_codebooks, n, dtype=torch.long)
    frames[0] = config.text_padding_id
    frames[1 : 1 + n_agent] = torch.tensor(SILENCE_CODES)[:, None]
    frames[1 + n_agent :] = torch.tensor(SINE_CODES)[:, None]
    frames[1 : 1 + n_agent, : voice.n_frames] = voice.agent_codes.T.cpu()
    start = voice.n_frames + SILENCE_FRAMES
    if n_text:
        frames[0, start : start + n_text] = torch.tensor(list(text_tokens), dtype=torch.long)
    return frames


def text_phase_layout(
    config: LMConfig, voice_frames: int, text_tokens: Sequence[int]
) -> torch.Tensor:
    """Positions ``voice_frames + SILENCE_FRAMES`` .. N of the delayed layout [17, N + 1 - P]:
    what a prompt with this text adds after its voice phases (none of it depends on the voice:
    the most delayed row reads one frame back, a silence frame)."""
    dummy = VoicePrompt(agent_codes=torch.zeros(voice_frames, config.dep_q, dtype=torch.long))
    grid = delayed_layout(config, build_prompt_frames(config, dummy, text_tokens))
    if config.max_delay > SILENCE_FRAMES:
        raise ValueError(f"delays of {config.max_delay} frames reach into the voice phase")
    return grid[:, voice_frames + SILENCE_FRAMES :]


def delayed_layout(config: LMConfig, frames: torch.Tensor) -> torch.Tensor:
    """Positions 0..N of the delayed layout [17, N + 1] for frames [17, N] (see module doc)."""
    k, n = frames.shape
    grid = torch.full((k, n + 1), UNKNOWN, dtype=torch.long)
    initial = [config.text_initial_id] + [config.audio_initial_id] * (k - 1)
    for row, delay in enumerate(config.delays):
        grid[row, : delay + 1] = initial[row]
        last = min(n + 1, n + delay)  # frame p - delay exists for p < n + delay
        if last > delay + 1:
            grid[row, delay + 1 : last] = frames[row, 1 : last - delay]
    return grid
