"""The SIP leg's gateway (tests/legs/gateway.py) on free SIP/RTP ports, and a SIPp runner."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from voicegate.config import Settings
from voicegate.legs.sip.shard import owner_of

from ..gateway import REPO, Gateway, gateway_settings, start_gateway

SIPP_DIR = REPO / "telephony" / "sipp"
SIPP_PCAP_DIR = Path("/usr/share/sip-tester")


def free_udp_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 a moment ago."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = int(u.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


def call_id_owned_by(owner: int, count: int) -> str:
    """A fresh Call-ID whose dialog runs in worker ``owner`` of ``count`` (serve --workers)."""
    while True:
        call_id = os.urandom(8).hex() + "@peer"
        if owner_of(call_id, count) == owner:
            return call_id


def rtp_range() -> tuple[int, int]:
    """A block of 40 ports whose even/odd pairs were free (per test module)."""
    base = 20000 + (os.getpid() * 97) % 20000
    return base & ~1, (base & ~1) + 39


def sip_settings(redis_url: str, tmp: Path, **overrides: Any) -> Settings:
    """A test gateway's settings with SIP on a free port and a private RTP range."""
    rtp_min, rtp_max = rtp_range()
    values: dict[str, Any] = {
        "sip_enabled": True,
        "sip_host": "127.0.0.1",
        "sip_port": free_udp_port(),
        "rtp_port_min": rtp_min,
        "rtp_port_max": rtp_max,
    }
    values.update(overrides)
    return gateway_settings(redis_url, tmp, **values)


class SipGateway(Gateway):
    """The gateway with the SIP leg's handles."""

    @property
    def sip(self) -> Any:
        return self.app.state.sip

    @property
    def sip_port(self) -> int:
        return int(self.sip.port)

    @property
    def stats(self) -> Any:
        return self.sip.stats

    def sip_call_ids(self) -> list[str]:
        return [d.call_id for d in list(self.sip.dialogs.values())]


def start_sip_gateway(redis_url: str, tmp: Path, **overrides: Any) -> SipGateway:
    return start_gateway(SipGateway, sip_settings(redis_url, tmp, **overrides))


@dataclass
class SippResult:
    returncode: int
    stdout: str
    stderr: str


def run_sipp(
    gw_port: int,
    workdir: Path,
    *,
    scenario: str | None = None,
    builtin: str | None = None,
    service: str = "teller",
    local_ip: str = "127.0.0.1",
    calls: int = 1,
    timeout_s: int = 20,
    extra: list[str] | None = None,
) -> SippResult:
    """Run SIPp against the gateway on loopback; returns its exit code (0: every call passed)."""
    if shutil.which("sipp") is None:
        pytest.fail("sipp is not installed: apt-get install sip-tester (scripts/install.sh)")
    pcap = workdir / "pcap"
    if not pcap.exists():
        pcap.symlink_to(SIPP_PCAP_DIR)
    cmd = ["sipp", f"127.0.0.1:{gw_port}"]
    if builtin:
        cmd += ["-sn", builtin]
    if scenario:
        cmd += ["-sf", str(SIPP_DIR / scenario)]
    cmd += [
        "-s", service,
        "-i", local_ip,
        "-p", str(free_udp_port()),
        "-mi", local_ip,
        "-mp", str(free_udp_port() & ~1),
        "-m", str(calls),
        "-l", str(calls),
        "-timeout", f"{timeout_s}s",
        "-timeout_error",
        "-nostdin",
        "-trace_err",
        "-error_file", str(workdir / "sipp_errors.log"),
    ]  # fmt: skip
    cmd += extra or []
    proc = subprocess.run(
        cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout_s + 10, check=False
    )
    return SippResult(proc.returncode, proc.stdout[-4000:], proc.stderr[-4000:])


KAMAILIO_MODULES = Path("/usr/lib/x86_64-linux-gnu/kamailio/modules")


def kamailio_binary() -> str:
    kamailio = shutil.which("kamailio") or "/usr/sbin/kamailio"
    if not Path(kamailio).exists():
        pytest.fail("kamailio is not installed: apt-get install kamailio (scripts/install.sh)")
    return kamailio


def run_kamailio(folder: Path, gateways: list[SipGateway], port: int) -> Iterator[int]:
    """For an SBC fixture: kamailio on ``folder``/kamailio.cfg (its log in kamailio.log); once
    its dispatcher has probed every one of ``gateways`` (10 s at most), hands out ``port`` and
    stops kamailio after."""
    run = folder / "run"
    run.mkdir()
    log = open(folder / "kamailio.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [kamailio_binary(), "-DD", "-E", "-f", str(folder / "kamailio.cfg"), "-Y", str(run),
         "-L", str(KAMAILIO_MODULES)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        # dispatcher probes the gateways with OPTIONS once a second: wait for the first answers
        seen = [gw.stats.messages_in for gw in gateways]
        deadline = time.monotonic() + 10
        while any(gw.stats.messages_in == n for gw, n in zip(gateways, seen, strict=True)):
            assert proc.poll() is None, (folder / "kamailio.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "kamailio never probed the gateways"
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
