"""telephony/kamailio/kamailio.cfg in front of the gateway: SIPp calls through the example SBC.

The example config is used as shipped except for what a deployment edits: its listen lines
(127.0.0.1 on a free port), the folder of dispatcher.list/address.list, and a 1 s OPTIONS probe.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from voicegate.audio import caller_wav_path, mulaw_encode, read_wav_int16

from ..gateway import REPO, read_events
from .sip_helpers import (
    KAMAILIO_MODULES,
    SipGateway,
    free_udp_port,
    kamailio_binary,
    run_kamailio,
    run_sipp,
)

CONFIG = REPO / "telephony" / "kamailio" / "kamailio.cfg"


def test_config_parses() -> None:
    kamailio = kamailio_binary()
    for defines in ("", "WITH_RTPENGINE"):
        text = CONFIG.read_text()
        if defines:
            text = text.replace(f"##!define {defines}", f"#!define {defines}")
        out = subprocess.run(
            [kamailio, "-c", "-L", str(KAMAILIO_MODULES), "-f", "/dev/stdin"],
            input=text,
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        assert "config file ok" in out.stdout + out.stderr, out.stderr[-2000:]


@pytest.fixture
def sbc(gateway: SipGateway, tmp_path: Path) -> Iterator[int]:
    port = free_udp_port()
    text = CONFIG.read_text().replace("/etc/kamailio/", f"{tmp_path}/")
    text = re.sub(r"^listen=.*\n", "", text, flags=re.M)
    text = text.replace(
        "####### Modules ########",
        f"listen=udp:127.0.0.1:{port}\nlisten=tcp:127.0.0.1:{port}\n\n####### Modules ########",
        1,
    )
    text = text.replace('"ds_ping_interval", 10', '"ds_ping_interval", 1')
    (tmp_path / "kamailio.cfg").write_text(text)
    (tmp_path / "dispatcher.list").write_text(f"1 sip:127.0.0.1:{gateway.sip_port}\n")
    (tmp_path / "address.list").write_text("1 127.0.0.1 32 0 test\n")
    yield from run_kamailio(tmp_path, [gateway], port)


async def test_calls_through_the_example_sbc(gateway: SipGateway, sbc: int, tmp_path: Path) -> None:
    pcm, _ = read_wav_int16(caller_wav_path(8000))
    (tmp_path / "caller.ulaw").write_bytes(mulaw_encode(pcm[: 8000 * 3]))
    before = set(gateway.sip_call_ids())
    for scenario in ("pcmu_dtmf.xml", "hold.xml"):
        result = run_sipp(sbc, tmp_path, scenario=scenario, service="teller")
        assert result.returncode == 0, scenario + result.stdout[-1500:] + result.stderr[-1500:]
    calls = [c for c in gateway.sip_call_ids() if c not in before]
    assert len(calls) == 2
    events = [await read_events(gateway.redis_url, c) for c in calls]
    kinds = sorted(
        tuple(
            e.get("digit") or e.get("status")
            for e in ev
            if e["type"] == "dtmf" or e.get("status") in ("hold", "unhold")
        )
        for ev in events
    )
    assert kinds == [("5", "#"), ("hold", "unhold")]
    gateway.wait_idle_blocking()
