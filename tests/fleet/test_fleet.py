"""The fleet on one machine: three `voicegate serve` processes (echo engine, 1/2/3 slots), each
in its own network namespace with its own address, one Redis, Kamailio in front for SIP, and the
Twilio simulator as the carrier with its voice webhook sent round-robin to the pods under the
fleet's URL (what a load balancer does).

Phases: two SIP calls through Kamailio land on two pods; six Twilio calls fill every slot (one
placed on another pod than the one that got the webhook) and the seventh is rejected busy; a
SIGTERM mid-call makes the pod place elsewhere at once, finish its call and exit 0; a SIGKILL
leaves its entry to expire (no call placed on it after that) and a survivor writes its calls'
call.ended (gateway_lost); SIP reaches the last pod; every call that started has exactly one
call.ended and no call hash in Redis is left open. Figures are printed (run with -s).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

import httpx
import pytest
from redis.asyncio import Redis

from tests.conftest import free_port
from tests.fleet.netns import NetnsLab
from voicegate.audio import caller_wav_path, mulaw_encode, read_wav_int16
from voicegate.legs.twilio.sim import PlacedCall, SimulatedStream, TwilioSimulator

REPO = Path(__file__).resolve().parents[2]
KAMAILIO_CFG = REPO / "infra" / "kamailio" / "kamailio.cfg"
MODULES = Path("/usr/lib/x86_64-linux-gnu/kamailio/modules")
AUTH_TOKEN = "fleet-auth-token-0123456789abcdef"
FRONT_URL = "https://voice.fleet.test"
SLOTS = (1, 2, 3)
HEARTBEAT_S, TTL_S, RESERVATION_S = 0.2, 1.0, 2.0
START_TIMEOUT_S = 120.0
TO = "+14155550101"


@dataclass
class Pod:
    index: int
    ip: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pod_id(self) -> str:
        return f"p{self.index}"

    @property
    def url(self) -> str:
        return f"http://{self.ip}:8000"


@dataclass
class Fleet:
    lab: NetnsLab
    redis_url: str
    pods: list[Pod]
    sip_port: int
    workdir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)


def _kamailio_config(listen: str, folder: Path) -> str:
    text = KAMAILIO_CFG.read_text()
    for name, value in (
        ("FLEET_LISTEN", listen),
        ("FLEET_DIR", str(folder)),
        ("FLEET_PING_S", "1"),
    ):
        text, n = re.subn(
            rf'^#!substdef "!{name}!.*!g"$', f'#!substdef "!{name}!{value}!g"', text, flags=re.M
        )
        assert n == 1, name
    return text


def _pod_env(lab: NetnsLab, i: int, redis_url: str, workdir: Path) -> dict[str, str]:
    ip = lab.ip(i)
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "VOICEGATE_ENGINE": "echo",
        "VOICEGATE_HOST": "0.0.0.0",
        "VOICEGATE_PORT": "8000",
        "VOICEGATE_PUBLIC_URL": FRONT_URL,
        "VOICEGATE_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "VOICEGATE_REDIS_URL": redis_url,
        "VOICEGATE_PERSONAS_DIR": str(REPO / "personas"),
        "VOICEGATE_NUMBERS_FILE": str(REPO / "telephony" / "numbers.yaml"),
        "VOICEGATE_EVENTS_JOURNAL_DIR": str(workdir / f"p{i}" / "journal"),
        "VOICEGATE_SIP_ENABLED": "true",
        "VOICEGATE_SIP_HOST": ip,
        "VOICEGATE_SIP_PORT": "5060",
        "VOICEGATE_SIP_PUBLIC_HOST": ip,
        "VOICEGATE_WEBRTC_ENABLED": "false",
        "VOICEGATE_MAX_CALLS": str(SLOTS[i]),
        "VOICEGATE_DRAIN_TIMEOUT_S": "20",
        "VOICEGATE_FLEET_ENABLED": "true",
        "VOICEGATE_FLEET_POD_ID": f"p{i}",
        "VOICEGATE_FLEET_POD_URL": f"http://{ip}:8000",
        "VOICEGATE_FLEET_SIP_ADDRESS": f"{ip}:5060",
        "VOICEGATE_FLEET_HEARTBEAT_S": str(HEARTBEAT_S),
        "VOICEGATE_FLEET_TTL_S": str(TTL_S),
        "VOICEGATE_FLEET_RESERVATION_S": str(RESERVATION_S),
        "VOICEGATE_LOG_LEVEL": "INFO",
    }


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        if os.getpgid(proc.pid) == proc.pid:  # a group of its own (kamailio and its children)
            os.killpg(proc.pid, signal.SIGKILL)  # its children outlive a SIGKILL of the main one
        else:
            proc.kill()
    proc.wait(10)


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    for tool in ("redis-server", "kamailio", "sipp"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            pytest.fail(f"{tool} is not installed (scripts/install.sh)")
    lab = NetnsLab(len(SLOTS))
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[BinaryIO] = []

    def log_file(path: Path) -> BinaryIO:
        logs.append(open(path, "wb"))  # noqa: SIM115  (closed in the finally below)
        return logs[-1]

    try:
        lab.open()
        redis_port = free_port()
        procs.append(
            subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(redis_port),
                    "--bind",
                    lab.host_ip,
                    "127.0.0.1",
                    "--protected-mode",
                    "no",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(tmp_path),
                ],
                stdout=log_file(tmp_path / "redis.log"),
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        )
        redis_url = f"redis://{lab.host_ip}:{redis_port}/0"
        pods = []
        for i in range(len(SLOTS)):
            log = tmp_path / f"p{i}.log"
            proc = subprocess.Popen(
                [*lab.exec_prefix(i), sys.executable, "-m", "voicegate", "serve"],
                env=_pod_env(lab, i, redis_url, tmp_path),
                cwd=REPO,
                stdout=log_file(log),
                stderr=subprocess.STDOUT,
            )
            procs.append(proc)
            pods.append(Pod(i, lab.ip(i), proc, log))
        sip_port = free_port()
        kdir = tmp_path / "kamailio"
        (kdir / "run").mkdir(parents=True)
        (kdir / "kamailio.cfg").write_text(_kamailio_config(f"udp:{lab.host_ip}:{sip_port}", kdir))
        (kdir / "dispatcher.list").write_text(
            "".join(
                f"1 sip:{p.ip}:5060 0 0 duid={p.pod_id};maxload={SLOTS[p.index]}\n" for p in pods
            )
        )
        kamailio = shutil.which("kamailio") or "/usr/sbin/kamailio"
        procs.append(
            subprocess.Popen(
                [
                    kamailio,
                    "-DD",
                    "-E",
                    "-f",
                    str(kdir / "kamailio.cfg"),
                    "-Y",
                    str(kdir / "run"),
                    "-L",
                    str(MODULES),
                ],
                stdout=log_file(kdir / "kamailio.log"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        )
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as http:
            deadline = time.monotonic() + START_TIMEOUT_S
            for pod in pods:
                while True:
                    assert pod.proc.poll() is None, pod.log.read_text()[-3000:]
                    assert time.monotonic() < deadline, f"{pod.pod_id} not ready"
                    try:
                        if (await http.get(pod.url + "/readyz")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    await asyncio.sleep(0.2)
        yield Fleet(lab, redis_url, pods, sip_port, tmp_path, procs)
    finally:
        for proc in procs:
            _stop(proc)
        for f in logs:
            f.close()
        lab.close()
    assert not lab.leftovers(), lab.leftovers()


async def wait_for(check: Callable[[], object], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


def run_sipp(fleet: Fleet, calls: int) -> subprocess.CompletedProcess[str]:
    workdir = fleet.workdir / "sipp"
    if not workdir.exists():
        workdir.mkdir()
        (workdir / "pcap").symlink_to("/usr/share/sip-tester")
        pcm, _ = read_wav_int16(caller_wav_path(8000))
        (workdir / "caller.ulaw").write_bytes(mulaw_encode(pcm[: 8000 * 3]))
    host = fleet.lab.host_ip
    cmd = [
        "sipp", f"{host}:{fleet.sip_port}", "-sf", str(REPO / "telephony" / "sipp" / "pcmu_dtmf.xml"),
        "-s", "support", "-i", host, "-p", str(free_port()), "-mi", host,
        "-mp", str(free_port() & ~1), "-m", str(calls), "-l", str(calls),
        "-timeout", "25s", "-timeout_error", "-nostdin",
    ]  # fmt: skip
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=40, check=False)


async def sip_calls_by_pod(fleet: Fleet) -> list[float]:
    """Each pod's ended SIP calls, from its /metrics (dead pods: 0)."""
    out = []
    async with httpx.AsyncClient(timeout=2.0, trust_env=False) as http:
        for pod in fleet.pods:
            if pod.proc.poll() is not None:
                out.append(0.0)
                continue
            text = (await http.get(pod.url + "/metrics")).text
            out.append(
                sum(
                    float(line.rsplit(" ", 1)[1])
                    for line in text.splitlines()
                    if line.startswith('voicegate_calls_total{leg="sip"')
                )
            )
    return out


