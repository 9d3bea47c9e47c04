"""The page in a real browser: headless Debian chromium with a fake microphone calls a persona over
WebRTC (tiny engine: random weights that talk all the time), and edits a persona through the page.
"""

from __future__ import annotations

import json
import re
import shutil
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest

from voicegate.audio import caller_wav_path
from voicegate.personas import validate_paths

from ..gateway import REPO
from .browser import Chromium
from .webrtc_helpers import EDITOR_TOKEN, WEBRTC_TOKEN, WebRtcGateway, start_webrtc_gateway

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_gateway(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebRtcGateway]:
    tmp = tmp_path_factory.mktemp("gw-browser")
    personas = tmp / "personas"
    shutil.copytree(REPO / "personas", personas)
    gw = start_webrtc_gateway(redis_url, tmp, engine="tiny", personas_dir=personas)
    try:
        yield gw
    finally:
        gw.server.stop()


def page_url(gw: WebRtcGateway) -> str:
    return f"{gw.base_url}/#call_token={WEBRTC_TOKEN}&editor_token={EDITOR_TOKEN}"


def silent_wav(path: Path, seconds: float = 1.0) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(24000)
        w.writeframes(b"\0\0" * int(24000 * seconds))
    return path


async def test_browser_calls_a_persona_hears_it_and_sees_its_transcript(
    tiny_gateway: WebRtcGateway, tmp_path: Path
) -> None:
    gw = tiny_gateway
    async with Chromium(
        page_url(gw), fake_mic_wav=caller_wav_path(24000), workdir=tmp_path
    ) as page:
        await page.wait_for("document.getElementById('persona').options.length >= 5")
        await page.evaluate(
            "document.getElementById('persona').value = 'bank_teller';"
            "document.getElementById('call').click()"
        )
        await page.wait_for("vg.state.startsWith('in call')", timeout_s=10)
        call_id = await page.evaluate("vg.callId")
        # 1.5 s of received audio, measured by the browser itself
        stats = await page.wait_for(
            "vg.stats().then(s => s && s.totalSamplesReceived >= 72000 && s)", timeout_s=10
        )
        assert stats["totalAudioEnergy"] > 0.01, stats  # not silence
        assert stats["packetsReceived"] >= 50, stats
        assert gw.calls.get(call_id) is not None
        await page.evaluate("document.getElementById('hangup').click()")
        # the feed stays open until call.ended: the closing transcript arrives with it
        ended = await page.wait_for("vg.ended", timeout_s=10)
        page_events = await page.evaluate("vg.events")
        transcript = await page.evaluate("vg.transcript")
        shown = await page.evaluate("document.getElementById('transcript').textContent")
    assert ended["reason"] == "caller_hangup" and ended["leg"] == "webrtc"
    types = [e["type"] for e in page_events]
    assert types[0] == "call.started" and types[-1] == "call.ended", types
    assert "transcript.agent" in types, types
    assert transcript and all(t for t in transcript) and transcript[0][:20] in shown
    await gw.wait_idle()
    redis_events = await gw.events(call_id)
    redis_text = [e["text"] for e in redis_events if e["type"] == "transcript.agent"]
    assert redis_text == transcript
    assert {e["leg"] for e in redis_events} == {"webrtc"}


async def test_browser_edits_a_persona_refused_then_saved_and_the_next_call_uses_it(
    tiny_gateway: WebRtcGateway, tmp_path: Path
) -> None:
    gw = tiny_gateway
    path = gw.personas_dir / "wise_teacher.yaml"
    original = path.read_text()
    async with Chromium(
        page_url(gw), fake_mic_wav=silent_wav(tmp_path / "silence.wav"), workdir=tmp_path
    ) as page:
        await page.wait_for("document.getElementById('edit-persona').options.length >= 5")
        await page.evaluate(
            "document.getElementById('edit-persona').value = 'wise_teacher';"
            "document.getElementById('open').click()"
        )
        await page.wait_for("document.getElementById('yaml').value.includes('text_prompt')")
        assert await page.evaluate("document.getElementById('yaml').value") == original

        # an error: typed in, reported as you type with the CLI's message and line
        broken = original.replace("voice: ", "voice: NATF9\n#", 1)
        await page.evaluate(
            f"{{ const t = document.getElementById('yaml'); t.value = {json.dumps(broken)};"
            "t.dispatchEvent(new Event('input')) }"
        )
        await page.wait_for("document.getElementById('validity').textContent.startsWith('errors')")
        shown = await page.evaluate("vg.editor.problems.map(p => p.text)")
        cli_file = tmp_path / "wise_teacher.yaml"
        cli_file.write_text(broken)
        cli = [str(p) for p in validate_paths([cli_file], personas_dir=gw.personas_dir)]
        prefix = str(cli_file)
        assert [s.replace(str(gw.personas_dir / "wise_teacher.yaml"), prefix) for s in shown] == cli
        voice_line = broken.splitlines().index(next(x for x in broken.splitlines() if "NATF9" in x))
        assert any(
            f"wise_teacher.yaml:{voice_line + 1}:8: error: voice 'NATF9'" in s
            and "did you mean" in s
            for s in shown
        ), shown
        await page.evaluate("document.getElementById('save').click()")
        await page.wait_for(
            "document.getElementById('save-status').textContent.startsWith('not saved')"
        )
        assert path.read_text() == original  # refused: the file is unchanged
        assert not (gw.personas_dir / ".versions").exists()

        # a valid edit: short silence timeout, so the next call proves it uses this version
        edited = re.sub(r"silence_timeout_s: \d+", "silence_timeout_s: 3", original)
        edited = edited.replace("description: ", "description: (edited) ", 1)
        assert edited != original
        await page.evaluate(
            f"{{ const t = document.getElementById('yaml'); t.value = {json.dumps(edited)};"
            "t.dispatchEvent(new Event('input')) }"
        )
        await page.wait_for("document.getElementById('validity').textContent.startsWith('valid')")
        await page.evaluate("document.getElementById('call-edited').click()")  # save, then call
        await page.wait_for(
            "document.getElementById('save-status').textContent.startsWith('saved')"
        )
        assert path.read_text() == edited
        versions = list((gw.personas_dir / ".versions" / "wise_teacher").iterdir())
        assert [v.read_text() for v in versions] == [original]
        assert gw.app.state.parts.personas.get("wise_teacher").limits.silence_timeout_s == 3
        # the call started right after the save ends after 3 s of (fake-mic) silence
        ended = await page.wait_for("vg.ended", timeout_s=12)
        started = await page.evaluate("vg.events[0]")
    assert started["type"] == "call.started" and started["persona"] == "wise_teacher"
    assert ended["reason"] == "silence_timeout", ended
    assert 3000 <= ended["duration_ms"] < 6000, ended
    await gw.wait_idle()
