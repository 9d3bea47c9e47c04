"""The caller's words over SIP: SIPp plays its A-law pcap into the real app with the tiny
engine and the tiny caller STT; transcript.caller segments land in Redis."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from voicegate.engine.synthetic import make_asr_dir

from ..gateway import read_events, serving
from .sip_helpers import SipGateway, run_sipp, start_sip_gateway


@pytest.fixture(scope="module")
def stt_gateway(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SipGateway]:
    tmp = tmp_path_factory.mktemp("sipgw-stt")
    files = make_asr_dir(tmp / "asr", seed=6)
    yield from serving(
        start_sip_gateway(redis_url, tmp, engine="tiny", device="cpu", asr_model_dir=files.root)
    )


async def test_sip_caller_segments_reach_redis(stt_gateway: SipGateway, tmp_path: Path) -> None:
    before = set(stt_gateway.sip_call_ids())
    result = run_sipp(stt_gateway.sip_port, tmp_path, builtin="uac_pcap", service="support")
    assert result.returncode == 0, result.stdout + result.stderr
    (call_id,) = [c for c in stt_gateway.sip_call_ids() if c not in before]
    events = await read_events(stt_gateway.redis_url, call_id)
    ended = next(e for e in events if e["type"] == "call.ended")
    final = [e for e in events if e["type"] == "transcript.caller" and e["final"] == "true"]
    assert final, [e["type"] for e in events]
    for seg in final:
        words = json.loads(seg["words"])
        assert words and seg["text"] == " ".join(w for w, _, _ in words)
        assert all(0 <= s <= e <= int(ended["duration_ms"]) for _, s, e in words)
    stt_gateway.wait_idle_blocking()
