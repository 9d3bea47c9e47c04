"""The post-call report carries the caller's words: final transcript.caller segments (interim
ones left out) and each barge-in's caller_text, as the Call writes them."""

from __future__ import annotations

from voicegate.calls import report as call_report
from voicegate.calls.bargein import BargeInRecord
from voicegate.calls.caller_words import CallerSegment
from voicegate.contracts import CallInfo
from voicegate.events import encode_fields
from voicegate.webhooks.report import build_report


def test_report_has_final_caller_segments_and_bargein_words() -> None:
    info = CallInfo("CA1", "twilio", "bank_teller", "+15005550006", "+14155550100")
    words = (("I", 100, 180), ("lost", 260, 500), ("my", 500, 640), ("card", 720, 1000))
    interim = CallerSegment("I lost", 100, 500, words[:2], is_final=False)
    final = CallerSegment("I lost my card", 100, 1000, words, is_final=True)
    record = BargeInRecord(
        caller_onset_ms=80, agent_stop_ms=200, latency_ms=120, discarded_ms=40, cut_text="your"
    )
    entries = [
        encode_fields(call_report.caller_segment(info, interim)),
        encode_fields(call_report.caller_segment(info, final)),
        encode_fields(call_report.bargein(info, record, "I lost my card")),
    ]
    report = build_report({"call_id": "CA1"}, entries)
    assert report["transcript"]["caller"] == [
        {
            "text": "I lost my card",
            "start_ms": 100,
            "end_ms": 1000,
            "words": [list(w) for w in words],
        }
    ]
    assert report["bargeins"][0]["caller_text"] == "I lost my card"
