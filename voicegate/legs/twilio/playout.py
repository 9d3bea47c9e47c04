"""How much agent audio sits in Twilio's playout queue, from our send times and its mark echoes.

Twilio queues outbound ``media`` and plays it in order at real time, with no back-pressure; a
``mark`` sent after a chunk comes back once that chunk has played, and ``clear`` drops the queue
and returns every pending mark at once. Audio queued at Twilio is what a caller who interrupts
still hears, so the gateway keeps it under a bound (100 ms).

Two estimates, combined:

* a *model* of Twilio's playout clock from our own send times: a chunk starts playing when it is
  sent (or when the audio before it ends) and plays at real time. It is exact when Twilio plays
  promptly, and it does not depend on the network's round trip (marks alone would count the
  round trip as queued audio and starve the caller of audio on a long path).
* the *marks*: each echo says the audio before it has played. The echo of a mark arrives
  ``lag`` ms after the model says its audio ended; the smallest recent lag is the network's
  share, anything above it is Twilio playing behind the model (a stall), and is added. And
  audio sent but not yet confirmed, less that network share, is a second estimate that grows
  when echoes stop coming (a stall or a jitter burst in flight): the larger one is used, so a
  burst that reaches Twilio at once never holds more than the bound.

The result never exceeds audio sent minus audio confirmed played, the hard upper bound.
Mark names are decimal sequence numbers; echoes of marks sent before a ``clear`` (returned
after it) are recognised and ignored. Times are ms on any monotonic clock, passed in.

Owns: ``PlayoutTracker``. Pure: no asyncio, no I/O, no clock of its own.
"""

from __future__ import annotations

from collections import deque

__all__ = ["DEFAULT_MAX_AHEAD_MS", "PlayoutTracker"]

DEFAULT_MAX_AHEAD_MS = 100
LAG_WINDOW = (
    64  # echoes (about 1.3 s of continuous audio) over which the network lag floor is taken
)


class PlayoutTracker:
    """Agent audio sent to Twilio vs played, in ms of audio, for one stream."""

    __slots__ = (
        "_cleared_upto",
        "_excess_ms",
        "_lag_floor_ms",
        "_lags",
        "_model_end_ms",
        "_pending",
        "_seq",
        "cleared_ms",
        "clears",
        "confirmed_ms",
        "marks_acked",
        "marks_unknown",
        "max_ahead_ms",
        "sent_ms",
    )

    def __init__(self, max_ahead_ms: int = DEFAULT_MAX_AHEAD_MS) -> None:
        self.max_ahead_ms = max_ahead_ms
        self.sent_ms = 0  # all audio ever sent on this stream
        self.confirmed_ms = 0  # of that, confirmed played by a mark, or cleared
        self.cleared_ms = 0  # of that, dropped by clear
        self.clears = 0
        self.marks_acked = 0
        self.marks_unknown = 0
        self._model_end_ms = 0.0  # when the audio sent so far ends, by the model
        self._excess_ms = 0.0  # Twilio behind the model beyond the network lag (last echo)
        self._lag_floor_ms = 0.0  # the network's share of an echo's lag (recent minimum)
        self._lags: deque[float] = deque(maxlen=LAG_WINDOW)
        self._seq = 0
        self._cleared_upto = 0
        self._pending: deque[tuple[int, int, float]] = deque()  # (seq, sent_ms, model end)

    @property
    def pending_marks(self) -> int:
        return len(self._pending)

    @property
    def unconfirmed_ms(self) -> int:
        """Audio sent and not yet confirmed played: an upper bound of Twilio's queue."""
        return self.sent_ms - self.confirmed_ms

    def ahead_ms(self, now_ms: float) -> float:
        """The estimate of Twilio's queue now (see the module docstring)."""
        model = self._model_end_ms - now_ms
        if model < 0.0:
            model = 0.0
        estimate = model + self._excess_ms
        unconfirmed = float(self.sent_ms - self.confirmed_ms)
        by_marks = unconfirmed - self._lag_floor_ms
        if by_marks > estimate:
            estimate = by_marks  # echoes stopped coming (a stall, or a jitter burst on its way)
        return estimate if estimate < unconfirmed else unconfirmed

    def paced_ahead_ms(self, now_ms: float) -> float:
        """Twilio's queue now if it plays what it gets at once and at real time (no lag)."""
        ahead = self._model_end_ms - now_ms
        return ahead if ahead > 0.0 else 0.0

    def room_ms(self, now_ms: float) -> float:
        """How much more audio may be sent now without passing ``max_ahead_ms``."""
        return self.max_ahead_ms - self.ahead_ms(now_ms)

    def on_sent(self, duration_ms: int, now_ms: float) -> str:
        """Record ``duration_ms`` of audio sent at ``now_ms``; returns the mark name to send."""
        self.sent_ms += duration_ms
        start = self._model_end_ms if self._model_end_ms > now_ms else now_ms
        self._model_end_ms = start + duration_ms
        self._seq += 1
        self._pending.append((self._seq, self.sent_ms, self._model_end_ms))
        return str(self._seq)

    def on_mark(self, name: str, now_ms: float) -> bool:
        """Twilio echoed mark ``name`` at ``now_ms``; returns False when it is not one of ours."""
        if not name.isdigit() or not name.isascii():
            self.marks_unknown += 1
            return False
        seq = int(name)
        if seq > self._seq or seq == 0:
            self.marks_unknown += 1  # never sent: must not confirm anything
            return False
        pending = self._pending
        if seq <= self._cleared_upto and (not pending or seq < pending[0][0]):
            return True  # returned by a clear: already accounted
        while pending and pending[0][0] < seq:
            pending.popleft()  # an echo may be lost; a later one confirms the earlier audio too
        if not pending or pending[0][0] != seq:
            self.marks_unknown += 1
            return False
        _, sent_at, model_end = pending.popleft()
        if sent_at > self.confirmed_ms:
            self.confirmed_ms = sent_at
        self.marks_acked += 1
        lag = now_ms - model_end
        lags = self._lags
        lags.append(lag)
        floor = min(lags)
        self._lag_floor_ms = floor if floor > 0.0 else 0.0
        self._excess_ms = lag - floor if lag > floor else 0.0
        return True

    def on_clear(self, now_ms: float) -> float:
        """A ``clear`` was sent: all queued audio is dropped. Returns the ms estimated cut."""
        cut_ms = self.ahead_ms(now_ms)
        self.cleared_ms += int(cut_ms)
        self.confirmed_ms = self.sent_ms
        self._model_end_ms = now_ms
        self._excess_ms = 0.0
        self._cleared_upto = self._seq
        self._pending.clear()
        self.clears += 1
        return cut_ms
