"""infra/kamailio/kamailio.cfg (the fleet's SBC) with the real kamailio binary in front of two
real gateways (one call each) and SIPp: OPTIONS probing, load-aware dispatch, 503 when full.

The gateways answer OPTIONS 503 while full or draining; Kamailio spreads two calls one per
gateway (call load, maxload 1), answers a third INVITE 503 itself while both are busy, and
sends calls again once the probes are answered 200.
"""

from __future__ import annotations

import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from voicegate.audio import caller_wav_path, mulaw_encode, read_wav_int16

from ..gateway import REPO
from .sip_helpers import (
    KAMAILIO_MODULES,
    SipGateway,
    SippResult,
    free_udp_port,
    kamailio_binary,
    rtp_range,
    run_kamailio,
    run_sipp,
    start_sip_gateway,
)

CONFIG = REPO / "infra" / "kamailio" / "kamailio.cfg"
DATA = REPO / "tests" / "data" / "sipp"


def fleet_config(listen: str, folder: Path, ping_s: int = 1) -> str:
    """The shipped config with its three defines set for this run."""
    text = CONFIG.read_text()
    for name, value in (
        ("FLEET_LISTEN", listen),
        ("FLEET_DIR", str(folder)),
        ("FLEET_PING_S", str(ping_s)),
    ):
        text, n = re.subn(
            rf'^#!substdef "!{name}!.*!g"$', f'#!substdef "!{name}!{value}!g"', text, flags=re.M
        )
        assert n == 1, name
    return text


def test_fleet_config_parses(tmp_path: Path) -> None:
    out = subprocess.run(
        [kamailio_binary(), "-c", "-L", str(KAMAILIO_MODULES), "-f", str(CONFIG)],
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    assert "config file ok" in out.stdout + out.stderr, out.stderr[-2000:]


def options_code(port: int) -> int:
    """Send one OPTIONS to 127.0.0.1:``port`` and return the response's status code."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(2.0)
        local = s.getsockname()[1]
        s.sendto(
            (
                f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{time.monotonic_ns()}\r\n"
                f"From: <sip:probe@127.0.0.1>;tag=p1\r\nTo: <sip:127.0.0.1:{port}>\r\n"
                f"Call-ID: probe-{time.monotonic_ns()}\r\nCSeq: 1 OPTIONS\r\n"
                "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            ).encode(),
            ("127.0.0.1", port),
        )
        data, _ = s.recvfrom(4096)
    return int(data.split(b" ", 2)[1])


@pytest.fixture(scope="module")
def pods(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[SipGateway]]:
    rtp_min, _ = rtp_range()
    gws: list[SipGateway] = []
    try:
        for i in range(2):
            low = rtp_min + 40 * (i + 1)
            gws.append(
                start_sip_gateway(
                    redis_url,
                    tmp_path_factory.mktemp(f"pod{i}"),
                    max_calls=1,
                    rtp_port_min=low,
                    rtp_port_max=low + 39,
                )
            )
        yield gws
    finally:
        for gw in gws:
            gw.server.stop()


@pytest.fixture
def sbc(pods: list[SipGateway], tmp_path: Path) -> Iterator[int]:
    port = free_udp_port()
    (tmp_path / "kamailio.cfg").write_text(fleet_config(f"udp:127.0.0.1:{port}", tmp_path))
    (tmp_path / "dispatcher.list").write_text(
        "".join(
            f"1 sip:127.0.0.1:{gw.sip_port} 0 0 duid=pod{i};maxload=1\n"
            for i, gw in enumerate(pods)
        )
    )
    yield from run_kamailio(tmp_path, pods, port)


def wait_until(check: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_load_aware_dispatch_and_503_when_every_pod_is_full(
    pods: list[SipGateway], sbc: int, tmp_path: Path
) -> None:
    pcm, _ = read_wav_int16(caller_wav_path(8000))
    (tmp_path / "caller.ulaw").write_bytes(mulaw_encode(pcm[: 8000 * 3]))
    assert [options_code(gw.sip_port) for gw in pods] == [200, 200]
    results: list[SippResult] = []
    # two calls at once through Kamailio (each speaks 2 s): one lands on each gateway
    caller = threading.Thread(
        target=lambda: results.append(
            run_sipp(sbc, tmp_path, scenario="pcmu_dtmf.xml", service="teller", calls=2)
        )
    )
    caller.start()
    try:
        wait_until(lambda: all(gw.calls.active_count == 1 for gw in pods))
        # full: the gateways say so to the probes, and Kamailio refuses a third call itself
        assert [options_code(gw.sip_port) for gw in pods] == [503, 503]
        busy = run_sipp(sbc, tmp_path, scenario=str(DATA / "invite_503.xml"), service="teller")
        assert busy.returncode == 0, busy.stdout[-1500:] + busy.stderr[-1500:]
    finally:
        caller.join(30)
    assert results and results[0].returncode == 0, results[0].stdout[-1500:] if results else ""
    for gw in pods:
        gw.wait_idle_blocking()
    # the slots are free again: a probe (1 s) brings the gateways back, and a call goes through
    assert [options_code(gw.sip_port) for gw in pods] == [200, 200]
    time.sleep(2.5)
    again = run_sipp(sbc, tmp_path, scenario="pcmu_dtmf.xml", service="teller")
    assert again.returncode == 0, again.stdout[-1500:] + again.stderr[-1500:]


def test_a_draining_gateway_answers_options_503(pods: list[SipGateway]) -> None:
    gw = pods[1]
    gw.on_loop(gw.calls.begin_drain)
    assert options_code(gw.sip_port) == 503
    assert options_code(pods[0].sip_port) == 200
