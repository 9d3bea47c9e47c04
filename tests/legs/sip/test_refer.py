"""The pure parts of REFER transfers: sipfrag and Subscription-State parsing on NOTIFYs captured
from SIPp (``captured/``, taken with ``-trace_msg`` from the runs of test_sipp_transfer.py), the
REFER we sent, transfer URIs with an escaped X-Handoff-Id, and the transfer's state table;
hypothesis fuzzes the parsers and the state machine."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicegate.contracts import TransferOutcome, TransferTarget
from voicegate.errors import InvalidStateError, SipParseError
from voicegate.legs.sip.message import SipRequest, parse_message
from voicegate.legs.sip.refer import (
    _TRANSITIONS,
    Refer,
    ReferState,
    SipFrag,
    SubscriptionState,
    escape_uri_header,
    parse_sipfrag,
    parse_subscription_state,
    target_uri,
    with_uri_header,
)

CAPTURED = Path(__file__).resolve().parent / "captured"
TARGET = TransferTarget("human", "sip:human@pbx.example.test", "h1")


def captured(name: str) -> SipRequest:
    message = parse_message((CAPTURED / name).read_bytes())
    assert isinstance(message, SipRequest)
    return message


@pytest.mark.parametrize(
    ("name", "code", "phrase", "state", "params"),
    [
        ("notify_sipp_100.sip", 100, "Trying", "active", {"expires": "60"}),
        ("notify_sipp_200.sip", 200, "OK", "terminated", {"reason": "noresource"}),
        ("notify_sipp_486.sip", 486, "Busy Here", "terminated", {"reason": "noresource"}),
    ],
)
def test_captured_notifies_parse(
    name: str, code: int, phrase: str, state: str, params: dict[str, str]
) -> None:
    notify = captured(name)
    assert notify.method == "NOTIFY"
    assert notify.content_type == "message/sipfrag"
    assert notify.header("Event") == "refer"
    assert parse_sipfrag(notify.body) == SipFrag(code, phrase)
    assert parse_subscription_state(notify.header("Subscription-State")) == SubscriptionState(
        state, params
    )


def test_captured_refer_of_ours_carries_refer_to_and_referred_by() -> None:
    refer = captured("refer_voicegate.sip")
    assert (refer.method, refer.cseq_method) == ("REFER", "REFER")
    refer_to = refer.header("Refer-To") or ""
    assert refer_to.startswith("<sip:human@pbx.example.test?X-Handoff-Id=")
    assert (refer.header("Referred-By") or "").startswith("<sip:voicegate@")
    assert refer.to_tag and refer.from_tag  # in-dialog: both tags


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"SIP/2.0 200 OK\r\n", SipFrag(200, "OK")),
        (b"SIP/2.0 100 Trying", SipFrag(100, "Trying")),
        (b"\r\nSIP/2.0 180 Ringing\r\nContact: <sip:h@pbx>\r\n\r\n", SipFrag(180, "Ringing")),
        (b"sip/2.0 603 Decline\n", SipFrag(603, "Decline")),
        (b"SIP/2.0 503", SipFrag(503, "")),
    ],
)
def test_sipfrag_bodies(body: bytes, expected: SipFrag) -> None:
    assert parse_sipfrag(body) == expected


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"   \r\n",
        b"INVITE sip:a@b SIP/2.0\r\n",  # a request line is no status
        b"SIP/2.0 99 Low",
        b"SIP/2.0 700 High",
        b"SIP/3.0 200 OK",
        b"SIP/2.0 2000 OK",
        b"\xff\xfe",
        b"SIP/2.0 200 " + b"x" * 5000,
    ],
)
def test_bad_sipfrag_bodies_raise_a_clear_error(body: bytes) -> None:
    with pytest.raises(SipParseError):
        parse_sipfrag(body)


@pytest.mark.parametrize(
    ("value", "state", "reason"),
    [
        ("active;expires=60", "active", ""),
        ("Terminated; reason=NoResource", "terminated", "noresource"),
        ("pending", "pending", ""),
        ("terminated;reason=timeout;retry-after=5", "terminated", "timeout"),
    ],
)
def test_subscription_state(value: str, state: str, reason: str) -> None:
    sub = parse_subscription_state(value)
    assert (sub.state, sub.reason) == (state, reason)


@pytest.mark.parametrize("value", [None, "", "dormant", "active;=5", "active;a b=1"])
def test_bad_subscription_state_raises(value: str | None) -> None:
    with pytest.raises(SipParseError):
        parse_subscription_state(value)


@pytest.mark.parametrize(
    ("to", "host", "handoff", "expected"),
    [
        ("sip:queue@pbx.example.com", "x", "", "sip:queue@pbx.example.com"),
        (
            "sip:queue@pbx.example.com",
            "x",
            "abc123",
            "sip:queue@pbx.example.com?X-Handoff-Id=abc123",
        ),
        (
            "sip:queue@pbx.example.com?X-A=1",
            "x",
            "h",
            "sip:queue@pbx.example.com?X-A=1&X-Handoff-Id=h",
        ),
        ("+14155550123", "trunk.example.com", "", "sip:+14155550123@trunk.example.com;user=phone"),
        ("+14155550123", "10.0.0.5:5080", "", "sip:+14155550123@10.0.0.5:5080;user=phone"),
        (
            "+442079460750",
            "::1",
            "id 1&2",
            "sip:+442079460750@[::1];user=phone?X-Handoff-Id=id%201%262",
        ),
    ],
)
def test_target_uri(to: str, host: str, handoff: str, expected: str) -> None:
    assert target_uri(to, host, handoff) == expected


@pytest.mark.parametrize(
    ("to", "host"),
    [
        ("4155550123", "trunk"),  # no +: not E.164
        ("tel:+14155550123", "trunk"),
        ("sip:nohost", "trunk"),
        ("+14155550123", ""),
        ("+14155550123", "bad host"),
        ("sip:a@b>", "trunk"),
    ],
)
def test_unusable_targets_raise(to: str, host: str) -> None:
    with pytest.raises(SipParseError):
        target_uri(to, host)


def test_uri_header_name_is_checked() -> None:
    with pytest.raises(SipParseError):
        with_uri_header("sip:a@b", "X Bad", "1")


# -- the transfer's state table -----------------------------------------------------------------


def test_accepted_then_progress_then_200_hands_off() -> None:
    refer = Refer(TARGET, 2, "sip:human@pbx.example.test")
    assert refer.on_response(100, "Trying") is None
    assert refer.on_response(202, "Accepted") is None
    assert refer.state is ReferState.ACCEPTED
    assert refer.on_notify(SipFrag(100, "Trying"), SubscriptionState("active")) is None
    result = refer.on_notify(SipFrag(200, "OK"), SubscriptionState("terminated"))
    assert result is not None
    assert (result.outcome, result.detail) == (TransferOutcome.HANDED_OFF, "target answered 200 OK")
    assert refer.history == [ReferState.SENT, ReferState.ACCEPTED, ReferState.HANDED_OFF]
    # anything later changes nothing
    assert refer.on_notify(SipFrag(486, "Busy Here"), SubscriptionState("terminated")) is None
    assert refer.on_timeout(30) is None


def test_declined_refer_fails() -> None:
    refer = Refer(TARGET, 2, "u")
    result = refer.on_response(603, "Declined")
    assert result is not None
    assert (result.outcome, result.detail) == (
        TransferOutcome.FAILED,
        "REFER refused: 603 Declined",
    )


def test_failure_sipfrag_fails() -> None:
    refer = Refer(TARGET, 2, "u")
    refer.on_response(202, "Accepted")
    result = refer.on_notify(SipFrag(486, "Busy Here"), SubscriptionState("terminated"))
    assert result is not None and result.outcome is TransferOutcome.FAILED
    assert result.detail == "target answered 486 Busy Here"


def test_terminated_without_a_final_answer_fails() -> None:
    refer = Refer(TARGET, 2, "u")
    refer.on_response(202, "Accepted")
    refer.on_notify(SipFrag(180, "Ringing"), SubscriptionState("active"))
    result = refer.on_notify(None, SubscriptionState("terminated", {"reason": "timeout"}))
    assert result is not None and result.outcome is TransferOutcome.FAILED
    assert (
        result.detail
        == "subscription terminated (timeout) before a final answer (last: 180 Ringing)"
    )


def test_notify_before_the_202_and_refer_sub_false() -> None:
    refer = Refer(TARGET, 2, "u")
    assert refer.on_notify(SipFrag(100, "Trying"), SubscriptionState("active")) is None
    assert refer.state is ReferState.ACCEPTED
    assert refer.on_response(202, "Accepted") is None  # the late 202
    quiet = Refer(TARGET, 3, "u")
    result = quiet.on_response(202, "Accepted", refer_sub=False)
    assert result is not None and result.outcome is TransferOutcome.HANDED_OFF


def test_timeouts_say_what_was_missing() -> None:
    unanswered = Refer(TARGET, 2, "u")
    result = unanswered.on_timeout(30)
    assert result is not None and result.detail == "no answer to the REFER within 30 s"
    silent = Refer(TARGET, 2, "u")
    silent.on_response(202, "Accepted")
    result = silent.on_timeout(30)
    assert result is not None and result.detail == "no final NOTIFY within 30 s of the REFER"


def test_moves_outside_the_table_raise() -> None:
    refer = Refer(TARGET, 2, "u")
    refer.on_response(603, "Declined")
    with pytest.raises(InvalidStateError):
        refer._set(ReferState.ACCEPTED)  # noqa: SLF001


# -- fuzz -------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_sipfrag_parser_only_raises_sip_parse_errors(body: bytes) -> None:
    try:
        frag = parse_sipfrag(body)
    except SipParseError:
        return
    assert 100 <= frag.code <= 699


@settings(max_examples=200, deadline=None)
@given(
    st.integers(100, 699),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
    st.sampled_from(["\r\n", "\n", ""]),
)
def test_status_lines_round_trip(code: int, phrase: str, end: str) -> None:
    frag = parse_sipfrag(f"SIP/2.0 {code} {phrase}{end}".encode())
    assert (frag.code, frag.phrase) == (code, phrase.strip())


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_subscription_state_parser_only_raises_sip_parse_errors(value: str) -> None:
    try:
        sub = parse_subscription_state(value)
    except SipParseError:
        return
    assert sub.state in ("active", "pending", "terminated")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_escaped_uri_headers_are_safe_and_reversible(value: str) -> None:
    escaped = escape_uri_header(value)
    assert not any(ch in escaped for ch in ' <>"&=;,@\r\n')
    assert unquote(escaped, errors="strict") == value


_EVENTS = st.one_of(
    st.tuples(st.just("response"), st.integers(100, 699), st.booleans()),
    st.tuples(
        st.just("notify"),
        st.one_of(st.none(), st.integers(100, 699)),
        st.sampled_from(["active", "pending", "terminated"]),
    ),
    st.tuples(st.just("timeout"), st.just(0), st.just(False)),
    st.tuples(st.just("abandon"), st.just(0), st.just(False)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_EVENTS, max_size=12))
def test_any_sequence_gives_at_most_one_outcome_along_the_table(
    events: list[tuple[str, object, object]],
) -> None:
    refer = Refer(TARGET, 2, "u")
    results = []
    for kind, a, b in events:
        if kind == "response":
            assert isinstance(a, int) and isinstance(b, bool)
            result = refer.on_response(a, "x", refer_sub=b)
        elif kind == "notify":
            frag = SipFrag(a, "x") if isinstance(a, int) else None
            result = refer.on_notify(frag, SubscriptionState(str(b)))
        elif kind == "timeout":
            result = refer.on_timeout(1)
        else:
            result = refer.abandon("gone")
        if result is not None:
            results.append(result)
    assert len(results) <= 1
    for before, after in zip(refer.history, refer.history[1:], strict=False):
        assert after in _TRANSITIONS[before]
    if results:
        expected = (
            ReferState.HANDED_OFF
            if results[0].outcome is TransferOutcome.HANDED_OFF
            else ReferState.FAILED
        )
        assert refer.state is expected
    else:
        assert not refer.is_done
