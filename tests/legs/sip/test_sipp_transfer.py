"""Call control on the SIP leg against SIPp and a raw SIP client, in the real gateway (echo
engine, real Redis): cold transfer by REFER (accepted, declined, failed, no final NOTIFY),
NOTIFY without a subscription (481), and overflow (302 with the overflow Contact, else 486).

The test persona (written below into the module's own personas folder) transfers on DTMF "0"
to a SIP URI and on "9" to an E.164 number; SIPp presses the key with its RFC 4733 pcaps
(``dtmf_2833_0.pcap`` plays event 0, ``dtmf_2833_9.pcap`` event 9)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from voicegate.audio import caller_wav_path, mulaw_encode, read_wav_int16
from voicegate.legs.sip.message import SipRequest, build_response, parse_message

from ..gateway import read_events, serving
from .sip_client import SipClient, sdp_offer
from .sip_helpers import SipGateway, run_sipp, start_sip_gateway
from .test_kamailio import sbc  # noqa: F401  (the example SBC in front of this module's gateway)

PERSONA = """\
description: A test desk that hands callers on (SIP transfer tests).
voice: NATF2
text_prompt: You are a test desk. Keep answers short.
call_flow:
  destinations:
    human: {to: "sip:human@pbx.example.test"}
    branch: {to: "+14155550123"}
  dtmf:
    "0": {transfer: human}
    "9": {transfer: branch}
"""

NUMBERS = """\
default: transfer_desk
sip_users:
  desk: transfer_desk
  full: transfer_desk
overflow:
  desk: "sip:overflow@pbx.example.test"
