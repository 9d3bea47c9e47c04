"""PlayoutBuffer: priming, exact pulls, underruns, overruns, playout times, drop."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from voicegate.calls.playout import PlayoutBuffer

RATE = 8000
TICK = 640  # 80 ms at 8 kHz


def ramp(n: int, start: int = 1) -> np.ndarray:
    return (np.arange(start, start + n) / 32768.0).astype(np.float32)


def test_prebuffer_then_samples_in_order_and_exact_lengths() -> None:
    pb = PlayoutBuffer(RATE, prebuffer_ms=20, max_queue_ms=500)
    assert not pb.pull(160).any() and pb.underruns == 0  # not started: no underrun counted
    pb.write_tick(ramp(TICK), "", 0)
    out = np.concatenate([pb.pull(160).copy() for _ in range(5)])
    assert len(out) == 800
    assert not out[:160].any()  # 20 ms of primed silence first
    assert list(out[160:165]) == [1, 2, 3, 4, 5]
    assert out[799] == 640
    assert pb.underruns == 0
    assert pb.played == 960 and pb.read == pb.written


def test_underrun_pads_silence_and_counts_once_per_pull() -> None:
    pb = PlayoutBuffer(RATE, prebuffer_ms=0, max_queue_ms=500)
    pb.write_tick(ramp(TICK), "", 0)
    for _ in range(4):
        pb.pull(160)
    out = pb.pull(160)
    assert not out.any() and pb.underruns == 1
    pb.write_tick(ramp(100), "", 0)
    out = pb.pull(160)
    assert out[99] == 100 and not out[100:].any() and pb.underruns == 2


def test_overrun_drops_oldest_to_bound_the_queue() -> None:
    pb = PlayoutBuffer(RATE, prebuffer_ms=0, max_queue_ms=100)  # 800 samples
    pb.write_tick(ramp(TICK), "", 0)
    pb.write_tick(ramp(TICK, 1000), "", 0)
    assert pb.overruns == 1 and pb.queued_samples == 800
    assert pb.pull(1)[0] == 481  # 1280 queued, the oldest 480 dropped


def test_playout_times_and_agent_intervals() -> None:
    played: list[tuple[int, str, bool]] = []
    pb = PlayoutBuffer(
        RATE, prebuffer_ms=20, max_queue_ms=500, on_tick_played=lambda *a: played.append(a)
    )
    pb.write_tick(ramp(TICK), " hi", 0b1111)
    pb.write_tick(ramp(TICK), "", 0b0011)
    pb.write_tick(ramp(TICK), "", 0)
    for _ in range(14):
        pb.pull(160)
    # ticks start playing at 20, 100, 180 ms (after the primed 20 ms)
    assert played == [(20, " hi", True), (100, "", True), (180, "", False)]
    # speech: 20 ms .. 100+40 ms
    assert pb.agent_intervals == [(20, 140)]
    assert not pb.is_audible and pb.last_audible_end_ms == 140


def test_playout_times_shift_with_underruns() -> None:
    played: list[tuple[int, str, bool]] = []
    pb = PlayoutBuffer(
        RATE, prebuffer_ms=0, max_queue_ms=500, on_tick_played=lambda *a: played.append(a)
    )
    pb.write_tick(ramp(TICK), "a", 1)
    for _ in range(5):  # one pull too many: 20 ms of silence
        pb.pull(160)
    pb.write_tick(ramp(TICK), "b", 1)
    pb.pull(160)
    assert played == [(0, "a", True), (100, "b", True)]


def test_drop_reports_queued_speech_and_text_and_reprimes() -> None:
    pb = PlayoutBuffer(RATE, prebuffer_ms=20, max_queue_ms=500)
    pb.write_tick(ramp(TICK), " I", 0b1111)
    pb.write_tick(ramp(TICK), " can", 0b1111)
    pb.write_tick(ramp(TICK), " help", 0b0001)
    for _ in range(3):  # 60 ms: priming + the first 40 ms of tick 1
        pb.pull(160)
    assert pb.is_audible
    dropped, had_speech, text = pb.drop()
    assert dropped == 160 + 3 * TICK - 480
    assert had_speech and text == " can help"
    assert pb.agent_intervals == [(20, 60)] and pb.queued_samples == 0 and not pb.is_primed
    assert pb.unplayed_text() == ""
    pb.write_tick(ramp(TICK), "x", 0)
    assert pb.queued_samples == TICK and pb.is_lead_pending  # primed again at the next pull


def test_unplayed_text_excludes_started_tick() -> None:
    pb = PlayoutBuffer(RATE, prebuffer_ms=0, max_queue_ms=500)
    pb.write_tick(ramp(TICK), " a", 0)
    pb.write_tick(ramp(TICK), " b", 0)
    pb.pull(160)
    assert pb.unplayed_text() == " b"


def test_48k_ring_wraps_correctly() -> None:
    pb = PlayoutBuffer(48_000, prebuffer_ms=0, max_queue_ms=200)
    rng = np.random.default_rng(1)
    sent = []
    got = []
    for _ in range(100):
        x = rng.uniform(-0.5, 0.5, 3840).astype(np.float32)
        pb.write_tick(x, "", 0)
        sent.append(np.clip(x * 32768.0, -32768, 32767).astype(np.int16))
        for _ in range(4):
            got.append(pb.pull(960).copy())
    assert np.array_equal(np.concatenate(sent), np.concatenate(got))
    assert pb.underruns == 0 and pb.overruns == 0


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("w"), st.integers(1, 700)),
            st.tuples(st.just("p"), st.integers(1, 400)),
        ),
        max_size=60,
    )
)
def test_any_write_pull_sequence_plays_content_in_order(ops: list[tuple[str, int]]) -> None:
    pb = PlayoutBuffer(RATE, prebuffer_ms=20, max_queue_ms=2000)
    sent: list[np.ndarray] = []
    got: list[np.ndarray] = []
    counter = 1
    for op, n in ops:
        if op == "w":
            x = np.arange(counter, counter + n) % 30000 + 1  # never 0: silence is padding
            counter += n
            pb.write_tick((x / 32768.0).astype(np.float32), "", 0)
            sent.append(x.astype(np.int16))
        else:
            played = pb.played
            out = pb.pull(n).copy()
            assert len(out) == n and pb.played == played + n
            got.append(out)
    while pb.queued_samples:
        got.append(pb.pull(160).copy())
    all_sent = np.concatenate(sent) if sent else np.zeros(0, np.int16)
    all_got = np.concatenate(got) if got else np.zeros(0, np.int16)
    assert np.array_equal(all_sent, all_got[all_got != 0])
    assert pb.read == pb.written and pb.overruns == 0


def test_lead_makes_every_start_wait_the_prebuffer_after_arrival() -> None:
    pb = PlayoutBuffer(RATE, prebuffer_ms=20, max_queue_ms=500)
    pb.write_tick(ramp(TICK), "", 0)
    out = pb.pull(160, elapsed_samples=120)  # the tick waited 15 ms for this pull
    assert not out[:40].any() and out[40] == 1  # so it starts 5 ms into it
    pb.drop()
    pb.write_tick(ramp(TICK), "", 0)
    out = pb.pull(160, elapsed_samples=400)  # waited longer than the prebuffer: no lead
    assert out[0] == 1


def test_was_audible_at_looks_at_the_onset_not_at_now() -> None:
    pb = PlayoutBuffer(RATE, prebuffer_ms=0, max_queue_ms=2000)
    for bits in (0, 0b1111, 0b1111, 0, 0b0011):  # speech 80-240 ms, 320-360 ms
        pb.write_tick(ramp(TICK), "", bits)
    for _ in range(25):
        pb.pull(160)
    assert pb.agent_intervals == [(80, 240), (320, 360)]
    assert not pb.was_audible_at(40)  # before the agent spoke
    assert pb.was_audible_at(100) and pb.was_audible_at(330)
    assert not pb.was_audible_at(280)  # in the pause
    assert pb.was_audible_at(280, slack_ms=50)  # ... unless pauses between words are bridged
    assert not pb.was_audible_at(500, slack_ms=100)
