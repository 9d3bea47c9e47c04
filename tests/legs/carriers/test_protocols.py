"""Each carrier's ``start`` as its documentation shows it, malformed variants, and a fuzz: any
JSON a peer sends is either a start or a ``CarrierProtocolError`` (never another exception)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicegate.legs.carriers.protocols import (
    CARRIERS,
    EXOTEL,
    PLIVO,
    TELNYX,
    VONAGE,
    CarrierProtocolError,
    parse_message,
)

TELNYX_START: dict[str, Any] = {
    "event": "start",
    "sequence_number": "1",
    "start": {
        "user_id": "3e6f995f-85f7-4705-9741-53b116d28237",
        "call_control_id": "v3:MdI91X4lWFEs7IgbBEOT9M4AigoY08M0WWZFISt1Yw2axZ_IiE4pqg",
        "call_session_id": "428c31b6-7af4-4bcb-b68e-5013ef9657c1",
        "from": "+13122010094",
        "to": "+13122123456",
        "tags": ["TAG1"],
        "client_state": "aGF2ZSBhIG5pY2UgZGF5ID1d",
        "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
    },
    "stream_id": "32de0dea-53cb-4b21-89a4-9610a25a5e8f",
}
PLIVO_START: dict[str, Any] = {
    "event": "start",
    "sequenceNumber": 1,
    "start": {
        "callId": "12345678-1234-1234-1234-123456789abc",
        "streamId": "87654321-4321-4321-4321-cba987654321",
        "accountId": "MAXXXXXXXXXXXXXXXXXX",
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
    },
    "extra_headers": "to=14155550100;from=15550100;userId=12345",
}
EXOTEL_START: dict[str, Any] = {
    "event": "start",
    "sequence_number": "1",
    "stream_sid": "MZ0001",
    "start": {
        "stream_sid": "MZ0001",
        "call_sid": "CA0001",
        "account_sid": "AC0001",
        "from": "+919876543210",
        "to": "+918047491899",
        "custom_parameters": {"key1": "value1"},
        "media_format": {"encoding": "audio/x-raw", "sample_rate": "8000", "bit_rate": "16"},
    },
}
VONAGE_CONNECTED: dict[str, Any] = {
    "event": "websocket:connected",
    "content-type": "audio/l16;rate=16000",
    "uuid": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
    "from": "447700900000",
    "to": "447700900001",
}


def test_the_documented_starts() -> None:
    telnyx = TELNYX.parse_start(TELNYX_START)
    assert (telnyx.stream_id, telnyx.encoding, telnyx.to) == (
        "32de0dea-53cb-4b21-89a4-9610a25a5e8f",
        "PCMU",
        "+13122123456",
    )
    assert telnyx.call_ref.startswith("v3:") and telnyx.rate_hz == 8000
    plivo = PLIVO.parse_start(PLIVO_START)
    assert (plivo.call_ref, plivo.to, plivo.from_) == (
        "12345678-1234-1234-1234-123456789abc",
        "+14155550100",  # extraHeaders allow no '+': it is put back
        "+15550100",
    )
    assert plivo.params["userId"] == "12345"
    exotel = EXOTEL.parse_start(EXOTEL_START)
    assert (exotel.call_ref, exotel.to, exotel.params) == (
        "CA0001",
        "+918047491899",
        {"key1": "value1"},
    )
    vonage = VONAGE.parse_start(VONAGE_CONNECTED)
    assert (vonage.rate_hz, vonage.call_ref, vonage.to) == (
        16000,
        VONAGE_CONNECTED["uuid"],
        "447700900001",
    )


@pytest.mark.parametrize(
    ("protocol", "message", "expected"),
    [
        (TELNYX, {**TELNYX_START, "stream_id": ""}, "stream_id"),
        (TELNYX, {**TELNYX_START, "start": "x"}, "object 'start'"),
        (
            TELNYX,
            {
                **TELNYX_START,
                "start": {**TELNYX_START["start"], "media_format": {"encoding": "G722"}},
            },
            "encoding 'G722'",
        ),
        (
            PLIVO,
            {
                **PLIVO_START,
                "start": {
                    **PLIVO_START["start"],
                    "mediaFormat": {"encoding": "audio/x-l16", "sampleRate": 16000},
                },
            },
            "audio/x-mulaw",
        ),
        (PLIVO, {**PLIVO_START, "start": {**PLIVO_START["start"], "callId": None}}, "callId"),
        (
            EXOTEL,
            {
                **EXOTEL_START,
                "start": {**EXOTEL_START["start"], "media_format": {"sample_rate": "16000"}},
            },
            "sample_rate 16000",
        ),
        (
            EXOTEL,
            {
                **EXOTEL_START,
                "start": {**EXOTEL_START["start"], "media_format": {"sample_rate": "fast"}},
            },
            "sample_rate",
        ),
        (VONAGE, {**VONAGE_CONNECTED, "content-type": "audio/l16;rate=44100"}, "rate 44100"),
        (VONAGE, {k: v for k, v in VONAGE_CONNECTED.items() if k != "uuid"}, "uuid"),
    ],
)
def test_a_bad_start_says_what_is_wrong(
    protocol: Any, message: dict[str, Any], expected: str
) -> None:
    with pytest.raises(CarrierProtocolError, match=expected):
        protocol.parse_start(message)


def test_parse_message_wants_a_json_object_with_an_event() -> None:
    assert parse_message('{"event": "media"}', "telnyx") == {"event": "media"}
    for raw in ("{", "[]", '{"event": 3}', b"\xff\xfe", '"x"'):
        with pytest.raises(CarrierProtocolError):
            parse_message(raw, "telnyx")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)
KEYS = st.sampled_from(
    [
        "start",
        "stream_id",
        "call_control_id",
        "media_format",
        "encoding",
        "sample_rate",
        "callId",
        "streamId",
        "mediaFormat",
        "sampleRate",
        "extra_headers",
        "stream_sid",
        "call_sid",
        "custom_parameters",
        "content-type",
        "uuid",
        "from",
        "to",
    ]
)
START_LIKE = st.recursive(
    JSON,
    lambda children: st.dictionaries(KEYS | st.text(max_size=6), children, max_size=6),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(message=START_LIKE, carrier=st.sampled_from(sorted(CARRIERS)))
def test_any_start_is_parsed_or_refused_with_a_protocol_error(message: Any, carrier: str) -> None:
    protocol = CARRIERS[carrier]
    try:
        event = parse_message(
            json.dumps(
                {"event": protocol.start_event, **message} if isinstance(message, dict) else message
            ),
            carrier,
        )
        protocol.parse_start(event)
    except CarrierProtocolError:
        pass
