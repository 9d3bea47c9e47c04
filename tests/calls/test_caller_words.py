"""Caller words from STT pieces: word timing on the call clock, pause and turn-end splits."""

from __future__ import annotations

from voicegate.calls.caller_words import CallerSegment, CallerWords

NO_HEAD = -1.0


def feed(cw: CallerWords, frames: list[tuple[str, float]], start: int = 0) -> list[CallerSegment]:
    out = []
    for i, (text, p) in enumerate(frames):
        seg = cw.on_frame(start + i, text, p)
        if seg is not None:
            out.append(seg)
    return out


def test_words_get_call_clock_times_shifted_by_the_delay() -> None:
    cw = CallerWords(delay_frames=6, offset_ms=1000, pause_ms=640, interim_ms=10_000)
    frames = [("", NO_HEAD)] * 8 + [(" I", NO_HEAD), ("", NO_HEAD), (" lo", NO_HEAD)]
    frames += [("st", NO_HEAD)] + [("", NO_HEAD)] * 9
    segs = feed(cw, frames)
    assert len(segs) == 1
    seg = segs[0]
    assert seg.is_final and seg.text == "I lost"
    # frame 8 with a 6-frame delay: audio of frame 2, at 1000 + 160 ms
    assert seg.words == (("I", 1160, 1240), ("lost", 1320, 1480))
    assert (seg.start_ms, seg.end_ms) == (1160, 1480)
    # final only once 640 ms of the caller's audio after the last word were transcribed
    assert cw.covered_ms - seg.end_ms >= 640
    assert cw.flush() is None


def test_interim_segments_grow_then_the_final_one_replaces_them() -> None:
    cw = CallerWords(delay_frames=0, pause_ms=400, interim_ms=160)
    frames = [(" one", NO_HEAD), (" two", NO_HEAD), (" three", NO_HEAD), (" four", NO_HEAD)]
    frames += [("", NO_HEAD)] * 6
    segs = feed(cw, frames)
    interim = [s for s in segs if not s.is_final]
    final = [s for s in segs if s.is_final]
    assert interim and all(s.start_ms == 0 for s in interim)
    assert [s.text for s in final] == ["one two three four"]
    assert all(final[0].text.startswith(s.text) for s in interim)


def test_end_of_turn_closes_the_segment_and_is_counted() -> None:
    cw = CallerWords(delay_frames=0, pause_ms=5000, interim_ms=10_000)
    frames = [("", 0.9)] * 3  # silence before speech: high, never a turn end (no words)
    frames += [(" hello", 0.1), (" there", 0.05), ("", 0.3), ("", 0.7), (" next", 0.2)]
    segs = feed(cw, frames)
    assert [s.text for s in segs] == ["hello there"]
    assert cw.turn_ends_ms == [6 * 80]
    assert cw.turn_end_lags_ms == [6 * 80 - 5 * 80]
    tail = cw.flush()
    assert tail is not None and tail.text == "next"


def test_a_long_monologue_is_cut_at_the_segment_limit() -> None:
    cw = CallerWords(delay_frames=0, pause_ms=5000, interim_ms=100_000, max_segment_ms=800)
    segs = feed(cw, [(f" w{i}", NO_HEAD) for i in range(25)])
    assert [len(s.words) for s in segs] == [10, 10]
    assert all(s.is_final for s in segs)


def test_words_between_gives_the_interrupting_words() -> None:
    cw = CallerWords(delay_frames=0, pause_ms=5000)
    feed(cw, [(" so", NO_HEAD), ("", NO_HEAD), (" wait", NO_HEAD), (",", NO_HEAD)])
    feed(cw, [(" what", NO_HEAD), (" about", NO_HEAD)], start=4)
    assert cw.words_between(100, 1000) == "wait, what about"
    assert cw.words_between(0, 100) == "so"


def test_an_interim_segment_goes_out_only_when_words_were_added() -> None:
    cw = CallerWords(delay_frames=0, pause_ms=5000, interim_ms=160)
    # one word, then a long word spelled piece by piece: no new complete word, no new interim
    frames = [(" so", NO_HEAD), (" sup", NO_HEAD)] + [("er", NO_HEAD)] * 8
    segs = feed(cw, frames)
    assert [s.text for s in segs] == ["so"]
    assert not segs[0].is_final
