"""The agent's audio on its way to the caller: a ring at the leg's rate and its playout clock.

Two timelines meet here. *Content* is every agent sample written (ticks resampled to the leg's
rate, plus the silence primed ahead of them); *playout* is every sample the leg pulled,
silence for underruns included: ``played / rate`` is the playout clock, in ms since the call
started, the moment the caller hears a sample (the leg paces its pulls at real time).

Priming: when audio starts flowing (the call's first tick, after a barge-in drop, after the
ring ran dry) the first pull plays ``lead`` samples of silence before the content, so that the
ring holds one leg frame more than the 80 ms tick and absorbs the jitter between 80 ms ticks
and 20 ms pulls. The lead is ``prebuffer - elapsed``, where ``elapsed`` (from the Call's clock)
is how long that tick already waited for this pull: every tick then starts playing
``prebuffer`` after it arrived, whatever the phase between the engine's and the leg's clocks.

Each written tick keeps a little metadata: where it starts in the content, its text piece and
one bit per 20 ms sub-block saying whether it carries agent speech. When a pull plays past a
sub-block, its playout time is known exactly; that is when the tick is reported to the
transcript (``on_tick_played``) and when the agent's audible intervals open and close.

Owns: PlayoutBuffer. Pure numpy: no asyncio, no logging, no engine or leg imports.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

__all__ = ["PlayoutBuffer", "SUBBLOCKS_PER_TICK", "TICK_MS"]

TICK_MS = 80
SUBBLOCKS_PER_TICK = 4  # 20 ms each
META_CAPACITY = 64  # ticks of metadata (5 s): far more than the queue may hold
RING_SECONDS = 1.0
AGENT_MERGE_MS = 60  # adjacent audible intervals closer than this are one


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


class PlayoutBuffer:
    """Agent audio queued for the leg, with its playout clock and agent voice activity.

    Usage (one thread, the event loop)::

        buf.write_tick(pcm_leg_rate_f32, text, speech_bits)   # after each engine tick
        pcm = buf.pull(160)                                    # each leg frame; int16 view
        dropped, has_speech, cut_text = buf.drop()             # barge-in
    """

    def __init__(
        self,
        rate_hz: int,
        *,
        prebuffer_ms: int = 20,
        max_queue_ms: int = 200,
        on_tick_played: Callable[[int, str, bool], None] | None = None,
    ) -> None:
        self.rate_hz = rate_hz
        self._prebuffer_samples = rate_hz * prebuffer_ms // 1000
        self._max_queue_samples = rate_hz * max_queue_ms // 1000
        cap = _pow2_at_least(max(int(rate_hz * RING_SECONDS), 2 * self._max_queue_samples))
        self._ring = np.zeros(cap, dtype=np.int16)
        self._mask = cap - 1
        self._scratch = np.zeros(cap, dtype=np.float32)
        self._out = np.zeros(rate_hz // 10, dtype=np.int16)  # grows if a leg pulls more
        self._on_tick_played = on_tick_played
        self.written = 0  # content samples written
        self.read = 0  # content samples played (or skipped)
        self.played = 0  # playout samples (content + underrun silence)
        self.underruns = 0
        self.overruns = 0
        self.is_primed = False  # content is flowing (a tick arrived since the start/drop/dry-out)
        self.is_lead_pending = False  # the next pull starts with the lead
        self._lead = 0  # lead silence still to play
        # tick metadata ring (plain lists: scalar access from Python is cheaper than numpy)
        self._m_start = [0] * META_CAPACITY
        self._m_len = [0] * META_CAPACITY
        self._m_bits = [0] * META_CAPACITY
        self._m_text = [""] * META_CAPACITY
        self._m_w = 0  # ticks written
        self._m_r = 0  # tick being resolved
        self._m_sub = 0  # next sub-block of that tick to resolve
        # agent audibility on the playout timeline
        self.is_audible = False
        self._audible_start_ms = 0
        self.last_audible_end_ms = -1
        self.agent_intervals: list[tuple[int, int]] = []

    # --- clocks ------------------------------------------------------------------------------

    @property
    def queued_samples(self) -> int:
        return self.written - self.read

    @property
    def played_ms(self) -> int:
        return self.played * 1000 // self.rate_hz

    def play_external(self, n: int) -> None:
        """``n`` samples of other audio (the recording announcement) played: the clock runs."""
        self.played += n

    def _ms(self, playout_samples: int) -> int:
        return playout_samples * 1000 // self.rate_hz

    # --- write side --------------------------------------------------------------------------

    def write_tick(self, pcm: npt.NDArray[np.float32], text: str, speech_bits: int) -> None:
        """Queue one tick's audio (float32 in [-1, 1] at the leg's rate) and its metadata."""
        if not self.is_primed:
            self.is_primed = True
            self.is_lead_pending = True
        n = len(pcm)
        if self._m_w - self._m_r >= META_CAPACITY:
            self._skip_oldest_tick()
        k = self._m_w & (META_CAPACITY - 1)
        self._m_start[k] = self.written
        self._m_len[k] = n
        self._m_bits[k] = speech_bits
        self._m_text[k] = text
        self._m_w += 1
        scratch = self._scratch[:n]
        np.multiply(pcm, 32768.0, out=scratch)  # int16 in -> float -> int16 out is exact
        np.minimum(scratch, 32767.0, out=scratch)  # two ufuncs: cheaper than np.clip's wrapper
        np.maximum(scratch, -32768.0, out=scratch)
        self._write(scratch)
        excess = self.written - self.read - self._max_queue_samples
        if excess > 0:
            self.read += excess  # drop the oldest: the queue must not grow the delay
            self.overruns += 1

    def _write(self, samples: npt.NDArray[np.float32]) -> None:
        n = len(samples)
        start = self.written & self._mask
        first = min(n, len(self._ring) - start)
        np.copyto(self._ring[start : start + first], samples[:first], casting="unsafe")
        if first < n:
            np.copyto(self._ring[: n - first], samples[first:], casting="unsafe")
        self.written += n

    def _skip_oldest_tick(self) -> None:
        self._m_r += 1
        self._m_sub = 0

    # --- read side ---------------------------------------------------------------------------

    def pull(self, n: int, elapsed_samples: int = 0) -> npt.NDArray[np.int16]:
        """Exactly ``n`` samples (silence where none are queued). A view valid until the next pull.

        ``elapsed_samples``: how long the first tick since priming has waited (see the module
        docstring); read only when ``is_lead_pending``.
        """
        if len(self._out) < n:
            self._out = np.zeros(n, dtype=np.int16)
        out = self._out[:n]
        if self.is_lead_pending:
            self.is_lead_pending = False
            self._lead = max(0, self._prebuffer_samples - elapsed_samples)
        z = 0
        if self._lead:
            z = min(n, self._lead)
            out[:z] = 0
            self._lead -= z
            self.played += z
        r0 = self.read
        m = min(n - z, self.written - r0)
        if m > 0:
            start = r0 & self._mask
            first = min(m, len(self._ring) - start)
            out[z : z + first] = self._ring[start : start + first]
            if first < m:
                out[z + first : z + m] = self._ring[: m - first]
        else:
            m = 0
        if z + m < n:
            out[z + m :] = 0
            if self.is_primed and not self._lead:
                self.underruns += 1
                self.is_primed = False  # ran dry: the next tick primes again
        p0 = self.played
        self.read = r0 + m
        self.played = p0 + n - z
        if self._m_r < self._m_w:
            self._resolve(r0, p0)
        return out

    def _resolve(self, r0: int, p0: int) -> None:
        """Give playout times to the sub-blocks whose first sample was just played."""
        read = self.read
        while self._m_r < self._m_w:
            k = self._m_r & (META_CAPACITY - 1)
            sub = self._m_sub
            length = self._m_len[k]
            c = self._m_start[k] + length * sub // SUBBLOCKS_PER_TICK
            if c >= read:
                return
            t_ms = self._ms(p0 + max(0, c - r0))
            bits = self._m_bits[k]
            if sub == 0 and self._on_tick_played is not None:
                self._on_tick_played(t_ms, self._m_text[k], bits != 0)
            self._set_audible(bool(bits & (1 << sub)), t_ms)
            sub += 1
            if sub == SUBBLOCKS_PER_TICK:
                self._m_r += 1
                self._m_sub = 0
            else:
                self._m_sub = sub

    def _set_audible(self, is_audible: bool, t_ms: int) -> None:
        if is_audible == self.is_audible:
            return
        self.is_audible = is_audible
        if is_audible:
            if self.agent_intervals and t_ms - self.agent_intervals[-1][1] < AGENT_MERGE_MS:
                self._audible_start_ms = self.agent_intervals.pop()[0]
            else:
                self._audible_start_ms = t_ms
        else:
            self.agent_intervals.append((self._audible_start_ms, t_ms))
            self.last_audible_end_ms = t_ms

    def was_audible_at(self, t_ms: int, slack_ms: int = 0) -> bool:
        """Whether the agent was heard at ``t_ms`` (give or take ``slack_ms`` before it)."""
        if self.is_audible and self._audible_start_ms <= t_ms:
            return True
        for start, end in reversed(self.agent_intervals):
            if end < t_ms - slack_ms:
                return False
            if start <= t_ms:
                return True
        return False

    # --- barge-in and end --------------------------------------------------------------------

    def drop(self, at_ms: int | None = None) -> tuple[int, bool, str]:
        """Drop everything queued: (samples dropped, whether it held speech, its text).

        The agent falls silent at ``at_ms`` (default: now on the playout clock; earlier when the
        leg had audio queued beyond our clock); the next tick primes the ring again.
        """
        dropped = self.written - self.read
        has_speech = False
        pieces: list[str] = []
        while self._m_r < self._m_w:
            k = self._m_r & (META_CAPACITY - 1)
            bits = self._m_bits[k] >> self._m_sub
            if bits:
                has_speech = True
            if self._m_sub == 0 and self._m_text[k]:
                pieces.append(self._m_text[k])
            self._m_r += 1
            self._m_sub = 0
        self.read = self.written
        self.is_primed = False
        self.is_lead_pending = False
        self._lead = 0
        end_ms = self.played_ms if at_ms is None else at_ms
        if self.is_audible:
            end_ms = max(end_ms, self._audible_start_ms)
        self._set_audible(False, end_ms)
        return dropped, has_speech, "".join(pieces)

    def unplayed_text(self) -> str:
        """Text of ticks written but not yet started playing (for the call's end)."""
        pieces = []
        for t in range(self._m_r, self._m_w):
            k = t & (META_CAPACITY - 1)
            if (t > self._m_r or self._m_sub == 0) and self._m_text[k]:
                pieces.append(self._m_text[k])
        return "".join(pieces)

    def close_intervals(self) -> None:
        """Close an open audible interval at the current playout time (call end)."""
        self._set_audible(False, self.played_ms)
