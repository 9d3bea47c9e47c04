"""Playout tracking with marks: sent vs confirmed played, clear accounting."""

from __future__ import annotations

from voicegate.legs.twilio.playout import PlayoutTracker


def test_marks_confirm_played_audio() -> None:
    p = PlayoutTracker(max_ahead_ms=100)
    names = [p.on_sent(20) for _ in range(5)]
    assert p.ahead_ms == 100 and p.room_ms() == 0
    assert p.on_mark(names[0])
    assert p.ahead_ms == 80
    assert p.on_mark(names[2])  # names[1]'s echo lost: the later one confirms it too
    assert p.ahead_ms == 40 and p.pending_marks == 2
    assert p.peak_ahead_ms == 100


def test_unknown_marks_are_counted_not_trusted() -> None:
    p = PlayoutTracker()
    p.on_sent(20)
    assert not p.on_mark("not-ours")
    assert not p.on_mark("99")
    assert p.marks_unknown == 2
    assert p.ahead_ms == 20 and p.pending_marks == 1


def test_clear_cuts_pending_audio_and_ignores_late_echoes() -> None:
    p = PlayoutTracker()
    names = [p.on_sent(20) for _ in range(4)]
    p.on_mark(names[0])
    assert p.on_clear() == 60
    assert p.ahead_ms == 0 and p.pending_marks == 0 and p.cleared_ms == 60
    # Twilio returns the pending marks after the clear: already accounted
    for name in names[1:]:
        assert p.on_mark(name)
    assert p.ahead_ms == 0 and p.marks_unknown == 0
    new = p.on_sent(20)
    assert p.ahead_ms == 20
    assert p.on_mark(new) and p.ahead_ms == 0
