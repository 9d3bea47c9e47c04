"""The caller's words: the caller STT's per-tick text pieces grouped into timed words and
segments, and its end-of-turn signal.

The engine hands each tick the STT's text piece for that frame ('' for PAD/EPAD; a leading
space starts a word) and the end-of-turn probability (-1 without the head). A piece produced at
engine frame k describes the caller's audio of frame ``k - delay_frames`` (the model's delay):
that frame's audio spans ``offset_ms + (k - delay) * 80`` ms on the call clock, so every word
gets start/end times on the call clock. A segment opens with its first word and is final when
the caller's audio has paused ``pause_ms`` after its last word (a time the text already covers,
so the model's delay has passed), when the STT signals the turn's end, or at ``max_segment_ms``.
While open, an interim segment (``is_final`` False) goes out at most every ``interim_ms`` when
words were added.

Turn end: the end-of-turn probability (the 2 s pause head) rising to ``eot_on`` after it fell
below ``eot_off`` with words said since the last turn end; its lag is how long after the end
of the caller's last word the signal came (call clock).

Owns: CallerWords, CallerSegment. Pure: no I/O, no clock of its own (frame indices in), no
asyncio.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["CallerSegment", "CallerWords"]

FRAME_MS = 80
RECENT_WORDS = 256  # words kept for the barge-in text (about 1.5 minutes of speech)

Word = tuple[str, int, int]  # (word, start_ms, end_ms) on the call clock


@dataclass(frozen=True, slots=True)
class CallerSegment:
    """A stretch of the caller's speech: its words with their times; interim or final."""

    text: str
    start_ms: int
    end_ms: int
    words: tuple[Word, ...]
    is_final: bool


class CallerWords:
    """Feed ``on_frame`` once per tick; it returns a segment to report, or None."""

    __slots__ = (
        "_delay",
        "_eot_off",
        "_eot_on",
        "_interim_ms",
        "_is_armed",
        "_last_frame",
        "_last_interim_ms",
        "_last_interim_words",
        "_max_segment_ms",
        "_offset_ms",
        "_on_word",
        "_pause_ms",
        "_piece",
        "_recent",
        "_seg_words",
        "_word_end",
        "_word_start",
        "_words_since_turn",
        "turn_end_lags_ms",
        "turn_ends_ms",
    )

    def __init__(
        self,
        delay_frames: int,
        *,
        offset_ms: int = 0,
        pause_ms: int = 640,
        interim_ms: int = 1000,
        max_segment_ms: int = 30_000,
        eot_on: float = 0.6,
        eot_off: float = 0.4,
        on_word: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self._delay = delay_frames
        self._on_word = on_word  # (word, start_ms, end_ms) as each word completes
        self._offset_ms = offset_ms
        self._pause_ms = pause_ms
        self._interim_ms = interim_ms
        self._max_segment_ms = max_segment_ms
        self._eot_on = eot_on
        self._eot_off = eot_off
        self._piece: list[str] = []  # pieces of the word being spelled
        self._word_start = 0
        self._word_end = 0
        self._seg_words: list[Word] = []
        self._recent: deque[Word] = deque(maxlen=RECENT_WORDS)
        self._last_interim_ms = 0
        self._last_interim_words = 0  # words in the last interim segment sent
        self._last_frame = -1
        self._is_armed = False  # the probability fell below eot_off since the last turn end
        self._words_since_turn = False
        self.turn_ends_ms: list[int] = []
        self.turn_end_lags_ms: list[int] = []

    def audio_ms(self, frame_index: int) -> int:
        """Call time at which the audio that frame ``frame_index``'s text describes starts."""
        return max(0, self._offset_ms + (frame_index - self._delay) * FRAME_MS)

    @property
    def covered_ms(self) -> int:
        """Call time up to which the caller's audio has been transcribed."""
        return self.audio_ms(self._last_frame + 1) if self._last_frame >= 0 else 0

    @property
    def is_open(self) -> bool:
        return bool(self._seg_words or self._piece)

    def on_frame(self, frame_index: int, text: str, end_of_turn: float) -> CallerSegment | None:
        """One tick's STT output (``frame_index``: live frames since the call joined)."""
        self._last_frame = frame_index
        at = self.audio_ms(frame_index)
        if text:
            if text[0] == " " and self._piece:
                self._close_word()
            if not self._piece:
                self._word_start = at
            self._piece.append(text)
            self._word_end = at + FRAME_MS
            self._words_since_turn = True
        out: CallerSegment | None = None
        if end_of_turn >= 0.0 and self._on_end_of_turn(frame_index, end_of_turn):
            out = self._close_segment()
        elif self.is_open:
            last_end = self._word_end
            if not text and at - last_end >= self._pause_ms:
                out = self._close_segment()
            elif at + FRAME_MS - self._segment_start() >= self._max_segment_ms:
                out = self._close_segment()
            elif (
                at - self._last_interim_ms >= self._interim_ms
                and len(self._seg_words) > self._last_interim_words
            ):
                self._last_interim_ms = at
                self._last_interim_words = len(self._seg_words)
                out = self._segment(is_final=False)
        return out

    def flush(self) -> CallerSegment | None:
        """The call ended: the open segment, final (the words the STT gave so far)."""
        return self._close_segment() if self.is_open else None

    def words_between(self, start_ms: int, end_ms: int) -> str:
        """The caller's words that start in [start_ms, end_ms), as one string."""
        words = [w for w, s, _ in self._recent if start_ms <= s < end_ms]
        if self._piece and start_ms <= self._word_start < end_ms:
            words.append("".join(self._piece).strip())
        return " ".join(w for w in words if w)

    def _segment_start(self) -> int:
        return self._seg_words[0][1] if self._seg_words else self._word_start

    def _on_end_of_turn(self, frame_index: int, p: float) -> bool:
        if p < self._eot_off:
            self._is_armed = True
            return False
        if p < self._eot_on or not self._is_armed or not self._words_since_turn:
            return False
        self._is_armed = False
        self._words_since_turn = False
        now = self._offset_ms + frame_index * FRAME_MS  # when the signal came (caller clock)
        self.turn_ends_ms.append(now)
        self.turn_end_lags_ms.append(max(0, now - self._word_end))
        return self.is_open

    def _close_word(self) -> None:
        word = "".join(self._piece).strip()
        self._piece.clear()
        if word:
            entry = (word, self._word_start, self._word_end)
            self._seg_words.append(entry)
            self._recent.append(entry)
            if self._on_word is not None:
                self._on_word(*entry)

    def _segment(self, *, is_final: bool) -> CallerSegment:
        words = tuple(self._seg_words)
        return CallerSegment(
            text=" ".join(w for w, _, _ in words),
            start_ms=words[0][1] if words else 0,
            end_ms=words[-1][2] if words else 0,
            words=words,
            is_final=is_final,
        )

    def _close_segment(self) -> CallerSegment | None:
        if self._piece:
            self._close_word()
        if not self._seg_words:
            return None
        seg = self._segment(is_final=True)
        self._seg_words.clear()
        self._last_interim_ms = seg.end_ms
        self._last_interim_words = 0
        return seg