async def test_fleet_of_three(fleet: Fleet) -> None:
    redis = Redis.from_url(fleet.redis_url, decode_responses=True)
    pods = fleet.pods
    front = [TwilioSimulator(p.url, FRONT_URL, AUTH_TOKEN) for p in pods]  # the load balancer
    direct = [TwilioSimulator(p.url, p.url, AUTH_TOKEN) for p in pods]  # Twilio to a pod's URL
    streams: dict[str, tuple[int, SimulatedStream]] = {}  # call_id -> (pod, stream)
    latencies_ms: list[float] = []
    started: set[str] = set()

    def pod_of(placed: PlacedCall) -> int:
        netloc = urlsplit(placed.stream_url).netloc
        return next(p.index for p in pods if f"{p.ip}:8000" == netloc)

    async def place(via: int) -> PlacedCall:
        t0 = time.perf_counter()
        placed = await front[via].place_call(to=TO)
        latencies_ms.append((time.perf_counter() - t0) * 1000)
        return placed

    async def is_active(call_id: str) -> bool:
        return await redis.hget(f"voicegate:call:{call_id}", "status") == "active"

    async def connect(placed: PlacedCall) -> int:
        j = pod_of(placed)
        streams[placed.call_sid] = (j, await direct[j].open_stream(placed))
        await wait_for(lambda: is_active(placed.call_sid), f"{placed.call_sid} on p{j}")
        started.add(placed.call_sid)
        return j

    async def hang_up(call_id: str) -> None:
        _, stream = streams.pop(call_id)
        await stream.stop()
        await stream.close()

    def on_pod(j: int) -> list[str]:
        return [c for c, (k, _) in streams.items() if k == j]

    async def beats() -> None:
        await asyncio.sleep(3 * HEARTBEAT_S)

    try:
        # -- SIP: two calls at once through Kamailio land on two pods (call load) ---------------
        sip = await asyncio.to_thread(run_sipp, fleet, 2)
        assert sip.returncode == 0, sip.stdout[-1500:] + sip.stderr[-1500:]
        per_pod = await sip_calls_by_pod(fleet)
        assert sorted(per_pod) == [0.0, 1.0, 1.0], per_pod
        await beats()

        # -- Twilio: round-robin webhooks fill every slot (1 + 2 + 3) --------------------------
        landed = [await connect(await place(k % 3)) for k in range(6)]
        assert landed == [0, 1, 2, 2, 1, 2]  # the 4th webhook reached p0 (full): placed on p2
        for j, slots in enumerate(SLOTS):
            assert len(on_pod(j)) == slots
        full = await place(0)
        assert not full.is_connect and full.reject_reason == "busy", full.twiml

        # -- SIGTERM p1 mid-call: it leaves the placement set at once, then finishes -----------
        t_term = time.monotonic()
        pods[1].proc.send_signal(signal.SIGTERM)
        await wait_for(lambda: _field(redis, "p1", "draining", "1"), "p1 never published draining")
        term_visible_ms = (time.monotonic() - t_term) * 1000
        await hang_up(on_pod(1)[0])  # p1 now has a free slot, but it is draining
        await hang_up(on_pod(2)[0])  # p2 has one free slot
        await beats()
        moved = await place(1)  # the load balancer still sends to p1 while it drains
        assert moved.is_connect and pod_of(moved) == 2, moved.twiml
        await connect(moved)
        none_left = await place(0)  # p1's free slot is not offered: busy
        assert not none_left.is_connect and none_left.reject_reason == "busy", none_left.twiml
        await hang_up(on_pod(1)[0])  # its last call ends: p1 exits cleanly and leaves
        assert await asyncio.to_thread(pods[1].proc.wait, 30) == 0
        assert not await redis.exists("voicegate:{fleet}:pod:p1")
        assert "p1" not in await redis.smembers("voicegate:{fleet}:pods")

        # -- SIGKILL p2 (one slot free, two calls up): no placement on it after its TTL --------
        await hang_up(on_pod(2)[0])
        await beats()
        lost_calls = on_pod(2)
        assert len(lost_calls) == 2
        t_kill = time.monotonic()
        pods[2].proc.kill()
        placements: list[tuple[float, int]] = []
        expired_at: float | None = None
        closed_at: float | None = None
        while time.monotonic() - t_kill < TTL_S + 1.5:
            placed = await place(0)
            now = time.monotonic() - t_kill
            if placed.is_connect:
                placements.append((now, pod_of(placed)))
            if expired_at is None and not await redis.exists("voicegate:{fleet}:pod:p2"):
                expired_at = time.monotonic() - t_kill
            if closed_at is None:
                closed = [
                    await _field(redis, c, "reason", "gateway_lost", call=True) for c in lost_calls
                ]
                if all(closed):
                    closed_at = time.monotonic() - t_kill
            await asyncio.sleep(0.05)
        assert expired_at is not None
        on_dead = [t for t, j in placements if j == 2]
        assert all(t <= expired_at for t in on_dead), (placements, expired_at)
        assert all(j != 1 for _, j in placements)
        last_on_dead_ms = max(on_dead, default=0.0) * 1000
        # a survivor (p0) closes p2's calls
        for call_id in lost_calls:
            await wait_for(
                lambda c=call_id: _field(redis, c, "reason", "gateway_lost", call=True),
                f"{call_id} not closed as gateway_lost",
            )
            await streams.pop(call_id)[1].close()
        lost_closed_ms = (closed_at if closed_at is not None else time.monotonic() - t_kill) * 1000

        # -- SIP after the losses: Kamailio sends it to the pod that is left -------------------
        for call_id in on_pod(0):
            await hang_up(call_id)
        await asyncio.sleep(1.5)  # one OPTIONS round (1 s) sees p0 free again
        before = (await sip_calls_by_pod(fleet))[0]
        sip = await asyncio.to_thread(run_sipp, fleet, 1)
        assert sip.returncode == 0, sip.stdout[-1500:] + sip.stderr[-1500:]
        assert (await sip_calls_by_pod(fleet))[0] == before + 1

        # -- every call that started ended exactly once; nothing left open in Redis -------------
        for call_id in list(streams):
            await hang_up(call_id)

        async def all_ended() -> bool:
            keys = [k async for k in redis.scan_iter("voicegate:call:*") if k.count(":") == 2]
            states = [await redis.hget(k, "status") for k in keys]
            return bool(keys) and all(s == "ended" for s in states)

        await wait_for(all_ended, "a call hash was left open")
        for call_id in started:
            entries = await redis.xrange(f"voicegate:call:{call_id}:events")
            ended = [f for _, f in entries if f["type"] == "call.ended"]
            assert len(ended) == 1, (call_id, ended)
        reasons = {c: await redis.hget(f"voicegate:call:{c}", "reason") for c in lost_calls}
        assert set(reasons.values()) == {"gateway_lost"}

        lat = sorted(latencies_ms)
        print(
            f"\nfleet figures: placement webhook->TwiML over {len(lat)} webhooks, 3 pods: "
            f"p50 {statistics.median(lat):.1f} ms, p90 {lat[int(0.9 * (len(lat) - 1))]:.1f} ms, "
            f"max {lat[-1]:.1f} ms\n"
            f"SIGTERM -> draining in the registry {term_visible_ms:.0f} ms\n"
            f"SIGKILL -> last call placed on the dead pod {last_on_dead_ms:.0f} ms "
            f"(placements on it: {len(on_dead)}); entry expired {expired_at * 1000:.0f} ms "
            f"(TTL {TTL_S} s); its calls closed gateway_lost by {lost_closed_ms:.0f} ms"
        )
    finally:
        for _, stream in streams.values():
            await stream.close()
        for sim in front + direct:
            await sim.aclose()
        await redis.aclose()


async def _field(redis: Redis, name: str, key: str, value: str, *, call: bool = False) -> bool:
    hash_key = f"voicegate:call:{name}" if call else f"voicegate:{{fleet}}:pod:{name}"
    return bool(await redis.hget(hash_key, key) == value)