"""

REFER_TIMEOUT_S = 2.0


def start_transfer_desk(
    redis_url: str, tmp: Path, numbers: str = NUMBERS, **overrides: Any
) -> SipGateway:
    """The gateway with the transfer desk persona and ``numbers`` (written under ``tmp``): one
    call at a time, REFERs to trunk.example.test, ``overrides`` on top."""
    personas = tmp / "personas"
    personas.mkdir()
    (personas / "transfer_desk.yaml").write_text(PERSONA)
    (tmp / "numbers.yaml").write_text(numbers)
    return start_sip_gateway(
        redis_url,
        tmp,
        personas_dir=personas,
        numbers_file=tmp / "numbers.yaml",
        max_calls=1,
        sip_transfer_host="trunk.example.test",
        sip_refer_timeout_s=REFER_TIMEOUT_S,
        **overrides,
    )


@pytest.fixture(scope="module")
def gateway(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SipGateway]:
    yield from serving(start_transfer_desk(redis_url, tmp_path_factory.mktemp("sipxfer")))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sipp")
    pcm, rate = read_wav_int16(caller_wav_path(8000))
    assert rate == 8000
    (path / "caller.ulaw").write_bytes(mulaw_encode(pcm[: 8000 * 3]))
    return path


@pytest.fixture
def media() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


def metric(gateway: SipGateway, prefix: str) -> float:
    """The value of the first /metrics line starting with ``prefix`` (0 when absent)."""
    text = httpx.get(gateway.base_url + "/metrics", trust_env=False).text
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return 0.0


def handed_off(gateway: SipGateway) -> tuple[float, float, float]:
    return (
        metric(gateway, 'voicegate_call_transfers_total{leg="sip",outcome="handed_off"}'),
        metric(gateway, 'voicegate_call_transfers_total{leg="sip",outcome="failed"}'),
        metric(gateway, "voicegate_sip_refers_sent_total"),
    )


def one_new_call(gateway: SipGateway, before: set[str]) -> str:
    (call_id,) = [c for c in gateway.sip_call_ids() if c not in before]
    return call_id


def transfers(events: list[dict[str, str]]) -> list[dict[str, str]]:
    return [e for e in events if e["type"] == "call.transfer"]


@pytest.mark.parametrize("transport", ["u1", "t1"])  # SIPp: one UDP socket / one TCP connection
async def test_refer_accepted_hands_the_call_off_and_sends_bye(
    gateway: SipGateway, workdir: Path, transport: str
) -> None:
    before = set(gateway.sip_call_ids())
    ok0, failed0, refers0 = handed_off(gateway)
    result = run_sipp(
        gateway.sip_port,
        workdir,
        scenario="refer_accept.xml",
        service="desk",
        extra=["-t", transport],
    )
    assert result.returncode == 0, result.stdout + result.stderr  # REFER checked, our BYE came
    call_id = one_new_call(gateway, before)
    events = await read_events(gateway.redis_url, call_id)
    assert [e["digit"] for e in events if e["type"] == "dtmf"] == ["0"]
    requested, done = transfers(events)
    assert (requested["result"], requested["trigger"], requested["trigger_detail"]) == (
        "requested",
        "dtmf",
        "0",
    )
    assert (done["result"], done["destination"], done["to"]) == (
        "handed_off",
        "human",
        "sip:human@pbx.example.test",
    )
    assert done["detail"] == "target answered 200 OK"
    assert len(done["handoff_id"]) == 32 and done["handoff_id"] == requested["handoff_id"]
    ended = next(e for e in events if e["type"] == "call.ended")
    assert ended["reason"] == "transferred"
    statuses = [(e["status"], e["detail"]) for e in events if e["type"] == "leg.status"]
    assert (
        "refer-sent",
        "sip:human@pbx.example.test?X-Handoff-Id=" + done["handoff_id"],
    ) in statuses
    assert ("refer-progress", "100 Trying (active)") in statuses
    assert ("dialog-terminating", "transferred") in statuses
    assert handed_off(gateway) == (ok0 + 1, failed0, refers0 + 1)
    assert metric(gateway, "voicegate_call_transfer_latency_seconds_count") >= 1
    gateway.wait_idle_blocking()


async def test_refer_declined_keeps_the_call_with_the_agent(
    gateway: SipGateway, workdir: Path
) -> None:
    before = set(gateway.sip_call_ids())
    ok0, failed0, refers0 = handed_off(gateway)
    refused0 = metric(gateway, "voicegate_sip_refers_refused_total")
    rtp_out = gateway.stats.rtp_out
    # digit 9: the E.164 destination, sent as sip:+14155550123@<sip_transfer_host>;user=phone
    result = run_sipp(gateway.sip_port, workdir, scenario="refer_decline.xml", service="desk")
    assert result.returncode == 0, result.stdout + result.stderr  # no BYE of ours before SIPp's
    call_id = one_new_call(gateway, before)
    events = await read_events(gateway.redis_url, call_id)
    requested, failed = transfers(events)
    assert (requested["result"], requested["to"]) == ("requested", "+14155550123")
    assert (failed["result"], failed["detail"]) == ("failed", "REFER refused: 603 Declined")
    ended = next(e for e in events if e["type"] == "call.ended")
    assert ended["reason"] == "caller_hangup"  # the call went on until SIPp hung up
    assert gateway.stats.rtp_out - rtp_out >= 90  # agent audio kept flowing (2 s at least)
    assert handed_off(gateway) == (ok0, failed0 + 1, refers0 + 1)
    assert metric(gateway, "voicegate_sip_refers_refused_total") == refused0 + 1
    gateway.wait_idle_blocking()


async def test_refer_failed_by_notify_486_keeps_the_call(
    gateway: SipGateway, workdir: Path
) -> None:
    before = set(gateway.sip_call_ids())
    ok0, failed0, _ = handed_off(gateway)
    result = run_sipp(gateway.sip_port, workdir, scenario="refer_fail.xml", service="desk")
    assert result.returncode == 0, result.stdout + result.stderr
    call_id = one_new_call(gateway, before)
    events = await read_events(gateway.redis_url, call_id)
    _, failed = transfers(events)
    assert (failed["result"], failed["detail"]) == ("failed", "target answered 486 Busy Here")
    ended = next(e for e in events if e["type"] == "call.ended")
    assert ended["reason"] == "caller_hangup"
    assert handed_off(gateway)[:2] == (ok0, failed0 + 1)
    gateway.wait_idle_blocking()


def answer_call(gateway: SipGateway, media: socket.socket, user: str = "desk") -> SipClient:
    client = SipClient(("127.0.0.1", gateway.sip_port))
    body = sdp_offer("127.0.0.1", media.getsockname()[1])
    client.send(client.request("INVITE", 1, body=body, user=user))
    assert client.recv_final(5).code == 200
    client.send(client.request("ACK", 1, user=user))
    return client


def recv_request(client: SipClient, method: str, timeout_s: float = 5.0) -> SipRequest:
    client.sock.settimeout(timeout_s)
    while True:
        data, _ = client.sock.recvfrom(65535)
        message = parse_message(data)
        if isinstance(message, SipRequest) and message.method == method:
            return message


def notify(client: SipClient, cseq: int, state: str, frag: str, event: str = "refer") -> bytes:
    body = f"SIP/2.0 {frag}\r\n"
    extra = (
        f"Event: {event}\r\nSubscription-State: {state}\r\n"
        "Content-Type: message/sipfrag;version=2.0\r\n"
    )
    request = client.request("NOTIFY", cseq, user="desk", extra=extra).decode()
    head, _, _ = request.partition("Content-Length: 0\r\n\r\n")
    return f"{head}Content-Length: {len(body)}\r\n\r\n{body}".encode()


async def answered_call(gateway: SipGateway, media: socket.socket) -> tuple[Any, str]:
    """A raw SIP caller's call, answered; its client and call id."""
    before = set(gateway.sip_call_ids())
    client = await asyncio.to_thread(answer_call, gateway, media)
    return client, one_new_call(gateway, before)


