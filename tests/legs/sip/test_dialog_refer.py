"""Transfer by REFER on the dialog over real loopback sockets, with the fake CallManager of
test_dialog.py: REFER retransmission and Timer F, NOTIFY checks (481, 489, 400), a NOTIFY
before the 202, the BYE after a 2xx sipfrag, a transfer before the ACK. The SIPp runs against
the real gateway are in test_sipp_transfer.py."""

from __future__ import annotations

from typing import Any

from voicegate.contracts import EndReason, TransferOutcome, TransferTarget
from voicegate.legs.sip import DialogState

from .fakes import wait_for
from .test_dialog import make_rig  # noqa: F401  (make_rig: the rig fixture)

TARGET = TransferTarget("human", "sip:human@pbx.example.test", "h-1")


def sipfrag_notify(peer: Any, state: str, frag: bytes, event: str = "refer") -> bytes:
    return peer.request(
        "NOTIFY",
        body=frag.decode("latin-1"),
        content_type="message/sipfrag;version=2.0",
        extra=f"Event: {event}\r\nSubscription-State: {state}\r\n",
    )


async def test_unanswered_refer_is_retransmitted_then_fails_and_the_call_stays(
    make_rig: Any,  # noqa: F811  (the fixture imported above)
) -> None:
    rig = await make_rig()
    peer, _, dialog = await rig.answered()
    call = rig.calls.calls[0]
    dialog.transfer(TARGET)
    first = await peer.request_in("REFER")
    assert first.header("Refer-To") == "<sip:human@pbx.example.test?X-Handoff-Id=h-1>"
    assert first.from_tag == dialog.local_tag and first.to_tag == peer.from_tag
    again = await peer.request_in("REFER")  # Timer E: the same request again
    assert (again.cseq, again.branch) == (first.cseq, first.branch)
    dialog.transfer(TARGET)  # a second transfer while one is pending is refused at once
    assert call.transfers[-1] == (TARGET, TransferOutcome.FAILED, "a transfer is in progress")
    await wait_for(lambda: len(call.transfers) == 2, timeout_s=3)  # 64*T1 = 1.28 s: Timer F
    assert call.transfers[1] == (
        TARGET,
        TransferOutcome.FAILED,
        "no answer to the REFER within 1 s",
    )
    assert dialog.state is DialogState.CONFIRMED and call.ended is None
    assert rig.server.stats.transfers_failed == 1  # the refused second one was never sent
    # the late NOTIFY of that abandoned REFER: no such subscription
    peer.send(sipfrag_notify(peer, "terminated", b"SIP/2.0 200 OK\r\n"))
    assert (await peer.response(481)).cseq_method == "NOTIFY"


async def test_notify_checks_event_body_and_subscription(
    make_rig: Any,  # noqa: F811  (the fixture imported above)
) -> None:
    rig = await make_rig()
    peer, _, dialog = await rig.answered()
    call = rig.calls.calls[0]
    peer.send(sipfrag_notify(peer, "active", b"SIP/2.0 100 Trying\r\n"))  # no REFER yet
    await peer.response(481)
    dialog.transfer(TransferTarget("branch", "+14155550123"))
    refer = await peer.request_in("REFER")
    # an E.164 number at the host the INVITE came from (no transfer host configured)
    assert refer.header("Refer-To") == "<sip:+14155550123@127.0.0.1;user=phone>"
    peer.send(sipfrag_notify(peer, "active", b"SIP/2.0 100 Trying\r\n", event="dialog"))
    await peer.response(489)
    peer.send(sipfrag_notify(peer, "active", b"not a status line"))
    bad = await peer.response(400)
    assert "status line" in (bad.raw.headers.get("Warning") or "")
    peer.send(sipfrag_notify(peer, "sleeping", b"SIP/2.0 100 Trying\r\n"))
    await peer.response(400)
    peer.send(sipfrag_notify(peer, "active;expires=60", b"SIP/2.0 180 Ringing\r\n"))
    await peer.response(200)  # before the 202 (RFC 3515 2.4.4 allows that)
    assert call.transfers == []
    peer.send(sipfrag_notify(peer, "terminated;reason=noresource", b"SIP/2.0 200 OK\r\n"))
    await peer.response(200)
    bye = await peer.request_in("BYE")
    assert bye.cseq == refer.cseq + 1
    assert call.transfers == [
        (
            TransferTarget("branch", "+14155550123"),
            TransferOutcome.HANDED_OFF,
            "target answered 200 OK",
        )
    ]
    assert dialog.end_reason is EndReason.TRANSFERRED


async def test_transfer_before_the_ack_fails_at_once(
    make_rig: Any,  # noqa: F811  (the fixture imported above)
) -> None:
    rig = await make_rig()
    _, _, dialog = await rig.answered(ack=False)
    dialog.transfer(TARGET)
    assert rig.calls.calls[0].transfers == [
        (TARGET, TransferOutcome.FAILED, "the dialog is accepted, not confirmed")
    ]
    assert rig.server.stats.refers_sent == 0
