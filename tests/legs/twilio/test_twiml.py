"""TwiML builder: the exact documents Twilio receives."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from voicegate.legs.twilio.twiml import connect_stream, reject


def test_connect_stream_shape() -> None:
    doc = connect_stream(
        "wss://gw.example.com/twilio/media",
        {"persona": "bank_teller", "token": 'a&b"<c>'},
        status_callback="https://gw.example.com/twilio/status",
    )
    root = ET.fromstring(doc)
    assert root.tag == "Response"
    (connect,) = list(root)
    assert connect.tag == "Connect"
    (stream,) = list(connect)
    assert stream.tag == "Stream"
    assert stream.attrib == {
        "url": "wss://gw.example.com/twilio/media",
        "statusCallback": "https://gw.example.com/twilio/status",
        "statusCallbackMethod": "POST",
    }
    params = [(p.tag, p.attrib["name"], p.attrib["value"]) for p in stream]
    assert params == [("Parameter", "persona", "bank_teller"), ("Parameter", "token", 'a&b"<c>')]


def test_stream_url_may_not_carry_a_query() -> None:
    with pytest.raises(ValueError, match="query"):
        connect_stream("wss://gw.example.com/twilio/media?token=x", {})
    with pytest.raises(ValueError, match="ws"):
        connect_stream("https://gw.example.com/twilio/media", {})


def test_reject_busy() -> None:
    root = ET.fromstring(reject())
    assert [(el.tag, el.attrib) for el in root] == [("Reject", {"reason": "busy"})]
    with pytest.raises(ValueError):
        reject("nope")
