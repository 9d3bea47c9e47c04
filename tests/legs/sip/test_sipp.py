"""The SIP leg against SIPp, a real SIP peer (echo engine, real Redis). SIPp's exit code is 0
only when every call of its scenario passed (each expected message arrived, checks matched)."""

from __future__ import annotations

from pathlib import Path

import pytest

from voicegate.audio import caller_wav_path, mulaw_encode, read_wav_int16

from ..gateway import read_events
from .sip_client import SipClient
from .sip_helpers import SipGateway, run_sipp


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SIPp's working directory: pcap/ -> /usr/share/sip-tester, caller.ulaw (raw mu-law)."""
    path = tmp_path_factory.mktemp("sipp")
    pcm, rate = read_wav_int16(caller_wav_path(8000))
    assert rate == 8000
    (path / "caller.ulaw").write_bytes(mulaw_encode(pcm[: 8000 * 3]))
    return path


def new_calls(gateway: SipGateway, before: set[str]) -> list[str]:
    return [c for c in gateway.sip_call_ids() if c not in before]


async def test_sipp_uac_pcap_call_runs_and_records_events(
    gateway: SipGateway, workdir: Path
) -> None:
    before = set(gateway.sip_call_ids())
    rtp_in = gateway.stats.rtp_in
    result = run_sipp(gateway.sip_port, workdir, builtin="uac_pcap", service="support")
    assert result.returncode == 0, result.stdout + result.stderr
    (call_id,) = new_calls(gateway, before)
    events = await read_events(gateway.redis_url, call_id)
    started = next(e for e in events if e["type"] == "call.started")
    assert started["leg"] == "sip"
    assert started["persona"] == "support_agent"
    assert [e["digit"] for e in events if e["type"] == "dtmf"] == ["1"]
    ended = next(e for e in events if e["type"] == "call.ended")
    assert ended["reason"] == "caller_hangup"
    dialog = [e["status"] for e in events if e["type"] == "leg.status"]
    assert dialog[:2] == ["dialog-accepted", "dialog-confirmed"]
    assert gateway.stats.rtp_in - rtp_in >= 200  # g711a.pcap holds ~230 A-law packets
    gateway.wait_idle_blocking()


@pytest.mark.parametrize("transport", ["u1", "t1"])  # SIPp: one UDP socket / one TCP connection
async def test_sipp_pcmu_call_with_dtmf_routes_by_sip_user(
    gateway: SipGateway, workdir: Path, transport: str
) -> None:
    before = set(gateway.sip_call_ids())
    rtp_in, rtp_out = gateway.stats.rtp_in, gateway.stats.rtp_out
    result = run_sipp(
        gateway.sip_port,
        workdir,
        scenario="pcmu_dtmf.xml",
        service="teller",
        extra=["-t", transport],
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (call_id,) = new_calls(gateway, before)
    events = await read_events(gateway.redis_url, call_id)
    started = next(e for e in events if e["type"] == "call.started")
    assert (started["leg"], started["persona"]) == ("sip", "bank_teller")
    assert [e["digit"] for e in events if e["type"] == "dtmf"] == ["5", "#"]
    assert gateway.stats.rtp_in - rtp_in >= 90  # 2 s of caller audio
    assert gateway.stats.rtp_out - rtp_out >= 90  # paced agent audio back
    gateway.wait_idle_blocking()


async def test_sipp_cancel_before_answer_gets_487_and_starts_no_call(
    gateway: SipGateway, workdir: Path
) -> None:
    cancelled = gateway.stats.invites_cancelled
    result = run_sipp(gateway.sip_port, workdir, scenario="cancel.xml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert gateway.stats.invites_cancelled == cancelled + 1
    assert gateway.calls.active_count == 0


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_sipp_options_gets_200_with_allow(
    gateway: SipGateway, workdir: Path, transport: str
) -> None:
    result = run_sipp(gateway.sip_port, workdir, scenario="options.xml", extra=["-t", transport])
    assert result.returncode == 0, result.stdout + result.stderr


async def test_sipp_hold_and_unhold_reinvites(gateway: SipGateway, workdir: Path) -> None:
    before = set(gateway.sip_call_ids())
    result = run_sipp(gateway.sip_port, workdir, scenario="hold.xml", service="teacher")
    assert result.returncode == 0, result.stdout + result.stderr
    (call_id,) = new_calls(gateway, before)
    events = await read_events(gateway.redis_url, call_id)
    statuses = [
        e["status"]
        for e in events
        if e["type"] == "leg.status" and not e["status"].startswith("dialog-")
    ]
    assert statuses == ["hold", "unhold"]
    gateway.wait_idle_blocking()


def test_sipp_invite_from_a_refused_address_gets_403(gateway: SipGateway, workdir: Path) -> None:
    refused = gateway.stats.requests_refused_source
    result = run_sipp(gateway.sip_port, workdir, scenario="refused.xml", local_ip="127.0.0.2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert gateway.stats.requests_refused_source >= refused + 1
    assert gateway.calls.active_count == 0


def test_sipp_exit_code_is_nonzero_when_the_scenario_fails(
    gateway: SipGateway, workdir: Path
) -> None:
    # the allowed address gets a call, not the 403 refused.xml expects: SIPp must report failure
    result = run_sipp(gateway.sip_port, workdir, scenario="refused.xml", timeout_s=3)
    assert result.returncode != 0
    gateway.wait_idle_blocking()


def test_invite_burst_from_one_source_is_rate_limited(gateway: SipGateway) -> None:
    flood = SipClient(("127.0.0.1", gateway.sip_port), host="127.0.0.5")
    other = SipClient(("127.0.0.1", gateway.sip_port))
    try:
        limited = gateway.stats.invites_rate_limited
        n = 30
        for i in range(n):
            # no SDP: each admitted INVITE ends with 488 and starts nothing
            flood.send(flood.request("INVITE", 1, call_id=f"flood-{i}-{flood.call_id}"))
        codes = []
        for _ in range(n):
            codes.append(flood.recv_final().code)
        burst = gateway.app.state.settings.sip_invite_burst
        assert codes.count(503) == n - burst
        assert codes.count(488) == burst
        assert gateway.stats.invites_rate_limited == limited + n - burst
        other.send(other.request("INVITE", 1))  # another source is not limited
        assert other.recv_final().code == 488
    finally:
        flood.close()
        other.close()


def test_unknown_dialog_gets_481(gateway: SipGateway) -> None:
    client = SipClient(("127.0.0.1", gateway.sip_port))
    try:
        client.send(client.request("BYE", 2, to_tag="nosuchtag"))
        assert client.recv_final().code == 481
        client.send(client.request("BYE", 2, to_tag=""))
        assert client.recv_final().code == 481
    finally:
        client.close()