async def transfer_and_refer(
    gateway: SipGateway, client: Any, call_id: str, destination: str, to: str
) -> Any:
    """Ask the call to transfer (as an operator would) and return the REFER the caller got."""
    call = gateway.calls.get(call_id)
    gateway.on_loop(call.transfer_to, destination, to, "operator")
    return await asyncio.to_thread(recv_request, client, "REFER")


async def test_no_final_notify_fails_the_transfer_and_late_notify_gets_481(
    gateway: SipGateway, media: socket.socket
) -> None:
    client, call_id = await answered_call(gateway, media)
    try:
        refer = await transfer_and_refer(
            gateway, client, call_id, "human", "sip:human@pbx.example.test"
        )
        assert refer.header("Refer-To") is not None
        assert refer.header("Refer-To").startswith("<sip:human@pbx.example.test?X-Handoff-Id=")
        client.sock.sendto(build_response(refer, 202), ("127.0.0.1", gateway.sip_port))
        client.send(notify(client, 2, "active", "100 Trying", event="presence"))
        assert (await asyncio.to_thread(client.recv_final, 3, "NOTIFY")).code == 489
        client.send(notify(client, 3, "active;expires=60", "180 Ringing"))
        assert (await asyncio.to_thread(client.recv_final, 3, "NOTIFY")).code == 200
        events = await read_events(gateway.redis_url, call_id, "call.transfer", 3)
        # no final NOTIFY: after REFER_TIMEOUT_S the transfer fails and the call stays
        deadline = asyncio.get_running_loop().time() + REFER_TIMEOUT_S + 5
        while len(transfers(events)) < 2:
            assert asyncio.get_running_loop().time() < deadline, events
            await asyncio.sleep(0.1)
            events = await read_events(gateway.redis_url, call_id, "call.transfer", 3)
        failed = transfers(events)[1]
        assert failed["result"] == "failed"
        assert failed["detail"] == f"no final NOTIFY within {REFER_TIMEOUT_S:.0f} s of the REFER"
        assert gateway.calls.get(call_id) is not None  # still with the agent
        client.send(notify(client, 4, "terminated;reason=noresource", "200 OK"))
        assert (await asyncio.to_thread(client.recv_final, 3, "NOTIFY")).code == 481
        assert gateway.calls.get(call_id) is not None
    finally:
        client.send(client.request("BYE", 5, user="desk"))
        assert (await asyncio.to_thread(client.recv_final, 3, "BYE")).code == 200
        client.close()
    events = await read_events(gateway.redis_url, call_id)
    assert next(e for e in events if e["type"] == "call.ended")["reason"] == "caller_hangup"
    await gateway.wait_idle()


