"""Conversation dynamics on synthetic voice-activity timelines."""

from __future__ import annotations

import pytest

from voicegate.calls.dynamics import analyse, merge_intervals, percentile


def test_merge_intervals() -> None:
    assert merge_intervals([(500, 600), (0, 100), (150, 200), (90, 120), (700, 700)], 30) == [
        (0, 120),
        (150, 200),
        (500, 600),
    ]
    assert merge_intervals([(0, 100), (150, 200)], 60) == [(0, 200)]


def test_percentile_matches_linear_interpolation() -> None:
    assert percentile([], 50) is None
    assert percentile([10], 90) == 10.0
    assert percentile([100, 200, 300, 400], 50) == 250.0
    assert percentile([100, 200, 300, 400], 90) == pytest.approx(370.0)


def test_turn_taking_conversation() -> None:
    # caller 0-2000, agent answers at 2300 until 5000; caller 5400-6000 (gap), agent 6500-8000;
    # during the agent's turn the caller says "mm-hm" 7000-7300 (caller overlap, not a turn
    # transition); agent backchannel 1000-1300 inside the caller's first turn.
    caller = [(0, 2000), (5400, 6000), (7000, 7300)]
    agent = [(1000, 1300), (2300, 5000), (6500, 8000)]
    d = analyse(caller, agent, merge_gap_ms=200)
    assert d.caller_talk_ms == 2000 + 600 + 300
    assert d.agent_talk_ms == 300 + 2700 + 1500
    assert d.overlap_ms == 300 + 300  # the backchannel and the caller's mm-hm
    assert d.backchannels == 1
    # gaps: 2300-2000, 6500-6000; the mm-hm ends inside the agent's turn (no transition)
    assert d.response_gaps_ms == (300, 500)
    assert d.response_gap_p50_ms == 400.0
    assert d.response_gap_p90_ms == pytest.approx(480.0)


def test_agent_starting_before_the_caller_ends_gives_negative_gap() -> None:
    d = analyse([(0, 1000)], [(900, 3000)])
    assert d.response_gaps_ms == (-100,)
    assert d.backchannels == 0
    assert d.overlap_ms == 100


def test_long_agent_speech_inside_caller_is_not_a_backchannel() -> None:
    d = analyse([(0, 5000)], [(1000, 2500)], backchannel_max_ms=1000)
    assert d.backchannels == 0


def test_no_response_when_caller_speaks_again_first_or_gap_too_long() -> None:
    d = analyse([(0, 1000), (1500, 2000)], [(2100, 3000)], max_response_gap_ms=5000)
    assert d.response_gaps_ms == (100,)
    d = analyse([(0, 1000)], [(7000, 8000)], max_response_gap_ms=5000)
    assert d.response_gaps_ms == ()
    assert d.response_gap_p50_ms is None


def test_word_gaps_merge_before_counting() -> None:
    # agent words 100 ms apart are one spurt: one backchannel-sized spurt would be two without it
    d = analyse([(0, 3000)], [(500, 700), (800, 1000)], merge_gap_ms=200, backchannel_max_ms=600)
    assert d.backchannels == 1
    assert d.agent_talk_ms == 500
