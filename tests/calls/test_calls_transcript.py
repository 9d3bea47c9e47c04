"""TranscriptSegmenter on synthetic tick timelines (80 ms ticks on the playout clock)."""

from __future__ import annotations

from voicegate.calls.transcript import AgentSegment, TranscriptSegmenter


def feed(
    seg: TranscriptSegmenter, ticks: list[tuple[str, bool]], t0: int = 0
) -> list[AgentSegment]:
    out = []
    for k, (text, is_speech) in enumerate(ticks):
        s = seg.on_tick(t0 + 80 * k, t0 + 80 * k + 80, text, is_speech)
        if s is not None:
            out.append(s)
    return out


def test_segments_split_on_silence_run_with_times() -> None:
    seg = TranscriptSegmenter(pad_run_ms=640, silence_run_ms=240)
    ticks = [("", False)] * 2 + [(" Hello", True), ("", True), (" there", True), ("", True)]
    ticks += [("", False)] * 3  # 240 ms of PAD and silence: closes
    ticks += [(" Bye", True), ("", True)] + [("", False)] * 3
    out = feed(seg, ticks)
    assert out == [
        AgentSegment(text="Hello there", start_ms=160, end_ms=480),
        AgentSegment(text="Bye", start_ms=720, end_ms=880),
    ]
    assert all(s.is_heard for s in out)


def test_pad_run_splits_even_while_audio_continues() -> None:
    seg = TranscriptSegmenter(pad_run_ms=320, silence_run_ms=10_000)
    ticks = [(" One", True)] + [("", True)] * 4 + [(" two", True)] + [("", True)] * 4
    out = feed(seg, ticks)
    assert [s.text for s in out] == ["One", "two"]
    assert out[0].end_ms == 400  # speech ticks extend the segment until the PAD run closes it


def test_short_pauses_do_not_split() -> None:
    seg = TranscriptSegmenter(pad_run_ms=640, silence_run_ms=240)
    ticks = [(" a", True), ("", False), ("", False), (" b", True)] + [("", False)] * 3
    assert [s.text for s in feed(seg, ticks)] == ["a b"]


def test_cut_marks_segment_not_heard_with_cut_text() -> None:
    seg = TranscriptSegmenter()
    feed(seg, [(" Your", True), (" balance", True)])
    cut = seg.on_cut(400, " is forty dollars")
    assert cut == AgentSegment(
        text="Your balance",
        start_ms=0,
        end_ms=400,
        is_heard=False,
        cut_text="is forty dollars",
        cut_at_ms=400,
    )
    assert not seg.is_open
    assert seg.on_cut(500, "") is None  # nothing open, nothing cut


def test_cut_with_nothing_heard_reports_only_cut_text() -> None:
    seg = TranscriptSegmenter()
    cut = seg.on_cut(1000, " Sure")
    assert cut is not None and cut.text == "" and cut.cut_text == "Sure" and not cut.is_heard


def test_cut_of_audio_only_marks_segment_cut_unless_nothing_audible_was_dropped() -> None:
    seg = TranscriptSegmenter()
    feed(seg, [(" Hi", True)])
    s = seg.on_cut(200, "")  # the end of "Hi" was dropped
    assert s is not None and not s.is_heard and s.cut_at_ms == 200 and s.cut_text == ""
    feed(seg, [(" Yes", True)], t0=400)
    s = seg.on_cut(600, "", is_speech_cut=False)  # only trailing silence was dropped
    assert s is not None and s.is_heard and s.cut_at_ms is None and s.end_ms == 600


def test_flush_at_end() -> None:
    seg = TranscriptSegmenter()
    feed(seg, [(" Thanks", True)])
    s = seg.flush(300)
    assert s == AgentSegment(text="Thanks", start_ms=0, end_ms=80)
    assert seg.flush(400) is None
    feed(seg, [(" Good", True)], t0=1000)
    s = seg.flush(1100, " bye")
    assert s is not None and s.text == "Good" and s.cut_text == "bye" and not s.is_heard
