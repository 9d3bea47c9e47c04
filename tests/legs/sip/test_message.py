"""SIP message parsing (captured and malformed messages), responses, TCP framing, fuzz."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voicegate.errors import SipParseError
from voicegate.legs.sip.message import (
    MAX_MESSAGE_BYTES,
    SipBadHeader,
    SipRequest,
    SipResponse,
    build_request,
    build_response,
    parse_message,
    split_stream,
)

DATA = Path(__file__).resolve().parents[2] / "data" / "sip"


def load(name: str) -> bytes:
    return (DATA / name).read_bytes()


def test_sipp_invite_fields() -> None:
    req = parse_message(load("invite_sipp_uac_pcap.sip"))
    assert isinstance(req, SipRequest)
    assert (req.method, req.uri.user, req.cseq, req.cseq_method) == ("INVITE", "agent", 1, "INVITE")
    assert req.from_tag.endswith("SIPpTag091") and req.to_tag == ""
    assert req.branch.startswith("z9hG4bK")
    assert req.content_type == "application/sdp"
    assert req.body.startswith(b"v=0") and b"m=audio" in req.body
    assert req.contact is not None and req.contact.uri.user == "sipp"


def test_baresip_invite_with_empty_header_and_rport() -> None:
    req = parse_message(load("invite_baresip.sip"))
    assert isinstance(req, SipRequest)
    assert req.uri.user == "teller"
    assert req.vias == ("SIP/2.0/UDP 127.0.0.1:47001;branch=z9hG4bKdf277042e786963a;rport",)
    assert len(req.body) == int(req.header("Content-Length") or 0)


def test_compact_headers_and_tel_style_user() -> None:
    req = parse_message(load("options_compact.sip"))
    assert isinstance(req, SipRequest)
    assert req.method == "OPTIONS"
    assert req.uri.user == "+14155550100"
    assert req.call_id == "a84b4c76e66710@198.51.100.7"
    assert req.from_.name == "Carrier"


def test_response_parses() -> None:
    res = parse_message(load("response_200_bye.sip"))
    assert isinstance(res, SipResponse)
    assert (res.code, res.cseq, res.cseq_method) == (200, 1, "BYE")


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("bad_*.sip")))
def test_malformed_messages_raise_sip_parse_error(name: str) -> None:
    with pytest.raises(SipParseError):
        parse_message(load(name))


@pytest.mark.parametrize(
    "name",
    [
        "bad_nul_in_header_value.sip",
        "bad_bare_lf_in_header_value.sip",
        "bad_escape_in_header_name.sip",
        "bad_del_in_header_value.sip",
    ],
)
def test_control_bytes_in_headers_are_refused_with_the_request_to_answer(name: str) -> None:
    with pytest.raises(SipBadHeader) as refused:
        parse_message(load(name))
    assert isinstance(refused.value.request, SipRequest)
    assert refused.value.request.call_id == "1-4242@127.0.0.1"


def test_htab_in_a_header_value_is_allowed() -> None:
    req = parse_message(load("bye_tab_in_header_value.sip"))
    assert isinstance(req, SipRequest) and req.header("Subject") == "pay\tment"


_CONTROL_BYTES = [b for b in range(32) if b not in (9, 10, 13)] + [127]


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzz_any_control_byte_in_any_header_line_is_refused(data: st.DataObject) -> None:
    message = load("invite_sipp_uac_pcap.sip")
    head_end = message.index(b"\r\n\r\n")
    starts = [0] + [i + 2 for i in range(head_end) if message[i : i + 2] == b"\r\n"]
    line = data.draw(st.sampled_from(starts))
    end = message.index(b"\r\n", line)
    pos = data.draw(st.integers(line, end))
    byte = data.draw(st.sampled_from([*_CONTROL_BYTES, 10, 13]))
    if byte in (10, 13):  # a lone CR or LF: not one next to its partner of a CRLF
        pos = data.draw(st.integers(line + 1, end - 1))
    mutated = message[:pos] + bytes([byte]) + message[pos:]
    with pytest.raises(SipParseError):
        parse_message(mutated)


def test_oversize_message_is_refused() -> None:
    data = load("invite_sipp_uac_pcap.sip")
    with pytest.raises(SipParseError, match="exceeds"):
        parse_message(data + b"x" * MAX_MESSAGE_BYTES)


def test_response_copies_vias_adds_tag_and_received() -> None:
    req = parse_message(load("bye_in_dialog.sip"))
    assert isinstance(req, SipRequest)
    data = build_response(req, 200, to_tag="zzz", source=("127.0.0.1", 5070))
    res = parse_message(data)
    assert isinstance(res, SipResponse)
    vias = res.raw.headers.getlist("Via")
    assert vias[0].endswith(";received=127.0.0.1")
    assert vias[1] == "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-proxy-1;received=10.0.0.9"
    # the To already had a tag (in-dialog): ours is not added twice
    assert res.raw.headers["To"] == "<sip:teller@127.0.0.1:5060>;tag=abc123"
    assert (res.call_id, res.cseq, res.cseq_method) == ("1-4242@127.0.0.1", 2, "BYE")


def test_rport_is_filled_in() -> None:
    req = parse_message(load("invite_baresip.sip"))
    assert isinstance(req, SipRequest)
    res = parse_message(build_response(req, 180, to_tag="t1", source=("127.0.0.9", 47001)))
    assert isinstance(res, SipResponse)
    assert res.raw.headers["Via"].endswith(";rport=47001;received=127.0.0.9")
    assert res.raw.to_address.parameters.get("tag") == "t1"


def test_request_round_trip() -> None:
    data = build_request(
        "BYE",
        "sip:sipp@127.0.0.1:5070",
        via="SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabc;rport",
        from_="<sip:teller@127.0.0.1>;tag=ours",
        to="<sip:sipp@127.0.0.1>;tag=theirs",
        call_id="c1",
        cseq=7,
        routes=["<sip:10.0.0.1;lr>"],
    )
    req = parse_message(data)
    assert isinstance(req, SipRequest)
    assert (req.method, req.cseq, req.from_tag, req.to_tag) == ("BYE", 7, "ours", "theirs")
    assert req.header("Route") == "<sip:10.0.0.1;lr>"


def test_split_stream_frames_by_content_length() -> None:
    invite = load("invite_sipp_uac_pcap.sip")
    options = load("options_compact.sip")
    buffer = bytearray(b"\r\n\r\n" + invite + options[:10])
    assert split_stream(buffer) == invite
    assert split_stream(buffer) is None
    buffer += options[10:]
    assert split_stream(buffer) == options
    assert buffer == b""


def test_split_stream_refuses_endless_headers_and_huge_bodies() -> None:
    with pytest.raises(SipParseError):
        split_stream(bytearray(b"OPTIONS sip:x SIP/2.0\r\n" + b"X: y\r\n" * 5000))
    with pytest.raises(SipParseError):
        split_stream(bytearray(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 99999999\r\n\r\n"))


def _mutations() -> st.SearchStrategy[bytes]:
    seeds = [load(p.name) for p in sorted(DATA.glob("*.sip"))]

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(st.sampled_from(seeds)))
        for _ in range(draw(st.integers(0, 6))):
            op = draw(st.integers(0, 3))
            pos = draw(st.integers(0, max(0, len(data) - 1)))
            if op == 0 and data:
                data[pos] = draw(st.integers(0, 255))
            elif op == 1:
                data[pos:pos] = draw(st.binary(max_size=20))
            elif op == 2:
                del data[pos : pos + draw(st.integers(0, 40))]
            else:
                data[pos:pos] = draw(st.sampled_from([b"\r\n", b":", b";", b"<", b">", b",", b'"']))
        return bytes(data)

    return st.one_of(mutate(), st.binary(max_size=2000))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutations())
def test_fuzz_parse_message_raises_only_sip_parse_error(data: bytes) -> None:
    try:
        message = parse_message(data)
    except SipParseError:
        return
    if isinstance(message, SipRequest):
        # whatever parses can be answered, and the answer parses again
        answer = parse_message(build_response(message, 400, to_tag="t", source=("127.0.0.1", 1)))
        assert isinstance(answer, SipResponse) and answer.call_id == message.call_id
