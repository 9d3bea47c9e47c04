"""Pure-protocol tests on captured Twilio Media Streams messages (tests/data/twilio/)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicegate.errors import TwilioProtocolError
from voicegate.legs.twilio.protocol import (
    MAX_MESSAGE_CHARS,
    Clear,
    Connected,
    Dtmf,
    Mark,
    Media,
    OutboundMark,
    OutboundMedia,
    SequenceTracker,
    Start,
    Stop,
    UnknownEvent,
    encode_clear,
    encode_mark,
    encode_media,
    parse_command,
    parse_event,
)

DATA = Path(__file__).resolve().parents[2] / "data" / "twilio"
SID = "MZ00000000000000000000000000000001"


def load(name: str) -> str:
    return (DATA / name).read_text().strip()


def test_connected_fields_and_bytes() -> None:
    ev = parse_event(load("in_connected.json"))
    assert ev == Connected(protocol="Call", version="1.0.0")
    assert ev.to_wire() == load("in_connected.json")


def test_start_fields_and_bytes() -> None:
    ev = parse_event(load("in_start.json"))
    assert isinstance(ev, Start)
    assert ev.stream_sid == SID
    assert ev.call_sid == "CA00000000000000000000000000000001"
    assert ev.account_sid == "AC00000000000000000000000000000001"
    assert ev.tracks == ("inbound",)
    assert ev.custom_parameters == {"persona": "bank_teller", "token": "tok-abc"}
    assert (ev.encoding, ev.sample_rate_hz, ev.channels) == ("audio/x-mulaw", 8000, 1)
    assert ev.sequence_number == 1
    assert ev.to_wire() == load("in_start.json")


def test_media_fields_and_bytes() -> None:
    ev = parse_event(load("in_media.json"))
    assert isinstance(ev, Media)
    assert ev.payload == bytes(range(160))
    assert (ev.sequence_number, ev.chunk, ev.timestamp_ms, ev.track) == (3, 1, 5, "inbound")
    assert ev.stream_sid == SID
    assert ev.to_wire() == load("in_media.json")


def test_dtmf_mark_stop_fields_and_bytes() -> None:
    dtmf = parse_event(load("in_dtmf.json"))
    assert dtmf == Dtmf(stream_sid=SID, digit="1", track="inbound_track", sequence_number=5)
    assert dtmf.to_wire() == load("in_dtmf.json")
    mark = parse_event(load("in_mark.json"))
    assert mark == Mark(stream_sid=SID, name="17", sequence_number=4)
    assert mark.to_wire() == load("in_mark.json")
    stop = parse_event(load("in_stop.json"))
    assert stop == Stop(
        stream_sid=SID,
        account_sid="AC00000000000000000000000000000001",
        call_sid="CA00000000000000000000000000000001",
        sequence_number=5,
    )
    assert stop.to_wire() == load("in_stop.json")


def test_numbers_as_ints_are_tolerated() -> None:
    ev = parse_event(load("in_media_int_numbers.json"))
    assert isinstance(ev, Media)
    assert (ev.sequence_number, ev.chunk, ev.timestamp_ms) == (7, 5, 100)


def test_start_with_string_numbers() -> None:
    ev = parse_event(load("in_start_string_format.json"))
    assert isinstance(ev, Start)
    assert (ev.sample_rate_hz, ev.channels) == (8000, 1)
    assert ev.custom_parameters == {"token": "t"}


def test_missing_sequence_and_optional_fields() -> None:
    ev = parse_event(load("in_media_no_sequence.json"))
    assert isinstance(ev, Media)
    assert ev.sequence_number is None and ev.chunk is None and ev.timestamp_ms is None
    assert len(ev.payload) == 160


def test_odd_and_empty_payload_sizes() -> None:
    odd = parse_event(load("in_media_odd_size.json"))
    assert isinstance(odd, Media) and odd.payload == b"\xff" * 161
    empty = parse_event(load("in_media_empty_payload.json"))
    assert isinstance(empty, Media) and empty.payload == b""


def test_unknown_event_passes_through() -> None:
    assert parse_event(load("in_unknown_event.json")) == UnknownEvent("mediaBurst", 12)


def test_bytes_input_is_accepted() -> None:
    assert isinstance(parse_event(load("in_media.json").encode()), Media)


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("bad_not_json.txt", "expected a JSON object"),
        ("bad_not_object.json", "got list"),
        ("bad_missing_event.json", "'event'"),
        ("bad_event_not_string.json", "'event'"),
        ("bad_media_base64.json", "not base64"),
        ("bad_media_missing_payload.json", "missing 'payload'"),
        ("bad_media_payload_number.json", "expected string 'payload'"),
        ("bad_media_not_object.json", "expected object 'media'"),
        ("bad_sequence_garbage.json", "'sequenceNumber'"),
        ("bad_timestamp_negative.json", "'timestamp'"),
        ("bad_dtmf_digit.json", "0-9"),
        ("bad_start_alaw.json", "audio/x-alaw"),
        ("bad_start_params_list.json", "customParameters"),
        ("bad_mark_no_name.json", "missing 'name'"),
        ("bad_stream_sid_number.json", "streamSid"),
    ],
)
def test_malformed_messages_raise(name: str, fragment: str) -> None:
    with pytest.raises(TwilioProtocolError, match=None) as info:
        parse_event(load(name))
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


def test_undecodable_bytes_raise() -> None:
    with pytest.raises(TwilioProtocolError, match="UTF-8"):
        parse_event((DATA / "bad_binary.bin").read_bytes())


def test_oversized_message_raises() -> None:
    text = json.dumps({"event": "media", "media": {"payload": "A" * MAX_MESSAGE_CHARS}})
    with pytest.raises(TwilioProtocolError, match="exceeds"):
        parse_event(text)


def test_outbound_bytes_round_trip() -> None:
    media = parse_command(load("out_media.json"))
    assert media == OutboundMedia(SID, bytes(range(160)))
    assert encode_media(SID, bytes(range(160))) == load("out_media.json")
    assert media.to_wire() == load("out_media.json")
    mark = parse_command(load("out_mark.json"))
    assert mark == OutboundMark(SID, "17")
    assert encode_mark(SID, "17") == load("out_mark.json")
    assert parse_command(load("out_clear.json")) == Clear(SID)
    assert encode_clear(SID) == load("out_clear.json")


@pytest.mark.parametrize("name", ["badout_unknown_event.json", "badout_no_stream_sid.json"])
def test_malformed_commands_raise(name: str) -> None:
    with pytest.raises(TwilioProtocolError):
        parse_command(load(name))


def test_sequence_tracker_counts_gaps_and_reorders() -> None:
    seq = SequenceTracker()
    for n in (1, 2, 3, 5, 4, 6, 6, None):
        seq.note(n)
    assert seq.highest == 6
    assert seq.reordered == 2  # 4 late, 6 repeated
    assert seq.unnumbered == 1
    assert seq.missing == 0  # the gap at 4 was filled


def test_sequence_tracker_counts_a_real_gap() -> None:
    seq = SequenceTracker()
    for n in (1, 2, 7):
        seq.note(n)
    assert seq.missing == 4


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
event_names = st.sampled_from(["connected", "start", "media", "dtmf", "mark", "stop", "x"])


@st.composite
def twilio_like(draw: st.DrawFn) -> str:
    body = draw(
        st.dictionaries(
            st.sampled_from(
                [
                    "sequenceNumber",
                    "streamSid",
                    "media",
                    "start",
                    "dtmf",
                    "mark",
                    "stop",
                    "protocol",
                ]
            ),
            json_values,
            max_size=5,
        )
    )
    body["event"] = draw(event_names | json_values)
    if draw(st.booleans()):
        body["media"] = {
            "payload": draw(
                st.text(max_size=30)
                | st.binary(max_size=30).map(lambda b: base64.b64encode(b).decode())
            ),
            "chunk": draw(json_values),
            "timestamp": draw(json_values),
        }
    return json.dumps(body)


@settings(max_examples=400, deadline=None)
@given(text=twilio_like() | st.text(max_size=200) | st.binary(max_size=200))
def test_fuzz_parser_raises_only_protocol_errors(text: str | bytes) -> None:
    try:
        parse_event(text)
    except TwilioProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(text=twilio_like() | st.text(max_size=200) | st.binary(max_size=200))
def test_fuzz_command_parser_raises_only_protocol_errors(text: str | bytes) -> None:
    try:
        parse_command(text)
    except TwilioProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(
    payload=st.binary(max_size=400),
    seq=st.none() | st.integers(0, 2**40),
    chunk=st.none() | st.integers(0, 2**31),
    ts=st.none() | st.integers(0, 2**31),
)
def test_fuzz_media_round_trip(
    payload: bytes, seq: int | None, chunk: int | None, ts: int | None
) -> None:
    ev = Media(stream_sid=SID, payload=payload, chunk=chunk, timestamp_ms=ts, sequence_number=seq)
    assert parse_event(ev.to_wire()) == ev
