"""Conversation dynamics from two voice-activity streams (caller and agent).

Inputs are speech intervals ``(start_ms, end_ms)`` in ms since the call started: the caller's
on the caller clock, the agent's on the playout clock (when the caller heard it). Gaps shorter
than ``merge_gap_ms`` inside one stream are bridged first (pauses between words).

- talk time: the summed length of each stream's intervals;
- overlap: the time both spoke at once;
- backchannels: agent spurts of at most ``backchannel_max_ms`` that start and end inside one
  caller interval ("mm-hm" while the caller talks);
- response gaps (floor-transfer offsets): for each caller interval, the agent's next turn start
  minus the caller's end, counted when the agent starts before the caller speaks again and
  within ``max_response_gap_ms``. Negative when the agent's turn began before the caller had
  finished and carried on past it. Backchannels are not turns.

Owns: analyse(), Dynamics. Pure: numpy-free, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Dynamics", "analyse", "merge_intervals", "percentile"]

Interval = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Dynamics:
    caller_talk_ms: int
    agent_talk_ms: int
    overlap_ms: int
    backchannels: int
    response_gaps_ms: tuple[int, ...]

    @property
    def response_gap_p50_ms(self) -> float | None:
        return percentile(self.response_gaps_ms, 50.0)

    @property
    def response_gap_p90_ms(self) -> float | None:
        return percentile(self.response_gaps_ms, 90.0)


def percentile(values: Sequence[int], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default method); None for no values."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def merge_intervals(intervals: Sequence[Interval], merge_gap_ms: int = 0) -> list[Interval]:
    """Sort, drop empty intervals and join those closer than ``merge_gap_ms``."""
    out: list[Interval] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if out and (start <= out[-1][1] or start - out[-1][1] < merge_gap_ms):
            last_start, last_end = out[-1]
            out[-1] = (last_start, max(last_end, end))
        else:
            out.append((start, end))
    return out


def _overlap(a: list[Interval], b: list[Interval]) -> int:
    total = 0
    i = j = 0
    while i < len(a) and j < len(b):
        lo = max(a[i][0], b[j][0])
        hi = min(a[i][1], b[j][1])
        if hi > lo:
            total += hi - lo
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


def analyse(
    caller: Sequence[Interval],
    agent: Sequence[Interval],
    *,
    merge_gap_ms: int = 200,
    backchannel_max_ms: int = 1000,
    max_response_gap_ms: int = 5000,
) -> Dynamics:
    """Compute the call's dynamics; see the module docstring for each definition."""
    c = merge_intervals(caller, merge_gap_ms)
    a = merge_intervals(agent, merge_gap_ms)
    backchannel_idx: set[int] = set()
    for k, (s, e) in enumerate(a):
        if e - s > backchannel_max_ms:
            continue
        for cs, ce in c:
            if cs <= s and e <= ce:
                backchannel_idx.add(k)
                break
            if cs > s:
                break
    turns = [iv for k, iv in enumerate(a) if k not in backchannel_idx]
    gaps: list[int] = []
    for n, (cs, ce) in enumerate(c):
        next_caller = c[n + 1][0] if n + 1 < len(c) else None
        for s, e in turns:
            if e <= ce or s < cs:
                continue  # ended before the caller did, or began before this caller turn
            if next_caller is not None and s >= next_caller:
                break
            if s - ce <= max_response_gap_ms:
                gaps.append(s - ce)
            break
    return Dynamics(
        caller_talk_ms=sum(e - s for s, e in c),
        agent_talk_ms=sum(e - s for s, e in a),
        overlap_ms=_overlap(c, a),
        backchannels=len(backchannel_idx),
        response_gaps_ms=tuple(gaps),
    )
