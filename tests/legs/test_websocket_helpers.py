"""The shared WebSocket pieces of the media-stream legs: frames and errors."""

from __future__ import annotations

import pytest

from voicegate.errors import TwilioProtocolError
from voicegate.legs.carriers.protocols import CarrierProtocolError
from voicegate.legs.websocket import frame_of


def test_a_frame_is_its_text_or_its_bytes() -> None:
    assert frame_of({"type": "websocket.receive", "text": "{}"}, TwilioProtocolError) == "{}"
    assert frame_of({"type": "websocket.receive", "bytes": b"\x00"}, TwilioProtocolError) == b"\x00"


@pytest.mark.parametrize("error", [TwilioProtocolError, CarrierProtocolError])
def test_anything_else_is_the_legs_own_protocol_error(error: type[Exception]) -> None:
    with pytest.raises(error, match="'websocket.disconnect'"):
        frame_of({"type": "websocket.disconnect", "code": 1000}, error)
    with pytest.raises(error):
        frame_of({"type": "websocket.receive", "text": None, "bytes": None}, error)
