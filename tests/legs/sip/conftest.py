"""A real gateway with the SIP leg on free ports (echo engine, real Redis), and SIPp/baresip helpers."""

from __future__ import annotations

import asyncio
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
from redis.asyncio import Redis

from voicegate.app import create_app
from voicegate.config import Settings
from voicegate.demo import ServerThread
from voicegate.events import call_events_key

REPO = Path(__file__).resolve().parents[3]
SIPP_DIR = REPO / "telephony" / "sipp"
SIPP_PCAP_DIR = Path("/usr/share/sip-tester")
MAX_CALLS = 2


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


def rtp_range() -> tuple[int, int]:
    """A block of 40 ports whose even/odd pairs were free (per test module)."""
    base = 20000 + (os.getpid() * 97) % 20000
    return base & ~1, (base & ~1) + 39


def gateway_settings(redis_url: str, tmp: Path, **overrides: Any) -> Settings:
    rtp_min, rtp_max = rtp_range()
    values: dict[str, Any] = {
        "engine": "echo",
        "host": "127.0.0.1",
        "redis_url": redis_url,
        "personas_dir": REPO / "personas",
        "numbers_file": REPO / "telephony" / "numbers.yaml",
        "events_journal_dir": tmp / "journal",
        "sip_enabled": True,
        "sip_host": "127.0.0.1",
        "sip_port": free_udp_port(),
        "rtp_port_min": rtp_min,
        "rtp_port_max": rtp_max,
        "max_calls": MAX_CALLS,
        "drain_timeout_s": 1.0,
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class SipGateway:
    server: ServerThread
    app: Any
    redis_url: str

    @property
    def sip(self) -> Any:
        return self.app.state.sip

    @property
    def sip_port(self) -> int:
        return int(self.sip.port)

    @property
    def calls(self) -> Any:
        return self.app.state.parts.calls

    @property
    def stats(self) -> Any:
        return self.sip.stats

    def on_loop(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on the gateway's event loop and return its result."""
        loop: asyncio.AbstractEventLoop = self.app.state.loop

        async def run() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), loop).result(5)

    def wait_idle(self, timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.calls.active_count:
            assert time.monotonic() < deadline, f"{self.calls.active_count} calls still active"
            time.sleep(0.02)

    def sip_call_ids(self) -> list[str]:
        return [d.call_id for d in list(self.sip.dialogs.values())]


def start_gateway(redis_url: str, tmp: Path, **overrides: Any) -> tuple[ServerThread, Any]:
    app = create_app(gateway_settings(redis_url, tmp, **overrides))
    server = ServerThread(app)
    server.start()
    return server, app


@pytest.fixture(scope="module")
def gateway(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SipGateway]:
    server, app = start_gateway(
        redis_url,
        tmp_path_factory.mktemp("sipgw"),
        sip_answer_delay_ms=300,
        sip_allow="127.0.0.1/32,127.0.0.5/32",
        sip_invite_burst=12,
        sip_invite_rate_per_s=0.1,
    )
    try:
        yield SipGateway(server, app, redis_url)
    finally:
        server.stop()


async def read_events(
    redis_url: str, call_id: str, until: str = "call.ended", timeout_s: float = 5.0
) -> list[dict[str, str]]:
    """The call's events from Redis, once one of type ``until`` is there."""
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            entries = await client.xrange(call_events_key(call_id))
            fields = [{str(k): str(v) for k, v in (f or {}).items()} for _, f in entries or []]
            if any(f["type"] == until for f in fields):
                return fields
            assert time.monotonic() < deadline, f"no {until} event for {call_id}: {fields}"
            await asyncio.sleep(0.05)
    finally:
        await client.aclose()


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
