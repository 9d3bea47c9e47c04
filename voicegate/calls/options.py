"""Per-call limits (from the persona) and tuning shared by every call of a manager.

Owns: CallLimits, CallConfig. Imports nothing of voicegate.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CallConfig", "CallLimits"]


@dataclass(frozen=True, slots=True)
class CallLimits:
    """From the persona; 0 switches a limit off."""

    max_duration_s: float = 0.0
    silence_timeout_s: float = 0.0  # without caller speech


@dataclass(frozen=True, slots=True)
class CallConfig:
    """Tuning shared by every call of a manager."""

    is_caller_vad_enabled: bool = True
    agent_speech_dbfs: float = -42.0  # a 20 ms sub-block louder than this is agent speech
    agent_silence_ms: int = 80  # this much quiet after speech = the model has yielded
    prebuffer_ms: int = 20  # each tick starts playing this long after it arrived (tick/pull jitter)
    caller_frame_margin_ms: int = 8  # a caller frame completes this long before its tick
    max_queue_ms: int = 200  # agent audio queued beyond this is dropped (overrun)
    is_cut_on_caller_speech: bool = False  # True: mute the agent at the caller's onset
    bargein_grace_ms: int = 300  # the model may yield this long after the caller stops
    bargein_max_latency_ms: int = 2000  # a later yield is the agent finishing, not yielding
    transcript_pad_run_ms: int = 640
    transcript_silence_run_ms: int = 240
