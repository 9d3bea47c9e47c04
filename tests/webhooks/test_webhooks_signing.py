"""Webhook signatures: ours verify, tampering and staleness do not; the receivers' verifier in
README (run as written) agrees with ours; the package's public names."""

from __future__ import annotations

import inspect
import re
import time
from pathlib import Path
from typing import Any

import voicegate.webhooks as webhooks
from voicegate.webhooks import sign, verify
from voicegate.webhooks.report import build_report, encode_report, idempotency_key
from voicegate.webhooks.signing import signed_headers

README = Path(__file__).resolve().parents[2] / "README.md"
SECRET = "whsec-0123456789abcdef"
BODY = b'{"type":"call.ended","call_id":"CA1"}'


def readme_verifier() -> Any:
    text = README.read_text()
    block = re.search(
        r"<!-- webhook-verifier:start -->\n```python\n(.*?)```\n<!-- webhook-verifier:end -->",
        text,
        re.S,
    )
    assert block, "README lost its webhook verifier snippet"
    scope: dict[str, Any] = {}
    exec(compile(block.group(1), "README.md", "exec"), scope)  # noqa: S102 (our own README)
    return scope["verify"]


def test_a_signature_verifies_and_tampering_does_not() -> None:
    header = sign(BODY, SECRET)
    assert verify(BODY, header, SECRET)
    assert not verify(BODY + b" ", header, SECRET)
    assert not verify(BODY, header, SECRET + "x")
    assert not verify(BODY, header.replace("v1=", "v1=0"), SECRET)
    assert not verify(BODY, "v1=abc", SECRET)
    assert not verify(BODY, "", SECRET)
    old = sign(BODY, SECRET, int(time.time()) - 301)
    assert not verify(BODY, old, SECRET)
    future = sign(BODY, SECRET, int(time.time()) + 301)
    assert not verify(BODY, future, SECRET)


def test_the_readme_verifier_agrees_with_the_gateway() -> None:
    receiver_verify = readme_verifier()
    headers = signed_headers(BODY, SECRET, "vg_key")
    assert headers["Idempotency-Key"] == "vg_key"
    assert receiver_verify(BODY, headers["VoiceGate-Signature"], SECRET)
    assert not receiver_verify(BODY + b"x", headers["VoiceGate-Signature"], SECRET)
    assert not receiver_verify(BODY, headers["VoiceGate-Signature"], "other")
    stale = sign(BODY, SECRET, int(time.time()) - 3600)
    assert not receiver_verify(BODY, stale, SECRET)
    assert not receiver_verify(BODY, "t=abc,v1=00", SECRET)


def test_the_report_reads_caller_transcripts_and_the_recording_as_logged() -> None:
    entries = [
        {"type": "call.started", "call_id": "CA1", "persona": "p", "from": "+1", "to": "+2"},
        {"type": "transcript.caller", "text": "hel", "start_ms": "100", "end_ms": "300", "final": "false"},
        {"type": "transcript.caller", "text": "hello", "start_ms": "100", "end_ms": "500", "final": "true", "words": '[{"w":"hello","start_ms":100}]'},
        {"type": "recording.ended", "call_id": "CA1", "ts": "1", "path": "var/rec/CA1.wav", "duration_ms": "2000"},
        {"type": "call.ended", "call_id": "CA1", "reason": "caller_hangup", "duration_ms": "2000"},
        {"type": "some.future.event", "x": "y"},
    ]  # fmt: skip
    report = build_report({"call_id": "CA1", "leg": "sip"}, entries)
    assert report["transcript"]["caller"] == [
        {
            "text": "hello",
            "start_ms": 100,
            "end_ms": 500,
            "words": [{"w": "hello", "start_ms": 100}],
        }
    ]
    assert report["recording"] == {"path": "var/rec/CA1.wav", "duration_ms": 2000}
    assert report["id"] == idempotency_key("CA1") != idempotency_key("CA2")
    assert report["persona"] == "p" and report["reason"] == "caller_hangup"
    assert encode_report(report) == encode_report(
        build_report({"call_id": "CA1", "leg": "sip"}, entries)
    )


def test_all_is_sorted_and_complete() -> None:
    public = sorted(
        name
        for name, obj in vars(webhooks).items()
        if not name.startswith("_") and not inspect.ismodule(obj) and name != "annotations"
    )
    assert webhooks.__all__ == sorted(webhooks.__all__) == public
