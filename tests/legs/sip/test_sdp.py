"""SDP offer/answer: codec choice, telephone-event payload type, hold, 488, fuzz."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicegate.errors import SdpError
from voicegate.legs.sip.message import SipRequest, parse_message
from voicegate.legs.sip.sdp import Direction, build_answer, negotiate, parse_sdp

DATA = Path(__file__).resolve().parents[2] / "data" / "sip"


def offer(media: str, *attrs: str, conn: str = "c=IN IP4 10.1.2.3") -> str:
    lines = ["v=0", "o=- 1 1 IN IP4 10.1.2.3", "s=-", conn, "t=0 0", media, *attrs]
    return "\r\n".join(lines) + "\r\n"


def body_of(name: str) -> bytes:
    req = parse_message((DATA / name).read_bytes())
    assert isinstance(req, SipRequest)
    return req.body


def test_sipp_offer_pcma_with_dtmf_101() -> None:
    plan = negotiate(parse_sdp(body_of("invite_sipp_uac_pcap.sip")))
    assert (plan.codec, plan.codec_pt, plan.dtmf_pt) == ("PCMA", 8, 101)
    assert plan.remote_direction is Direction.SENDRECV
    assert not plan.is_hold


def test_baresip_offer_pcmu_ptime() -> None:
    plan = negotiate(parse_sdp(body_of("invite_baresip.sip")))
    assert (plan.codec, plan.codec_pt, plan.dtmf_pt, plan.ptime_ms) == ("PCMU", 0, 101, 20)
    assert (plan.remote_host, plan.remote_port) == ("192.0.2.2", 30024)


def test_offerer_order_and_dynamic_event_pt_kept() -> None:
    sdp = offer(
        "m=audio 4000 RTP/AVP 18 8 0 96",
        "a=rtpmap:18 G729/8000",
        "a=rtpmap:96 telephone-event/8000",
        "a=ptime:30",
    )
    plan = negotiate(parse_sdp(sdp))
    assert (plan.codec, plan.codec_pt, plan.dtmf_pt, plan.ptime_ms) == ("PCMA", 8, 96, 30)
    answer = parse_sdp(
        build_answer(plan, local_host="127.0.0.1", local_port=20000, session_id=5, version=1)
    )
    (m,) = answer.media
    assert m.formats == ("8", "96") and m.port == 20000
    assert m.rtpmap == {8: ("PCMA", 8000), 96: ("telephone-event", 8000)}
    assert m.direction is Direction.SENDRECV
    assert m.connection == "127.0.0.1"


def test_no_rtpmap_static_payload_and_wideband_event_ignored() -> None:
    plan = negotiate(
        parse_sdp(offer("m=audio 4000 RTP/AVP 0 100", "a=rtpmap:100 telephone-event/16000"))
    )
    assert (plan.codec, plan.dtmf_pt) == ("PCMU", None)


@pytest.mark.parametrize(
    ("direction", "conn", "is_hold", "answer_dir"),
    [
        ("a=sendonly", "c=IN IP4 10.1.2.3", True, Direction.RECVONLY),
        ("a=inactive", "c=IN IP4 10.1.2.3", True, Direction.INACTIVE),
        ("a=recvonly", "c=IN IP4 10.1.2.3", False, Direction.SENDONLY),
        ("a=sendrecv", "c=IN IP4 0.0.0.0", True, Direction.SENDRECV),
    ],
)
def test_hold_forms(direction: str, conn: str, is_hold: bool, answer_dir: Direction) -> None:
    plan = negotiate(parse_sdp(offer("m=audio 4000 RTP/AVP 0", direction, conn=conn)))
    assert plan.is_hold is is_hold
    assert plan.local_direction is answer_dir


def test_other_m_lines_are_rejected_with_port_zero() -> None:
    sdp = offer("m=video 5000 RTP/AVP 96", "a=rtpmap:96 VP8/90000") + "m=audio 4000 RTP/AVP 0\r\n"
    plan = negotiate(parse_sdp(sdp))
    assert plan.media_index == 1
    answer = parse_sdp(
        build_answer(plan, local_host="127.0.0.1", local_port=20002, session_id=1, version=1)
    )
    assert [(m.kind, m.port) for m in answer.media] == [("video", 0), ("audio", 20002)]


@pytest.mark.parametrize(
    "sdp",
    [
        offer("m=audio 4000 RTP/AVP 18", "a=rtpmap:18 G729/8000"),  # nothing we take: 488
        offer("m=audio 0 RTP/AVP 0"),  # rejected stream
        offer("m=audio 4000 RTP/SAVP 0"),  # SRTP
        offer("m=audio 4000 RTP/AVP 96", "a=rtpmap:96 PCMU/16000"),
        offer("m=video 4000 RTP/AVP 0"),
    ],
)
def test_nothing_acceptable_is_an_sdp_error(sdp: str) -> None:
    with pytest.raises(SdpError):
        negotiate(parse_sdp(sdp))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "o=- 1 1 IN IP4 1.2.3.4\r\n",
        "v=1\r\n",
        "v=0\r\nc=IN IP4 not-an-ip\r\n",
        "v=0\r\nm=audio port RTP/AVP 0\r\n",
        "v=0\r\nm=audio 70000 RTP/AVP 0\r\n",
        "v=0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:300 PCMU/8000\r\n",
        "v=0\r\nm=audio 4000 RTP/AVP 0\r\na=ptime:x\r\n",
        "v=0\r\ngarbage\r\n",
    ],
)
def test_malformed_sdp(text: str) -> None:
    with pytest.raises(SdpError):
        parse_sdp(text)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600) | st.text(max_size=600).map(lambda t: "v=0\r\n" + t))
def test_fuzz_sdp_raises_only_sdp_error(data: bytes | str) -> None:
    try:
        plan = negotiate(parse_sdp(data))
    except SdpError:
        return
    build_answer(plan, local_host="127.0.0.1", local_port=20000, session_id=1, version=1)
