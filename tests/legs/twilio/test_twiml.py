"""TwiML builder: the exact documents Twilio receives."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from voicegate.legs.twilio.twiml import (
    HANDOFF_HEADER,
    connect_stream,
    dial,
    hangup,
    reject,
    say,
    sip_uri_with_header,
)


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


def test_connect_carries_its_action() -> None:
    doc = connect_stream("wss://gw.example.com/twilio/media", {}, action="https://gw/twilio/next")
    (connect,) = list(ET.fromstring(doc))
    assert connect.attrib == {"action": "https://gw/twilio/next", "method": "POST"}


def test_dial_a_number_with_a_whisper() -> None:
    doc = dial(
        "+14155550123",
        action="https://gw/twilio/dial-status?handoff=h1&x=1",
        timeout_s=25,
        whisper_url="https://gw/twilio/whisper?handoff=h1&x=1",
    )
    (verb,) = list(ET.fromstring(doc))
    assert verb.tag == "Dial"
    assert verb.attrib == {
        "action": "https://gw/twilio/dial-status?handoff=h1&x=1",
        "method": "POST",
        "timeout": "25",
    }
    (number,) = list(verb)
    assert (number.tag, number.text) == ("Number", "+14155550123")
    assert number.attrib["url"] == "https://gw/twilio/whisper?handoff=h1&x=1"


def test_dial_a_sip_uri_with_the_handoff_header() -> None:
    uri = sip_uri_with_header("sip:queue@pbx.example.com", HANDOFF_HEADER, "h 1&2")
    assert uri == "sip:queue@pbx.example.com?X-Handoff-Id=h%201%262"
    assert sip_uri_with_header(uri, "X-Other", "v").endswith("&X-Other=v")
    doc = dial(uri, action="https://gw/a", timeout_s=30, answer_on_bridge=True)
    (verb,) = list(ET.fromstring(doc))
    assert verb.attrib["answerOnBridge"] == "true"
    (sip,) = list(verb)
    assert (sip.tag, sip.text) == ("Sip", uri)
    # a header that would take the URI past 254 characters is left off, not cut
    long_uri = "sip:" + "q" * 230 + "@pbx.example.com"
    assert sip_uri_with_header(long_uri, HANDOFF_HEADER, "h" * 32) == long_uri
    with pytest.raises(ValueError, match="255"):
        dial("sip:" + "q" * 260 + "@pbx.example.com", action="https://gw/a", timeout_s=30)


@pytest.mark.parametrize("to", ["555-0123", "tel:+14155550123", "", "sip:nohost"])
def test_dial_refuses_what_twilio_cannot_dial(to: str) -> None:
    with pytest.raises(ValueError, match="E.164"):
        dial(to, action="https://gw/a", timeout_s=30)


def test_say_escapes_and_hangs_up() -> None:
    root = ET.fromstring(say("Fees < 5 & \x01more"))
    assert [(el.tag, el.text) for el in root] == [("Say", "Fees < 5 &  more"), ("Hangup", None)]
    assert [el.tag for el in ET.fromstring(say("  "))] == ["Hangup"]
    assert [el.tag for el in ET.fromstring(say("hi", then_hangup=False))] == ["Say"]
    assert [el.tag for el in ET.fromstring(hangup())] == ["Hangup"]
