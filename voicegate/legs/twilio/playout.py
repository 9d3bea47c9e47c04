"""How much agent audio sits in Twilio's playout queue, tracked with marks.

Twilio queues outbound ``media`` and plays it in order, with no back-pressure; a ``mark`` sent
after a chunk comes back when that chunk has played, and ``clear`` drops the queue and returns
every pending mark at once. Audio sent but not yet confirmed played is what a caller who
interrupts would still hear, so the gateway keeps it under a bound (100 ms). The estimate here
is conservative: a mark's echo arrives a network trip after the audio played, so the true queue
is never longer than ``ahead_ms``.

Mark names are decimal sequence numbers; echoes of marks sent before a ``clear`` (which Twilio
returns after it) are recognised and ignored.

Owns: ``PlayoutTracker``. Pure: no asyncio, no I/O.
"""

from __future__ import annotations

from collections import deque

__all__ = ["DEFAULT_MAX_AHEAD_MS", "PlayoutTracker"]

DEFAULT_MAX_AHEAD_MS = 100


class PlayoutTracker:
    """Sent vs confirmed-played agent audio for one stream, in ms of audio."""

    __slots__ = (
        "_cleared_upto",
        "_pending",
        "_seq",
        "marks_acked",
        "marks_unknown",
        "max_ahead_ms",
        "peak_ahead_ms",
        "played_ms",
        "sent_ms",
        "cleared_ms",
        "clears",
    )

    def __init__(self, max_ahead_ms: int = DEFAULT_MAX_AHEAD_MS) -> None:
        self.max_ahead_ms = max_ahead_ms
        self.sent_ms = 0  # all audio ever sent on this stream
        self.played_ms = 0  # of that, confirmed played or cleared
        self.cleared_ms = 0  # of that, dropped by clear
        self.clears = 0
        self.marks_acked = 0
        self.marks_unknown = 0
        self.peak_ahead_ms = 0
        self._seq = 0
        self._cleared_upto = 0
        self._pending: deque[tuple[int, int]] = deque()  # (mark seq, sent_ms at that mark)

    @property
    def ahead_ms(self) -> int:
        """Audio sent and not yet confirmed played: the most Twilio may still have queued."""
        return self.sent_ms - self.played_ms

    @property
    def pending_marks(self) -> int:
        return len(self._pending)

    def room_ms(self) -> int:
        """How much more audio may be sent now without passing the bound."""
        return self.max_ahead_ms - (self.sent_ms - self.played_ms)

    def on_sent(self, duration_ms: int) -> str:
        """Record ``duration_ms`` of audio just sent; returns the mark name to send after it."""
        self.sent_ms += duration_ms
        ahead = self.sent_ms - self.played_ms
        if ahead > self.peak_ahead_ms:
            self.peak_ahead_ms = ahead
        self._seq += 1
        self._pending.append((self._seq, self.sent_ms))
        return str(self._seq)

    def on_mark(self, name: str) -> bool:
        """Twilio echoed mark ``name``; returns False when it is not one of ours."""
        if not name.isdigit() or not name.isascii():
            self.marks_unknown += 1
            return False
        seq = int(name)
        if seq > self._seq or seq == 0:
            self.marks_unknown += 1  # never sent: must not confirm anything
            return False
        if seq <= self._cleared_upto and (not self._pending or seq < self._pending[0][0]):
            return True  # returned by a clear: already accounted
        pending = self._pending
        while pending and pending[0][0] < seq:
            pending.popleft()  # an echo may be lost; a later one confirms the earlier audio too
        if not pending or pending[0][0] != seq:
            self.marks_unknown += 1
            return False
        _, sent_at = pending.popleft()
        self.played_ms = max(self.played_ms, sent_at)
        self.marks_acked += 1
        return True

    def on_clear(self) -> int:
        """A ``clear`` was sent: everything pending is dropped. Returns the ms of audio cut."""
        cut_ms = self.sent_ms - self.played_ms
        self.cleared_ms += cut_ms
        self.played_ms = self.sent_ms
        self._cleared_upto = self._seq
        self._pending.clear()
        self.clears += 1
        return cut_ms
