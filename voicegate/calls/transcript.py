"""Agent transcript segments: the model's text pieces grouped into what the caller heard.

The Call feeds one entry per engine tick, in playout order and on the playout timeline (ms
since the call started, when the caller hears that tick's audio): the tick's text piece ('' for
PAD) and whether its audio carries agent speech. A segment opens at the first tick with text and
closes after a run of ticks without text of ``pad_run_ms``, or without text and without speech
of ``silence_run_ms``. A barge-in that drops queued audio cuts the open segment: the text that
was queued but never played is reported as cut, and the segment as not heard in full.

Owns: TranscriptSegmenter, AgentSegment. Pure: imports nothing of asyncio, audio or the engine.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AgentSegment", "TranscriptSegmenter"]


@dataclass(frozen=True, slots=True)
class AgentSegment:
    """One stretch of agent speech.

    ``text`` is what the caller heard; ``cut_text`` what the model said but was dropped by an
    interruption. ``is_heard`` is False when anything was cut; ``cut_at_ms`` is then the time.
    """

    text: str
    start_ms: int
    end_ms: int
    is_heard: bool = True
    cut_text: str = ""
    cut_at_ms: int | None = None


class TranscriptSegmenter:
    """Groups per-tick text pieces into segments; each method returns a closed segment or None."""

    __slots__ = (
        "_end_ms",
        "_is_open",
        "_pad_run_ms",
        "_pad_since_ms",
        "_pieces",
        "_quiet_since_ms",
        "_silence_run_ms",
        "_start_ms",
    )

    def __init__(self, *, pad_run_ms: int = 640, silence_run_ms: int = 240) -> None:
        self._pad_run_ms = pad_run_ms
        self._silence_run_ms = silence_run_ms
        self._pieces: list[str] = []
        self._is_open = False
        self._start_ms = 0
        self._end_ms = 0
        self._pad_since_ms = 0  # start of the current run of ticks without text
        self._quiet_since_ms = 0  # start of the current run without text and without speech

    @property
    def is_open(self) -> bool:
        return self._is_open

    def on_tick(
        self, start_ms: int, end_ms: int, text: str, is_speech: bool
    ) -> AgentSegment | None:
        """One tick as it plays: ``text`` its piece ('' for PAD), ``is_speech`` its audio."""
        closed: AgentSegment | None = None
        if text:
            if not self._is_open:
                self._is_open = True
                self._start_ms = start_ms
            self._pieces.append(text)
            self._end_ms = end_ms
            self._pad_since_ms = end_ms
            self._quiet_since_ms = end_ms
            return None
        if not self._is_open:
            return None
        if is_speech:
            self._end_ms = end_ms
            self._quiet_since_ms = end_ms
        if (
            end_ms - self._pad_since_ms >= self._pad_run_ms
            or end_ms - self._quiet_since_ms >= self._silence_run_ms
        ):
            closed = self._close("", None, is_cut=False)
        return closed

    def on_cut(
        self, t_ms: int, cut_text: str, *, is_speech_cut: bool = True
    ) -> AgentSegment | None:
        """Queued audio was dropped at ``t_ms`` (barge-in); ``cut_text`` was never played.

        ``is_speech_cut``: the agent was audible or speech was dropped, so the open segment was
        cut off even when no whole text piece was lost (the end of its last word was).
        """
        if not self._is_open and not cut_text:
            return None
        if not self._is_open:
            self._start_ms = t_ms
        self._end_ms = t_ms
        return self._close(cut_text, t_ms, is_cut=is_speech_cut or bool(cut_text.strip()))

    def flush(self, t_ms: int, unplayed_text: str = "") -> AgentSegment | None:
        """The call ended at ``t_ms``; text generated but not yet played counts as cut."""
        if unplayed_text.strip():
            return self.on_cut(t_ms, unplayed_text)
        if not self._is_open:
            return None
        return self._close("", None, is_cut=False)

    def _close(self, cut_text: str, cut_at_ms: int | None, *, is_cut: bool) -> AgentSegment:
        text = "".join(self._pieces).strip()
        seg = AgentSegment(
            text=text,
            start_ms=self._start_ms,
            end_ms=max(self._end_ms, self._start_ms),
            is_heard=not is_cut,
            cut_text=cut_text.strip(),
            cut_at_ms=cut_at_ms if is_cut else None,
        )
        self._pieces.clear()
        self._is_open = False
        return seg
