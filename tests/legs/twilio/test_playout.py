"""Playout tracking: the send-time model, mark echoes, network lag vs stalls, clear accounting."""

from __future__ import annotations

import pytest

from voicegate.legs.twilio.playout import PlayoutTracker


def test_model_and_marks_follow_real_time_playout() -> None:
    p = PlayoutTracker(max_ahead_ms=100)
    first = p.on_sent(20, now_ms=1000)
    second = p.on_sent(20, now_ms=1000)
    assert p.ahead_ms(1000) == 40 and p.room_ms(1000) == 60
    assert p.on_mark(first, 1020)
    assert p.ahead_ms(1020) == 20
    assert p.on_mark(second, 1040)
    assert p.ahead_ms(1040) == 0 and p.ahead_ms(2000) == 0


def test_unconfirmed_audio_bounds_the_estimate() -> None:
    p = PlayoutTracker()
    names = [p.on_sent(20, now_ms=0) for _ in range(5)]
    assert p.unconfirmed_ms == 100
    assert p.on_mark(names[0], now_ms=20)
    assert p.unconfirmed_ms == 80
    assert p.on_mark(names[2], now_ms=60)  # names[1]'s echo lost: a later one confirms it too
    assert p.unconfirmed_ms == 40 and p.pending_marks == 2
    assert p.ahead_ms(60) == 40


def test_network_lag_is_not_counted_as_queued_audio() -> None:
    # echoes come back 160 ms after the audio was sent: a long path, Twilio playing promptly
    p = PlayoutTracker(max_ahead_ms=100)
    sent_at: dict[str, float] = {}
    held = 0
    for k in range(200):
        now = k * 20.0
        for name, t in list(sent_at.items()):
            if now - t >= 160:
                p.on_mark(name, now)
                del sent_at[name]
        if p.room_ms(now) >= 20:
            sent_at[p.on_sent(20, now)] = now
        elif k >= 20:
            held += 1  # after the first echoes the lag is known: must never starve
    assert held == 0
    assert p.unconfirmed_ms > 100  # marks alone would have stopped sending


def test_a_stall_at_twilio_is_counted() -> None:
    p = PlayoutTracker(max_ahead_ms=100)
    for k in range(20):  # prompt echoes: 5 ms network lag
        p.on_mark(p.on_sent(20, k * 20.0), k * 20.0 + 25)
    now = 400.0
    names = [p.on_sent(20, now) for _ in range(5)]
    p.on_mark(names[0], now + 20 + 5 + 70)  # Twilio played this one 70 ms late
    # model: 5 ms left of the 100 sent, plus 70 behind; unconfirmed 80 less 5 of network lag
    assert p.ahead_ms(now + 95) == pytest.approx(75, abs=1e-6)


def test_echoes_that_stop_coming_stop_the_sending() -> None:
    p = PlayoutTracker(max_ahead_ms=100)
    for k in range(20):
        p.on_mark(p.on_sent(20, k * 20.0), k * 20.0 + 20)
    sent = 0
    for k in range(20, 40):  # no echo comes back any more: the path or Twilio stalled
        now = k * 20.0
        if p.room_ms(now) >= 20:
            p.on_sent(20, now)
            sent += 1
    assert sent == 100 // 20


def test_unknown_marks_are_counted_not_trusted() -> None:
    p = PlayoutTracker()
    p.on_sent(20, 0)
    assert not p.on_mark("not-ours", 1)
    assert not p.on_mark("99", 1)  # never sent: must not confirm the pending one
    assert p.marks_unknown == 2
    assert p.unconfirmed_ms == 20 and p.pending_marks == 1


def test_clear_cuts_pending_audio_and_ignores_late_echoes() -> None:
    p = PlayoutTracker()
    names = [p.on_sent(20, now_ms=0) for _ in range(4)]
    p.on_mark(names[0], 20)
    assert p.on_clear(now_ms=30) == 60  # 80 sent at t=0, 20 confirmed played
    assert p.ahead_ms(30) == 0 and p.pending_marks == 0 and p.unconfirmed_ms == 0
    for name in names[1:]:  # Twilio returns the pending marks after the clear
        assert p.on_mark(name, 31)
    assert p.marks_unknown == 0 and p.ahead_ms(31) == 0
    new = p.on_sent(20, 40)
    assert p.ahead_ms(40) == 20
    assert p.on_mark(new, 60) and p.unconfirmed_ms == 0