async def test_refer_through_the_example_sbc(
    gateway: SipGateway,
    sbc: int,  # noqa: F811  (the fixture imported above)
    tmp_path: Path,
) -> None:
    """telephony/kamailio/kamailio.cfg relays our REFER and the caller's NOTIFYs (record-routed
    in-dialog requests) and the BYE after the hand-off."""
    pcm, _ = read_wav_int16(caller_wav_path(8000))
    (tmp_path / "caller.ulaw").write_bytes(mulaw_encode(pcm[: 8000 * 3]))
    before = set(gateway.sip_call_ids())
    result = run_sipp(sbc, tmp_path, scenario="refer_accept.xml", service="desk")
    assert result.returncode == 0, result.stdout[-1500:] + result.stderr[-1500:]
    call_id = one_new_call(gateway, before)
    events = await read_events(gateway.redis_url, call_id)
    assert [e["result"] for e in transfers(events)] == ["requested", "handed_off"]
    assert next(e for e in events if e["type"] == "call.ended")["reason"] == "transferred"
    gateway.wait_idle_blocking()


async def test_caller_hanging_up_during_the_transfer_fails_it(
    gateway: SipGateway, media: socket.socket
) -> None:
    client, call_id = await answered_call(gateway, media)
    try:
        refer = await transfer_and_refer(gateway, client, call_id, "branch", "+14155550123")
        assert (refer.header("Refer-To") or "").startswith(
            "<sip:+14155550123@trunk.example.test;user=phone?X-Handoff-Id="
        )
        client.sock.sendto(build_response(refer, 202), ("127.0.0.1", gateway.sip_port))
        client.send(client.request("BYE", 2, user="desk"))
        assert (await asyncio.to_thread(client.recv_final, 3, "BYE")).code == 200
    finally:
        client.close()
    events = await read_events(gateway.redis_url, call_id)
    failed = transfers(events)[1]
    assert (failed["result"], failed["detail"]) == (
        "failed",
        "the caller's side hung up before the transfer's outcome",
    )
    assert next(e for e in events if e["type"] == "call.ended")["reason"] == "caller_hangup"
    await gateway.wait_idle()


def test_overflow_302_when_no_slot_is_free(
    gateway: SipGateway, workdir: Path, media: socket.socket
) -> None:
    redirected = gateway.stats.invites_redirected
    client = answer_call(gateway, media)  # max_calls=1: the only slot is taken
    try:
        assert not gateway.calls.can_admit()
        result = run_sipp(gateway.sip_port, workdir, scenario="overflow_302.xml", service="desk")
        assert result.returncode == 0, result.stdout + result.stderr  # 302, Contact checked
    finally:
        client.send(client.request("BYE", 2, user="desk"))
        assert client.recv_final(3, method="BYE").code == 200
        client.close()
    assert gateway.stats.invites_redirected == redirected + 1
    assert metric(gateway, "voicegate_sip_invites_redirected_total") == redirected + 1
    gateway.wait_idle_blocking()


def test_busy_486_when_no_overflow_is_set(
    gateway: SipGateway, workdir: Path, media: socket.socket
) -> None:
    busy, redirected = gateway.stats.invites_busy, gateway.stats.invites_redirected
    client = answer_call(gateway, media)
    try:
        result = run_sipp(gateway.sip_port, workdir, scenario="busy_486.xml", service="full")
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        client.send(client.request("BYE", 2, user="desk"))
        assert client.recv_final(3, method="BYE").code == 200
        client.close()
    assert (gateway.stats.invites_busy, gateway.stats.invites_redirected) == (busy + 1, redirected)
    gateway.wait_idle_blocking()


def test_notify_outside_any_dialog_gets_481(gateway: SipGateway) -> None:
    client = SipClient(("127.0.0.1", gateway.sip_port))
    try:
        client.send(notify(client, 1, "active", "100 Trying"))
        assert client.recv_final().code == 481
    finally:
        client.close()
